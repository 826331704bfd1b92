//! Real BPF end to end: `kotel capture` around a workload that knows what it did, checked
//! against that truth — counts, bytes, addresses, sleep and run-queue durations, histograms.

use std::collections::{BTreeMap, HashSet};

use kotel_bpf::buckets::{ns_to_seconds, reference_index};
use kotel_bpf::OVERFLOW_PID;
use kotel_e2e::{capture_jsonl, skip_without_bpf, Workload};
use serde_json::Value;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

fn i32_of(v: &Value) -> i32 {
    v.as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or_else(|| panic!("not an i32: {v}"))
}

struct Captured {
    events: Vec<Value>,
    histograms: Vec<Value>,
    lost: Value,
}

/// One kind's kernel histograms as the workload's events filled them, added up: the workload's
/// own and the kind's overflow histogram ([`OVERFLOW_PID`]). An event of a thread still running
/// once its process's exit has begun (a thread preempted on its way out, switched in again)
/// finds the process's slot retired and is counted in the overflow histogram instead. The
/// capture is limited to the workload in the kernel, so the overflow holds its events only.
struct Histogram {
    count: u64,
    sum_ns: u64,
    max_ns: u64,
    bytes: u64,
    zero_count: u64,
    scale: i32,
    /// Bucket index → count, for the non-empty buckets.
    buckets: BTreeMap<i32, u64>,
}

impl Histogram {
    fn sum(lines: &[&Value]) -> Option<Histogram> {
        let first = lines.first()?;
        let mut h = Histogram {
            count: 0,
            sum_ns: 0,
            max_ns: 0,
            bytes: 0,
            zero_count: 0,
            scale: i32_of(&first["scale"]),
            buckets: BTreeMap::new(),
        };
        for l in lines {
            assert_eq!(i32_of(&l["scale"]), h.scale, "one scale for a kind: {l}");
            h.count += u(&l["count"]);
            h.sum_ns += u(&l["sum_ns"]);
            h.max_ns = h.max_ns.max(u(&l["max_ns"]));
            h.bytes += u(&l["bytes"]);
            h.zero_count += u(&l["zero_count"]);
            let offset = i32_of(&l["offset"]);
            for (i, c) in l["bucket_counts"]
                .as_array()
                .expect("buckets")
                .iter()
                .enumerate()
            {
                if u(c) > 0 {
                    *h.buckets.entry(offset + i as i32).or_default() += u(c);
                }
            }
        }
        Some(h)
    }
}

impl Captured {
    fn events_of(&self, kind: &str, tid: Option<u64>) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["kind"] == kind && tid.is_none_or(|t| u(&e["tid"]) == t))
            .collect()
    }

    /// The workload's `kind` histogram with that kind's overflow histogram added (off-CPU: both
    /// states).
    fn histogram(&self, kind: &str) -> Option<Histogram> {
        let lines: Vec<&Value> = self
            .histograms
            .iter()
            .filter(|h| h["kind"] == kind)
            .collect();
        Histogram::sum(&lines)
    }

    /// What the overflow histograms count, over every kind.
    fn overflow_count(&self) -> u64 {
        self.histograms
            .iter()
            .filter(|h| u(&h["pid"]) == u64::from(OVERFLOW_PID))
            .map(|h| u(&h["count"]))
            .sum()
    }
}

fn capture_workload(extra: &[&str]) -> (Value, Captured) {
    let workload = Workload::start();
    let pid = workload.pid;
    let pid_arg = pid.to_string();
    let mut args = vec!["--pid", &pid_arg];
    args.extend_from_slice(extra);
    // The workload has exited when `run` returns, so every event of it is in.
    let (truth, c) = capture_jsonl(&args, || workload.run());
    let captured = Captured {
        events: c.events,
        histograms: c.histograms,
        lost: c.lost,
    };
    // The pid filter works in the kernel: nothing from other processes. Histograms are the
    // workload's own or the overflow ones, which then count only its events.
    for e in &captured.events {
        assert_eq!(
            u(&e["pid"]),
            u64::from(pid),
            "only the workload is traced: {e}"
        );
    }
    for h in &captured.histograms {
        assert!(
            [u64::from(pid), u64::from(OVERFLOW_PID)].contains(&u(&h["pid"])),
            "only the workload is traced: {h}"
        );
    }
    // The workload alone never fills the histogram slots: whatever an overflow histogram
    // counts came after the workload's exit had begun, and each such event was counted so.
    let lost = &captured.lost;
    assert_eq!(u(&lost["histogram_map_full"]), 0, "lost: {lost}");
    assert_eq!(
        captured.overflow_count(),
        u(&lost["histogram_after_exit"]),
        "overflow histograms vs events after the exit: {lost}"
    );
    if captured.overflow_count() > 0 {
        eprintln!(
            "KOTEL-E2E capture: {} events of pid {} counted after its exit had begun",
            captured.overflow_count(),
            pid
        );
    }
    (truth, captured)
}

