//! Building the agent from its effective configuration: the export queue, the probes, the
//! telemetry endpoints, the OTLP receiver, the resources and the pictures. What can be checked
//! before any BPF program loads (the endpoint, TLS and token files, the cgroup) is checked
//! first, so a mistake exits 2 without touching the kernel.

use std::collections::{HashMap, HashSet};
use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kotel_bpf::TracerConfig;

use super::{io_err, Agent, Plan, RunError, SpanBudget, Timers};
use crate::artifacts::Artifacts;
use crate::config::{Config, ConfigError};
use crate::enrich::cgroup;
use crate::enrich::resources::{pod_metadata, Resources};
use crate::enrich::{HostInfo, ProcessCache, ResourceOptions};
use crate::export::{ExportConfig, ExportQueue};
use crate::kernel::{tracefs_roots, KernelSource};
use crate::link::buffer::LinkBuffer;
use crate::link::Linker;
use crate::otlp::ids::IdGenerator;
use crate::otlp::metrics::MetricsBuilder;
use crate::otlp::profiles::ProfileBuilder;
use crate::otlp::traces::SpanBatcher;
use crate::receiver::{self, ReceiverConfig};
use crate::report::ReportWriter;
use crate::signals;
use crate::telemetry::{self, AgentTelemetry, RateLimit, SampleSource};

/// Most spans in one export request.
const MAX_SPANS_PER_BATCH: usize = 2048;
/// Cached processes.
const PROCESS_CACHE: usize = 4096;

/// Now, in Unix nanoseconds.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Agent {
    /// Checks the configuration, attaches the probes and starts everything around them.
    /// Runs for `duration` once looping (`None`: until a signal).
    pub fn start(
        cfg: &Config,
        export_cfg: &ExportConfig,
        duration: Option<Duration>,
    ) -> Result<Agent, RunError> {
        // Endpoint and TLS files are checked before any BPF program loads.
        crate::export::check_config(export_cfg).map_err(|e| RunError::Export(e.to_string()))?;
        let tracer_cfg = tracer_config(cfg)?;
        let out_dir = export_cfg.out_dir.clone();
        std::fs::create_dir_all(&out_dir)
            .map_err(io_err(format!("creating {}", out_dir.display())))?;
        signals::install();
        // Token and TLS files are read before anything loads: a bad one exits 2 naming the field.
        let receiver_cfg = ReceiverConfig::from_settings(&cfg.receiver, &|k| std::env::var(k).ok())
            .map_err(|e| RunError::Receiver(e.to_string()))?;
        let sidecar_tls = crate::artifacts::sidecar_tls(&cfg.render)
            .map_err(|e| RunError::Receiver(e.to_string()))?;
        // Attached, symbols read and privileges dropped before any other thread starts.
        let kernel = KernelSource::start(&tracer_cfg, cfg.capture.symbolize_budget)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kotel-export")
            .enable_all()
            .build()
            .map_err(io_err("starting the export runtime"))?;
        let queue = ExportQueue::from_config(export_cfg, runtime.handle())
            .map_err(|e| RunError::Export(e.to_string()))?;
        let tele = Arc::new(AgentTelemetry::new(queue.stats()));
        let telemetry_task = serve_telemetry(cfg, &tele, &runtime);

        let linker = Linker::new(
            PathBuf::from("/proc"),
            LinkBuffer::new(
                cfg.link.buffer_events,
                u64::try_from(cfg.link.window.as_nanos()).unwrap_or(u64::MAX),
            )
            .hold(u64::try_from(cfg.link.hold.as_nanos()).unwrap_or(u64::MAX)),
        );
        let linking = receiver_cfg.grpc.is_some() || receiver_cfg.http.is_some();
        let (mut receiver, mut received) = (None, None);
        if linking {
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

        let started = Instant::now();
        let resources = resources(cfg, &runtime);
        if let Some(pods) = &resources.pods {
            let _ = tele.pods.set(pods.clone());
        }
        let artifacts = artifacts(cfg, &out_dir, sidecar_tls, &runtime);
        let out_dir_for_report = out_dir.clone();
        let host_for_report = resources.host.host_name.clone();
        tele.stats.ready.store(true, Ordering::Relaxed);
        tracing::info!(
            probes = %kernel.active_probes(),
            endpoint = export_cfg
                .endpoint
                .as_deref()
                .map_or_else(|| "files".to_string(), crate::export::redact_endpoint),
            out = %out_dir.display(),
            "kotel.run.attached"
        );
        Ok(Agent {
            plan: Plan {
                spans: cfg.capture.span_rule(),
                duration: duration.filter(|d| !d.is_zero()),
                interval: cfg.metrics.interval,
                linking,
                show_status: io::stderr().is_terminal(),
                out_dir,
                endpoint: export_cfg.endpoint.clone(),
                shutdown_grace: cfg.export.shutdown_grace,
            },
            timers: Timers {
                started,
                started_unix: unix_now(),
                next_metrics: started + cfg.metrics.interval,
                next_column: started,
                last_expiry: started,
                last_status: started,
            },
            kernel,
            runtime,
            queue,
            tele,
            telemetry_task,
            receiver,
            received,
            arrived: Vec::new(),
            linker,
            link_targets: HashSet::new(),
            resources,
            ids: IdGenerator::new(),
            batcher: SpanBatcher::new(MAX_SPANS_PER_BATCH, cfg.export.span_flush),
            budget: SpanBudget::new(cfg.capture.span_budget),
            metrics: MetricsBuilder::new(
                cfg.metrics.temporality,
                cfg.metrics.cardinality_limit,
                unix_now(),
            ),
            profiles: cfg.profiles_enabled(export_cfg).then(ProfileBuilder::new),
            artifacts,
            report: ReportWriter::new(
                &out_dir_for_report,
                &host_for_report,
                cfg.metrics.interval,
                &cfg.render.trace_url_template,
            ),
            ended: Vec::new(),
            decode_log: RateLimit::new(Duration::from_secs(1)),
        })
    }
}

