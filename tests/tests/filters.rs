//! The cgroup filter works in the kernel: a capture limited to a fresh cgroup v2 directory sees
//! the workload moved into a cgroup below it, and nothing else.

use std::path::PathBuf;

use kotel_e2e::{cgroup2_root, json_lines, skip_without_bpf, Kotel, Workload};

/// A cgroup and a child of it, removed again when dropped (once empty).
struct TempCgroup(PathBuf);

impl Drop for TempCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(self.0.join("inner"));
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn cgroup_filter_keeps_only_tasks_in_that_cgroup() {
    if skip_without_bpf("cgroup_filter_keeps_only_tasks_in_that_cgroup") {
        return;
    }
    let Some(root) = cgroup2_root() else {
        eprintln!("!!!!!! KOTEL-E2E SKIPPED cgroup filter: no cgroup v2 mount here !!!!!!");
        return;
    };
    let cg = TempCgroup(root.join(format!("kotel-e2e-{}", std::process::id())));
    std::fs::create_dir(&cg.0).expect("create a cgroup");
    std::fs::create_dir(cg.0.join("inner")).expect("create a child cgroup");
    let workload = Workload::start();
    let wpid = u64::from(workload.pid);
    std::fs::write(cg.0.join("inner/cgroup.procs"), workload.pid.to_string())
        .expect("move the workload below the filtered cgroup");

    let kotel = Kotel::start(&[
        "capture",
        "--cgroup",
        cg.0.to_str().expect("utf-8 path"),
        "--min-latency",
        "0",
        "--probes",
        "all",
        "--format",
        "jsonl",
        "--duration",
        "0",
    ]);
    let truth = workload.run();
    let (code, stdout, stderr) = kotel.interrupt();
    assert_eq!(code, 0, "{stderr}");
    let lines = json_lines(&stdout);
    let events: Vec<_> = lines.iter().filter(|l| l["type"] == "event").collect();
    let pids: std::collections::HashSet<u64> =
        events.iter().filter_map(|e| e["pid"].as_u64()).collect();
    assert_eq!(pids, [wpid].into(), "only the workload is in the cgroup");
    let writevs = events.iter().filter(|e| e["kind"] == "writev").count() as u64;
    assert_eq!(
        writevs,
        truth["writev"]["calls"].as_u64().expect("calls"),
        "every writev of the workload"
    );
}
