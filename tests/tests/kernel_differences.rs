//! Kernel differences must not take kotel down. Kernels this machine is not are made from its
//! own BTF, with one name renamed in place (same length, so the BTF stays valid) and handed to
//! kotel with `--btf`:
//! - one without the `tcp_sendmsg_locked` tracepoint (its `btf_trace_` typedef renamed), as on
//!   kernels before 6.16: neither of the TCP probe's hook sets is there, so preflight leaves it
//!   out;
//! - one whose `struct sock_common` lacks the `skc_v6_daddr` field the TCP program reads: its
//!   CO-RE relocation fails, the kernel refuses that program, and kotel loads the rest;
//! - one without `sock_send_length` (a kernel built without it): TCP falls back to the raw
//!   syscall hooks, which see write, writev, send and sendmsg exactly and sendfile not at all;
//! - one without `sched_exit_tp` (older kernels): off-CPU falls back to taking stacks at every
//!   blocked switch-out, and the stacks still name the sleep;
//! - one whose `struct sock` lacks `sk_protocol`, which only the socket-tracepoint TCP program
//!   reads: the kernel refuses that program, and TCP runs on its next hook set.
//!
//! A missing tracefs (`KOTEL_TRACEFS` pointed at an empty directory) stands for a kernel or
//! container without syscall tracepoints: writev falls back to the raw syscall hooks and still
//! counts every call. Each time kotel names what it left out or fell back from, and why.

use std::path::PathBuf;
use std::process::Command;

use kotel_e2e::{
    built_binary, json_lines, kotel_programs_since, program_ids, skip_without_bpf, still_loaded,
    writev_counts, Kotel, SendCapture, Workload,
};

const CALLS: u64 = 20_000;
/// The loop's warm-up calls, made before the counted ones.
const WARM_UP: u64 = 10_000;

/// The running kernel's BTF with the string `from` replaced by `to`, in a file of its own.
fn btf_renaming(test: &str, from: &str, to: &str) -> PathBuf {
    assert_eq!(
        from.len(),
        to.len(),
        "a same-length rename keeps the BTF valid"
    );
    let mut btf = std::fs::read(kotel_bpf::preflight::SYSFS_BTF).expect("read kernel BTF");
    let needle = [b"\0", from.as_bytes(), b"\0"].concat();
    let at = btf
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{from} is in this kernel's BTF"));
    btf[at + 1..at + 1 + to.len()].copy_from_slice(to.as_bytes());
    let path = std::env::temp_dir().join(format!("kotel-{test}-{}.btf", std::process::id()));
    std::fs::write(&path, btf).expect("write BTF");
    path
}

/// Runs `kotel capture --btf <btf>` for writev and TCP around a loop of known writev calls;
/// returns kotel's stderr after checking the loop's calls were all counted.
fn capture_survives(btf: &PathBuf) -> String {
    capture_survives_with(btf, &[])
}

/// [`capture_survives`] with extra environment variables for kotel.
fn capture_survives_with(btf: &PathBuf, env: &[(&str, &str)]) -> String {
    let before = program_ids();
    let kotel = Kotel::start_with_env(
        &[
            "capture",
            "--btf",
            btf.to_str().expect("utf-8 path"),
            "--probes",
            "writev,tcp_send",
            "--format",
            "table",
            "--duration",
            "0",
        ],
        "kotel.capture.attached",
        env,
    );
    let loaded = kotel_programs_since(&before);
    let out = Command::new(built_binary("kotel-writev-loop"))
        .args(["--calls", &CALLS.to_string()])
        .output()
        .expect("run the loop");
    assert!(out.status.success());
    let truth: serde_json::Value = serde_json::from_slice(&out.stdout).expect("loop json");
    let pid = truth["pid"].as_u64().expect("pid").to_string();
    let made = truth["calls"].as_u64().expect("calls") + WARM_UP;
    let (code, stdout, stderr) = kotel.interrupt();
    if btf.starts_with(std::env::temp_dir()) {
        let _ = std::fs::remove_file(btf);
    }
    assert_eq!(code, 0, "kotel keeps running: {stderr}");
    let left = still_loaded(&loaded);
    assert!(
        left.is_empty(),
        "programs still loaded after exit: {left:?}"
    );
    let counted = writev_counts(&stdout)
        .into_iter()
        .find_map(|(p, count)| (p == pid).then_some(count));
    assert_eq!(
        counted,
        Some(made),
        "writev still counts every call: {stdout}"
    );
    stderr
}

