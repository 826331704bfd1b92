//! The byte-bounded export queue and the worker task that drains it: batches go out in the order
//! they were submitted, are retried with backoff, and every item ends up counted exactly once as
//! exported, rejected or dropped.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::telemetry::RateLimit;

use super::{
    build_exporter, Backoff, Batch, EncodedBatch, ExportBuildError, ExportConfig, ExportError,
    ExportOutcome, Exporter, FileStats, RetryConfig, Signal,
};

/// How long `shutdown` waits past its grace period for a worker stuck in an exporter that does
/// not yield, before aborting it.
const ABORT_SLACK: Duration = Duration::from_secs(1);
/// At most one log line per this interval for each kind of repeated event.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Why items were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The queue had no room for the batch when it was submitted.
    QueueFull,
    /// The receiver refused the batch in a way retrying cannot fix.
    Permanent,
    /// The batch was still failing when its retry budget (`max_elapsed_time`) ran out.
    RetriesExhausted,
    /// The shutdown grace period ended first, or the batch was submitted after shutdown.
    Shutdown,
    /// The receiver has no service for the signal (gRPC `UNIMPLEMENTED`, HTTP 404/405 on its
    /// path; only profiles are judged so). Once it said so, later batches of the signal are
    /// dropped for this reason without being sent.
    Unsupported,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::Permanent,
        DropReason::RetriesExhausted,
        DropReason::Shutdown,
        DropReason::Unsupported,
    ];

    /// A stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Permanent => "permanent_error",
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::Shutdown => "shutdown",
            DropReason::Unsupported => "unsupported",
        }
    }

    /// Its key in `summary.json`, next to the signal's `dropped` total.
    pub fn summary_key(self) -> &'static str {
        match self {
            DropReason::QueueFull => "dropped_queue_full",
            DropReason::Permanent => "dropped_permanent",
            DropReason::RetriesExhausted => "dropped_retries_exhausted",
            DropReason::Shutdown => "dropped_shutdown",
            DropReason::Unsupported => "dropped_unsupported",
        }
    }

    fn index(self) -> usize {
        match self {
            DropReason::QueueFull => 0,
            DropReason::Permanent => 1,
            DropReason::RetriesExhausted => 2,
            DropReason::Shutdown => 3,
            DropReason::Unsupported => 4,
        }
    }
}

/// Why [`ExportQueue::submit`] refused a batch. Its items are already counted as dropped;
/// the caller has nothing more to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Adding the batch would have exceeded the queue's byte bound.
    #[error("export queue full: dropped {items} items ({bytes} bytes)")]
    Full {
        /// Items dropped.
        items: u64,
        /// What the batch would have counted against the bound (encoded size plus entry
        /// overhead).
        bytes: usize,
    },
    /// The queue is shutting down.
    #[error("export queue shut down: dropped {items} items")]
    Closed {
        /// Items dropped.
        items: u64,
    },
    /// The receiver said it does not take this signal ([`DropReason::Unsupported`]).
    #[error("the receiver does not take {signal}: dropped {items} items")]
    Unsupported {
        /// The signal.
        signal: Signal,
        /// Items dropped.
        items: u64,
    },
}

/// A snapshot of one signal's counters. The counters are read one by one, so while the queue
/// is busy a snapshot can be off by a batch in flight; once the queue is shut down
/// `offered_items == exported_items + rejected_items + dropped_items` exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalStats {
    /// Items passed to [`ExportQueue::submit`].
    pub offered_items: u64,
    /// Items the receiver accepted.
    pub exported_items: u64,
    /// Items the receiver rejected through OTLP partial success (not retried).
    pub rejected_items: u64,
    /// Items dropped for any reason (the sum of the five below).
    pub dropped_items: u64,
    /// Dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Dropped on a permanent error.
    pub dropped_permanent: u64,
    /// Dropped when retries ran out.
    pub dropped_retries_exhausted: u64,
    /// Dropped at shutdown.
    pub dropped_shutdown: u64,
    /// Dropped because the receiver does not take the signal.
    pub dropped_unsupported: u64,
    /// Items waiting in the queue or being exported right now.
    pub queued_items: u64,
}

impl SignalStats {
    /// Each drop reason with its count, in [`DropReason::ALL`] order.
    pub fn dropped_by_reason(&self) -> [(DropReason, u64); DropReason::ALL.len()] {
        [
            (DropReason::QueueFull, self.dropped_queue_full),
            (DropReason::Permanent, self.dropped_permanent),
            (DropReason::RetriesExhausted, self.dropped_retries_exhausted),
            (DropReason::Shutdown, self.dropped_shutdown),
            (DropReason::Unsupported, self.dropped_unsupported),
        ]
    }

    /// Whether every offered item is accounted for:
    /// offered == exported + rejected + dropped + queued.
    pub fn is_balanced(&self) -> bool {
        self.offered_items
            == self.exported_items + self.rejected_items + self.dropped_items + self.queued_items
    }
}

#[derive(Debug, Default)]
struct Counters {
    offered: AtomicU64,
    exported: AtomicU64,
    rejected: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    queued: AtomicU64,
    /// The receiver said it does not take the signal: later batches are dropped unsent.
    unsupported: AtomicBool,
}