/// What the probes are told: the `[capture]` section, with its cgroup resolved.
fn tracer_config(cfg: &Config) -> Result<TracerConfig, RunError> {
    let c = &cfg.capture;
    let cgroup = if c.cgroup.as_os_str().is_empty() {
        None
    } else {
        Some(
            cgroup::resolve(&c.cgroup).map_err(|e| ConfigError::Invalid {
                field: "capture.cgroup",
                message: e,
            })?,
        )
    };
    let (min_latency_ns, min_sleep_latency_ns) = c.span_rule().tracer_thresholds();
    Ok(TracerConfig {
        probes: c.probes.iter().copied().collect(),
        min_latency_ns,
        min_sleep_latency_ns,
        pids: c.pids.clone(),
        cgroup,
        scale: c.scale,
        ring_buffer_bytes: c.ring_buffer_bytes,
        capture_stacks: c.stacks,
        stack_storage_size: c.stack_storage_size,
        kernel_threads: c.kernel_threads,
        btf_path: PathBuf::from(kotel_bpf::preflight::SYSFS_BTF),
        tracefs: tracefs_roots(),
        max_histograms: c.max_histograms,
        lifecycle: true,
    })
}

/// Starts `/metrics`, `/healthz` and `/readyz` unless `telemetry.listen` is `none`; the agent
/// runs on without them when the address cannot be bound.
fn serve_telemetry(
    cfg: &Config,
    tele: &Arc<AgentTelemetry>,
    runtime: &tokio::runtime::Runtime,
) -> Option<tokio::task::JoinHandle<()>> {
    let addr: SocketAddr = match cfg.telemetry.listen.as_str() {
        "none" => return None,
        a => a.parse().ok()?,
    };
    let source = Arc::clone(tele) as Arc<dyn SampleSource>;
    match runtime.block_on(telemetry::serve(addr, source)) {
        Ok((bound, task)) => {
            tracing::info!(address = %bound, "kotel.telemetry.listening");
            Some(task)
        }
        Err(e) => {
            tracing::warn!(address = %addr, error = %e, "kotel.telemetry.unavailable");
            None
        }
    }
}

/// Resources per process: /proc, the host, the `[resource]` options and this node's pods.
fn resources(cfg: &Config, runtime: &tokio::runtime::Runtime) -> Resources {
    Resources {
        cache: ProcessCache::new(PathBuf::from("/proc"), PROCESS_CACHE),
        host: HostInfo::detect(Path::new("/proc")),
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
        pods: pod_metadata(cfg.kubernetes.enabled, runtime.handle()),
    }
}

/// The picture maker: in process, or the sidecar renderer; none when `[render]` is off or the
/// in-process renderer cannot start (the agent runs on without pictures).
fn artifacts(
    cfg: &Config,
    out_dir: &Path,
    sidecar_tls: Option<tonic::transport::ClientTlsConfig>,
    runtime: &tokio::runtime::Runtime,
) -> Option<Artifacts> {
    if !cfg.render.enabled {
        return None;
    }
    if !cfg.render.renderer.is_empty() {
        return Some(Artifacts::sidecar(
            &cfg.render.renderer,
            sidecar_tls,
            runtime.handle().clone(),
        ));
    }
    match Artifacts::in_process(out_dir, &cfg.render) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(error = %e, "kotel.artifact.renderer_unavailable");
            None
        }
    }
}