#[test]
fn a_missing_tracepoint_leaves_its_probe_out_and_the_rest_runs() {
    if skip_without_bpf("a_missing_tracepoint_leaves_its_probe_out_and_the_rest_runs") {
        return;
    }
    let btf = btf_renaming(
        "no-tcp-tracepoint",
        "btf_trace_tcp_sendmsg_locked",
        "btf_trace_tcp_sendmsg_lockeX",
    );
    let stderr = capture_survives(&btf);
    assert!(
        stderr.contains("kotel.probe.skipped: probe tcp_send left out: kernel has no tracepoint")
            && stderr.contains("tcp_sendmsg_locked"),
        "the missing tracepoint is named: {stderr}"
    );
    assert!(
        !stderr.contains("\"tcp_send_begin\"") && !stderr.contains("\"tcp_sendmsg_mark\""),
        "nothing attached to it: {stderr}"
    );
}

#[test]
fn an_absent_btf_field_leaves_its_probe_out_and_the_rest_runs() {
    if skip_without_bpf("an_absent_btf_field_leaves_its_probe_out_and_the_rest_runs") {
        return;
    }
    let btf = btf_renaming("no-skc-v6-daddr", "skc_v6_daddr", "skc_v6_daddX");
    let stderr = capture_survives(&btf);
    assert!(
        stderr.contains(
            "kotel.probe.skipped: probe tcp_send left out: this kernel refused its program"
        ),
        "the refused probe is named with the reason: {stderr}"
    );
}

