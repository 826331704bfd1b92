//! `kotel run`, the agent's main job: kernel events become OTLP spans, kernel histograms become
//! OTLP metrics with exemplars, and both go to an OTLP endpoint (gRPC or HTTP) or to JSON
//! lines files. Runs for `--duration` or until SIGINT/SIGTERM, then flushes within the grace
//! period, writes `summary.json` and prints a summary.
//!
//! Threads: this one owns the BPF side (the tracer is not `Send`) and the pure stages (decode,
//! enrich, span and metric building); a small tokio runtime runs the export queue's worker
//! and the telemetry endpoints. The stages meet at the export queue, which is bounded in bytes
//! and counts every drop.

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kotel_bpf::{DropCounts, LoadError, Probe, Tracer, TracerConfig};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::cli::RunArgs;
use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::decode::{decode_histogram, decode_record, Record};
use crate::enrich::resources::{pod_metadata, Resources};
use crate::enrich::semconv::{KOTEL_STACK_KERNEL, KOTEL_STACK_USER};
use crate::enrich::{cgroup, parse_resource_attributes, HostInfo, ProcessCache, ResourceOptions};
use crate::export::{
    Batch, Compression, ExportConfig, ExportQueue, ExportStats, Protocol, RetryConfig, RunSummary,
    Signal, TlsFile, TlsSettings,
};
use crate::link::buffer::LinkBuffer;
use crate::link::Linker;
use crate::model::{Comm, KernelEvent};
use crate::otlp::attrs;
use crate::otlp::ids::IdGenerator;
use crate::otlp::metrics::{ExemplarCandidate, MetricsBuilder, SelfMetric, Temporality};
use crate::otlp::spans::{kernel_span, SpanIds};
use crate::otlp::traces::SpanBatcher;
use crate::output::{table, Summary};
use crate::receiver::{self, Received, ReceiverConfig};
use crate::signals;
use crate::symbolize::{hex_frames, kernel_frames, KernelSymbols};
use crate::telemetry::{self, Sample, SampleSource, SelfStats};

mod self_metrics;
mod self_telemetry;
mod settings;

use self_metrics::{artifact_attrs, export_metrics};
use self_telemetry::{receiver_samples, Telemetry};
pub use settings::{effective_config, export_tls};

/// Longest wait for ring-buffer records (the kernel submits without waking us).
const DRAIN_EVERY: Duration = Duration::from_millis(50);
/// Most spans in one export request.
const MAX_SPANS_PER_BATCH: usize = 2048;
/// How often the status line is redrawn.
const STATUS_EVERY: Duration = Duration::from_millis(250);
/// Most process names remembered for the summary.
const MAX_NAMES: usize = 65_536;
/// Cached processes.
const PROCESS_CACHE: usize = 4096;
/// Most final histograms of exited processes kept for the closing summary.
const SUMMARY_ENDED: usize = 4096;

/// Why `kotel run` failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration (file, environment or flags) is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An environment variable is unusable.
    #[error("{0}")]
    Env(String),
    /// Loading or reading the BPF side failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The exporter could not be built.
    #[error("export: {0}")]
    Export(String),
    /// The OTLP receiver could not start.
    #[error("OTLP receiver: {0}")]
    Receiver(String),
    /// Local I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What kotel was doing.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl RunError {
    /// Exit code: 2 for what must be fixed before starting, 1 for failures while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Config(_)
            | RunError::Env(_)
            | RunError::Export(_)
            | RunError::Receiver(_) => 2,
            RunError::Load(e) if e.is_precondition() => 2,
            _ => 1,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Runs the agent until the duration passes or a signal arrives.