#[test]
fn capture_matches_what_the_workload_did() {
    if skip_without_bpf("capture_matches_what_the_workload_did") {
        return;
    }
    // Every event reported, interruptible sleeps too (`--sleep-threshold 0`).
    let (truth, cap) = capture_workload(&[
        "--min-latency",
        "0",
        "--sleep-threshold",
        "0",
        "--probes",
        "all",
    ]);

    // Nothing was lost at this rate.
    assert_eq!(u(&cap.lost["count"]), 0, "lost: {}", cap.lost);

    // writev: exact count and bytes, all from the writev thread.
    let wv = &truth["writev"];
    let writevs = cap.events_of("writev", None);
    assert_eq!(writevs.len() as u64, u(&wv["calls"]), "writev count");
    assert!(
        writevs.iter().all(|e| e["tid"] == wv["tid"]),
        "writev thread id"
    );
    let bytes: u64 = writevs.iter().map(|e| u(&e["bytes"])).sum();
    assert_eq!(bytes, u(&wv["bytes"]), "writev bytes");
    let iovs: HashSet<u64> = writevs.iter().map(|e| u(&e["iovcnt"])).collect();
    assert_eq!(iovs, HashSet::from([1, 2, 3, 4]), "iovec counts");

    // TCP: exact bytes per connection, with the right local and peer addresses, v4 and v6.
    let tcp_events = cap.events_of("tcp_send", None);
    let mut tcp_total = 0;
    for conn in truth["tcp"]
        .as_array()
        .expect("tcp array")
        .iter()
        .filter(|c| !c.is_null())
    {
        let mine: Vec<_> = tcp_events
            .iter()
            .filter(|e| e["local"] == conn["local"])
            .collect();
        assert_eq!(
            mine.len() as u64,
            u(&conn["calls"]),
            "sends on {}",
            conn["local"]
        );
        assert!(mine
            .iter()
            .all(|e| e["peer"] == conn["peer"] && e["tid"] == conn["tid"]));
        assert_eq!(
            mine.iter().map(|e| u(&e["bytes"])).sum::<u64>(),
            u(&conn["bytes"]),
            "bytes on {}",
            conn["local"]
        );
        tcp_total += u(&conn["bytes"]);
    }
    assert!(tcp_total > 0, "at least the IPv4 connection ran");
    assert_eq!(
        tcp_events.iter().map(|e| u(&e["bytes"])).sum::<u64>(),
        tcp_total,
        "no other TCP sends"
    );

    // Off-CPU: each sleep shows up, no shorter than requested and no longer than the sleeping
    // thread itself measured around the call.
    let sleeper = &truth["sleeper"];
    let offcpu: Vec<u64> = cap
        .events_of("offcpu", Some(u(&sleeper["tid"])))
        .iter()
        .map(|e| u(&e["duration_ns"]))
        .filter(|&d| d >= 10_000_000)
        .collect();
    let sleeps = sleeper["sleeps"].as_array().expect("sleeps");
    assert_eq!(
        offcpu.len(),
        sleeps.len(),
        "one long off-CPU interval per sleep: {offcpu:?}"
    );
    // Each sleep blocked in nanosleep, and its kernel stack says so.
    for e in cap
        .events_of("offcpu", Some(u(&sleeper["tid"])))
        .iter()
        .filter(|e| u(&e["duration_ns"]) >= 10_000_000)
    {
        let frames: Vec<&str> = e["kernel_stack"]
            .as_array()
            .expect("kernel stack")
            .iter()
            .filter_map(|f| f.as_str())
            .collect();
        assert!(
            frames.iter().any(|f| f.contains("nanosleep")),
            "sleep stack: {frames:?}"
        );
        assert!(
            !frames[0].starts_with("bpf_"),
            "tracing frames dropped: {frames:?}"
        );
    }
    for (got, s) in offcpu.iter().zip(sleeps) {
        assert!(
            *got >= u(&s["requested_ns"]),
            "off-CPU {got} shorter than the sleep {s}"
        );
        assert!(
            *got <= u(&s["elapsed_ns"]),
            "off-CPU {got} longer than the sleep call took {s}"
        );
    }

    // Run queue: two threads spinning on one CPU wait for each other. A spinner never blocks,
    // so the time it was not running (wall - CPU time) is its run-queue wait.
    for t in truth["spinners"]["threads"]
        .as_array()
        .expect("spinner threads")
    {
        let tid = u(&t["tid"]);
        let waits = cap.events_of("runqueue", Some(tid));
        let waited: u64 = waits.iter().map(|e| u(&e["duration_ns"])).sum();
        let not_running = u(&t["wall_ns"]) - u(&t["cpu_ns"]);
        assert!(
            waits.len() >= 5,
            "spinner {tid} was preempted often: {} waits",
            waits.len()
        );
        assert!(
            not_running > 50_000_000,
            "truth check: spinners shared a CPU ({not_running} ns idle)"
        );
        let (lo, hi) = (
            not_running * 8 / 10,
            not_running + not_running / 5 + 10_000_000,
        );
        assert!(
            (lo..=hi).contains(&waited),
            "spinner {tid}: run-queue {waited} ns vs not running {not_running} ns"
        );
        let cpu = u(&truth["spinners"]["cpu"]);
        let cpus: Vec<u64> = waits.iter().map(|e| u(&e["cpu"])).collect();
        // Pinned from its creation, so every wait, the first one included, ends on that CPU.
        assert!(
            cpus.iter().all(|&c| c == cpu),
            "spinner {tid} ran on {cpus:?}, pinned to {cpu}"
        );
    }

    // With a zero threshold every event is reported, so each kernel histogram must hold exactly
    // those events (off-CPU: its two states added up), each in the bucket the OTLP specification's reference mapping gives its
    // duration: this checks the kernel's bucket search against the spec, not against itself.
    for kind in ["writev", "tcp_send", "runqueue", "offcpu"] {
        let h = cap
            .histogram(kind)
            .unwrap_or_else(|| panic!("histogram for {kind}"));
        let events = cap.events_of(kind, None);
        assert_eq!(h.count, events.len() as u64, "{kind} histogram count");
        assert_eq!(
            h.sum_ns,
            events.iter().map(|e| u(&e["duration_ns"])).sum::<u64>(),
            "{kind} sum"
        );
        let mut want: BTreeMap<i32, u64> = BTreeMap::new();
        let mut zeros = 0;
        for e in &events {
            match u(&e["duration_ns"]) {
                0 => zeros += 1,
                d => {
                    *want
                        .entry(reference_index(ns_to_seconds(d), h.scale))
                        .or_default() += 1
                }
            }
        }
        assert_eq!(
            h.buckets, want,
            "{kind}: kernel buckets vs the OTLP reference mapping"
        );
        assert_eq!(h.zero_count, zeros, "{kind} zero count");
        let max = events
            .iter()
            .map(|e| u(&e["duration_ns"]))
            .max()
            .unwrap_or(0);
        assert_eq!(h.max_ns, max, "{kind} max");
    }
    let wh = cap.histogram("writev").expect("writev histogram");
    assert_eq!(wh.bytes, u(&wv["bytes"]), "histogram bytes");
}

