//! `kotel capture`: load the probes, print the events at or above the threshold as they come
//! (JSON lines) or a live status line (table), then the per-process summary. Ctrl-C ends
//! early, still detaches everything and still prints the summary.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::time::{Duration, Instant};

use kotel_bpf::{LoadError, TracerConfig};

use crate::cli::{CaptureArgs, Format};
use crate::kernel::{tracefs_roots, KernelSource};
use crate::model::Histogram;
use crate::output::{jsonl, table, Summary};
use crate::signals;
use crate::spans::policy::SpanRule;

/// How often the ring buffer is drained when the kernel has not woken us.
const DRAIN_EVERY: Duration = Duration::from_millis(50);
/// How often the status line is redrawn.
const STATUS_EVERY: Duration = Duration::from_millis(250);

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A flag value that only turned out bad at run time.
    #[error("invalid value for {flag}: {reason}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// Loading or reading the BPF side failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

impl CaptureError {
    /// Exit code: 2 for what the user must fix first (flags, privileges, kernel support), 1
    /// for failures while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            CaptureError::Flag { .. } => 2,
            CaptureError::Load(e) if e.is_precondition() => 2,
            _ => 1,
        }
    }
}

fn tracer_config(args: &CaptureArgs) -> Result<TracerConfig, CaptureError> {
    let cgroup = match &args.cgroup {
        None => None,
        Some(path) => {
            Some(
                crate::enrich::cgroup::resolve(path).map_err(|reason| CaptureError::Flag {
                    flag: "--cgroup",
                    reason,
                })?,
            )
        }
    };
    // What is reported one by one is what `kotel run` would make a span of.
    let (min_latency_ns, min_sleep_latency_ns) =
        SpanRule::new(args.min_latency, args.sleep_threshold.0).tracer_thresholds();
    Ok(TracerConfig {
        probes: args.probes.0.iter().copied().collect(),
        min_latency_ns,
        min_sleep_latency_ns,
        pids: args.pids.clone(),
        cgroup,
        scale: args.scale,
        ring_buffer_bytes: args.ring_buffer_bytes,
        capture_stacks: !args.no_stacks,
        stack_storage_size: args.stack_storage_size,
        kernel_threads: args.kernel_threads,
        btf_path: args.btf.clone(),
        tracefs: tracefs_roots(),
        max_histograms: args.max_histograms,
        lifecycle: false,
    })
}

/// Runs a capture, writing to stdout (results) and stderr (status).
pub fn run(args: &CaptureArgs) -> Result<(), CaptureError> {
    let cfg = tracer_config(args)?;
    signals::install();
    let mut kernel = KernelSource::start(&cfg, args.symbolize_budget)?;
    tracing::info!(
        probes = %kernel.active_probes(),
        programs = ?kernel.attached_programs(),
        "kotel.capture.attached"
    );

    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let show_status = args.format == Format::Table && io::stderr().is_terminal();
    let mut summary = Summary::default();
    let mut slow_events = 0u64;
    // Final counts of processes that exited during the capture (their slots were recycled).
    let mut finals = Vec::new();
    let started = Instant::now();
    let mut last_status = started;
    loop {
        let done = signals::stop_requested()
            || (!args.duration.is_zero() && started.elapsed() >= args.duration);
        if done {
            // Detach first, then drain: nothing can arrive after the last read.
            kernel.stop();
        }
        // One more drain after the stop so nothing already in the buffer is left behind.
        let wait = if done {
            Duration::ZERO
        } else {
            DRAIN_EVERY.min(remaining(args.duration, started))
        };
        let drained = kernel.drain(wait)?;
        if let Some(e) = &drained.first_error {
            if summary.undecodable == 0 {
                tracing::warn!(error = %e, "kotel.decode.failed");
            }
        }
        summary.undecodable += drained.undecodable;
        for ev in &drained.events {
            slow_events += 1;
            summary.comms.insert(ev.pid, ev.comm);
            if args.format == Format::Jsonl {
                jsonl::write_event(&mut out, ev, &kernel.stacks(ev))?;
            }
        }
        out.flush()?;
        // Exited processes' histograms: their final counts stay for the summary.
        finals.extend(kernel.recycle(done)?);
        kernel.tick();
        if show_status && last_status.elapsed() >= STATUS_EVERY {
            last_status = Instant::now();
            let lost = kernel.drops()?.lost_events();
            table::write_status(&mut io::stderr(), started.elapsed(), slow_events, lost)?;
        }
        if done {
            break;
        }
    }
    if show_status {
        eprintln!();
    }

    summary.histograms = kernel.histograms()?;
    summary.histograms.extend(finals);
    summary.histograms.sort_by_key(Histogram::series);
    summary.drops = kernel.drops()?;
    drop(kernel);
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        slow_events,
        "kotel.capture.detached"
    );

    match args.format {
        Format::Jsonl => jsonl::write_summary(&mut out, &summary)?,
        Format::Table => table::write_summary(&mut out, &summary)?,
    }
    out.flush()?;
    Ok(())
}

fn remaining(duration: Duration, started: Instant) -> Duration {
    if duration.is_zero() {
        return Duration::MAX;
    }
    duration.saturating_sub(started.elapsed())
}
