//! Phase: the periodic work of each round. Expired link-buffer events and processes go, due
//! span batches are queued, the kernel's drop counts are read, a heatmap column is sampled,
//! and once per metrics interval the pictures are drawn, the budget's spans released and a metrics
//! request built.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use kotel_bpf::Probe;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::profiles::record;
use super::{Agent, RunError};
use crate::artifacts::ArtifactRef;
use crate::enrich::semconv;
use crate::export::{Batch, ExportQueue, Signal};
use crate::model::Comm;
use crate::otlp::attrs;
use crate::otlp::pending::PendingSpan;
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
            self.draw_pictures()?;
            self.report_live();
            if done {
                self.queue_spans();
            }
            self.metrics_round()?;
            self.queue_profiles();
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
    fn draw_pictures(&mut self) -> Result<(), RunError> {
        let profiles = &mut self.profiles;
        let mut sent = |p: &PendingSpan| record(profiles, p, true);
        let Some(a) = self.artifacts.as_mut() else {
            for (pid, span) in self.budget.drain(&mut |_, _| Vec::new(), &mut sent) {
                self.batcher.push(pid, span);
            }
            return Ok(());
        };
        let slowest = self.metrics.slowest();
        let histograms = self.kernel.histograms()?;
        a.sample_new_series(
            &histograms,
            &|key| slowest.contains_key(key),
            super::setup::unix_now(),
        );
        let comms = &self.resources.comms;
        let names = |pid: u32| {
            comms
                .get(&pid)
                .map(Comm::to_string_lossy)
                .unwrap_or_default()
        };
        let mut pictures: HashMap<(u32, Probe), Vec<KeyValue>> = a
            .render_heatmaps(slowest, &names)
            .iter()
            .map(|(key, r)| (*key, artifact_attrs(r)))
            .collect();
        // A probe's flame graph goes on the exemplar and span of its slowest series.
        for (probe, r) in a.render_flames(super::setup::unix_now()) {
            let series = slowest
                .iter()
                .filter(|((_, p), _)| *p == probe)
                .max_by_key(|(key, e)| (e.duration_ns, std::cmp::Reverse(**key)))
                .map(|(key, _)| *key);
            if let Some(key) = series {
                pictures.entry(key).or_default().extend(flame_attrs(&r));
            }
        }
        for (key, attrs) in &pictures {
            self.metrics.attach(*key, attrs.clone());
        }
        let mut picture = |pid, kind| pictures.get(&(pid, kind)).cloned().unwrap_or_default();
        for (pid, span) in self.budget.drain(&mut picture, &mut sent) {
            self.batcher.push(pid, span);
        }
        let stats = &self.tele.stats;
        telemetry::set(&stats.artifacts_made, a.made);
        telemetry::set(&stats.artifacts_skipped, a.skipped);
        telemetry::set(&stats.artifacts_removed_pictures, a.removed_pictures());
        telemetry::set(&stats.artifacts_removed_store, a.removed_from_store());
        Ok(())
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
        if self.plan.linking {
            // Held spans reach the budget later than their exemplars go out: they must not be
            // skipped then.
            self.budget.pin(self.metrics.exemplar_span_ids());
        }
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

/// The attributes that point at a probe's flame graph.
fn flame_attrs(r: &ArtifactRef) -> Vec<KeyValue> {
    vec![
        attrs::string(semconv::KOTEL_FLAME_URL, r.url.clone()),
        attrs::string(semconv::KOTEL_FLAME_ID, r.id.clone()),
        attrs::string(semconv::KOTEL_FLAME_MEDIA_TYPE, r.media_type.clone()),
    ]
}
