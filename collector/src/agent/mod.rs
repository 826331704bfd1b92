//! The agent behind `kotel run`: kernel events become OTLP spans, kernel histograms become
//! OTLP metrics with exemplars, applications' spans get their kernel children, and everything
//! goes to the export queue.
//!
//! [`Agent`] holds the pipeline's state; its loop is one method per phase, each in a file of
//! its own: drain the kernel ([`crate::kernel`]) → handle events (`events`) → handle
//! lifecycle records (`lifecycle`) → link what applications sent (`linking`) → the periodic
//! tick (`tick`: expiry, flushes, pictures, the metrics round) → stop (`stop`). It is built
//! by `setup`.
//!
//! Threads: this one owns the BPF side (the tracer is not `Send`) and the pure stages (decode,
//! enrich, span and metric building); a small tokio runtime runs the export queue's worker,
//! the OTLP receiver and the telemetry endpoints. The stages meet at the export queue, which is
//! bounded in bytes and counts every drop.

mod budget;
mod error;
mod events;
mod lifecycle;
mod linking;
mod profiles;
mod report;
mod settings;
mod setup;
mod stop;
mod tick;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::artifacts::Artifacts;
use crate::enrich::resources::Resources;
use crate::export::ExportQueue;
use crate::kernel::KernelSource;
use crate::link::Linker;
use crate::model::Histogram;
use crate::otlp::ids::IdGenerator;
use crate::otlp::metrics::MetricsBuilder;
use crate::otlp::profiles::ProfileBuilder;
use crate::otlp::traces::SpanBatcher;
use crate::receiver::{Received, ReceiverHandle};
use crate::report::ReportWriter;
use crate::signals;
use crate::spans::policy::SpanRule;
use crate::telemetry::{AgentTelemetry, RateLimit};

pub(crate) use error::io_err;
pub use error::RunError;
pub use settings::{effective_config, export_tls};
pub use stop::Report;

use budget::SpanBudget;

/// Longest wait for ring-buffer records (the kernel submits without waking us).
const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// What the agent was told to do, fixed for the run.
#[derive(Debug)]
struct Plan {
    /// Which events are spans of their own, and which may be children.
    spans: SpanRule,
    /// How long to run; `None` until a signal.
    duration: Option<Duration>,
    /// The metrics interval.
    interval: Duration,
    /// Whether an OTLP receiver runs (without one nothing can be linked).
    linking: bool,
    /// Whether a status line is drawn (stderr is a terminal).
    show_status: bool,
    /// Where files go.
    out_dir: PathBuf,
    /// The OTLP endpoint, when not writing files.
    endpoint: Option<String>,
    /// How long the export queue may take to flush at the end.
    shutdown_grace: Duration,
}

/// When the periodic work is next due.
#[derive(Debug)]
struct Timers {
    started: Instant,
    /// The same moment, Unix ns: metrics intervals count from it.
    started_unix: u64,
    next_metrics: Instant,
    next_column: Instant,
    last_expiry: Instant,
    last_status: Instant,
}

/// The running agent: its fields are the pipeline's state.
pub struct Agent {
    plan: Plan,
    timers: Timers,
    kernel: KernelSource,
    runtime: tokio::runtime::Runtime,
    queue: ExportQueue,
    tele: Arc<AgentTelemetry>,
    telemetry_task: Option<tokio::task::JoinHandle<()>>,
    receiver: Option<ReceiverHandle>,
    received: Option<mpsc::Receiver<Received>>,
    /// Requests taken from the receiver, waiting for this round's drain before they are linked.
    arrived: Vec<Received>,
    linker: Linker,
    /// Processes whose every event the kernel sends, for linking.
    link_targets: HashSet<u32>,
    resources: Resources,
    ids: IdGenerator,
    batcher: SpanBatcher,
    budget: SpanBudget,
    metrics: MetricsBuilder,
    /// OTLP profiles of the slow events with stacks, when enabled.
    profiles: Option<ProfileBuilder>,
    artifacts: Option<Artifacts>,
    /// The report page, `index.html` in the output folder.
    report: ReportWriter,
    /// Final histograms of exited processes, kept for the closing summary.
    ended: Vec<Histogram>,
    /// Undecodable records are counted each time and logged at most once a second.
    decode_log: RateLimit,
}

impl Agent {
    /// Runs the phases until the duration passes or a signal arrives. An error (a BPF map
    /// read failing, …) ends the loop; [`Agent::stop`] still queues what it holds.
    pub fn run_until_stopped(&mut self) -> Result<(), RunError> {
        loop {
            let done = self.stop_due();
            if done {
                // Detach first, then drain: nothing can arrive after the last read. The
                // receiver closes too, so that what applications sent until now is linked in
                // this last round.
                self.kernel.stop();
                self.close_receiver();
            }
            // Requests that arrived before this drain are linked after it: every kernel event
            // of theirs happened before the application sent them, so it is drained by then.
            self.take_arrived();
            let drained = self.kernel.drain(self.wait(done))?;
            self.count_undecodable(&drained);
            self.handle_events(drained.events);
            self.count_ustacks();
            self.handle_lifecycle(&drained.lifecycle);
            self.retire_exited(done)?;
            self.link_arrived();
            if done {
                // Nothing can claim them any more: the unclaimed go out on their own.
                let released = self.linker.release_all();
                self.settle_by_interval(released);
            }
            self.tick(done)?;
            if done {
                return Ok(());
            }
        }
    }

    fn stop_due(&self) -> bool {
        signals::stop_requested()
            || self
                .plan
                .duration
                .is_some_and(|d| self.timers.started.elapsed() >= d)
    }

    /// How long this round's drain may wait: until the next thing due, at most
    /// [`DRAIN_EVERY`]; not at all once stopping.
    fn wait(&self, done: bool) -> Duration {
        if done {
            return Duration::ZERO;
        }
        let mut wait = self
            .timers
            .next_metrics
            .saturating_duration_since(Instant::now());
        if let Some(left) = self.batcher.time_left() {
            wait = wait.min(left);
        }
        if let Some(d) = self.plan.duration {
            wait = wait.min(d.saturating_sub(self.timers.started.elapsed()));
        }
        wait.min(DRAIN_EVERY)
    }
}
