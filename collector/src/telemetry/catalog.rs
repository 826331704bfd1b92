//! Every self-metric of the agent, declared once: its OTLP name, its Prometheus name, its key in
//! `summary.json`, unit, help, labels and how to read it. `/metrics` ([`super::prometheus`]),
//! the OTLP self-metrics ([`super::otlp`]) and `summary.json` ([`super::summary`]) are all
//! rendered from [`CATALOG`], so the three always name the same set.

use kotel_bpf::{DropCounts, Probe};

use super::SelfStats;
use crate::enrich::k8s::PodStats;
use crate::enrich::semconv;
use crate::export::{ExportStats, Signal};
use crate::link::resolve::Unresolved;
use crate::receiver::ReceiverStats;

/// Whether a value only grows or is a current level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic since the agent started.
    Counter,
    /// The value now.
    Gauge,
}

/// Label key of the kind of kernel event (`writev`, `tcp_send`, …).
pub const LABEL_KIND: &str = semconv::KOTEL_KIND;
/// Label key of the OTLP signal (`traces`, `metrics`, `logs`, `profiles`).
pub const LABEL_SIGNAL: &str = semconv::KOTEL_SIGNAL;
/// Label key of the reason something was dropped or refused.
pub const LABEL_REASON: &str = semconv::KOTEL_REASON;
/// Label key of how a piece of work ended.
pub const LABEL_OUTCOME: &str = semconv::KOTEL_OUTCOME;

/// One data point of a self-metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// Label values, in the order of [`SelfMetricDef::labels`].
    pub labels: Vec<String>,
    /// The value.
    pub value: u64,
    /// The `summary.json` key that names this point on its own, next to the metric's total
    /// (`dropped_queue_full` beside `dropped`); `None` when only the total is written.
    pub part: Option<&'static str>,
}

impl Point {
    fn plain(value: u64) -> Vec<Point> {
        vec![Point {
            labels: Vec::new(),
            value,
            part: None,
        }]
    }
}

/// Everything a self-metric is read from, gathered at one moment.
#[derive(Debug)]
pub struct Readings<'a> {
    /// The main loop's counters and the gauges it publishes.
    pub pipeline: &'a SelfStats,
    /// The kernel side's drop counters, as last read.
    pub drops: DropCounts,
    /// The export queue's counters.
    pub export: &'a ExportStats,
    /// The OTLP receiver's counters, when it runs (zero otherwise).
    pub receiver: Option<&'a ReceiverStats>,
    /// The Kubernetes metadata cache's counters, when it runs (zero otherwise).
    pub pods: Option<PodStats>,
    /// Export attempts that failed in TLS.
    pub export_tls_failures: u64,
    /// Application spans left unlinked, by reason ([`Unresolved::index`]).
    pub link_unresolved: [u64; Unresolved::ALL.len()],
}

/// The declaration of one self-metric.
#[derive(Debug)]
pub struct SelfMetricDef {
    /// OTLP metric name, `kotel.*`.
    pub name: &'static str,
    /// Name on `/metrics` (counters end in `_total`).
    pub prometheus: &'static str,
    /// Key in `summary.json` (inside the signal's section when the metric has a signal label).
    pub summary: &'static str,
    /// Key in the closing `lost` line of `kotel capture` (kernel-side losses only).
    pub capture: Option<&'static str>,
    /// UCUM unit, with an annotation in braces for counts of things.
    pub unit: &'static str,
    /// What it means, for people.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Label keys (OTLP attribute names; Prometheus drops the `kotel.` prefix).
    pub labels: &'static [&'static str],
    /// Reads its points.
    pub read: fn(&Readings) -> Vec<Point>,
}

