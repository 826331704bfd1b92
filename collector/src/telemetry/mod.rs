//! The agent's telemetry about itself. Every self-metric is declared once, in [`catalog`], and
//! rendered three ways: `/metrics` ([`prometheus`], served by `server`), the OTLP
//! self-metrics ([`otlp`]) and `summary.json` ([`summary`]). The stages count into
//! [`SelfStats`] and their own stats types; [`AgentTelemetry`] gathers them into one
//! [`catalog::Readings`].

pub mod catalog;
pub mod otlp;
pub mod prometheus;
mod rate_limit;
mod server;
pub mod summary;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use kotel_bpf::DropCounts;

pub use rate_limit::RateLimit;
pub use server::{serve, SampleSource};

use crate::enrich::k8s::PodMetadata;
use crate::export::ExportStats;
use crate::receiver::ReceiverStats;
use catalog::Readings;
use prometheus::Sample;

/// The main loop's counters, and the gauges it publishes once per metrics round. Cheap to
/// update from any thread (relaxed atomics).
#[derive(Debug, Default)]
pub struct SelfStats {
    /// Ring-buffer records decoded into events.
    pub events_received: AtomicU64,
    /// Records that could not be decoded.
    pub records_undecodable: AtomicU64,
    /// Spans built from kernel events.
    pub spans_produced: AtomicU64,
    /// Standalone spans skipped because their process was over its span budget.
    pub spans_skipped_budget: AtomicU64,
    /// Processes whose cached metadata was dropped on exec or exit.
    pub process_invalidations: AtomicU64,
    /// User stacks whose frames all came from the symbolizer's cache.
    pub ustack_hits: AtomicU64,
    /// User stacks symbolized (at least one frame missed the cache).
    pub ustack_misses: AtomicU64,
    /// User stacks that could not be symbolized (process gone, maps unreadable).
    pub ustack_failures: AtomicU64,
    /// User stacks past a drain's symbolization budget, left as `module+0xoff`.
    pub ustack_deferred: AtomicU64,
    /// Slow events with stacks added to OTLP profiles.
    pub profile_samples: AtomicU64,
    /// Slow events left out of OTLP profiles: their interval held the most it may.
    pub profile_samples_dropped: AtomicU64,
    /// User stack frames in a deleted shared library kotel cannot open.
    pub ustack_deleted_frames: AtomicU64,
    /// Pictures rendered.
    pub artifacts_made: AtomicU64,
    /// Pictures skipped (renderer failed or unreachable).
    pub artifacts_skipped: AtomicU64,
    /// Picture files deleted from the output folder past `render.max_pictures`.
    pub artifacts_removed_pictures: AtomicU64,
    /// Files the output folder's `artifacts/` store deleted (size cap or age).
    pub artifacts_removed_store: AtomicU64,
    /// Report pages (`index.html`) that could not be written.
    pub report_failed: AtomicU64,
    /// Histogram slots of exited processes read one last time and reused.
    pub histograms_recycled: AtomicU64,
    /// Series folded into the overflow series.
    pub overflow_series: AtomicU64,
    /// Gauge: processes whose metadata the agent holds.
    pub process_cache_size: AtomicU64,
    /// Gauge: in-kernel histograms of live processes.
    pub histograms_live: AtomicU64,
    /// Gauge: processes with series of their own, summed over probes.
    pub metric_series: AtomicU64,
    /// Set once the probes are attached and the exporter runs.
    pub ready: AtomicBool,
}

/// Everything the self-metrics read, shared between the main loop (which updates it) and the
/// `/metrics` endpoint (which reads it from another thread).
#[derive(Debug)]
pub struct AgentTelemetry {
    /// The main loop's counters and gauges.
    pub stats: SelfStats,
    /// The export queue's counters.
    pub export: ExportStats,
    /// The kernel side's drop counters, as the main loop last read them.
    pub drops: Mutex<DropCounts>,
    /// The OTLP receiver's counters, once it runs.
    pub receiver: OnceLock<Arc<ReceiverStats>>,
    /// The Kubernetes metadata cache, once it runs.
    pub pods: OnceLock<PodMetadata>,
}

impl AgentTelemetry {
    /// Telemetry over the export queue's counters; everything else starts at zero.
    pub fn new(export: ExportStats) -> AgentTelemetry {
        AgentTelemetry {
            stats: SelfStats::default(),
            export,
            drops: Mutex::default(),
            receiver: OnceLock::new(),
            pods: OnceLock::new(),
        }
    }

    /// The kernel side's drop counters, as last read.
    pub fn drops(&self) -> DropCounts {
        self.drops.lock().map(|d| *d).unwrap_or_default()
    }

    /// Records the kernel side's drop counters just read.
    pub fn set_drops(&self, drops: DropCounts) {
        if let Ok(mut d) = self.drops.lock() {
            *d = drops;
        }
    }

    /// Everything the self-metrics read, now.
    pub fn readings(&self) -> Readings<'_> {
        Readings {
            pipeline: &self.stats,
            drops: self.drops(),
            export: &self.export,
            receiver: self.receiver.get().map(|r| &**r),
            pods: self.pods.get().map(PodMetadata::stats),
            export_tls_failures: crate::export::tls::failures(),
            link_unresolved: crate::link::unresolved_spans(),
        }
    }
}

impl SampleSource for AgentTelemetry {
    fn samples(&self) -> Vec<Sample> {
        prometheus::samples(&self.readings())
    }

    fn ready(&self) -> bool {
        self.stats.ready.load(Ordering::Relaxed)
    }
}

/// Reads a counter.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Adds to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Sets a gauge (or a counter the main loop reads from elsewhere as a total).
pub fn set(c: &AtomicU64, v: u64) {
    c.store(v, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::otlp::metrics::{MetricsBuilder, Temporality};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    /// `/metrics`, the OTLP self-metrics and `summary.json`, each read back from what it
    /// rendered, name every self-metric of the catalog, and nothing else.
    #[test]
    fn the_three_outputs_name_the_same_set() {
        let tele = AgentTelemetry::new(ExportStats::default());
        let _ = tele.receiver.set(Arc::default());
        let r = tele.readings();
        let want = |f: fn(&catalog::SelfMetricDef) -> &'static str| -> BTreeSet<&str> {
            catalog::CATALOG.iter().map(f).collect()
        };

        let text = prometheus::render_prometheus(&prometheus::samples(&r));
        let prom: BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        assert_eq!(prom, want(|d| d.prometheus), "/metrics");

        let (counters, gauges) = otlp::self_metrics(&r);
        let mut b = MetricsBuilder::new(Temporality::Cumulative, 8, 0);
        b.set_gauges(gauges);
        let req = b.build(
            &[],
            1,
            &mut |_| Resource::default(),
            Resource::default(),
            &counters,
        );
        let names: BTreeSet<&str> = req
            .resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, want(|d| d.name), "OTLP self-metrics");

        let json = summary::summary_json(&r);
        let mut keys = BTreeSet::new();
        for (k, v) in json.as_object().expect("an object") {
            match v.as_object() {
                Some(section) => keys.extend(section.keys().map(String::as_str)),
                None => {
                    keys.insert(k.as_str());
                }
            }
        }
        let mut parts: BTreeSet<&str> = catalog::CATALOG
            .iter()
            .flat_map(|d| (d.read)(&r))
            .filter_map(|p| p.part)
            .collect();
        parts.extend(want(|d| d.summary));
        assert_eq!(keys, parts, "summary.json");
    }
}