#[test]
fn without_sock_send_length_tcp_falls_back_to_the_raw_syscall_hooks() {
    if skip_without_bpf("without_sock_send_length_tcp_falls_back_to_the_raw_syscall_hooks") {
        return;
    }
    let btf = btf_renaming(
        "no-sock-send-length",
        "btf_trace_sock_send_length",
        "btf_trace_sock_send_lengtX",
    );
    let cap = SendCapture::run(&["--btf", btf.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&btf);
    assert!(
        cap.stderr.contains(
            "kotel.probe.fallback: probe tcp_send runs on raw_syscalls (fallback): kernel has \
             no tracepoint sock/sock_send_length"
        ),
        "the fallback is said in one line: {}",
        cap.stderr
    );
    // The send syscalls are still exact, one event per call...
    for name in ["write", "writev", "send", "sendmsg"] {
        let p = cap.path(name).expect("path ran");
        let mine = cap.events_of(p);
        assert_eq!(
            mine.len() as u64,
            p["calls"].as_u64().unwrap(),
            "{name}: calls"
        );
        let bytes: u64 = mine.iter().map(|e| e["bytes"].as_u64().unwrap()).sum();
        assert_eq!(bytes, p["received"].as_u64().unwrap(), "{name}: bytes");
    }
    let mut programs = cap.programs.clone();
    programs.sort_unstable();
    assert_eq!(
        programs,
        [
            "raw_sys_enter",
            "raw_sys_exit",
            "sched_process_exit",
            "tcp_sendmsg_mark"
        ],
        "attached (and detached at exit: checked) the fallback hooks"
    );
    // ...and sendfile, which no send syscall carries, is what the fallback cannot see.
    let sendfile = cap.path("sendfile").expect("sendfile ran");
    assert!(
        cap.events_of(sendfile).is_empty(),
        "sendfile unseen on the fallback"
    );
}

#[test]
fn without_sched_exit_tp_offcpu_stacks_are_taken_at_switch_out() {
    if skip_without_bpf("without_sched_exit_tp_offcpu_stacks_are_taken_at_switch_out") {
        return;
    }
    let btf = btf_renaming(
        "no-sched-exit-tp",
        "btf_trace_sched_exit_tp",
        "btf_trace_sched_exit_tX",
    );
    let workload = Workload::start();
    let pid = workload.pid.to_string();
    let before = program_ids();
    let kotel = Kotel::start(&[
        "capture",
        "--btf",
        btf.to_str().expect("utf-8 path"),
        "--pid",
        &pid,
        "--probes",
        "offcpu",
        "--min-latency",
        "15ms",
        // The sleeps are interruptible: reported from the same threshold as the rest.
        "--sleep-threshold",
        "0",
        "--format",
        "jsonl",
        "--duration",
        "0",
    ]);
    let loaded = kotel_programs_since(&before);
    let truth = workload.run();
    let (code, stdout, stderr) = kotel.interrupt();
    let _ = std::fs::remove_file(&btf);
    assert_eq!(code, 0, "{stderr}");
    let mut programs: Vec<&str> = loaded.iter().map(|(_, n)| *n).collect();
    programs.sort_unstable();
    assert_eq!(
        programs,
        ["sched_process_exit", "sched_switch"],
        "the fallback hook alone"
    );
    let left = still_loaded(&loaded);
    assert!(
        left.is_empty(),
        "programs still loaded after exit: {left:?}"
    );
    assert!(
        stderr.contains(
            "kotel.probe.fallback: probe offcpu runs on scheduler tracepoints (fallback): kernel \
             has no tracepoint sched/sched_exit_tp"
        ),
        "the fallback is said: {stderr}"
    );
    let tid = truth["sleeper"]["tid"].clone();
    let sleeps: Vec<serde_json::Value> = json_lines(&stdout)
        .into_iter()
        .filter(|l| l["type"] == "event" && l["kind"] == "offcpu" && l["tid"] == tid)
        .collect();
    // Where the kernel does not deliver a switch-in, the fallback loses that sleep, and counts it.
    let lost = json_lines(&stdout)
        .into_iter()
        .find(|l| l["type"] == "lost")
        .expect("a lost line");
    let unseen = lost["switches_unseen"].as_u64().expect("switches_unseen");
    assert!(
        sleeps.len() <= 3 && sleeps.len() as u64 + unseen >= 3,
        "the three sleeps, or counted losses: {sleeps:?} {lost}"
    );
    for e in &sleeps {
        let frames = e["kernel_stack"].as_array().expect("kernel stack");
        assert!(
            frames
                .iter()
                .any(|f| f.as_str().is_some_and(|f| f.contains("nanosleep"))),
            "sleep stack: {frames:?}"
        );
    }
}

#[test]
fn without_tracefs_writev_falls_back_to_the_raw_syscall_hooks() {
    if skip_without_bpf("without_tracefs_writev_falls_back_to_the_raw_syscall_hooks") {
        return;
    }
    let empty = std::env::temp_dir().join(format!("kotel-no-tracefs-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("an empty directory");
    let stderr = capture_survives_with(
        &PathBuf::from(kotel_bpf::preflight::SYSFS_BTF),
        &[("KOTEL_TRACEFS", empty.to_str().expect("utf-8 path"))],
    );
    let _ = std::fs::remove_dir(&empty);
    assert!(
        stderr.contains(
            "kotel.probe.fallback: probe writev runs on raw_syscalls (fallback): tracefs is \
             not mounted, so tracepoint syscalls/sys_exit_writev, syscalls/sys_enter_writev \
             cannot attach (mount it: mount -t tracefs nodev /sys/kernel/tracing)"
        ),
        "the fallback names the missing tracefs, not missing tracepoints: {stderr}"
    );
}

#[test]
fn a_refused_program_falls_back_to_the_next_hook_set() {
    if skip_without_bpf("a_refused_program_falls_back_to_the_next_hook_set") {
        return;
    }
    let btf = btf_renaming("no-sk-protocol", "sk_protocol", "sk_protocoX");
    let cap = SendCapture::run(&["--btf", btf.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&btf);
    assert!(
        cap.stderr.contains(
            "kotel.probe.fallback: probe tcp_send runs on raw_syscalls (fallback): this kernel \
             refused its program on socket tracepoints"
        ) && cap.stderr.contains("sk_protocol"),
        "the fallback is said with the reason: {}",
        cap.stderr
    );
    let mut programs = cap.programs.clone();
    programs.sort_unstable();
    assert_eq!(
        programs,
        [
            "raw_sys_enter",
            "raw_sys_exit",
            "sched_process_exit",
            "tcp_sendmsg_mark"
        ],
        "the fallback hooks attached (and detached at exit: checked)"
    );
    for name in ["write", "writev", "send", "sendmsg"] {
        let p = cap.path(name).expect("path ran");
        let bytes: u64 = cap
            .events_of(p)
            .iter()
            .map(|e| e["bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(bytes, p["received"].as_u64().unwrap(), "{name}: bytes");
    }
}
