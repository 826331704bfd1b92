//! Phase: the periodic work of each round. Expired link-buffer events and processes go, due
//! span batches are queued, the kernel's drop counts are read, a heatmap column is sampled,
//! and once per metrics interval the pictures are drawn, the budget's spans released and a metrics
//! request built.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::{Agent, RunError};
use crate::artifacts::ArtifactRef;
use crate::enrich::semconv;
use crate::export::{Batch, ExportQueue, Signal};
use crate::model::Comm;
use crate::otlp::attrs;
use crate::otlp::traces::SpanBatcher;
use crate::telemetry::{self, otlp::self_metrics};

/// How often the link buffer and the process cache are swept.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// How often the status line is redrawn.
const STATUS_EVERY: Duration = Duration::from_millis(250);

impl Agent {
    /// This round's periodic work; `done` forces everything due at the end.
    pub(super) fn tick(&mut self, done: bool) -> Result<(), RunError> {
        if self.timers.last_expiry.elapsed() >= EXPIRE_EVERY {
            self.timers.last_expiry = Instant::now();
            let released = self.linker.expire(super::setup::unix_now());
            self.settle(released);
            self.resources.cache.sweep();
        }
        if self.batcher.due() || (done && !self.batcher.is_empty()) {
            self.queue_spans();
        }
        self.tele.set_drops(self.kernel.drops()?);
        if done || Instant::now() >= self.timers.next_column {
            self.sample_column()?;
        }
        if done || Instant::now() >= self.timers.next_metrics {
            self.timers.next_metrics = Instant::now() + self.plan.interval;
            self.draw_pictures();
            self.report_live();
            if done {
                self.queue_spans();
            }
            self.metrics_round()?;
        }
        self.kernel.tick();
        self.status_line();
        Ok(())
    }

    /// Queues every span the batcher holds, one request per batch.
    fn queue_spans(&mut self) {
        let resources = &mut self.resources;
        queue_batches(&mut self.batcher, &mut |pid| resources.of(pid), &self.queue);
    }

    /// One heatmap column from the live histograms.
    fn sample_column(&mut self) -> Result<(), RunError> {
        let Some(a) = self.artifacts.as_mut() else {
            return Ok(());
        };
        self.timers.next_column = Instant::now() + a.column_width();
        let histograms = self.kernel.histograms()?;
        a.sample(&histograms, super::setup::unix_now());
        Ok(())
    }

    /// Draws the interval's heatmaps and flame graph, attaches them to the slowest exemplar of
    /// each series and to its span (the budget's slowest of that series), and releases the
    /// budget's spans to the batcher.
    fn draw_pictures(&mut self) {
        let Some(a) = self.artifacts.as_mut() else {
            for (pid, span) in self.budget.drain(&mut |_, _| Vec::new()) {
                self.batcher.push(pid, span);
            }
            return;
        };
        let comms = &self.resources.comms;
        let names = |pid: u32| {
            comms
                .get(&pid)
                .map(Comm::to_string_lossy)
                .unwrap_or_default()
        };
        let refs = a.render_heatmaps(self.metrics.slowest(), &names);
        for (key, r) in &refs {
            self.metrics.attach(*key, artifact_attrs(r));
        }
        if let Some(flame) = a.render_flame() {
            tracing::debug!(url = %flame.url, "kotel.artifact.flame");
        }
        let mut picture = |pid, kind| {
            refs.get(&(pid, kind))
                .map(artifact_attrs)
                .unwrap_or_default()
        };
        for (pid, span) in self.budget.drain(&mut picture) {
            self.batcher.push(pid, span);
        }
        let stats = &self.tele.stats;
        telemetry::set(&stats.artifacts_made, a.made);
        telemetry::set(&stats.artifacts_skipped, a.skipped);
        telemetry::set(&stats.artifacts_removed_pictures, a.removed_pictures());
        telemetry::set(&stats.artifacts_removed_store, a.removed_from_store());
    }

    /// Publishes the gauges, then queues one metrics request: the kernel histograms with their
    /// exemplars, and the self-metrics.
    fn metrics_round(&mut self) -> Result<(), RunError> {
        let histograms = self.kernel.histograms()?;
        let stats = &self.tele.stats;
        telemetry::set(
            &stats.histograms_live,
            histograms
                .iter()
                .filter(|h| h.pid != kotel_bpf::OVERFLOW_PID)
                .count() as u64,
        );
        telemetry::set(
            &stats.histograms_recycled,
            self.kernel.recycled_histograms(),
        );
        telemetry::set(&stats.overflow_series, self.metrics.overflowed_series());
        telemetry::set(&stats.metric_series, self.metrics.admitted_series() as u64);
        telemetry::set(&stats.process_cache_size, self.resources.cache.len() as u64);
        let (counters, gauges) = self_metrics(&self.tele.readings());
        self.metrics.set_gauges(gauges);
        let agent = self.resources.agent();
        let resources = &mut self.resources;
        let req = self.metrics.build(
            &histograms,
            super::setup::unix_now(),
            &mut |pid| resources.of(pid),
            agent,
            &counters,
        );
        let _ = self.queue.submit(Batch::Metrics(req)); // a refusal is counted by the queue
        Ok(())
    }

    /// Redraws the status line on a terminal.
    fn status_line(&mut self) {
        if !self.plan.show_status || self.timers.last_status.elapsed() < STATUS_EVERY {
            return;
        }
        self.timers.last_status = Instant::now();
        let t = self.queue.stats().signal(Signal::Traces);
        let _ = write!(
            io::stderr(),
            "\r\x1b[2Kkotel: running {:.1}s  spans {}  exported {}  dropped {}  lost events {}",
            self.timers.started.elapsed().as_secs_f64(),
            telemetry::get(&self.tele.stats.spans_produced),
            t.exported_items,
            t.dropped_items,
            self.tele.drops().lost_events()
        );
    }
}

/// Queues every span `batcher` holds, one request per batch, each span on its process's
/// resource. Returns how many spans it queued.
pub(super) fn queue_batches(
    batcher: &mut SpanBatcher,
    resource_of: &mut dyn FnMut(u32) -> Resource,
    queue: &ExportQueue,
) -> u64 {
    let mut spans = 0;
    while let Some(req) = batcher.take(resource_of) {
        let batch = Batch::Traces(req);
        spans += batch.items();
        let _ = queue.submit(batch); // a refusal is counted by the queue
    }
    spans
}

/// The exemplar and span attributes that point at a picture.
fn artifact_attrs(r: &ArtifactRef) -> Vec<KeyValue> {
    vec![
        attrs::string(semconv::KOTEL_ARTIFACT_URL, r.url.clone()),
        attrs::string(semconv::KOTEL_ARTIFACT_ID, r.id.clone()),
        attrs::string(semconv::KOTEL_ARTIFACT_MEDIA_TYPE, r.media_type.clone()),
    ]
}
