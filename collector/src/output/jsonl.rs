//! `--format jsonl`: one JSON object per line. Events as they arrive, then one histogram per
//! (pid, kind), then the loss counters.

use std::io::{self, Write};

use serde::Serialize;

use super::Summary;
use crate::kernel::Stacks;
use crate::model::{Histogram, KernelEvent};

#[derive(Serialize)]
struct EventLine<'a> {
    r#type: &'static str,
    kind: &'static str,
    pid: u32,
    tid: u32,
    comm: &'a str,
    cpu: u32,
    start_unix_nano: u64,
    duration_ns: u64,
    bytes: Option<u64>,
    fd: Option<i32>,
    local: Option<String>,
    peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iovcnt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errno: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_stack_id: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_stack_id: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_stack: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_stack: Option<&'a [String]>,
}

#[derive(Serialize)]
struct HistogramLine<'a> {
    r#type: &'static str,
    kind: &'static str,
    pid: u32,
    comm: &'a str,
    count: u64,
    sum_ns: u64,
    max_ns: u64,
    bytes: u64,
    scale: i32,
    zero_count: u64,
    offset: i32,
    bucket_counts: &'a [u64],
    clamped: u64,
}

#[derive(Serialize)]
struct LostLine {
    r#type: &'static str,
    count: u64,
    per_kind: [u64; 4],
    histogram_map_full: u64,
    histogram_after_exit: u64,
    task_storage_unavailable: u64,
    stacks_not_stored: u64,
    undecodable: u64,
}

/// Writes one event line.
pub fn write_event(out: &mut impl Write, ev: &KernelEvent, stacks: &Stacks) -> io::Result<()> {
    let comm = ev.comm.to_string_lossy();
    let line = EventLine {
        r#type: "event",
        kind: ev.kind.name(),
        pid: ev.pid,
        tid: ev.tid,
        comm: &comm,
        cpu: ev.cpu,
        start_unix_nano: ev.start_unix_nano,
        duration_ns: ev.duration_ns,
        bytes: ev.bytes,
        fd: ev.fd,
        local: ev.local.map(|a| a.to_string()),
        peer: ev.peer.map(|a| a.to_string()),
        iovcnt: ev.iovcnt,
        errno: ev.errno,
        kernel_stack_id: ev.kernel_stack_id,
        user_stack_id: ev.user_stack_id,
        kernel_stack: stacks.kernel.as_deref(),
        user_stack: stacks.user.as_deref(),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

fn write_histogram(out: &mut impl Write, h: &Histogram, comm: &str) -> io::Result<()> {
    let line = HistogramLine {
        r#type: "histogram",
        kind: h.kind.name(),
        pid: h.pid,
        comm,
        count: h.count,
        sum_ns: h.sum_ns,
        max_ns: h.max_ns,
        bytes: h.bytes,
        scale: h.scale,
        zero_count: h.zero_count,
        offset: h.offset,
        bucket_counts: &h.bucket_counts,
        clamped: h.clamped,
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

/// Writes the closing lines: histograms, then losses.
pub fn write_summary(out: &mut impl Write, s: &Summary) -> io::Result<()> {
    for h in &s.histograms {
        write_histogram(out, h, &s.process_name(h.pid))?;
    }
    let lost = LostLine {
        r#type: "lost",
        count: s.drops.lost_events(),
        per_kind: s.drops.ringbuf,
        histogram_map_full: s.drops.hist_full,
        histogram_after_exit: s.drops.hist_exited,
        task_storage_unavailable: s.drops.task_storage,
        stacks_not_stored: s.drops.stack,
        undecodable: s.undecodable + s.drops.malformed,
    };
    serde_json::to_writer(&mut *out, &lost)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Comm;
    use kotel_bpf::Probe;

    #[test]
    fn event_lines_have_the_documented_shape() {
        let ev = KernelEvent {
            kind: Probe::TcpSend,
            pid: 1,
            tid: 2,
            comm: Comm::from_kernel(b"a\"b\0"),
            cpu: 0,
            start_unix_nano: 3,
            duration_ns: 4,
            bytes: Some(5),
            errno: None,
            fd: Some(6),
            iovcnt: None,
            local: Some("127.0.0.1:1".parse().unwrap()),
            peer: Some("[::1]:2".parse().unwrap()),
            kernel_stack_id: None,
            user_stack_id: None,
        };
        let mut out = Vec::new();
        write_event(&mut out, &ev, &Stacks::default()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["kind"], "tcp_send");
        assert_eq!(v["comm"], "a\"b");
        assert_eq!(v["local"], "127.0.0.1:1");
        assert_eq!(v["peer"], "[::1]:2");
        assert_eq!(v["bytes"], 5);
        assert!(out.ends_with(b"\n") && out.iter().filter(|&&b| b == b'\n').count() == 1);
    }
}
