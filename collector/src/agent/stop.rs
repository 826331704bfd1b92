//! Phase: stop. The probes are detached and drained, the receiver closed and what it took
//! linked, and the unclaimed spans released (by the last loop round); what the loop still
//! holds is queued, the closing summary is read before the BPF object goes away, what
//! applications sent while stopping is still linked, the export queue flushes within the grace
//! period, and `summary.json` is written — also when the loop ended on an error.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::mpsc;

use super::tick::queue_batches;
use super::{io_err, Agent, RunError, SpanBudget};
use crate::export::{Batch, ExportQueue, ExportStats};
use crate::link::Linker;
use crate::model::Histogram;
use crate::otlp::pending::PendingSpan;
use crate::otlp::traces::SpanBatcher;
use crate::output::Summary;
use crate::receiver::Received;
use crate::telemetry::{self, summary};

/// What a finished run tells its user.
#[derive(Debug)]
pub struct Report {
    /// Per-process histograms and the kernel side's drops.
    pub summary: Summary,
    /// The export queue's final counts.
    pub export: ExportStats,
    /// Where files went.
    pub out_dir: PathBuf,
    /// The OTLP endpoint, when not writing files.
    pub endpoint: Option<String>,
}

impl Agent {
    /// Stops the agent after its loop ended with `loop_result`. Returns the loop's error (or
    /// the first error while stopping) after the accounting is written.
    pub fn stop(mut self, loop_result: Result<(), RunError>) -> Result<Report, RunError> {
        if self.plan.show_status {
            eprintln!();
        }
        let mut failure = loop_result.err();
        if let Some(e) = &failure {
            // Spans already built are produced data: they go to the queue, to be exported or
            // counted as dropped, like at any other stop. Those still waiting for their
            // application spans go too, on their own (what arrives later is forwarded as is).
            self.kernel.stop();
            let released = self.linker.release_all();
            self.settle(released);
            let resources = &mut self.resources;
            let profiles = &mut self.profiles;
            let spans = flush_spans(
                &mut self.budget,
                &mut self.batcher,
                &mut |pid| resources.of(pid),
                &self.queue,
                &mut |p| super::profiles::record(profiles, p, true),
            );
            self.queue_profiles();
            tracing::warn!(error = %e, spans, "kotel.run.stopping_on_error");
        }
        let summary = self.closing_summary(&mut failure);
        self.write_report(&summary.histograms, false);
        self.tele.stats.ready.store(false, Ordering::Relaxed);
        let Agent {
            plan,
            timers,
            kernel,
            runtime,
            queue,
            tele,
            telemetry_task,
            receiver,
            received,
            arrived,
            mut linker,
            ..
        } = self;
        drop(kernel);
        if let Some(handle) = receiver {
            runtime.block_on(handle.shutdown());
        }
        forward_leftovers(received, arrived, &mut linker, &queue);
        tracing::info!(
            grace_ms = plan.shutdown_grace.as_millis() as u64,
            second_signal = "exits at once, unflushed",
            "kotel.run.flushing"
        );
        runtime.block_on(queue.shutdown(plan.shutdown_grace));
        if let Some(task) = telemetry_task {
            task.abort();
        }
        let written = summary::write(&tele.readings(), &plan.out_dir).map_err(io_err(format!(
            "writing {}",
            plan.out_dir.join("summary.json").display()
        )));
        if let Some(e) = failure {
            if let Err(w) = written {
                tracing::warn!(error = %w, "kotel.run.summary_failed");
            }
            return Err(e);
        }
        written?;
        tracing::info!(
            elapsed_ms = timers.started.elapsed().as_millis() as u64,
            "kotel.run.stopped"
        );
        Ok(Report {
            summary,
            export: tele.export.clone(),
            out_dir: plan.out_dir,
            endpoint: plan.endpoint,
        })
    }

    /// The closing per-process summary and the final drop counts, read before the BPF object
    /// goes away; then what arrived while stopping is linked and forwarded. A failed read is
    /// the run's error (unless one came first), but the accounting is still written.
    fn closing_summary(&mut self, failure: &mut Option<RunError>) -> Summary {
        let histograms = self.kernel.histograms().unwrap_or_else(|e| {
            failure.get_or_insert(e.into());
            Vec::new()
        });
        match self.kernel.drops() {
            Ok(drops) => self.tele.set_drops(drops),
            // The last counts the main loop read stay.
            Err(e) => {
                failure.get_or_insert(e.into());
            }
        }
        let mut s = Summary {
            histograms: histograms
                .into_iter()
                .chain(std::mem::take(&mut self.ended))
                .filter(|h| h.count > 0)
                .collect(),
            drops: self.tele.drops(),
            undecodable: telemetry::get(&self.tele.stats.records_undecodable),
            comms: self.resources.comms.clone(),
        };
        s.histograms.sort_by_key(Histogram::series);
        s
    }
}