/// Cloneable handle on the export counters, per signal; cheap to read from any thread.
#[derive(Debug, Clone, Default)]
pub struct ExportStats {
    inner: Arc<[Counters; Signal::ALL.len()]>,
    files: FileStats,
}

impl ExportStats {
    /// What the file exporter's rotation did (zero for the other exporters).
    pub fn files(&self) -> &FileStats {
        &self.files
    }

    /// The counters of one signal.
    pub fn signal(&self, signal: Signal) -> SignalStats {
        let c = &self.inner[signal.index()];
        let dropped = |r: DropReason| c.dropped[r.index()].load(Ordering::Relaxed);
        let by_reason = DropReason::ALL.map(dropped);
        SignalStats {
            offered_items: c.offered.load(Ordering::Relaxed),
            exported_items: c.exported.load(Ordering::Relaxed),
            rejected_items: c.rejected.load(Ordering::Relaxed),
            dropped_items: by_reason.iter().sum(),
            dropped_queue_full: by_reason[0],
            dropped_permanent: by_reason[1],
            dropped_retries_exhausted: by_reason[2],
            dropped_shutdown: by_reason[3],
            dropped_unsupported: by_reason[4],
            queued_items: c.queued.load(Ordering::Relaxed),
        }
    }

    fn counters(&self, signal: Signal) -> &Counters {
        &self.inner[signal.index()]
    }

    fn drop_items(&self, signal: Signal, reason: DropReason, items: u64) {
        self.counters(signal).dropped[reason.index()].fetch_add(items, Ordering::Relaxed);
    }
}

