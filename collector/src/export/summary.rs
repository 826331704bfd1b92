//! `summary.json`: the final accounting of a `kotel run`, written after the export queue has
//! shut down, so that for each signal `produced == exported + rejected + dropped` holds exactly
//! and every drop is named by its reason.

use std::path::Path;

use kotel_bpf::DropCounts;
use serde::Serialize;

use super::{ExportStats, Signal};

/// One signal's items, from the queue's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SignalCounts {
    /// Items submitted to the export queue (for spans: kernel spans, linked child spans and
    /// forwarded application spans).
    pub produced: u64,
    /// Items the receiver accepted.
    pub exported: u64,
    /// Items the receiver rejected through OTLP partial success.
    pub rejected: u64,
    /// Items dropped before delivery, the sum of the four reasons below.
    pub dropped: u64,
    /// Dropped because the queue's byte bound was reached.
    pub dropped_queue_full: u64,
    /// Dropped on a permanent error from the receiver.
    pub dropped_permanent: u64,
    /// Dropped when the retry budget (`export.retry.max_elapsed`) ran out.
    pub dropped_retries_exhausted: u64,
    /// Dropped when the shutdown grace period ended.
    pub dropped_shutdown: u64,
}

impl SignalCounts {
    /// The counts of `signal` now.
    pub fn of(export: &ExportStats, signal: Signal) -> SignalCounts {
        let s = export.signal(signal);
        SignalCounts {
            produced: s.offered_items,
            exported: s.exported_items,
            rejected: s.rejected_items,
            dropped: s.dropped_items,
            dropped_queue_full: s.dropped_queue_full,
            dropped_permanent: s.dropped_permanent,
            dropped_retries_exhausted: s.dropped_retries_exhausted,
            dropped_shutdown: s.dropped_shutdown,
        }
    }
}

/// What `summary.json` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// Spans, by outcome.
    pub spans: SignalCounts,
    /// Metric data points, by outcome.
    pub metric_points: SignalCounts,
    /// Spans kotel built from kernel events (part of `spans.produced`).
    pub kernel_spans: u64,
    /// Ring-buffer events decoded.
    pub events_received: u64,
    /// Events the ring buffer had no room for (counted in the kernel).
    pub events_lost: u64,
    /// Events that found no free histogram slot (counted in the overflow histogram instead).
    pub histogram_events_dropped: u64,
    /// Events of an exiting process that found its histogram slot already retired (counted in
    /// the overflow histogram instead, so not lost from the metrics).
    pub histogram_events_after_exit: u64,
    /// Off-CPU stacks the stack map could not hold.
    pub stacks_dropped: u64,
    /// Events missed because the kernel could not give a thread its task storage at that
    /// moment (neither a span nor a histogram count).
    pub task_storage_unavailable: u64,
    /// Exec/exit records the ring buffer had no room for.
    pub lifecycle_records_lost: u64,
}

impl RunSummary {
    /// The summary from the queue's counters, the kernel's drop counters and the main loop's
    /// own counts.
    pub fn new(
        export: &ExportStats,
        drops: &DropCounts,
        kernel_spans: u64,
        events_received: u64,
    ) -> RunSummary {
        RunSummary {
            spans: SignalCounts::of(export, Signal::Traces),
            metric_points: SignalCounts::of(export, Signal::Metrics),
            kernel_spans,
            events_received,
            events_lost: drops.lost_events(),
            histogram_events_dropped: drops.hist_full,
            histogram_events_after_exit: drops.hist_exited,
            stacks_dropped: drops.stack,
            task_storage_unavailable: drops.task_storage,
            lifecycle_records_lost: drops.lifecycle,
        }
    }

    /// Writes it as pretty JSON to `<dir>/summary.json`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("summary.json"), text + "\n")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::runtime::Handle;

    use super::super::testdata::traces;
    use super::super::{
        Batch, EncodedBatch, ExportError, ExportFuture, ExportOutcome, ExportQueue, Exporter,
        RetryConfig,
    };
    use super::*;

    type Reply = Result<ExportOutcome, ExportError>;

