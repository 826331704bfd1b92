//! Kernel differences must not take kotel down. Two kernels this machine is not are made from
//! its own BTF, with one name renamed in place (same length, so the BTF stays valid) and handed
//! to kotel with `--btf`:
//! - one without the `tcp_sendmsg_locked` tracepoint (its `btf_trace_` typedef renamed), as on
//!   kernels before 6.6: preflight leaves the TCP probe out;
//! - one whose `struct sock_common` lacks the `skc_v6_daddr` field the TCP program reads: its
//!   CO-RE relocation fails, the kernel refuses that program, and kotel loads the rest.
//!
//! Either way kotel names what it left out and why, and the writev probe still counts every
//! call of a loop that knows its own count.

use std::path::PathBuf;
use std::process::Command;

use kotel_e2e::{built_binary, skip_without_bpf, writev_counts, Kotel};

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
    let kotel = Kotel::start(&[
        "capture",
        "--btf",
        btf.to_str().expect("utf-8 path"),
        "--probes",
        "writev,tcp_send",
        "--format",
        "table",
        "--duration",
        "0",
    ]);
    let out = Command::new(built_binary("kotel-writev-loop"))
        .args(["--calls", &CALLS.to_string()])
        .output()
        .expect("run the loop");
    assert!(out.status.success());
    let truth: serde_json::Value = serde_json::from_slice(&out.stdout).expect("loop json");
    let pid = truth["pid"].as_u64().expect("pid").to_string();
    let made = truth["calls"].as_u64().expect("calls") + WARM_UP;
    let (code, stdout, stderr) = kotel.interrupt();
    let _ = std::fs::remove_file(btf);
    assert_eq!(code, 0, "kotel keeps running: {stderr}");
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
        !stderr.contains("\"tcp_sendmsg_locked\""),
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