/// One queued batch with what it counts against the bound and its item count, computed once.
#[derive(Debug)]
struct Entry {
    batch: EncodedBatch,
    bytes: usize,
    items: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Waiting batches, oldest first.
    waiting: VecDeque<Entry>,
    /// The batch the worker is exporting: (signal, items, bytes).
    in_flight: Option<(Signal, u64, usize)>,
    /// [`EncodedBatch::queued_size`] of `waiting` plus `in_flight`: bytes held, entries
    /// included.
    bytes: usize,
    /// No more submissions.
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    max_bytes: usize,
    state: Mutex<State>,
    wake: Notify,
    stats: ExportStats,
    /// Log limits for drops, one per [`DropReason`].
    drop_logs: [RateLimit; DropReason::ALL.len()],
    /// Log limit for retries.
    retry_log: RateLimit,
    /// Log limit for partial successes.
    partial_log: RateLimit,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` inconsistent in a way that matters
        // more than losing the export pipeline, so carry on with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `items` of `signal` as dropped for `reason` and logs it (rate-limited). Drops of
    /// an unsupported signal are only counted: [`Shared::mark_unsupported`] said it once.
    fn drop_and_log(&self, signal: Signal, reason: DropReason, items: u64, why: &str) {
        let counter = &self.stats.counters(signal).dropped[reason.index()];
        if reason == DropReason::Unsupported {
            counter.fetch_add(items, Ordering::Relaxed);
            return;
        }
        self.drop_logs[reason.index()].count_and_log(counter, items, |suppressed| {
            tracing::warn!(
                signal = signal.as_str(),
                reason = reason.as_str(),
                items,
                error = why,
                suppressed,
                "kotel.export.dropped"
            )
        });
    }

    /// Whether the receiver said it does not take `signal`.
    fn is_unsupported(&self, signal: Signal) -> bool {
        self.stats
            .counters(signal)
            .unsupported
            .load(Ordering::Relaxed)
    }

    /// Remembers that the receiver does not take `signal`, and says so once.
    fn mark_unsupported(&self, signal: Signal, exporter: &str, why: &str) {
        let flag = &self.stats.counters(signal).unsupported;
        if flag.swap(true, Ordering::Relaxed) {
            return;
        }
        match signal {
            Signal::Profiles => tracing::warn!(
                exporter,
                error = why,
                "kotel.export.profiles_unsupported: the receiver does not take OTLP profiles \
                 (v1development); kotel drops every profile from now on without sending it, \
                 counted as dropped (unsupported). Turn profiles off with [profiles] \
                 enabled = false or --profiles off, or send them to a receiver that takes them"
            ),
            _ => tracing::warn!(
                exporter,
                signal = signal.as_str(),
                error = why,
                "kotel.export.signal_unsupported: the receiver does not take this signal; \
                 kotel drops it from now on without sending it"
            ),
        }
    }

    /// Counts everything still queued or in flight as dropped for `reason`.
    fn drain(&self, reason: DropReason) {
        let (waiting, in_flight) = {
            let mut st = self.lock();
            st.bytes = 0;
            (std::mem::take(&mut st.waiting), st.in_flight.take())
        };
        let mut per_signal = [0u64; Signal::ALL.len()];
        let leftovers = waiting
            .iter()
            .map(|e| (e.batch.signal(), e.items))
            .chain(in_flight.map(|(s, items, _)| (s, items)));
        for (signal, items) in leftovers {
            self.stats.drop_items(signal, reason, items);
            self.stats
                .counters(signal)
                .queued
                .fetch_sub(items, Ordering::Relaxed);
            per_signal[signal.index()] += items;
        }
        for signal in Signal::ALL {
            let items = per_signal[signal.index()];
            if items > 0 {
                tracing::warn!(
                    signal = signal.as_str(),
                    reason = reason.as_str(),
                    items,
                    "kotel.export.dropped"
                );
            }
        }
    }
}

/// A queue of batches bounded by their total encoded size, with a worker task that exports them.
///
/// Batches are held encoded ([`EncodedBatch`]: protobuf bytes, encoded once by
/// [`ExportQueue::submit`] on the caller's thread), so the bound is a bound on memory: each
/// batch counts its encoded length plus [`super::ENTRY_OVERHEAD`], and nothing else stays
/// behind a queued batch. Retries resend the same bytes.
///
/// Policy when full: a batch that does not fit is refused whole and its items counted as
/// [`DropReason::QueueFull`]; what is already queued is kept (newest data is dropped first, so
/// what arrives at the receiver stays in order and without gaps inside a batch). A batch larger
/// than the whole bound is always refused. The batch being exported still counts against the
/// bound until its export finishes.
///
/// The worker exports one batch at a time in submission order, retrying retryable failures
/// with [`Backoff`] (a receiver's requested delay takes precedence) until the batch's
/// [`RetryConfig::max_elapsed_time`] would be exceeded. Partial successes and permanent errors
/// are not retried.
///
/// Dropping the queue without [`ExportQueue::shutdown`] stops the worker at once and counts
/// whatever was left as dropped.
#[derive(Debug)]
pub struct ExportQueue {
    shared: Arc<Shared>,
    deadline: watch::Sender<Option<Instant>>,
    worker: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl ExportQueue {
    /// Builds the exporter `config` asks for (inside `runtime`, which gRPC needs) and starts a
    /// queue of `config.queue_bytes` feeding it.
    pub fn from_config(
        config: &ExportConfig,
        runtime: &Handle,
    ) -> Result<ExportQueue, ExportBuildError> {
        let stats = ExportStats::default();
        let exporter = {
            let _entered = runtime.enter();
            build_exporter(config, stats.files())?
        };
        Ok(ExportQueue::start(
            exporter,
            config.queue_bytes,
            config.retry.clone(),
            runtime,
            stats,
        ))
    }

    /// Starts a queue of at most `max_bytes` (sum of [`EncodedBatch::queued_size`]) whose worker runs
    /// on `runtime` and exports through `exporter`.
    pub fn spawn<E: Exporter>(
        exporter: E,
        max_bytes: usize,
        retry: RetryConfig,
        runtime: &Handle,
    ) -> ExportQueue {
        Self::start(exporter, max_bytes, retry, runtime, ExportStats::default())
    }

    /// [`ExportQueue::spawn`], counting into `stats`.
    fn start<E: Exporter>(
        exporter: E,
        max_bytes: usize,
        retry: RetryConfig,
        runtime: &Handle,
        stats: ExportStats,
    ) -> ExportQueue {
        let shared = Arc::new(Shared {
            max_bytes,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            stats,
            drop_logs: std::array::from_fn(|_| RateLimit::new(LOG_EVERY)),
            retry_log: RateLimit::new(LOG_EVERY),
            partial_log: RateLimit::new(LOG_EVERY),
        });
        let (deadline, deadline_rx) = watch::channel(None);
        let worker = Worker {
            shared: shared.clone(),
            exporter,
            retry,
            deadline: deadline_rx,
        };
        let handle = runtime.spawn(worker.run());
        ExportQueue {
            shared,
            deadline,
            worker: tokio::sync::Mutex::new(Some(handle)),
        }
    }

    /// Encodes `batch` (on the caller's thread, once) and queues it without blocking. When it
    /// is refused (queue full, or shut down) its items are counted as dropped and the error
    /// says why; callers may ignore it.
    pub fn submit(&self, batch: Batch) -> Result<(), SubmitError> {
        self.submit_encoded(batch.encode())
    }

    /// Queues an already encoded batch without blocking, as [`ExportQueue::submit`] does.
    pub fn submit_encoded(&self, batch: EncodedBatch) -> Result<(), SubmitError> {
        let signal = batch.signal();
        let items = batch.items();
        let bytes = batch.queued_size();
        let counters = self.shared.stats.counters(signal);
        counters.offered.fetch_add(items, Ordering::Relaxed);
        let refused = {
            let mut st = self.shared.lock();
            if st.closed {
                Some((DropReason::Shutdown, SubmitError::Closed { items }))
            } else if self.shared.is_unsupported(signal) {
                Some((
                    DropReason::Unsupported,
                    SubmitError::Unsupported { signal, items },
                ))
            } else if st.bytes.saturating_add(bytes) > self.shared.max_bytes {
                Some((DropReason::QueueFull, SubmitError::Full { items, bytes }))
            } else {
                st.bytes += bytes;
                counters.queued.fetch_add(items, Ordering::Relaxed);
                st.waiting.push_back(Entry {
                    batch,
                    bytes,
                    items,
                });
                None
            }
        };
        match refused {
            None => {
                self.shared.wake.notify_one();
                Ok(())
            }
            Some((reason, err)) => {
                self.shared
                    .drop_and_log(signal, reason, items, &err.to_string());
                Err(err)
            }
        }
    }

    /// A handle on the counters, valid after the queue is gone.
    pub fn stats(&self) -> ExportStats {
        self.shared.stats.clone()
    }

    /// Bytes held by batches waiting or being exported ([`EncodedBatch::queued_size`] each);
    /// never more than the queue's bound.
    pub fn queued_bytes(&self) -> usize {
        self.shared.lock().bytes
    }

    /// Refuses further batches, exports what is queued for at most `grace`, then counts what is
    /// left as dropped ([`DropReason::Shutdown`]) and stops the worker. Returns within `grace`
    /// unless the exporter blocks without yielding, and then within `grace` + 1 s. Calling it
    /// again is harmless; a call made while another is running waits for that one.
    pub async fn shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        self.shared.lock().closed = true;
        self.deadline.send_if_modified(|d| match d {
            Some(existing) if *existing <= deadline => false,
            _ => {
                *d = Some(deadline);
                true
            }
        });
        self.shared.wake.notify_one();
        // Held until the worker is gone, so a concurrent second call waits for the first.
        let mut worker = self.worker.lock().await;
        let Some(mut handle) = worker.take() else {
            return;
        };
        if tokio::time::timeout_at(deadline + ABORT_SLACK, &mut handle)
            .await
            .is_err()
        {
            tracing::warn!(exporter_stuck = true, "kotel.export.shutdown_abort");
            handle.abort();
            let _ = handle.await;
        }
        // Only an aborted or panicked worker leaves anything behind.
        self.shared.drain(DropReason::Shutdown);
        for signal in Signal::ALL {
            let s = self.shared.stats.signal(signal);
            if s.offered_items > 0 {
                tracing::info!(
                    signal = signal.as_str(),
                    offered = s.offered_items,
                    exported = s.exported_items,
                    rejected = s.rejected_items,
                    dropped = s.dropped_items,
                    "kotel.export.shutdown"
                );
            }
        }
    }
}

impl Drop for ExportQueue {
    fn drop(&mut self) {
        if self.worker.get_mut().is_some() {
            self.shared.lock().closed = true;
            self.deadline.send_replace(Some(Instant::now()));
            self.shared.wake.notify_one();
        }
    }
}

/// How the worker finished with one batch.
enum Finished {
    Exported(ExportOutcome),
    Dropped(DropReason, String),
}

struct Worker<E> {
    shared: Arc<Shared>,
    exporter: E,
    retry: RetryConfig,
    deadline: watch::Receiver<Option<Instant>>,
}

impl<E: Exporter> Worker<E> {
    async fn run(mut self) {
        loop {
            if self.deadline_passed() {
                self.shared.drain(DropReason::Shutdown);
                return;
            }
            let next = {
                let mut st = self.shared.lock();
                let next = st.waiting.pop_front();
                match &next {
                    Some(e) => st.in_flight = Some((e.batch.signal(), e.items, e.bytes)),
                    None if st.closed => return,
                    None => {}
                }
                next
            };
            match next {
                Some(entry) if self.shared.is_unsupported(entry.batch.signal()) => {
                    // Queued before the receiver said it does not take the signal.
                    let why = "the receiver does not take this signal".to_string();
                    self.finish(&entry, Finished::Dropped(DropReason::Unsupported, why));
                }
                Some(entry) => {
                    let finished = self.export_with_retries(&entry).await;
                    self.finish(&entry, finished);
                }
                None => {
                    // `notify_one` keeps a permit when nobody waits, so no wake-up is lost
                    // between the check above and this wait.
                    let wake = self.shared.clone();
                    until_deadline(&mut self.deadline, wake.wake.notified()).await;
                }
            }
        }
    }

    fn deadline_passed(&self) -> bool {
        matches!(*self.deadline.borrow(), Some(at) if Instant::now() >= at)
    }

    async fn export_with_retries(&mut self, entry: &Entry) -> Finished {
        let signal = entry.batch.signal();
        let started = Instant::now();
        let mut backoff = Backoff::new(&self.retry);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let result = until_deadline(&mut self.deadline, self.exporter.export(&entry.batch));
            let (reason, retry_after) = match result.await {
                None => {
                    return Finished::Dropped(
                        DropReason::Shutdown,
                        "shutdown grace period ended during export".into(),
                    )
                }
                Some(Ok(outcome)) => return Finished::Exported(outcome),
                Some(Err(ExportError::Permanent { reason })) => {
                    return Finished::Dropped(DropReason::Permanent, reason)
                }
                Some(Err(ExportError::Unsupported { reason })) => {
                    self.shared
                        .mark_unsupported(signal, self.exporter.name(), &reason);
                    return Finished::Dropped(DropReason::Unsupported, reason);
                }
                Some(Err(ExportError::Retryable {
                    reason,
                    retry_after,
                })) => (reason, retry_after),
            };
            let wait = retry_after.unwrap_or_else(|| backoff.next_delay());
            if started.elapsed().saturating_add(wait) > self.retry.max_elapsed_time {
                return Finished::Dropped(
                    DropReason::RetriesExhausted,
                    format!("gave up after {attempt} attempts, last: {reason}"),
                );
            }
            if let Some(suppressed) = self.shared.retry_log.check() {
                tracing::warn!(
                    exporter = self.exporter.name(),
                    signal = signal.as_str(),
                    attempt,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    server_delay = retry_after.is_some(),
                    error = %reason,
                    suppressed,
                    "kotel.export.retry"
                );
            }
            match backoff_wait(&mut self.deadline, wait).await {
                Waited::Full | Waited::ShutdownBegan => {}
                Waited::DeadlinePassed => {
                    return Finished::Dropped(
                        DropReason::Shutdown,
                        format!("shutdown grace period ended while retrying: {reason}"),
                    )
                }
            }
        }
    }

    /// Counts a finished batch and releases its room in the queue.
    fn finish(&self, entry: &Entry, finished: Finished) {
        let signal = entry.batch.signal();
        let counters = self.shared.stats.counters(signal);
        match finished {
            Finished::Exported(outcome) => {
                let rejected = outcome.rejected_items.min(entry.items);
                counters
                    .exported
                    .fetch_add(entry.items - rejected, Ordering::Relaxed);
                counters.rejected.fetch_add(rejected, Ordering::Relaxed);
                if rejected > 0 || outcome.message.is_some() {
                    if let Some(suppressed) = self.shared.partial_log.check() {
                        tracing::warn!(
                            exporter = self.exporter.name(),
                            signal = signal.as_str(),
                            rejected,
                            message = outcome.message.as_deref().unwrap_or(""),
                            suppressed,
                            "kotel.export.partial_success"
                        );
                    }
                }
            }
            Finished::Dropped(reason, why) => {
                self.shared.drop_and_log(signal, reason, entry.items, &why);
            }
        }
        counters.queued.fetch_sub(entry.items, Ordering::Relaxed);
        let mut st = self.shared.lock();
        st.bytes = st.bytes.saturating_sub(entry.bytes);
        st.in_flight = None;
    }
}

/// How a backoff wait ended.
#[derive(Debug, PartialEq, Eq)]
enum Waited {
    /// The whole delay passed.
    Full,
    /// Shutdown began during the delay: the batch is tried again at once, since the receiver
    /// may well be back and the grace period is the last chance to deliver it.
    ShutdownBegan,
    /// The shutdown deadline passed (or the queue was dropped) before the delay ended.
    DeadlinePassed,
}

/// Sleeps `wait` between two attempts. Once shutdown has begun the wait still applies (so a
/// receiver that keeps failing is not hammered), bounded by the deadline.
async fn backoff_wait(deadline: &mut watch::Receiver<Option<Instant>>, wait: Duration) -> Waited {
    let shutdown_before = deadline.borrow_and_update().is_some();
    if shutdown_before {
        return match until_deadline(deadline, tokio::time::sleep(wait)).await {
            Some(()) => Waited::Full,
            None => Waited::DeadlinePassed,
        };
    }
    tokio::select! {
        () = tokio::time::sleep(wait) => Waited::Full,
        changed = deadline.changed() => match changed {
            Ok(()) if deadline.borrow().is_some_and(|at| Instant::now() < at) => {
                Waited::ShutdownBegan
            }
            _ => Waited::DeadlinePassed,
        },
    }
}

/// Runs `fut` to completion unless the shutdown deadline (which may be set while it runs)
/// passes first; `None` then. A closed deadline channel counts as a passed deadline.
async fn until_deadline<F: Future>(
    deadline: &mut watch::Receiver<Option<Instant>>,
    fut: F,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        let current = *deadline.borrow_and_update();
        if let Some(at) = current {
            return tokio::time::timeout_at(at, &mut fut).await.ok();
        }
        tokio::select! {
            out = &mut fut => return Some(out),
            changed = deadline.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use tokio::sync::Semaphore;

    use super::super::testdata::{logs, metrics, traces};
    use super::super::ExportFuture;
    use super::*;

    type Reply = Result<ExportOutcome, ExportError>;

    /// An in-memory exporter: replies from a script (then Ok), records what it was called with,
    /// and can be held at a gate until the test lets calls through.
    #[derive(Clone, Default)]
    struct Scripted {
        script: Arc<StdMutex<VecDeque<Reply>>>,
        calls: Arc<StdMutex<Vec<(Signal, u64)>>>,
        /// Where each call's bytes live, to tell a resend from a re-encode.
        buffers: Arc<StdMutex<Vec<usize>>>,
        gate: Option<Arc<Semaphore>>,
    }

    impl Scripted {
        fn with_script(replies: Vec<Reply>) -> Scripted {
            Scripted {
                script: Arc::new(StdMutex::new(replies.into())),
                ..Scripted::default()
            }
        }

        fn gated() -> (Scripted, Arc<Semaphore>) {
            let gate = Arc::new(Semaphore::new(0));
            let s = Scripted {
                gate: Some(gate.clone()),
                ..Scripted::default()
            };
            (s, gate)
        }

        fn calls(&self) -> Vec<(Signal, u64)> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Exporter for Scripted {
        fn export<'a>(&'a mut self, batch: &'a EncodedBatch) -> ExportFuture<'a> {
            Box::pin(async move {
                if let Some(gate) = &self.gate {
                    gate.acquire().await.expect("gate open").forget();
                }
                self.calls
                    .lock()
                    .unwrap()
                    .push((batch.signal(), batch.items()));
                self.buffers
                    .lock()
                    .unwrap()
                    .push(batch.bytes().as_ptr() as usize);
                let reply = self.script.lock().unwrap().pop_front();
                reply.unwrap_or(Ok(ExportOutcome::default()))
            })
        }

        fn name(&self) -> &'static str {
            "scripted"
        }
    }

    fn fast_retry() -> RetryConfig {
        RetryConfig {
            initial_interval: Duration::from_millis(1),
            multiplier: 2,
            max_interval: Duration::from_millis(5),
            max_elapsed_time: Duration::from_secs(5),
        }
    }

    /// Backoff ceilings fixed at `interval` (jitter still draws from [0, interval]), giving up
    /// after `budget`.
    fn constant_retry(interval: Duration, budget: Duration) -> RetryConfig {
        RetryConfig {
            initial_interval: interval,
            multiplier: 1,
            max_interval: interval,
            max_elapsed_time: budget,
        }
    }

    fn retryable() -> Reply {
        Err(ExportError::retryable("unavailable"))
    }

    fn spawn(exporter: Scripted, max_bytes: usize) -> ExportQueue {
        ExportQueue::spawn(exporter, max_bytes, fast_retry(), &Handle::current())
    }

    fn assert_balanced(stats: &ExportStats) {
        for signal in Signal::ALL {
            let s = stats.signal(signal);
            assert!(s.is_balanced(), "{signal}: {s:?}");
            assert_eq!(s.queued_items, 0, "{signal}: {s:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_refuses_new_batches_and_counts_them() {
        let (exporter, gate) = Scripted::gated();
        let batch_len = traces(0, 10).encode().queued_size();
        let queue = spawn(exporter.clone(), 3 * batch_len);
        let results: Vec<_> = (0..6).map(|i| queue.submit(traces(i, 10))).collect();
        // The batch in flight still holds its room, so exactly three fit whatever the worker did.
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
        assert!(results[..3].iter().all(Result::is_ok));
        for r in &results[3..] {
            assert_eq!(
                r,
                &Err(SubmitError::Full {
                    items: 10,
                    bytes: batch_len
                })
            );
        }
        let s = queue.stats().signal(Signal::Traces);
        assert_eq!(s.dropped_queue_full, 30);
        assert_eq!(s.queued_items, 30);
        assert!(s.is_balanced(), "{s:?}");
        assert!(queue.queued_bytes() <= 3 * batch_len);

        gate.add_permits(100);
        queue.shutdown(Duration::from_secs(5)).await;
        let s = queue.stats().signal(Signal::Traces);
        assert_eq!(s.offered_items, 60);
        assert_eq!(s.exported_items, 30);
        assert_eq!(s.dropped_items, 30);
        assert_balanced(&queue.stats());
        assert_eq!(queue.queued_bytes(), 0);
    }

    /// The bound holds for what the queue really keeps: behind a receiver that never answers,
    /// batches of every size (empty ones included) are accepted only while the bytes they hold
    /// plus their entries fit, and the accepted ones add up to no more than the bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_bytes_never_exceed_the_bound() {
        let (exporter, _gate) = Scripted::gated(); // never opened
        let max_bytes = 64 * 1024;
        let queue = spawn(exporter, max_bytes);
        let mut accepted_bytes = 0;
        let mut accepted = 0;
        for i in 0..2000u64 {
            let batch = match i % 4 {
                0 => traces(i, (i % 37) as usize),
                1 => metrics(i, (i % 11) as usize),
                2 => logs(i, (i % 5) as usize),
                _ => Batch::Traces(Default::default()),
            };
            let size = batch.encode().queued_size();
            if queue.submit(batch).is_ok() {
                accepted_bytes += size;
                accepted += 1;
            }
            assert!(queue.queued_bytes() <= max_bytes, "after batch {i}");
        }
        assert_eq!(queue.queued_bytes(), accepted_bytes);
        assert!(accepted_bytes <= max_bytes && accepted_bytes > max_bytes / 2);
        assert!(accepted < 2000, "the queue filled up");
        let refused: u64 = Signal::ALL
            .iter()
            .map(|s| queue.stats().signal(*s).dropped_queue_full)
            .sum();
        assert!(refused > 0);
        queue.shutdown(Duration::from_millis(50)).await;
        assert_balanced(&queue.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_resend_the_queued_bytes_without_encoding_again() {
        let exporter = Scripted::with_script(vec![retryable(), retryable(), retryable()]);
        let queue = spawn(exporter.clone(), 1 << 20);
        queue.submit(traces(1, 4)).unwrap();
        queue.shutdown(Duration::from_secs(5)).await;
        let buffers = exporter.buffers.lock().unwrap().clone();
        assert_eq!(buffers.len(), 4);
        assert!(
            buffers.iter().all(|b| *b == buffers[0]),
            "every attempt sends the same buffer: {buffers:?}"
        );
        assert_balanced(&queue.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_larger_than_the_queue_is_refused() {
        let queue = spawn(Scripted::default(), 10);
        let err = queue.submit(traces(1, 5)).unwrap_err();
        assert!(matches!(err, SubmitError::Full { items: 5, .. }));
        queue.shutdown(Duration::from_secs(1)).await;
        let s = queue.stats().signal(Signal::Traces);
        assert_eq!((s.offered_items, s.dropped_queue_full), (5, 5));
        assert_balanced(&queue.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_go_out_in_order_and_are_counted_per_signal() {
        let exporter = Scripted::default();
        let queue = spawn(exporter.clone(), 1 << 20);
        queue.submit(traces(1, 2)).unwrap();
        queue.submit(metrics(1, 3)).unwrap();
        queue.submit(logs(1, 4)).unwrap();
        queue.submit(traces(2, 5)).unwrap();
        queue.shutdown(Duration::from_secs(5)).await;
        assert_eq!(
            exporter.calls(),
            vec![
                (Signal::Traces, 2),
                (Signal::Metrics, 4),
                (Signal::Logs, 4),
                (Signal::Traces, 5),
            ]
        );
        let stats = queue.stats();
        assert_eq!(stats.signal(Signal::Traces).exported_items, 7);
        assert_eq!(stats.signal(Signal::Metrics).exported_items, 4);
        assert_eq!(stats.signal(Signal::Logs).exported_items, 4);
        assert_balanced(&stats);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retryable_errors_are_retried_until_success() {
        let exporter = Scripted::with_script(vec![retryable(), retryable(), retryable()]);
        let queue = spawn(exporter.clone(), 1 << 20);
        queue.submit(traces(1, 4)).unwrap();
        queue.shutdown(Duration::from_secs(5)).await;
        assert_eq!(exporter.calls().len(), 4);
        let s = queue.stats().signal(Signal::Traces);
        assert_eq!((s.exported_items, s.dropped_items), (4, 0));
        assert_balanced(&queue.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn permanent_errors_are_not_retried() {
        let exporter = Scripted::with_script(vec![Err(ExportError::permanent("invalid argument"))]);
        let queue = spawn(exporter.clone(), 1 << 20);
        queue.submit(logs(1, 3)).unwrap();
        queue.submit(logs(2, 2)).unwrap();
        queue.shutdown(Duration::from_secs(5)).await;
        assert_eq!(exporter.calls().len(), 2, "one call per batch");
        let s = queue.stats().signal(Signal::Logs);
        assert_eq!((s.dropped_permanent, s.exported_items), (3, 2));
        assert_balanced(&queue.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partial_success_counts_rejected_items_and_is_not_retried() {
        let exporter = Scripted::with_script(vec![
            Ok(ExportOutcome {
                rejected_items: 2,
                message: Some("2 spans too old".into()),
            }),
            // A receiver claiming more rejections than items cannot unbalance the counters.
            Ok(ExportOutcome {
                rejected_items: 99,
                message: None,
            }),
        ]);
        let queue = spawn(exporter.clone(), 1 << 20);
        queue.submit(traces(1, 5)).unwrap();
        queue.submit(traces(2, 3)).unwrap();
        queue.shutdown(Duration::from_secs(5)).await;
        assert_eq!(exporter.calls().len(), 2);
        let s = queue.stats().signal(Signal::Traces);
        assert_eq!((s.exported_items, s.rejected_items), (3, 5));
        assert_balanced(&queue.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_stop_when_the_budget_runs_out() {
        let exporter = Scripted::with_script((0..10_000).map(|_| retryable()).collect());
        let retry = RetryConfig {
            max_elapsed_time: Duration::from_millis(50),
            ..fast_retry()
        };
        let queue = ExportQueue::spawn(exporter.clone(), 1 << 20, retry, &Handle::current());
        queue.submit(metrics(1, 1)).unwrap();
        queue.shutdown(Duration::from_secs(5)).await;
        assert!(exporter.calls().len() >= 2, "it retried at least once");
        let s = queue.stats().signal(Signal::Metrics);
        assert_eq!(s.dropped_retries_exhausted, 2);
        assert_balanced(&queue.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_delay_beyond_the_budget_gives_up_at_once() {
        let exporter = Scripted::with_script(vec![Err(ExportError::Retryable {
            reason: "throttled".into(),
            retry_after: Some(Duration::from_secs(3600)),
        })]);
        let queue = spawn(exporter.clone(), 1 << 20);
        queue.submit(traces(1, 1)).unwrap();
        queue.shutdown(Duration::from_secs(5)).await;
        assert_eq!(exporter.calls().len(), 1);
        assert_eq!(
            queue
                .stats()
                .signal(Signal::Traces)
                .dropped_retries_exhausted,
            1
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zero_budget_disables_retries() {
        let exporter = Scripted::with_script(vec![retryable()]);
        let retry = RetryConfig {
            max_elapsed_time: Duration::ZERO,
            ..fast_retry()
        };
        let queue = ExportQueue::spawn(exporter.clone(), 1 << 20, retry, &Handle::current());
        queue.submit(traces(1, 1)).unwrap();
        queue.shutdown(Duration::from_secs(5)).await;
        assert_eq!(exporter.calls().len(), 1);
        assert_balanced(&queue.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_deadline_drops_what_is_left() {
        let (exporter, _gate) = Scripted::gated(); // never opened: the receiver hangs
        let queue = spawn(exporter, 1 << 20);
        for i in 0..3 {
            queue.submit(traces(i, 4)).unwrap();
        }
        queue.submit(logs(1, 2)).unwrap();
        let started = std::time::Instant::now();
        queue.shutdown(Duration::from_millis(100)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "shutdown is bounded"
        );
        let stats = queue.stats();
        assert_eq!(stats.signal(Signal::Traces).dropped_shutdown, 12);
        assert_eq!(stats.signal(Signal::Logs).dropped_shutdown, 2);
        assert_balanced(&stats);

        // Later submissions are refused and counted.
        assert_eq!(
            queue.submit(traces(9, 1)),
            Err(SubmitError::Closed { items: 1 })
        );
        let s = stats.signal(Signal::Traces);
        assert_eq!((s.offered_items, s.dropped_shutdown), (13, 13));
        // A second shutdown is harmless.
        queue.shutdown(Duration::from_millis(10)).await;
        assert_balanced(&stats);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_shutdowns_count_each_item_once() {
        let (exporter, gate) = Scripted::gated();
        let queue = Arc::new(spawn(exporter, 1 << 20));
        for i in 0..4 {
            queue.submit(traces(i, 2)).unwrap();
        }
        let first = tokio::spawn({
            let q = queue.clone();
            async move { q.shutdown(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = tokio::spawn({
            let q = queue.clone();
            async move { q.shutdown(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.add_permits(4);
        first.await.unwrap();
        second.await.unwrap();
        let s = queue.stats().signal(Signal::Traces);
        assert_eq!((s.exported_items, s.dropped_items), (8, 0));
        assert_balanced(&queue.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_flushes_within_grace() {
        let (exporter, gate) = Scripted::gated();
        let queue = spawn(exporter.clone(), 1 << 20);
        for i in 0..5 {
            queue.submit(traces(i, 1)).unwrap();
        }
        gate.add_permits(5);
        queue.shutdown(Duration::from_secs(5)).await;
        assert_eq!(queue.stats().signal(Signal::Traces).exported_items, 5);
        assert_balanced(&queue.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_retries_a_batch_in_backoff_at_once() {
        // The receiver failed once and the worker waits a backoff far longer than the grace
        // period; the receiver is back by the time shutdown begins.
        let exporter = Scripted::with_script(vec![retryable()]);
        let slow = constant_retry(Duration::from_secs(3600), Duration::from_secs(7200));
        let queue = ExportQueue::spawn(exporter.clone(), 1 << 20, slow, &Handle::current());
        queue.submit(traces(1, 3)).unwrap();
        queue.submit(traces(2, 2)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while exporter.calls().is_empty() {
            assert!(std::time::Instant::now() < deadline, "no first attempt");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Give the worker time to enter its backoff wait (a wait that starts after shutdown
        // began is a normal one), which draws from [0, 1 h]; shutdown must not wait it out.
        tokio::time::sleep(Duration::from_millis(100)).await;
        queue.shutdown(Duration::from_secs(5)).await;
        let s = queue.stats().signal(Signal::Traces);
        assert_eq!((s.exported_items, s.dropped_items), (5, 0), "{s:?}");
        let first_failed_then_both = vec![
            (Signal::Traces, 3),
            (Signal::Traces, 3),
            (Signal::Traces, 2),
        ];
        assert_eq!(exporter.calls(), first_failed_then_both);
        assert_balanced(&queue.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_during_shutdown_still_back_off_and_stop_at_the_deadline() {
        // A receiver that never recovers: waits that start once shutdown has begun still back
        // off, and the grace period ends the batch.
        let failures = vec![retryable(); 1000];
        let exporter = Scripted::with_script(failures);
        let retry = constant_retry(Duration::from_millis(200), Duration::from_secs(3600));
        let queue = ExportQueue::spawn(exporter.clone(), 1 << 20, retry, &Handle::current());
        queue.submit(traces(1, 4)).unwrap();
        queue.shutdown(Duration::from_millis(500)).await;
        let s = queue.stats().signal(Signal::Traces);
        assert_eq!((s.exported_items, s.dropped_shutdown), (0, 4), "{s:?}");
        // Backing off at most 200 ms a time over 0.5 s cannot make hundreds of attempts.
        assert!(
            exporter.calls().len() < 100,
            "{} attempts",
            exporter.calls().len()
        );
        assert_balanced(&queue.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_queue_stops_the_worker_and_counts_the_rest() {
        let (exporter, _gate) = Scripted::gated();
        let queue = spawn(exporter, 1 << 20);
        let stats = queue.stats();
        queue.submit(traces(1, 3)).unwrap();
        queue.submit(traces(2, 3)).unwrap();
        drop(queue);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while stats.signal(Signal::Traces).queued_items > 0 {
            assert!(std::time::Instant::now() < deadline, "worker did not stop");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(stats.signal(Signal::Traces).dropped_shutdown, 6);
        assert_balanced(&stats);
    }
}
