//! Loss accounting under a flood: four threads issue writev as fast as they can while kotel
//! captures every event (`--min-latency 0`) through a deliberately small ring buffer. Events
//! will be lost, and every one must be counted: received + lost equals what the workload did.

use std::process::Command;

use kotel_e2e::{built_binary, skip_without_bpf, writev_counts, Kotel};

#[test]
fn every_event_is_received_or_counted_as_lost() {
    if skip_without_bpf("every_event_is_received_or_counted_as_lost") {
        return;
    }
    let kotel = Kotel::start(&[
        "capture",
        "--probes",
        "writev",
        "--min-latency",
        "0",
        "--ring-buffer-bytes",
        "65536",
        "--format",
        "table",
        "--duration",
        "0",
    ]);
    let out = Command::new(built_binary("kotel-writev-loop"))
        .args(["--threads", "4", "--calls", "1000000"])
        .output()
        .expect("run the loop");
    assert!(out.status.success());
    let truth: serde_json::Value = serde_json::from_slice(&out.stdout).expect("loop json");
    let pid = truth["pid"].as_u64().expect("pid");
    // The loop's own count, plus its 10 000-call warm-up.
    let made = truth["calls"].as_u64().expect("calls") + 10_000;
    // The loop has exited, so each of its calls is in the ring buffer or counted as lost: kotel
    // drains the buffer once more after the interrupt, before it prints anything.
    let (code, stdout, stderr) = kotel.interrupt();
    assert_eq!(code, 0, "{stderr}");

    let rows = writev_counts(&stdout);
    let counted = rows
        .iter()
        .find(|(p, _)| *p == pid.to_string())
        .map(|(_, c)| *c)
        .expect("a writev row for the loop");
    assert_eq!(counted, made, "the kernel histogram counts every call");
    let lost: u64 = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("lost events ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("lost line");
    let received: u64 = stderr
        .lines()
        .find_map(|l| {
            l.split("slow_events=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("received count");
    // Other processes' writev calls are in `received` and `lost` too; the loop dominates, so
    // check the balance over everything kotel saw: every event is received or lost.
    let all_counted: u64 = rows.iter().map(|(_, c)| c).sum();
    // The loop's own rate over its counted calls (printed, never asserted).
    let rate = truth["calls_per_s"].as_u64().unwrap_or(0);
    eprintln!(
        "flood: made {made} at {:.2} M calls/s, received {received}, lost {lost}, all writev \
         counted {all_counted}",
        rate as f64 / 1e6
    );
    assert!(
        lost > 0,
        "a 64 KiB ring buffer must overflow under this flood"
    );
    assert_eq!(
        received + lost,
        all_counted,
        "every event was received or counted as lost"
    );
}