    /// Answers each call from a script keyed by the tag the batch was built with ([`traces`]);
    /// a batch without a script hangs until the shutdown deadline.
    struct ByTag {
        replies: Arc<Mutex<VecDeque<(u64, Reply)>>>,
    }

    fn tag_of(batch: &EncodedBatch) -> u64 {
        match batch.decode().unwrap() {
            Batch::Traces(r) => {
                let id = &r.resource_spans[0].scope_spans[0].spans[0].span_id;
                u64::from_be_bytes(id[..8].try_into().unwrap()) / 1000
            }
            _ => u64::MAX,
        }
    }

    impl Exporter for ByTag {
        fn export<'a>(&'a mut self, batch: &'a EncodedBatch) -> ExportFuture<'a> {
            let tag = tag_of(batch);
            let replies = self.replies.clone();
            Box::pin(async move {
                let reply = {
                    let mut r = replies.lock().unwrap();
                    r.iter()
                        .position(|(t, _)| *t == tag)
                        .and_then(|i| r.remove(i))
                };
                match reply {
                    Some((_, reply)) => reply,
                    None => std::future::pending().await,
                }
            })
        }

        fn name(&self) -> &'static str {
            "by_tag"
        }
    }

    /// Every way a span can end — delivered, rejected, queue full, permanent error, retries
    /// exhausted, shutdown — shows up in the summary under its own name, and the reasons add
    /// up to `dropped`, and the outcomes to `produced`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn summary_names_every_outcome_and_balances() {
        let retryable = || Err(ExportError::retryable("unavailable"));
        let replies: VecDeque<(u64, Reply)> = vec![
            (1, Ok(ExportOutcome::default())),
            (
                2,
                Ok(ExportOutcome {
                    rejected_items: 1,
                    message: None,
                }),
            ),
            (3, Err(ExportError::permanent("invalid argument"))),
        ]
        .into_iter()
        .chain((0..1000).map(|_| (4, retryable())))
        .collect();
        let retry = RetryConfig {
            initial_interval: Duration::from_millis(1),
            multiplier: 2,
            max_interval: Duration::from_millis(2),
            max_elapsed_time: Duration::from_millis(30),
        };
        let one = traces(1, 3).encode().queued_size();
        let queue = ExportQueue::spawn(
            ByTag {
                replies: Arc::new(Mutex::new(replies)),
            },
            one * 5,
            retry,
            &Handle::current(),
        );
        for tag in 1..=4 {
            queue.submit(traces(tag, 3)).unwrap();
        }
        // Tag 5 hangs the worker once it gets there (shutdown drops it); wait until tags 1–4
        // are done so the room they held is free again.
        let stats = queue.stats();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stats.signal(Signal::Traces).queued_items > 0 {
            assert!(std::time::Instant::now() < deadline, "worker stuck");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        queue.submit(traces(5, 3)).unwrap();
        let huge = traces(6, 40);
        assert!(queue.submit(huge).is_err(), "larger than the whole queue");
        queue.shutdown(Duration::from_millis(50)).await;

        let s = RunSummary::new(&stats, &DropCounts::default(), 15, 15);
        let t = s.spans;
        assert_eq!(t.produced, 55);
        assert_eq!((t.exported, t.rejected), (3 + 2, 1));
        assert_eq!(t.dropped_queue_full, 40);
        assert_eq!(t.dropped_permanent, 3);
        assert_eq!(t.dropped_retries_exhausted, 3);
        assert_eq!(t.dropped_shutdown, 3);
        assert_eq!(
            t.dropped,
            t.dropped_queue_full
                + t.dropped_permanent
                + t.dropped_retries_exhausted
                + t.dropped_shutdown
        );
        assert_eq!(t.produced, t.exported + t.rejected + t.dropped);

        let dir = std::env::temp_dir().join(format!("kotel-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        s.write(&dir).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(v["spans"]["dropped_retries_exhausted"], 3);
        assert_eq!(v["kernel_spans"], 15);
        assert_eq!(v["events_received"], 15);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
