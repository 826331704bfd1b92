//! `--format table`: a live status line on a terminal, then a per-process summary.

use std::io::{self, Write};
use std::time::Duration;

use super::Summary;
use crate::model::OffcpuState;
use crate::quantile::quantile_ns;
use crate::telemetry::catalog::capture_losses;

/// Formats nanoseconds for people: 850ns, 12.3µs, 4.56ms, 1.20s.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

/// Formats a byte count: 512B, 1.5KiB, 3.0MiB.
pub fn human_bytes(n: u64) -> String {
    match n {
        0..=1023 => format!("{n}B"),
        1024..=1_048_575 => format!("{:.1}KiB", n as f64 / 1024.0),
        _ => format!("{:.1}MiB", n as f64 / 1_048_576.0),
    }
}

/// Rewrites the status line in place.
pub fn write_status(
    out: &mut impl Write,
    elapsed: Duration,
    events: u64,
    lost: u64,
) -> io::Result<()> {
    write!(
        out,
        "\r\x1b[2Kkotel: capturing {:.1}s  slow events {events}  lost {lost}",
        elapsed.as_secs_f64()
    )?;
    out.flush()
}

/// Writes the per-process summary table: one row per histogram, off-CPU time in two rows
/// (STATE `interruptible`: idle waits; `uninterruptible`: blocked on a resource).
pub fn write_summary(out: &mut impl Write, s: &Summary) -> io::Result<()> {
    writeln!(
        out,
        "{:>8} {:<16} {:<9} {:<15} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "PID", "COMM", "PROBE", "STATE", "COUNT", "P50", "P99", "MAX", "BYTES"
    )?;
    for h in &s.histograms {
        let q = |p| {
            quantile_ns(h, p)
                .map(human_ns)
                .unwrap_or_else(|| "-".into())
        };
        let bytes = match h.kind {
            kotel_bpf::Probe::Writev | kotel_bpf::Probe::TcpSend => human_bytes(h.bytes),
            _ => "-".into(),
        };
        writeln!(
            out,
            "{:>8} {:<16} {:<9} {:<15} {:>10} {:>10} {:>10} {:>10} {:>10}",
            h.pid,
            s.process_name(h.pid),
            h.kind.name(),
            h.offcpu_state.map_or("-", OffcpuState::name),
            h.count,
            q(0.5),
            q(0.99),
            human_ns(h.max_ns),
            bytes
        )?;
    }
    let losses = capture_losses(s.drops, s.undecodable);
    let (total, parts) = losses
        .split_first()
        .expect("the catalog declares kernel losses");
    let parts: Vec<String> = parts
        .iter()
        .map(|(k, v)| format!("{} {v}", k.replace('_', " ")))
        .collect();
    writeln!(out, "lost events {}  ({})", total.1, parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_readable() {
        assert_eq!(human_ns(850), "850ns");
        assert_eq!(human_ns(12_300), "12.3µs");
        assert_eq!(human_ns(4_560_000), "4.56ms");
        assert_eq!(human_ns(1_200_000_000), "1.20s");
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.5KiB");
    }

    #[test]
    fn offcpu_rows_name_their_state() {
        use crate::model::{Comm, Histogram};
        use kotel_bpf::Probe;
        let state = |s| Histogram {
            offcpu_state: Some(s),
            ..Histogram::of(Probe::Offcpu, 7, 3, &[2_000_000])
        };
        let summary = Summary {
            histograms: vec![
                Histogram::of(Probe::Runqueue, 7, 3, &[1_000]),
                state(OffcpuState::Interruptible),
                state(OffcpuState::Uninterruptible),
            ],
            comms: [(7, Comm::from_kernel(b"db\0"))].into_iter().collect(),
            ..Summary::default()
        };
        let mut out = Vec::new();
        write_summary(&mut out, &summary).unwrap();
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .take(4)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0][..5], ["PID", "COMM", "PROBE", "STATE", "COUNT"]);
        assert_eq!(rows[1][..5], ["7", "db", "runqueue", "-", "1"]);
        assert_eq!(rows[2][..5], ["7", "db", "offcpu", "interruptible", "1"]);
        assert_eq!(rows[3][..5], ["7", "db", "offcpu", "uninterruptible", "1"]);
    }
}