/// Above a threshold only slow events come through the ring buffer, yet the histograms still
/// count every call the workload made.
#[test]
fn threshold_filters_events_but_histograms_count_everything() {
    if skip_without_bpf("threshold_filters_events_but_histograms_count_everything") {
        return;
    }
    let (truth, cap) = capture_workload(&[
        "--min-latency",
        "15ms",
        "--sleep-threshold",
        "0",
        "--probes",
        "writev,offcpu",
    ]);
    assert_eq!(u(&cap.lost["count"]), 0);
    assert!(
        cap.events
            .iter()
            .all(|e| u(&e["duration_ns"]) >= 15_000_000),
        "only slow events"
    );
    assert!(
        cap.events_of("tcp_send", None).is_empty() && cap.events_of("runqueue", None).is_empty(),
        "only the probes asked for"
    );
    let wh = cap.histogram("writev").expect("writev histogram");
    assert_eq!(
        wh.count,
        u(&truth["writev"]["calls"]),
        "every writev counted"
    );
    assert_eq!(wh.bytes, u(&truth["writev"]["bytes"]));
    // The 20, 35 and 50 ms sleeps pass a 15 ms threshold.
    let sleeper = u(&truth["sleeper"]["tid"]);
    assert_eq!(
        cap.events_of("offcpu", Some(sleeper)).len(),
        3,
        "the three sleeps"
    );
    let offcpu = cap.histogram("offcpu").expect("offcpu histogram");
    assert!(
        offcpu.count > 3,
        "short off-CPU intervals are counted, not reported"
    );
}
