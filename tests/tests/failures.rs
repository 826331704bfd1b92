//! Failures a user meets must be clear: bad flags and missing privileges or BTF exit 2 naming
//! what is wrong, and Ctrl-C detaches every program.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use kotel_e2e::{built_binary, skip_without_bpf, Kotel};

fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("run kotel");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flag_values_exit_2_naming_the_flag() {
    for (flag, value) in [
        ("--probes", "writev,kprobe"),
        ("--duration", "soon"),
        ("--format", "xml"),
        ("--pid", "abc"),
    ] {
        let (code, stderr) =
            run(Command::new(built_binary("kotel")).args(["capture", flag, value]));
        assert_eq!(code, 2, "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} named in: {stderr}");
    }
}

#[test]
fn a_bad_cgroup_path_exits_2_naming_the_flag() {
    let (code, stderr) = run(Command::new(built_binary("kotel")).args([
        "capture",
        "--cgroup",
        "/nonexistent/cgroup",
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--cgroup") && stderr.contains("/nonexistent/cgroup"),
        "{stderr}"
    );
}

/// Without CAP_BPF and CAP_PERFMON (dropped from the bounding set when run as root), kotel
/// refuses before loading anything and names both.
#[test]
fn missing_capabilities_exit_2_naming_them() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let kotel = built_binary("kotel");
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args([
            "--bounding-set=-bpf,-perfmon,-sys_admin",
            "--inh-caps=-all",
            "--",
        ])
        .arg(&kotel);
        c
    } else {
        Command::new(&kotel)
    };
    let (code, stderr) = run(cmd.args(["capture", "--duration", "1s"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("CAP_PERFMON"),
        "{stderr}"
    );
}

#[test]
fn missing_btf_exits_2_with_a_clear_message() {
    if skip_without_bpf("missing_btf_exits_2_with_a_clear_message") {
        return;
    }
    let (code, stderr) =
        run(Command::new(built_binary("kotel")).args(["capture", "--btf", "/nonexistent/vmlinux"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("/nonexistent/vmlinux") && stderr.contains("BTF"),
        "{stderr}"
    );
}

/// (id, name) of every loaded BPF program, from bpftool.
fn loaded_programs() -> Vec<(u64, String)> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn ctrl_c_detaches_every_program_and_still_prints_the_summary() {
    if skip_without_bpf("ctrl_c_detaches_every_program_and_still_prints_the_summary") {
        return;
    }
    let ours = [
        "sys_enter",
        "sys_exit",
        "tcp_sendmsg_locked",
        "sched_wakeup",
        "sched_wakeup_new",
        "sched_switch",
    ];
    // bpftool shows the BTF name, or the kernel's 15-character truncation without BTF.
    let is_ours = |n: &str| {
        ours.iter()
            .any(|o| *o == n || (n.len() == 15 && o.starts_with(n)))
    };
    let before: HashSet<u64> = loaded_programs().into_iter().map(|(id, _)| id).collect();
    let kotel = Kotel::start(&["capture", "--duration", "0", "--format", "table"]);
    let loaded: HashSet<u64> = loaded_programs()
        .into_iter()
        .filter(|(id, name)| !before.contains(id) && is_ours(name))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        loaded.len(),
        ours.len(),
        "all six programs loaded while capturing"
    );
    let (code, stdout, stderr) = kotel.interrupt();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("PID") && stdout.contains("lost events"),
        "summary printed: {stdout}"
    );
    // The kernel frees programs after an RCU grace period: give it a bounded while.
    let mut remaining = loaded.clone();
    for _ in 0..100 {
        let now: HashSet<u64> = loaded_programs().into_iter().map(|(id, _)| id).collect();
        remaining.retain(|id| now.contains(id));
        if remaining.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        remaining.is_empty(),
        "programs still loaded after exit: {remaining:?}"
    );
}

/// Once attached, kotel keeps only the capabilities its steady state needs: CAP_BPF (every map
/// read is a bpf() call), CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (reading /proc of other
/// processes). CAP_PERFMON, CAP_SYS_ADMIN and the rest are gone, from the bounding set too.
#[test]
fn capabilities_are_dropped_after_attach() {
    if skip_without_bpf("capabilities_are_dropped_after_attach") {
        return;
    }
    let kotel = Kotel::start(&["capture", "--duration", "0", "--format", "table"]);
    // The drop follows the attach line closely; give it a bounded moment.
    let read = |field: &str| -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", kotel.pid())).expect("status");
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .expect("field")
            .trim()
            .to_string();
        u64::from_str_radix(&hex, 16).expect("hex")
    };
    let want: u64 = (1 << 39) | (1 << 19) | (1 << 2);
    let mut eff = read("CapEff:");
    for _ in 0..50 {
        if eff == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        eff = read("CapEff:");
    }
    assert_eq!(eff, want, "effective capabilities {eff:#x}");
    assert_eq!(read("CapPrm:"), want, "permitted");
    assert_eq!(read("CapBnd:") & !want, 0, "bounding set");
    let (code, stdout, stderr) = kotel.interrupt();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("lost events"),
        "it still reads its maps: {stdout}"
    );
}