pub fn run(args: &RunArgs) -> Result<(), RunError> {
    let (cfg, export_cfg) = effective_config(args, &|k| std::env::var(k).ok())?;
    // Endpoint and TLS files are checked before any BPF program loads.
    crate::export::check_config(&export_cfg).map_err(|e| RunError::Export(e.to_string()))?;
    let cgroup = if cfg.capture.cgroup.as_os_str().is_empty() {
        None
    } else {
        Some(
            cgroup::resolve(&cfg.capture.cgroup).map_err(|e| ConfigError::Invalid {
                field: "capture.cgroup",
                message: e,
            })?,
        )
    };
    let telemetry_addr: Option<SocketAddr> = match cfg.telemetry.listen.as_str() {
        "none" => None,
        a => a.parse().ok(),
    };
    let out_dir = export_cfg.out_dir.clone();
    std::fs::create_dir_all(&out_dir).map_err(io_err(format!("creating {}", out_dir.display())))?;

    signals::install();
    let tracer_cfg = TracerConfig {
        probes: cfg.capture.probes.iter().copied().collect(),
        min_latency_ns: u64::try_from(cfg.capture.span_threshold.as_nanos()).unwrap_or(u64::MAX),
        pids: cfg.capture.pids.clone(),
        cgroup,
        scale: cfg.capture.scale,
        ring_buffer_bytes: cfg.capture.ring_buffer_bytes,
        capture_stacks: cfg.capture.stacks,
        btf_path: PathBuf::from(kotel_bpf::preflight::SYSFS_BTF),
        tracefs: crate::capture::tracefs_roots(),
        max_histograms: cfg.capture.max_histograms,
        lifecycle: true,
    };
    // Token and TLS files are read before anything loads: a bad one exits 2 naming the field.
    let receiver_cfg = ReceiverConfig::from_settings(&cfg.receiver, &|k| std::env::var(k).ok())
        .map_err(|e| RunError::Receiver(e.to_string()))?;
    let sidecar_tls = crate::artifacts::sidecar_tls(&cfg.render)
        .map_err(|e| RunError::Receiver(e.to_string()))?;
    let mut tracer = Tracer::start(&tracer_cfg)?;
    crate::capture::report_left_out(&tracer);
    // kallsyms is read once, while CAP_SYSLOG is still held.
    let ksyms = if tracer.active_probes().contains(Probe::Offcpu) && cfg.capture.stacks {
        KernelSymbols::load()
    } else {
        KernelSymbols::default()
    };
    // Attached: keep only what the steady state needs, before any other thread starts.
    match kotel_bpf::preflight::drop_capabilities(&kotel_bpf::preflight::STEADY_STATE_CAPS) {
        Ok(kept) => tracing::info!(effective = format!("{kept:#x}"), "kotel.privileges.dropped"),
        Err(e) => tracing::warn!(error = %e, "kotel.privileges.drop_failed"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("kotel-export")
        .enable_all()
        .build()
        .map_err(io_err("starting the export runtime"))?;
    let queue = ExportQueue::from_config(&export_cfg, runtime.handle())
        .map_err(|e| RunError::Export(e.to_string()))?;

    let stats = Arc::new(SelfStats::default());
    let tele = Arc::new(Telemetry {
        stats: Arc::clone(&stats),
        export: queue.stats(),
        drops: Default::default(),
        receiver: Default::default(),
    });
    let mut telemetry_task = None;
    if let Some(addr) = telemetry_addr {
        match runtime.block_on(telemetry::serve(
            addr,
            tele.clone() as Arc<dyn SampleSource>,
        )) {
            Ok((bound, task)) => {
                tracing::info!(address = %bound, "kotel.telemetry.listening");
                telemetry_task = Some(task);
            }
            Err(e) => tracing::warn!(address = %addr, error = %e, "kotel.telemetry.unavailable"),
        }
    }

    let threshold_ns = tracer_cfg.min_latency_ns;
    let mut linker = Linker::new(
        PathBuf::from("/proc"),
        LinkBuffer::new(
            cfg.link.buffer_events,
            u64::try_from(cfg.link.window.as_nanos()).unwrap_or(u64::MAX),
        ),
    );
    let (mut receiver, mut received) = (None, None);
    if receiver_cfg.grpc.is_some() || receiver_cfg.http.is_some() {
        let (tx, rx) = receiver_cfg.channel();
        let handle = runtime
            .block_on(receiver::start_with_peers(
                &receiver_cfg,
                tx,
                Some(linker.peers()),
            ))
            .map_err(|e| RunError::Receiver(e.to_string()))?;
        tracing::info!(grpc = ?handle.grpc_addr(), http = ?handle.http_addr(), "kotel.receiver.listening");
        let _ = tele.receiver.set(handle.stats());
        receiver = Some(handle);
        received = Some(rx);
    }
    // Without a receiver nothing can be linked: no buffer either.
    let linking = receiver_cfg.grpc.is_some() || receiver_cfg.http.is_some();
    let mut link_targets: std::collections::HashSet<u32> = std::collections::HashSet::new();
    let mut last_expiry = Instant::now();

    let started = Instant::now();
    let start_unix = unix_now();
    let host = HostInfo::detect(Path::new("/proc"));
    let pods = pod_metadata(cfg.kubernetes.enabled, runtime.handle());
    let mut resources = Resources {
        cache: ProcessCache::new(PathBuf::from("/proc"), PROCESS_CACHE),
        host,
        options: ResourceOptions {
            include_command_line: cfg.resource.include_command_line,
            extra: cfg
                .resource
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        },
        comms: HashMap::new(),
        pods,
    };
    let mut clock = Clock::new(Duration::from_secs(1));
    let mut ids = IdGenerator::new();
    let mut batcher = SpanBatcher::new(MAX_SPANS_PER_BATCH, cfg.export.span_flush);
    let mut metrics = MetricsBuilder::new(
        cfg.metrics.temporality,
        cfg.metrics.cardinality_limit,
        start_unix,
    );
    let interval = cfg.metrics.interval;
    let mut next_metrics = started + interval;
    let show_status = io::stderr().is_terminal();
    let mut last_status = started;
    let duration = args.duration.filter(|d| !d.is_zero());
    stats.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        probes = %tracer.active_probes(),
        endpoint = export_cfg
            .endpoint
            .as_deref()
            .map_or_else(|| "files".to_string(), crate::export::redact_endpoint),
        out = %out_dir.display(),
        "kotel.run.attached"
    );

    let mut events: Vec<KernelEvent> = Vec::with_capacity(4096);
    let mut ended: Vec<crate::model::Histogram> = Vec::new();
    let mut held: HashMap<(u32, Probe), (u64, Span)> = HashMap::new();
    let mut artifacts = if !cfg.render.enabled {
        None
    } else if cfg.render.renderer.is_empty() {
        match crate::artifacts::Artifacts::in_process(&out_dir, &cfg.render.trace_url_template) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "kotel.artifact.renderer_unavailable");
                None
            }
        }
    } else {
        Some(crate::artifacts::Artifacts::sidecar(
            &cfg.render.renderer,
            sidecar_tls.clone(),
            runtime.handle().clone(),
        ))
    };
    let mut next_column = Instant::now();
    let mut arrived: Vec<Received> = Vec::new();
    // The main loop. An error in it (a BPF map read failing, ...) ends the run, but only after
    // what the loop holds has been queued and summary.json written, below.
    let loop_result = (|| -> Result<(), RunError> {
        loop {
            let done =
                signals::stop_requested() || duration.is_some_and(|d| started.elapsed() >= d);
            if done {
                tracer.detach();
            }
            let mut wait = next_metrics.saturating_duration_since(Instant::now());
            if let Some(left) = batcher.time_left() {
                wait = wait.min(left);
            }
            if let Some(d) = duration {
                wait = wait.min(d.saturating_sub(started.elapsed()));
            }
            if done {
                wait = Duration::ZERO;
            }
            // Requests that arrived before this drain are linked after it: every kernel event of
            // theirs happened before the application sent them, so it is drained by then.
            if let Some(rx) = received.as_mut() {
                while let Ok(r) = rx.try_recv() {
                    arrived.push(r);
                }
            }
            let mut invalidate = Vec::new();
            tracer.poll(wait.min(DRAIN_EVERY), |record| {
                match decode_record(record, &clock) {
                    Ok(Record::Event(ev)) => events.push(ev),
                    Ok(Record::Exec { pid }) => invalidate.push((pid, false)),
                    Ok(Record::Exit { pid }) => invalidate.push((pid, true)),
                    Err(e) => {
                        if telemetry::get(&stats.records_undecodable) == 0 {
                            tracing::warn!(error = %e, "kotel.decode.failed");
                        }
                        telemetry::add(&stats.records_undecodable, 1);
                    }
                }
            })?;
            telemetry::add(&stats.events_received, events.len() as u64);
            for ev in events.drain(..) {
                // Every event can be linked; only those at or above the threshold are spans of
                // their own (link targets send shorter ones too, for exact sums).
                let slow = ev.duration_ns >= threshold_ns;
                if linking {
                    linker.buffer.push(&ev, slow);
                }
                if !slow {
                    continue;
                }
                let span_ids = SpanIds {
                    trace_id: ids.trace_id(),
                    span_id: ids.span_id(),
                    parent_span_id: None,
                };
                metrics.observe(
                    ev.pid,
                    ev.kind,
                    ExemplarCandidate {
                        duration_ns: ev.duration_ns,
                        time_unix_nano: ev.start_unix_nano.saturating_add(ev.duration_ns),
                        trace_id: span_ids.trace_id,
                        span_id: span_ids.span_id,
                    },
                );
                resources.comms.insert(ev.pid, ev.comm);
                let mut span = kernel_span(&ev, span_ids);
                if let Some(ips) = ev.kernel_stack_id.and_then(|id| tracer.stack(id)) {
                    span.attributes.push(attrs::strings(
                        KOTEL_STACK_KERNEL,
                        kernel_frames(&ksyms, &ips),
                    ));
                }
                if let Some(ips) = ev.user_stack_id.and_then(|id| tracer.stack(id)) {
                    span.attributes
                        .push(attrs::strings(KOTEL_STACK_USER, hex_frames(&ips)));
                }
                if ev.kind == Probe::Offcpu {
                    if let Some(ips) = ev.kernel_stack_id.and_then(|id| tracer.stack(id)) {
                        let mut frames = kernel_frames(&ksyms, &ips);
                        frames.reverse();
                        // Function names only: offsets would split one function into many frames.
                        let folded = std::iter::once(ev.comm.to_string_lossy())
                            .chain(
                                frames
                                    .into_iter()
                                    .map(|f| f.split('+').next().unwrap_or_default().to_string()),
                            )
                            .collect::<Vec<_>>()
                            .join(";");
                        if let Some(a) = artifacts.as_mut() {
                            a.add_offcpu_stack(folded, ev.duration_ns);
                        }
                    }
                }
                // The slowest span of each series waits for the interval's picture, so that it
                // carries the same artifact as its exemplar; the others go at once.
                let key = (ev.pid, ev.kind);
                match held.get(&key) {
                    Some((d, _)) if *d >= ev.duration_ns => batcher.push(ev.pid, span),
                    _ => {
                        if let Some((_, previous)) = held.insert(key, (ev.duration_ns, span)) {
                            batcher.push(ev.pid, previous);
                        }
                    }
                }
                telemetry::add(&stats.spans_produced, 1);
            }
            for (pid, exited) in invalidate {
                if exited {
                    // Its last spans and final metrics still need its resource: kept one more
                    // interval, then swept.
                    resources
                        .cache
                        .exited(pid, interval + Duration::from_secs(2));
                } else {
                    resources.cache.invalidate(pid);
                }
                if exited && link_targets.remove(&pid) {
                    tracer.remove_link_target(pid);
                }
                telemetry::add(&stats.process_invalidations, 1);
            }
            // Exited processes' histogram slots go back to the kernel; their final counts are
            // exported once more.
            let finals = if done {
                tracer.recycle_all()?
            } else {
                tracer.recycle()?
            };
            let finals: Vec<_> = finals
                .iter()
                .filter_map(|s| decode_histogram(s, tracer.bucket_table()))
                .collect();
            if !finals.is_empty() {
                let room = SUMMARY_ENDED.saturating_sub(ended.len());
                ended.extend(finals.iter().filter(|h| h.count > 0).take(room).cloned());
                metrics.retire(finals);
            }
            if resources.comms.len() > MAX_NAMES {
                resources.comms.clear(); // names only label the summary; /proc fills in
            }
            for r in arrived.drain(..) {
                match r {
                    Received::Traces { mut request, peer } => {
                        let linked = linker.link(&mut request, peer, &mut ids);
                        for c in linked.children {
                            metrics.prefer_linked(
                                c.pid,
                                c.kind,
                                c.end,
                                c.duration_ns,
                                c.trace_id,
                                c.span_id,
                            );
                        }
                        for pid in linked.pids {
                            if link_targets.insert(pid) {
                                if let Err(e) = tracer.add_link_target(pid) {
                                    tracing::warn!(pid, error = %e, "kotel.link.target_failed");
                                }
                            }
                        }
                        let _ = queue.submit(Batch::Traces(request)); // a refusal is counted
                    }
                    other => {
                        let _ = queue.submit(other.into_batch());
                    }
                }
            }
            if last_expiry.elapsed() >= Duration::from_secs(1) {
                last_expiry = Instant::now();
                linker.buffer.expire(unix_now());
                resources.cache.sweep();
            }
            if batcher.due() || (done && !batcher.is_empty()) {
                while let Some(req) = batcher.take(&mut |pid| resources.of(pid)) {
                    let _ = queue.submit(Batch::Traces(req)); // a refusal is counted by the queue
                }
            }
            let drops = tracer.drops()?;
            if let Ok(mut d) = tele.drops.lock() {
                *d = drops;
            }
            if let Some(a) = artifacts.as_mut() {
                if done || Instant::now() >= next_column {
                    next_column = Instant::now() + a.column_width();
                    let table = tracer.bucket_table();
                    let hs: Vec<_> = tracer
                        .histograms()?
                        .iter()
                        .filter_map(|s| decode_histogram(s, table))
                        .collect();
                    a.sample(&hs, unix_now());
                }
            }
            if done || Instant::now() >= next_metrics {
                next_metrics = Instant::now() + interval;
                if let Some(a) = artifacts.as_mut() {
                    let names = |pid: u32| {
                        resources
                            .comms
                            .get(&pid)
                            .map(Comm::to_string_lossy)
                            .unwrap_or_default()
                    };
                    let refs = a.render_heatmaps(metrics.slowest(), &names);
                    for (key, r) in &refs {
                        metrics.attach(*key, artifact_attrs(r));
                    }
                    if let Some(flame) = a.render_flame() {
                        tracing::debug!(url = %flame.url, "kotel.artifact.flame");
                    }
                    for (key, (_, mut span)) in held.drain() {
                        if let Some(r) = refs.get(&key) {
                            span.attributes.extend(artifact_attrs(r));
                        }
                        batcher.push(key.0, span);
                    }
                    telemetry::add(
                        &stats.artifacts_made,
                        a.made - telemetry::get(&stats.artifacts_made),
                    );
                    telemetry::add(
                        &stats.artifacts_skipped,
                        a.skipped - telemetry::get(&stats.artifacts_skipped),
                    );
                } else {
                    for (key, (_, span)) in held.drain() {
                        batcher.push(key.0, span);
                    }
                }
                if done {
                    while let Some(req) = batcher.take(&mut |pid| resources.of(pid)) {
                        let _ = queue.submit(Batch::Traces(req));
                    }
                }
                export_metrics(
                    &tracer,
                    &mut metrics,
                    &mut resources,
                    &queue,
                    &drops,
                    &stats,
                    tele.receiver.get().map(|r| &**r),
                )?;
            }
            clock.refresh();
            if show_status && last_status.elapsed() >= STATUS_EVERY {
                last_status = Instant::now();
                let t = queue.stats().signal(Signal::Traces);
                let _ = write!(
                io::stderr(),
                "\r\x1b[2Kkotel: running {:.1}s  spans {}  exported {}  dropped {}  lost events {}",
                started.elapsed().as_secs_f64(),
                telemetry::get(&stats.spans_produced),
                t.exported_items,
                t.dropped_items,
                drops.lost_events()
            );
            }
            if done {
                break;
            }
        }
        Ok(())
    })();
    if show_status {
        eprintln!();
    }
    let mut failure = loop_result.err();
    if let Some(e) = &failure {
        // Spans already built are produced data: they go to the queue, to be exported or
        // counted as dropped, like at any other stop.
        tracer.detach();
        let spans = flush_spans(
            &mut held,
            &mut batcher,
            &mut |pid| resources.of(pid),
            &queue,
        );
        tracing::warn!(error = %e, spans, "kotel.run.stopping_on_error");
    }

    // Final summary data, read before the BPF object goes away. A failed read is the run's
    // error (unless one came first), but the accounting is still written.
    let table_ = tracer.bucket_table().clone();
    let histograms = tracer.histograms().unwrap_or_else(|e| {
        failure.get_or_insert(e.into());
        Vec::new()
    });
    let drops = tracer.drops().unwrap_or_else(|e| {
        failure.get_or_insert(e.into());
        // The last counts the main loop read.
        tele.drops.lock().map(|d| *d).unwrap_or_default()
    });
    let mut summary = Summary {
        histograms: histograms
            .iter()
            .filter_map(|s| decode_histogram(s, &table_))
            .chain(ended)
            .collect(),
        drops,
        undecodable: telemetry::get(&stats.records_undecodable),
        comms: resources.comms.clone(),
    };
    summary.histograms.retain(|h| h.count > 0);
    summary.histograms.sort_by_key(|h| (h.pid, h.kind));
    drop(tracer);
    stats.ready.store(false, Ordering::Relaxed);

    if let Some(handle) = receiver.take() {
        runtime.block_on(handle.shutdown());
    }
    if let Some(rx) = received.as_mut() {
        // What arrived while stopping is still linked (the buffer is all there), then forwarded;
        // so is what the loop had taken but not linked yet, when it stopped on an error.
        while let Ok(r) = rx.try_recv() {
            arrived.push(r);
        }
        for r in arrived.drain(..) {
            let batch = match r {
                Received::Traces { mut request, peer } => {
                    // No metrics round and no tracer follow: neither children nor pids are needed.
                    let _ = linker.link(&mut request, peer, &mut ids);
                    Batch::Traces(request)
                }
                other => other.into_batch(),
            };
            let _ = queue.submit(batch);
        }
    }
    let ls = linker.stats();
    let bs = linker.buffer.stats();
    tracing::info!(
        app_spans = ls.app_spans,
        matched = ls.matched_spans,
        children = ls.child_spans,
        buffer_expired = bs.expired,
        buffer_evicted = bs.evicted_full,
        "kotel.link.summary"
    );
    tracing::info!(
        grace_ms = cfg.export.shutdown_grace.as_millis() as u64,
        second_signal = "exits at once, unflushed",
        "kotel.run.flushing"
    );
    runtime.block_on(queue.shutdown(cfg.export.shutdown_grace));
    if let Some(task) = telemetry_task {
        task.abort();
    }
    let export = queue.stats();
    let written = RunSummary::new(
        &export,
        &summary.drops,
        telemetry::get(&stats.spans_produced),
        telemetry::get(&stats.events_received),
    )
    .write(&out_dir)
    .map_err(io_err(format!(
        "writing {}",
        out_dir.join("summary.json").display()
    )));
    if let Some(e) = failure {
        if let Err(w) = written {
            tracing::warn!(error = %w, "kotel.run.summary_failed");
        }
        return Err(e);
    }
    written?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "kotel.run.stopped"
    );

    let mut out = io::stdout().lock();
    let w = |e| RunError::Io {
        what: "writing the summary".into(),
        source: e,
    };
    table::write_summary(&mut out, &summary).map_err(w)?;
    for sig in [Signal::Traces, Signal::Metrics] {
        let s = export.signal(sig);
        writeln!(
            out,
            "{:<8} offered {}  exported {}  rejected {}  dropped {} (queue full {}, permanent {}, retries exhausted {}, shutdown {})",
            sig.as_str(),
            s.offered_items,
            s.exported_items,
            s.rejected_items,
            s.dropped_items,
            s.dropped_queue_full,
            s.dropped_permanent,
            s.dropped_retries_exhausted,
            s.dropped_shutdown
        )
        .map_err(w)?;
    }
    match &export_cfg.endpoint {
        Some(ep) => writeln!(
            out,
            "exported to {}; summary in {}",
            crate::export::redact_endpoint(ep),
            out_dir.join("summary.json").display()
        ),
        None => writeln!(
            out,
            "wrote {}, {} and {}",
            out_dir.join("traces.jsonl").display(),
            out_dir.join("metrics.jsonl").display(),
            out_dir.join("summary.json").display()
        ),
    }
    .map_err(w)?;
    Ok(())
}

