//! `--format jsonl`: one JSON object per line. Events as they arrive, then one histogram per
//! (pid, kind) — two for off-CPU time, one per `state` — then the loss counters.

use std::io::{self, Write};

use serde::Serialize;

use super::Summary;
use crate::kernel::frame::Frame;
use crate::kernel::Stacks;
use crate::model::{Histogram, KernelEvent, OffcpuState};
use crate::telemetry::catalog::capture_losses;

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
    state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iovcnt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errno: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_stack_id: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_stack_id: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_stack: Option<&'a [Frame]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_stack: Option<&'a [Frame]>,
}

#[derive(Serialize)]
struct HistogramLine<'a> {
    r#type: &'static str,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
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
        state: ev.offcpu_state.map(OffcpuState::name),
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
        state: h.offcpu_state.map(OffcpuState::name),
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
    // The losses as the self-metric catalog declares them, with the per-kind split after the
    // total.
    let mut fields = vec![("type".to_string(), serde_json::json!("lost"))];
    for (key, value) in capture_losses(s.drops, s.undecodable) {
        fields.push((key.to_string(), value.into()));
        if key == "count" {
            fields.push(("per_kind".to_string(), serde_json::json!(s.drops.ringbuf)));
        }
    }
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k.as_str())))
        .collect();
    writeln!(out, "{{{}}}", body.join(","))
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
            offcpu_state: None,
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
        assert!(v.get("state").is_none(), "only off-CPU events have a state");
        assert!(out.ends_with(b"\n") && out.iter().filter(|&&b| b == b'\n').count() == 1);
    }

    #[test]
    fn offcpu_events_and_histograms_say_their_state() {
        let ev = KernelEvent {
            comm: Comm::from_kernel(b"db\0"),
            offcpu_state: Some(OffcpuState::Uninterruptible),
            ..KernelEvent::sample(Probe::Offcpu, 1, 2, 3, 4)
        };
        let mut out = Vec::new();
        write_event(&mut out, &ev, &Stacks::default()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (&v["kind"], &v["state"]),
            (&"offcpu".into(), &"uninterruptible".into())
        );

        let summary = Summary {
            histograms: vec![
                Histogram {
                    offcpu_state: Some(OffcpuState::Interruptible),
                    ..Histogram::of(Probe::Offcpu, 1, 3, &[1_000, 2_000])
                },
                Histogram::of(Probe::Runqueue, 1, 3, &[1_000]),
            ],
            ..Summary::default()
        };
        let mut out = Vec::new();
        write_summary(&mut out, &summary).unwrap();
        let lines: Vec<serde_json::Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines[0]["type"], "histogram");
        assert_eq!(
            (&lines[0]["state"], &lines[0]["count"]),
            (&"interruptible".into(), &2.into())
        );
        assert!(lines[1].get("state").is_none(), "{}", lines[1]);
    }

    /// The closing `lost` line names every kernel-side loss with the value of its own counter.
    #[test]
    fn the_lost_line_reports_each_kernel_loss_under_its_documented_key() {
        let drops = kotel_bpf::DropCounts {
            ringbuf: [1, 2, 3, 4],
            hist_full: 11,
            task_storage: 12,
            lifecycle: 13,
            stack: 14,
            hist_exited: 15,
            switch_late: 17,
            switch_unseen: 18,
            wait_unseen: 19,
            malformed: 16,
        };
        let summary = Summary {
            drops,
            undecodable: 100,
            ..Summary::default()
        };
        let mut out = Vec::new();
        write_summary(&mut out, &summary).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            line,
            serde_json::json!({
                "type": "lost",
                "count": 10,
                "per_kind": [1, 2, 3, 4],
                "histogram_map_full": 11,
                "histogram_after_exit": 15,
                "task_storage_unavailable": 12,
                "switches_unseen": 18,
                "waits_unseen": 19,
                "stacks_not_stored": 14,
                "undecodable": 116,
            })
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("{\"type\":\"lost\",\"count\":10,\"per_kind\":[1,2,3,4],"),
            "{text}"
        );
    }
}