/// One point per (label value, counter, `summary.json` part) of a one-label metric.
fn by_label(points: &[(&str, &std::sync::atomic::AtomicU64, &'static str)]) -> Vec<Point> {
    points
        .iter()
        .map(|(label, c, part)| Point {
            labels: vec![label.to_string()],
            value: get(c),
            part: Some(part),
        })
        .collect()
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    super::get(c)
}

/// One point per signal, for what the export queue counts.
fn per_signal(r: &Readings, value: fn(&crate::export::SignalStats) -> u64) -> Vec<Point> {
    Signal::ALL
        .iter()
        .map(|&s| Point {
            labels: vec![s.as_str().to_string()],
            value: value(&r.export.signal(s)),
            part: None,
        })
        .collect()
}

/// One point per signal, for what the file exporter's rotation counts.
fn per_file(r: &Readings, value: fn(&crate::export::FileStats, Signal) -> u64) -> Vec<Point> {
    Signal::ALL
        .iter()
        .map(|&s| Point {
            labels: vec![s.as_str().to_string()],
            value: value(r.export.files(), s),
            part: None,
        })
        .collect()
}

/// Every self-metric the agent has.
pub static CATALOG: &[SelfMetricDef] = &[
    SelfMetricDef {
        name: "kotel.events.received",
        prometheus: "kotel_events_received_total",
        summary: "events_received",
        capture: None,
        unit: "{event}",
        help: "Kernel events decoded from the ring buffer",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(get(&r.pipeline.events_received)),
    },
    SelfMetricDef {
        name: "kotel.events.lost",
        prometheus: "kotel_events_lost_total",
        summary: "events_lost",
        capture: Some("count"),
        unit: "{event}",
        help: "Kernel events the ring buffer had no room for",
        kind: Kind::Counter,
        labels: &[LABEL_KIND],
        read: |r| {
            Probe::ALL
                .iter()
                .map(|p| Point {
                    labels: vec![p.name().to_string()],
                    value: r.drops.ringbuf[usize::from(p.kind())],
                    part: None,
                })
                .collect()
        },
    },
    SelfMetricDef {
        name: "kotel.lifecycle.lost",
        prometheus: "kotel_lifecycle_records_lost_total",
        summary: "lifecycle_records_lost",
        capture: None,
        unit: "{record}",
        help: "Process exec/exit records the ring buffer had no room for (those processes' metadata and histogram slots are refreshed late)",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(r.drops.lifecycle),
    },
    SelfMetricDef {
        name: "kotel.histograms.dropped",
        prometheus: "kotel_histogram_events_dropped_total",
        summary: "histogram_events_dropped",
        capture: Some("histogram_map_full"),
        unit: "{event}",
        help: "Events of processes that found no free histogram slot (counted in the overflow series instead)",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(r.drops.hist_full),
    },
    SelfMetricDef {
        name: "kotel.histograms.after_exit",
        prometheus: "kotel_histogram_events_after_exit_total",
        summary: "histogram_events_after_exit",
        capture: Some("histogram_after_exit"),
        unit: "{event}",
        help: "Events of threads still running after their process's exit retired its histograms (counted in the overflow series instead)",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(r.drops.hist_exited),
    },
    SelfMetricDef {
        name: "kotel.histograms.recycled",
        prometheus: "kotel_histograms_recycled_total",
        summary: "histograms_recycled",
        capture: None,
        unit: "{histogram}",
        help: "Histogram slots of exited processes read one last time and reused",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(get(&r.pipeline.histograms_recycled)),
    },
    SelfMetricDef {
        name: "kotel.task_storage.unavailable",
        prometheus: "kotel_task_storage_unavailable_total",
        summary: "task_storage_unavailable",
        capture: Some("task_storage_unavailable"),
        unit: "{event}",
        help: "Events missed because the kernel could not give a thread its task storage (neither a span nor a histogram count)",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(r.drops.task_storage),
    },
    SelfMetricDef {
        name: "kotel.sched.switches.late",
        prometheus: "kotel_sched_switches_late_total",
        summary: "sched_switches_late",
        capture: None,
        unit: "{switch}",
        help: "Switch-ins the kernel's sched_switch tracepoint never delivered, closed at sched_exit_tp instead (nothing lost: their intervals end there)",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(r.drops.switch_late),
    },
    SelfMetricDef {
        name: "kotel.sched.switches.unseen",
        prometheus: "kotel_sched_switches_unseen_total",
        summary: "sched_switches_unseen",
        capture: Some("switches_unseen"),
        unit: "{interval}",
        help: "Off-CPU intervals lost because their switch-in never reached kotel and the kernel has no sched_exit_tp to close them",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(r.drops.switch_unseen),
    },
    SelfMetricDef {
        name: "kotel.sched.waits.unseen",
        prometheus: "kotel_sched_waits_unseen_total",
        summary: "sched_waits_unseen",
        capture: Some("waits_unseen"),
        unit: "{interval}",
        help: "Run-queue waits lost because the wakeup that began them, or the switch-in that ended them, never reached kotel (the kernel ran no program for it)",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(r.drops.wait_unseen),
    },
    SelfMetricDef {
        name: "kotel.stacks.dropped",
        prometheus: "kotel_stacks_dropped_total",
        summary: "stacks_dropped",
        capture: Some("stacks_not_stored"),
        unit: "{event}",
        help: "Events whose stacks the stack map could not hold (a taken bucket), or whose stacks expired before they were read (their spans carry no stack)",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(r.drops.stack),
    },
    SelfMetricDef {
        name: "kotel.records.undecodable",
        prometheus: "kotel_records_undecodable_total",
        summary: "records_undecodable",
        capture: Some("undecodable"),
        unit: "{record}",
        help: "Ring-buffer records that could not be decoded (wrong size or unknown content)",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(get(&r.pipeline.records_undecodable) + r.drops.malformed),
    },
    SelfMetricDef {
        name: "kotel.spans.produced",
        prometheus: "kotel_spans_produced_total",
        summary: "kernel_spans",
        capture: None,
        unit: "{span}",
        help: "Spans built from kernel events (part of the traces offered for export)",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(get(&r.pipeline.spans_produced)),
    },
    SelfMetricDef {
        name: "kotel.spans.skipped",
        prometheus: "kotel_spans_skipped_total",
        summary: "kernel_spans_skipped",
        capture: None,
        unit: "{span}",
        help: "Kernel spans built but not exported, by reason (budget: their process had its \
               slowest spans of the interval already; linked children are never skipped)",
        kind: Kind::Counter,
        labels: &[LABEL_REASON],
        read: |r| {
            vec![Point {
                labels: vec!["budget".to_string()],
                value: get(&r.pipeline.spans_skipped_budget),
                part: Some("kernel_spans_skipped_budget"),
            }]
        },
    },
    SelfMetricDef {
        name: "kotel.stacks.user.symbolized",
        prometheus: "kotel_stacks_user_symbolized_total",
        summary: "user_stacks",
        capture: None,
        unit: "{stack}",
        help: "User stacks of spans, by outcome of their symbolization (hit: every frame from \
               the cache; miss: symbolized; failed: process gone or maps unreadable; deferred: \
               past the drain's budget, left as module+0xoff)",
        kind: Kind::Counter,
        labels: &[LABEL_OUTCOME],
        read: |r| {
            let p = r.pipeline;
            by_label(&[
                ("hit", &p.ustack_hits, "user_stacks_hit"),
                ("miss", &p.ustack_misses, "user_stacks_miss"),
                ("failed", &p.ustack_failures, "user_stacks_failed"),
                ("deferred", &p.ustack_deferred, "user_stacks_deferred"),
            ])
        },
    },
    SelfMetricDef {
        name: "kotel.profiles.events",
        prometheus: "kotel_profiles_events_total",
        summary: "profile_events",
        capture: None,
        unit: "{event}",
        help: "Slow events with stacks, by outcome in the OTLP profiles (added: a value of a \
               sample; dropped: past the interval's most, 65536)",
        kind: Kind::Counter,
        labels: &[LABEL_OUTCOME],
        read: |r| {
            let p = r.pipeline;
            by_label(&[
                ("added", &p.profile_samples, "profile_events_added"),
                ("dropped", &p.profile_samples_dropped, "profile_events_dropped"),
            ])
        },
    },
    SelfMetricDef {
        name: "kotel.stacks.user.deleted_frames",
        prometheus: "kotel_stacks_user_deleted_frames_total",
        summary: "user_stack_deleted_frames",
        capture: None,
        unit: "{frame}",
        help: "User stack frames left as module+0xoff because their shared library was deleted \
               or replaced since the process mapped it: only /proc/<pid>/map_files reaches it, \
               which needs CAP_SYS_ADMIN (a deleted program is read through /proc/<pid>/exe)",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(get(&r.pipeline.ustack_deleted_frames)),
    },
    SelfMetricDef {
        name: "kotel.export.offered",
        prometheus: "kotel_export_offered_items_total",
        summary: "produced",
        capture: None,
        unit: "{item}",
        help: "Items submitted for export (exported + rejected + dropped + still queued)",
        kind: Kind::Counter,
        labels: &[LABEL_SIGNAL],
        read: |r| per_signal(r, |s| s.offered_items),
    },
    SelfMetricDef {
        name: "kotel.export.exported",
        prometheus: "kotel_export_exported_items_total",
        summary: "exported",
        capture: None,
        unit: "{item}",
        help: "Items the receiver accepted",
        kind: Kind::Counter,
        labels: &[LABEL_SIGNAL],
        read: |r| per_signal(r, |s| s.exported_items),
    },
    SelfMetricDef {
        name: "kotel.export.rejected",
        prometheus: "kotel_export_rejected_items_total",
        summary: "rejected",
        capture: None,
        unit: "{item}",
        help: "Items the receiver rejected through OTLP partial success (not retried)",
        kind: Kind::Counter,
        labels: &[LABEL_SIGNAL],
        read: |r| per_signal(r, |s| s.rejected_items),
    },
    SelfMetricDef {
        name: "kotel.export.dropped",
        prometheus: "kotel_export_dropped_items_total",
        summary: "dropped",
        capture: None,
        unit: "{item}",
        help: "Items dropped before delivery, by reason",
        kind: Kind::Counter,
        labels: &[LABEL_SIGNAL, LABEL_REASON],
        read: |r| {
            let mut out = Vec::new();
            for s in Signal::ALL {
                for (reason, value) in r.export.signal(s).dropped_by_reason() {
                    out.push(Point {
                        labels: vec![s.as_str().to_string(), reason.as_str().to_string()],
                        value,
                        part: Some(reason.summary_key()),
                    });
                }
            }
            out
        },
    },
    SelfMetricDef {
        name: "kotel.files.rotated",
        prometheus: "kotel_files_rotated_total",
        summary: "files_rotated",
        capture: None,
        unit: "{file}",
        help: "OTLP JSON lines files renamed to a backup because the next line would take them past export.rotation.max_bytes",
        kind: Kind::Counter,
        labels: &[LABEL_SIGNAL],
        read: |r| per_file(r, crate::export::FileStats::rotated),
    },
    SelfMetricDef {
        name: "kotel.files.removed",
        prometheus: "kotel_files_removed_total",
        summary: "files_removed",
        capture: None,
        unit: "{file}",
        help: "Backups of the OTLP JSON lines files deleted, oldest first, past export.rotation.max_backups",
        kind: Kind::Counter,
        labels: &[LABEL_SIGNAL],
        read: |r| per_file(r, crate::export::FileStats::removed),
    },
    SelfMetricDef {
        name: "kotel.export.tls_failures",
        prometheus: "kotel_export_tls_failures_total",
        summary: "export_tls_failures",
        capture: None,
        unit: "{attempt}",
        help: "Export attempts that failed in TLS (handshake refused either way)",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(r.export_tls_failures),
    },
    SelfMetricDef {
        name: "kotel.receiver.accepted",
        prometheus: "kotel_receiver_accepted_items_total",
        summary: "receiver_accepted",
        capture: None,
        unit: "{item}",
        help: "Items applications sent that the OTLP receiver accepted",
        kind: Kind::Counter,
        labels: &[LABEL_SIGNAL],
        read: |r| {
            Signal::ALL
                .iter()
                .map(|&s| Point {
                    labels: vec![s.as_str().to_string()],
                    value: r.receiver.map_or(0, |rs| rs.accepted_items(s)),
                    part: None,
                })
                .collect()
        },
    },
    SelfMetricDef {
        name: "kotel.receiver.rejected",
        prometheus: "kotel_receiver_rejected_total",
        summary: "receiver_rejected",
        capture: None,
        unit: "{request}",
        help: "Requests (or, for tls_handshake, connections) the OTLP receiver refused",
        kind: Kind::Counter,
        labels: &[LABEL_REASON],
        read: |r| {
            crate::receiver::Reject::ALL
                .iter()
                .map(|&reason| Point {
                    labels: vec![reason.as_str().to_string()],
                    value: r.receiver.map_or(0, |rs| rs.rejected_for(reason)),
                    part: Some(reason.summary_key()),
                })
                .collect()
        },
    },
    SelfMetricDef {
        name: "kotel.link.unresolved",
        prometheus: "kotel_link_unresolved_spans_total",
        summary: "link_unresolved",
        capture: None,
        unit: "{span}",
        help: "Application spans left unlinked because the process their resource names was not found (gone, ambiguous, container_mismatch, invalid); forwarded without kernel data",
        kind: Kind::Counter,
        labels: &[LABEL_REASON],
        read: |r| {
            Unresolved::ALL
                .iter()
                .map(|&why| Point {
                    labels: vec![why.as_str().to_string()],
                    value: r.link_unresolved[why.index()],
                    part: Some(why.summary_key()),
                })
                .collect()
        },
    },
    SelfMetricDef {
        name: "kotel.k8s.api_errors",
        prometheus: "kotel_k8s_api_errors_total",
        summary: "k8s_api_errors",
        capture: None,
        unit: "{call}",
        help: "Kubernetes API calls that failed (pod metadata is missing meanwhile)",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(r.pods.as_ref().map_or(0, |p| p.api_errors)),
    },
    SelfMetricDef {
        name: "kotel.k8s.evictions",
        prometheus: "kotel_k8s_evictions_total",
        summary: "k8s_evictions",
        capture: None,
        unit: "{pod}",
        help: "Pods dropped from the metadata cache because it was full",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(r.pods.as_ref().map_or(0, |p| p.evictions)),
    },
    SelfMetricDef {
        name: "kotel.artifacts.made",
        prometheus: "kotel_artifacts_made_total",
        summary: "artifacts_made",
        capture: None,
        unit: "{picture}",
        help: "Pictures (heatmaps, flame graphs) rendered and stored",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(get(&r.pipeline.artifacts_made)),
    },
    SelfMetricDef {
        name: "kotel.artifacts.skipped",
        prometheus: "kotel_artifacts_skipped_total",
        summary: "artifacts_skipped",
        capture: None,
        unit: "{picture}",
        help: "Pictures skipped because rendering failed or the renderer was unreachable",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(get(&r.pipeline.artifacts_skipped)),
    },
    SelfMetricDef {
        name: "kotel.artifacts.removed",
        prometheus: "kotel_artifacts_removed_total",
        summary: "artifacts_removed",
        capture: None,
        unit: "{file}",
        help: "Picture files deleted from the output folder: past render.max_pictures (max_pictures), or from its artifacts/ store past render.store_max_bytes or an hour old (store)",
        kind: Kind::Counter,
        labels: &[LABEL_REASON],
        read: |r| {
            vec![
                Point {
                    labels: vec!["max_pictures".into()],
                    value: get(&r.pipeline.artifacts_removed_pictures),
                    part: Some("artifacts_removed_max_pictures"),
                },
                Point {
                    labels: vec!["store".into()],
                    value: get(&r.pipeline.artifacts_removed_store),
                    part: Some("artifacts_removed_store"),
                },
            ]
        },
    },
    SelfMetricDef {
        name: "kotel.report.failed",
        prometheus: "kotel_report_failed_total",
        summary: "report_failed",
        capture: None,
        unit: "{page}",
        help: "Report pages (index.html in the output folder) that could not be written",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(get(&r.pipeline.report_failed)),
    },
    SelfMetricDef {
        name: "kotel.process_cache.invalidations",
        prometheus: "kotel_process_cache_invalidations_total",
        summary: "process_invalidations",
        capture: None,
        unit: "{process}",
        help: "Processes whose cached metadata was dropped on exec or exit",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(get(&r.pipeline.process_invalidations)),
    },
    SelfMetricDef {
        name: "kotel.metric.overflow.series",
        prometheus: "kotel_metric_overflow_series_total",
        summary: "metric_overflow_series",
        capture: None,
        unit: "{series}",
        help: "Series folded into the overflow series (metrics.cardinality_limit reached)",
        kind: Kind::Counter,
        labels: &[],
        read: |r| Point::plain(get(&r.pipeline.overflow_series)),
    },
    SelfMetricDef {
        name: "kotel.process_cache.size",
        prometheus: "kotel_process_cache_size",
        summary: "process_cache_size",
        capture: None,
        unit: "{process}",
        help: "Processes whose metadata the agent holds",
        kind: Kind::Gauge,
        labels: &[],
        read: |r| Point::plain(get(&r.pipeline.process_cache_size)),
    },
    SelfMetricDef {
        name: "kotel.histograms.live",
        prometheus: "kotel_histograms_live",
        summary: "histograms_live",
        capture: None,
        unit: "{histogram}",
        help: "In-kernel histograms of live processes (slots in use)",
        kind: Kind::Gauge,
        labels: &[],
        read: |r| Point::plain(get(&r.pipeline.histograms_live)),
    },
    SelfMetricDef {
        name: "kotel.metric.series",
        prometheus: "kotel_metric_series",
        summary: "metric_series",
        capture: None,
        unit: "{series}",
        help: "Processes with series of their own, summed over probes (each probe at most metrics.cardinality_limit)",
        kind: Kind::Gauge,
        labels: &[],
        read: |r| Point::plain(get(&r.pipeline.metric_series)),
    },
];

/// What `kotel capture` closes with: each kernel-side loss, under its capture key, summed
/// over labels, in catalog order.
pub fn capture_losses(drops: DropCounts, undecodable: u64) -> Vec<(&'static str, u64)> {
    let pipeline = SelfStats::default();
    super::add(&pipeline.records_undecodable, undecodable);
    let export = ExportStats::default();
    let r = Readings {
        pipeline: &pipeline,
        drops,
        export: &export,
        receiver: None,
        pods: None,
        export_tls_failures: 0,
        link_unresolved: Default::default(),
    };
    CATALOG
        .iter()
        .filter_map(|d| Some((d.capture?, (d.read)(&r).iter().map(|p| p.value).sum())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_follow_each_outputs_rules() {
        let (mut names, mut prom, mut keys) = (HashSet::new(), HashSet::new(), HashSet::new());
        for def in CATALOG {
            assert!(names.insert(def.name), "{} twice", def.name);
            assert!(prom.insert(def.prometheus), "{} twice", def.prometheus);
            let section = def.labels.contains(&LABEL_SIGNAL);
            assert!(keys.insert((section, def.summary)), "{} twice", def.summary);
            assert!(def.name.starts_with("kotel."), "{}", def.name);
            assert!(def.prometheus.starts_with("kotel_"), "{}", def.prometheus);
            assert_eq!(
                def.prometheus.ends_with("_total"),
                def.kind == Kind::Counter,
                "{}: counters and only counters end in _total",
                def.prometheus
            );
            assert!(!def.help.is_empty() && !def.unit.is_empty());
        }
    }
}
