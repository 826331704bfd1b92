//! `kotel capture`: load the probes, read events for a while, then print the summary. Ctrl-C
//! ends early, still detaches everything and still prints the summary.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::time::{Duration, Instant};

use kotel_bpf::{LoadError, Tracer, TracerConfig};

use crate::cli::{CaptureArgs, Format};
use crate::clock::Clock;
use crate::decode::{decode_event, decode_histogram};
use crate::output::{jsonl, table, Summary};
use crate::signals;
use crate::symbolize::{hex_frames, kernel_frames, KernelSymbols};

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
    Ok(TracerConfig {
        probes: args.probes.0.iter().copied().collect(),
        min_latency_ns: u64::try_from(args.min_latency.as_nanos()).unwrap_or(u64::MAX),
        pids: args.pids.clone(),
        cgroup,
        scale: args.scale,
        ring_buffer_bytes: args.ring_buffer_bytes,
        capture_stacks: !args.no_stacks,
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
    let mut tracer = Tracer::start(&cfg)?;
    report_left_out(&tracer);
    tracing::info!(
        probes = %tracer.active_probes(),
        programs = ?tracer.attached_programs(),
        "kotel.capture.attached"
    );

    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let show_status = args.format == Format::Table && io::stderr().is_terminal();
    let mut clock = Clock::new(Duration::from_secs(1));
    let mut summary = Summary::default();
    let mut slow_events = 0u64;
    // Final counts of processes that exited during the capture (their slots were recycled).
    let mut finals = Vec::new();
    let started = Instant::now();
    let mut last_status = started;
    let ksyms = if cfg.probes.contains(kotel_bpf::Probe::Offcpu) && cfg.capture_stacks {
        KernelSymbols::load()
    } else {
        KernelSymbols::default()
    };
    // Attached and kallsyms read: keep only what reading the maps needs.
    if let Err(e) =
        kotel_bpf::preflight::drop_capabilities(&kotel_bpf::preflight::STEADY_STATE_CAPS)
    {
        tracing::warn!(error = %e, "kotel.privileges.drop_failed");
    }

    loop {
        let done = signals::stop_requested()
            || (!args.duration.is_zero() && started.elapsed() >= args.duration);
        if done {
            // Detach first, then drain: nothing can arrive after the last read.
            tracer.detach();
        }
        // One more drain after the stop so nothing already in the buffer is left behind.
        let wait = if done {
            Duration::ZERO
        } else {
            DRAIN_EVERY.min(remaining(args.duration, started))
        };
        let mut events = Vec::new();
        tracer.poll(wait, |record| match decode_event(record, &clock) {
            Ok(ev) => events.push(ev),
            Err(e) => {
                summary.undecodable += 1;
                if summary.undecodable == 1 {
                    tracing::warn!(error = %e, "kotel.decode.failed");
                }
            }
        })?;
        for ev in &events {
            slow_events += 1;
            summary.comms.insert(ev.pid, ev.comm);
            if args.format == Format::Jsonl {
                let stacks = jsonl::Stacks {
                    kernel: ev
                        .kernel_stack_id
                        .and_then(|id| tracer.stack(id))
                        .map(|ips| kernel_frames(&ksyms, &ips)),
                    user: ev
                        .user_stack_id
                        .and_then(|id| tracer.stack(id))
                        .map(|ips| hex_frames(&ips)),
                };
                jsonl::write_event(&mut out, ev, &stacks)?;
            }
        }
        out.flush()?;
        // Exited processes' histograms: their final counts stay for the summary.
        finals.extend(tracer.recycle()?);
        clock.refresh();
        if show_status && last_status.elapsed() >= STATUS_EVERY {
            last_status = Instant::now();
            let lost = tracer.drops()?.lost_events();
            table::write_status(&mut io::stderr(), started.elapsed(), slow_events, lost)?;
        }
        if done {
            break;
        }
    }
    if show_status {
        eprintln!();
    }

    let bucket_table = tracer.bucket_table().clone();
    finals.extend(tracer.recycle_all()?);
    summary.histograms = tracer
        .histograms()?
        .iter()
        .chain(&finals)
        .filter_map(|snap| decode_histogram(snap, &bucket_table))
        .collect();
    summary.histograms.sort_by_key(|h| (h.pid, h.kind));
    summary.drops = tracer.drops()?;
    drop(tracer);
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

/// Where classic tracepoints are looked up: `KOTEL_TRACEFS` (one directory) when set, else
/// the usual tracefs mounts.
pub(crate) fn tracefs_roots() -> Vec<std::path::PathBuf> {
    match std::env::var_os("KOTEL_TRACEFS") {
        Some(dir) => vec![dir.into()],
        None => TracerConfig::default().tracefs,
    }
}

/// Says which hooks each probe got (one line each), warns for each probe on a fallback and
/// for every wanted probe the kernel could not run, naming the missing tracepoints.
pub(crate) fn report_left_out(tracer: &Tracer) {
    for (probe, set) in tracer.hook_plan().iter() {
        let tracepoints: Vec<&str> = set.hooks.iter().map(|h| h.tracepoint).collect();
        tracing::info!(
            "kotel.probe.hooks: probe {probe} on {} ({})",
            set.name,
            tracepoints.join(", ")
        );
    }
    for line in tracer.fallbacks() {
        tracing::warn!("kotel.probe.fallback: {line}");
    }
    for (_, why) in tracer.left_out() {
        tracing::warn!("kotel.probe.skipped: {why}");
    }
}