/// Links what arrived while stopping (the link buffer is all there), then forwards it; so is
/// what the loop had taken but not linked yet, when it stopped on an error.
fn forward_leftovers(
    received: Option<mpsc::Receiver<Received>>,
    mut arrived: Vec<Received>,
    linker: &mut Linker,
    queue: &ExportQueue,
) {
    if let Some(mut rx) = received {
        while let Ok(r) = rx.try_recv() {
            arrived.push(r);
        }
    }
    for r in arrived {
        let batch = match r {
            Received::Traces { mut request, peer } => {
                // Too late for exemplars: only the children in the request matter now.
                let _ = linker.link(&mut request, peer);
                Batch::Traces(request)
            }
            other => other.into_batch(),
        };
        let _ = queue.submit(batch); // a refusal is counted by the queue
    }
    let ls = linker.stats();
    let bs = linker.buffer_stats();
    tracing::info!(
        app_spans = ls.app_spans,
        matched = ls.matched_spans,
        children = ls.child_spans,
        buffer_expired = bs.expired,
        buffer_evicted = bs.evicted_full,
        "kotel.link.summary"
    );
}

/// Queues every span the loop still holds — the budget's, waiting for the interval's
/// pictures, and what waits in the span batcher — so that each one is exported or counted as
/// dropped by the queue; each of the budget's is shown to `sent` first (its profile sample).
/// Returns how many spans it queued.
fn flush_spans(
    budget: &mut SpanBudget,
    batcher: &mut SpanBatcher,
    resource_of: &mut dyn FnMut(u32) -> Resource,
    queue: &ExportQueue,
    sent: &mut dyn FnMut(&PendingSpan),
) -> u64 {
    for (pid, span) in budget.drain(&mut |_, _| Vec::new(), sent) {
        batcher.push(pid, span);
    }
    queue_batches(batcher, resource_of, queue)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kotel_bpf::Probe;
    use opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;
    use crate::export::Signal;
    use crate::otlp::pending::PendingSpan;

    /// Accepts every batch.
    struct Accept;

    impl crate::export::Exporter for Accept {
        fn export<'a>(
            &'a mut self,
            _: &'a crate::export::EncodedBatch,
        ) -> crate::export::ExportFuture<'a> {
            Box::pin(std::future::ready(Ok(Default::default())))
        }

        fn name(&self) -> &'static str {
            "accept"
        }
    }

    /// What the main loop holds when it stops on an error — spans in the batcher and the
    /// budget's, waiting for the interval's pictures — all reaches the queue, so it is
    /// exported or counted, and summary.json balances against `spans_produced`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn spans_held_at_an_error_stop_are_queued_not_lost() {
        let queue = ExportQueue::spawn(
            Accept,
            1 << 20,
            crate::export::RetryConfig::default(),
            &tokio::runtime::Handle::current(),
        );
        let span = |i: u64| Span {
            span_id: i.to_be_bytes().to_vec(),
            ..Span::default()
        };
        // Two batches' worth in the batcher (the batcher cuts at its span limit).
        let mut batcher = SpanBatcher::new(3, Duration::from_secs(3600));
        for i in 0..5u64 {
            batcher.push(100 + (i % 2) as u32, span(i));
        }
        let mut budget = SpanBudget::new(10);
        let pending = |pid, kind, i: u64| PendingSpan {
            event: crate::model::KernelEvent::sample(kind, pid, 1, i, 7),
            trace_id: [1; 16],
            span_id: i.to_be_bytes(),
            stacks: Default::default(),
            standalone: true,
            exemplar_offered: false,
        };
        assert!(budget
            .offer(pending(100, Probe::Writev, 10))
            .skipped
            .is_none());
        assert!(budget
            .offer(pending(101, Probe::Offcpu, 11))
            .skipped
            .is_none());
        let produced = 7;
        let mut resource_of = |_pid: u32| Resource::default();

        let mut shown = 0;
        let queued = flush_spans(
            &mut budget,
            &mut batcher,
            &mut resource_of,
            &queue,
            &mut |_| shown += 1,
        );
        assert_eq!(queued, produced);
        assert_eq!(shown, 2, "the budget's spans, for their profile samples");
        assert!(budget.is_empty() && batcher.is_empty());
        queue.shutdown(Duration::from_secs(5)).await;
        let t = queue.stats().signal(Signal::Traces);
        assert_eq!((t.offered_items, t.exported_items), (produced, produced));
        assert!(t.is_balanced());
        // Nothing left: a second flush queues nothing.
        assert_eq!(
            flush_spans(
                &mut budget,
                &mut batcher,
                &mut resource_of,
                &queue,
                &mut |_| {}
            ),
            0
        );
    }
}
