//! Kernel threads are counted, not reported: by default their run-queue and off-CPU intervals
//! go into the histograms but never through the ring buffer (decided in the kernel from
//! `PF_KTHREAD`), and `--kernel-threads` reports them again. Which pids are kernel threads
//! comes from `/proc/<pid>/stat`, independently of kotel.

use std::collections::BTreeSet;
use std::io::Write;

use kotel_e2e::{capture_jsonl, skip_without_bpf};
use serde_json::Value;

/// `PF_KTHREAD` in a task's flags.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether `pid` is a kernel thread, from the flags in `/proc/<pid>/stat`; `None` once it is
/// gone.
fn is_kernel_thread(pid: u64) -> Option<bool> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest: state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8) flags(9)
    let flags: u64 = rest.split_whitespace().nth(6)?.parse().ok()?;
    Some(flags & PF_KTHREAD != 0)
}

/// Makes kernel threads run: dirty a file and sync, which has the writeback worker (a
/// kworker) write it out while `sync` waits for it.
fn wake_kernel_threads() {
    let path = std::env::temp_dir().join(format!("kotel-kthreads-{}", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("create a file to write back");
    f.write_all(&vec![0x6bu8; 4 << 20]).expect("write");
    drop(f);
    let status = std::process::Command::new("sync")
        .status()
        .expect("run sync");
    assert!(status.success(), "sync");
    let _ = std::fs::remove_file(&path);
}

/// A system-wide capture of run-queue and off-CPU intervals while kernel threads run, every
/// interval reported (`--min-latency 0`): (events, histograms, lost line).
fn capture(extra: &[&str]) -> (Vec<Value>, Vec<Value>, Value) {
    let mut args = vec!["--probes", "runqueue,offcpu", "--min-latency", "0"];
    args.extend_from_slice(extra);
    let ((), c) = capture_jsonl(&args, wake_kernel_threads);
    (c.events, c.histograms, c.lost)
}

/// The pids among `pids` that `/proc` says are kernel threads (those already gone are left
/// out: nothing can be said of them).
fn kernel_threads(pids: impl Iterator<Item = u64>) -> BTreeSet<u64> {
    pids.filter(|&p| p != 0 && is_kernel_thread(p) == Some(true))
        .collect()
}

#[test]
fn kernel_threads_are_counted_but_not_reported_by_default() {
    if skip_without_bpf("kernel_threads_are_counted_but_not_reported_by_default") {
        return;
    }
    let (events, histograms, lost) = capture(&[]);
    assert_eq!(lost["count"], 0, "nothing lost: {lost}");
    let reported = kernel_threads(events.iter().filter_map(|e| e["pid"].as_u64()));
    assert!(
        reported.is_empty(),
        "no event of a kernel thread reaches userspace: {reported:?}"
    );
    assert!(
        !events.is_empty(),
        "user threads' intervals are still reported"
    );
    let counted = kernel_threads(
        histograms
            .iter()
            .filter(|h| h["count"].as_u64().unwrap_or(0) > 0)
            .filter_map(|h| h["pid"].as_u64()),
    );
    assert!(
        !counted.is_empty(),
        "kernel threads' intervals are still counted in the histograms"
    );
    eprintln!(
        "KOTEL-E2E kernel threads: {} events, none of a kernel thread; {} kernel threads counted in histograms",
        events.len(),
        counted.len()
    );
}

#[test]
fn kernel_threads_are_reported_when_asked() {
    if skip_without_bpf("kernel_threads_are_reported_when_asked") {
        return;
    }
    let (events, histograms, _) = capture(&["--kernel-threads"]);
    let reported = kernel_threads(events.iter().filter_map(|e| e["pid"].as_u64()));
    assert!(
        !reported.is_empty(),
        "with --kernel-threads their intervals are reported again"
    );
    // Everything reported is counted too: each reporting kernel thread has its histograms.
    let counted: BTreeSet<u64> = histograms
        .iter()
        .filter_map(|h| h["pid"].as_u64())
        .collect();
    let missing: Vec<_> = reported.difference(&counted).collect();
    assert!(missing.is_empty(), "reported but not counted: {missing:?}");
    eprintln!(
        "KOTEL-E2E --kernel-threads: {} kernel threads reported",
        reported.len()
    );
}
