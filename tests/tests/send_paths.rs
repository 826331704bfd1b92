//! Every TCP send is counted, whatever the system call: `kotel-send-paths` sends known bytes
//! through write, writev, send, sendmsg, sendmmsg, sendfile, splice and io_uring (one loopback
//! connection each, the peer counting what it received), and a send that blocks on a late
//! reader. kotel's `tcp_send` probe, on the socket tracepoints, must report exactly those bytes
//! on the right connections, in intervals that lie inside the calls.

use kotel_e2e::{skip_without_bpf, SendCapture};
use serde_json::Value;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

#[test]
fn every_send_path_is_counted_to_the_byte() {
    if skip_without_bpf("every_send_path_is_counted_to_the_byte") {
        return;
    }
    let cap = SendCapture::run(&[]);
    assert!(
        cap.stderr
            .contains("kotel.probe.hooks: probe tcp_send on socket tracepoints"),
        "the socket tracepoints are used here: {}",
        cap.stderr
    );
    let mut programs = cap.programs.clone();
    programs.sort_unstable();
    assert_eq!(
        programs,
        ["sched_process_exit", "tcp_send_begin", "tcp_send_end"],
        "attached (and detached at exit: checked) the socket hooks alone"
    );
    let paths = cap.truth["paths"].as_array().expect("paths");
    let names: Vec<&str> = paths.iter().filter_map(|p| p["path"].as_str()).collect();
    for want in [
        "write", "writev", "send", "sendmsg", "sendmmsg", "sendfile", "splice",
    ] {
        assert!(names.contains(&want), "the workload ran {want}: {names:?}");
    }
    eprintln!("KOTEL-E2E send paths: {names:?}");
    let mut total = 0;
    for p in paths {
        let name = p["path"].as_str().expect("path name");
        let mine = cap.events_of(p);
        // The bytes: exactly what the calls sent, which is what the peer received.
        let bytes: u64 = mine.iter().map(|e| u(&e["bytes"])).sum();
        assert_eq!(bytes, u(&p["received"]), "{name}: bytes");
        total += bytes;
        assert!(
            mine.iter().all(|e| e["peer"] == p["peer"]),
            "{name}: peer address"
        );
        // One event per send; sendfile and splice hand the socket one batch of pages at a
        // time, so at least one per call.
        let n = mine.len() as u64;
        match name {
            "sendfile" | "splice" => assert!(n >= u(&p["calls"]), "{name}: {n} sends"),
            _ => assert_eq!(n, u(&p["sends"]), "{name}: sends"),
        }
        // io_uring may send from one of the process's io-wq workers.
        if name != "io_uring" {
            assert!(mine.iter().all(|e| e["tid"] == p["tid"]), "{name}: thread");
        }
        // The intervals lie inside the calls that made them.
        let kernel: u64 = mine.iter().map(|e| u(&e["duration_ns"])).sum();
        assert!(
            kernel <= u(&p["call_ns"]),
            "{name}: {kernel} ns in the kernel's sends, {} ns in the calls",
            p["call_ns"]
        );
    }
    assert_eq!(
        cap.events.iter().map(|e| u(&e["bytes"])).sum::<u64>(),
        total,
        "no other TCP sends"
    );
    let h = cap.histogram.as_ref().expect("a tcp_send histogram");
    assert_eq!(u(&h["count"]), cap.events.len() as u64, "histogram count");
    assert_eq!(u(&h["bytes"]), total, "histogram bytes");
}

/// The send opens at the first `tcp_sendmsg_locked`, with the socket lock held, and closes at
/// `sock_send_length`: a send that waits for the peer to make room is timed with that wait.
/// Only the syscall's entry and exit and the lock are outside, plus whatever time the writer
/// then spent waiting for a CPU (kotel's own run-queue events of that thread say how much):
/// the rest of the calls are their sends, to within a few milliseconds.
#[test]
fn a_send_that_waits_for_room_is_timed_with_its_wait() {
    if skip_without_bpf("a_send_that_waits_for_room_is_timed_with_its_wait") {
        return;
    }
    let cap = SendCapture::run_probes("tcp_send,runqueue", &[]);
    let p = cap.path("blocking").expect("the blocking send ran");
    let mine = cap.events_of(p);
    assert_eq!(
        mine.len() as u64,
        u(&p["calls"]),
        "one send per write: {mine:?}"
    );
    let longest = mine.iter().map(|e| u(&e["duration_ns"])).max().unwrap_or(0);
    assert!(
        longest >= u(&p["reader_delay_ns"]) / 2,
        "a send waited for the late reader: {longest} ns"
    );
    let (got, call) = (
        mine.iter().map(|e| u(&e["duration_ns"])).sum::<u64>(),
        u(&p["call_ns"]),
    );
    assert!(got <= call, "inside the calls: {got} ns of {call} ns");
    let span = |e: &Value| {
        let start = u(&e["start_unix_nano"]);
        [start, start + u(&e["duration_ns"])]
    };
    let sends: Vec<[u64; 2]> = mine.iter().map(|e| span(e)).collect();
    let calls: Vec<[u64; 2]> = p["call_windows"]
        .as_array()
        .expect("call windows")
        .iter()
        .map(|w| [u(&w[0]), u(&w[1])])
        .collect();
    assert_eq!(calls.len() as u64, u(&p["calls"]));
    let waits: Vec<[u64; 2]> = cap
        .runqueue
        .iter()
        .filter(|e| e["tid"] == p["tid"])
        .map(span)
        .collect();
    // Waits for a CPU inside the calls but outside the sends (sends lie within their calls).
    let waited: u64 = waits
        .iter()
        .map(|w| {
            let in_calls: u64 = calls.iter().map(|c| overlap(*w, *c)).sum();
            let in_sends: u64 = sends.iter().map(|s| overlap(*w, *s)).sum();
            in_calls.saturating_sub(in_sends)
        })
        .sum();
    let outside = call - got;
    assert!(
        outside.saturating_sub(waited) < 5_000_000,
        "the calls' time outside the kernel's sends, less the writer's waits for a CPU there, \
         is small: {got} ns of {call} ns in sends, {waited} ns waiting for a CPU"
    );
    eprintln!(
        "KOTEL-E2E blocking send: {} write calls, {call} ns in them, tcp_send {got} ns, outside {outside} ns \
         (of which waiting for a CPU {waited} ns)",
        mine.len(),
    );
}

/// Nanoseconds two half-open intervals share.
fn overlap(a: [u64; 2], b: [u64; 2]) -> u64 {
    a[1].min(b[1]).saturating_sub(a[0].max(b[0]))
}