/// Queues every span the main loop still holds — the slowest of each series, waiting for its
/// interval's picture, and what waits in the span batcher — so that each one is exported or
/// counted as dropped by the queue. Returns how many spans it queued.
fn flush_spans(
    held: &mut HashMap<(u32, Probe), (u64, Span)>,
    batcher: &mut SpanBatcher,
    resource_of: &mut dyn FnMut(u32) -> Resource,
    queue: &ExportQueue,
) -> u64 {
    for ((pid, _), (_, span)) in held.drain() {
        batcher.push(pid, span);
    }
    let mut spans = 0;
    while let Some(req) = batcher.take(resource_of) {
        let batch = Batch::Traces(req);
        spans += batch.items();
        let _ = queue.submit(batch); // a refusal is counted by the queue
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

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
    /// slowest of each series held back for its picture — all reaches the queue, so it is
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
        let mut held = HashMap::new();
        held.insert((100, Probe::Writev), (7, span(10)));
        held.insert((101, Probe::Offcpu), (9, span(11)));
        let produced = 7;
        let mut resource_of = |_pid: u32| Resource::default();

        let queued = flush_spans(&mut held, &mut batcher, &mut resource_of, &queue);
        assert_eq!(queued, produced);
        assert!(held.is_empty() && batcher.is_empty());
        queue.shutdown(Duration::from_secs(5)).await;
        let t = queue.stats().signal(Signal::Traces);
        assert_eq!((t.offered_items, t.exported_items), (produced, produced));
        assert!(t.is_balanced());
        // Nothing left: a second flush queues nothing.
        assert_eq!(
            flush_spans(&mut held, &mut batcher, &mut resource_of, &queue),
            0
        );
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn flags_beat_environment_beats_file() {
        let dir = std::env::temp_dir().join(format!("kotel-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kotel.toml");
        std::fs::write(
            &file,
            "[export]\nendpoint = \"http://file:4317\"\nqueue_bytes = 100000\n",
        )
        .unwrap();
        let mut args = RunArgs {
            config: Some(file.clone()),
            ..Default::default()
        };

        let (_, e) = effective_config(&args, &env_of(&[])).unwrap();
        assert_eq!(e.endpoint.as_deref(), Some("http://file:4317"));
        assert_eq!(e.queue_bytes, 100_000);

        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
            ("OTEL_RESOURCE_ATTRIBUTES", "team=kernel"),
        ]);
        let (c, e) = effective_config(&args, &env).unwrap();
        assert_eq!(e.endpoint.as_deref(), Some("http://env:4317"));
        assert_eq!(
            c.resource.attributes.get("team").map(String::as_str),
            Some("kernel")
        );

        args.otlp_endpoint = Some("http://flag:4317".into());
        args.queue_bytes = Some(4096);
        let (_, e) = effective_config(&args, &env).unwrap();
        assert_eq!(e.endpoint.as_deref(), Some("http://flag:4317"));
        assert_eq!(e.queue_bytes, 4096);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_settings_exit_2_naming_what_is_wrong() {
        let args = RunArgs {
            interval: Some(Duration::from_millis(1)),
            ..Default::default()
        };
        let err = effective_config(&args, &env_of(&[])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("metrics.interval"), "{err}");
        let err = effective_config(
            &RunArgs::default(),
            &env_of(&[("OTEL_RESOURCE_ATTRIBUTES", "novalue")]),
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("OTEL_RESOURCE_ATTRIBUTES"),
            "{err}"
        );
        let err = effective_config(
            &RunArgs::default(),
            &env_of(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("OTEL_EXPORTER_OTLP_TIMEOUT"),
            "{err}"
        );
    }
}
