//! kotel's TOML configuration: every field documented, unknown keys rejected, validated before
//! any BPF program loads, with errors that name the field. `kotel config default` prints
//! [`DEFAULT_TOML`], which parses to [`Config::default`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kotel_bpf::{Probe, ProbeSet};
use serde::{Deserialize, Deserializer};

mod profiles;

pub use profiles::{ProfilesConfig, ProfilesMode};

use crate::otlp::metrics::Temporality;
use crate::spans::policy::{parse_sleep_threshold, SpanRule, DEFAULT_SLEEP_THRESHOLD};

/// The documented default configuration, as `kotel config default` prints it.
pub const DEFAULT_TOML: &str = r#"# kotel configuration. Every key is optional; this file shows the defaults.
# Command-line flags override the file, and OTEL_* environment variables override the
# export settings of the file (flags still win).

[capture]
# Probes to run: writev, tcp_send, runqueue, offcpu, or "all". writev is off by default: its
# syscall tracepoints tax every system call on the host (docs/performance.md).
probes = ["tcp_send", "runqueue", "offcpu"]
# Only these process ids (empty: every process).
pids = []
# Only tasks in this cgroup v2 directory (empty: every cgroup).
cgroup = ""
# Events at least this long become spans; every event is counted in the histograms.
span_threshold = "1ms"
# Off-CPU waits in an interruptible sleep (an idle epoll_wait, a pool thread waiting for work)
# become spans of their own only from this long on (never below span_threshold), or never with
# "off"; uninterruptible waits (disk I/O, kernel locks) use span_threshold. A sleep inside an
# application span still becomes its child from span_threshold on, and every wait is counted
# in the off-CPU histogram of its state (kotel.offcpu.state).
sleep_threshold = "1s"
# OTLP exponential histogram scale, 0..=4 (3: buckets about 9% wide).
scale = 3
# Ring buffer size in bytes, a power of two.
ring_buffer_bytes = 8388608
# (process, probe) histograms the kernel keeps at once (off-CPU time takes two, one per
# state), about 5 KiB each; an exited process's slots are recycled.
max_histograms = 1024
# Take kernel and user stacks of what is reported: off-CPU intervals, and writev and TCP
# sends at or above the span threshold (a few microseconds per reported event).
stacks = true
# Distinct stacks the kernel holds per generation; a new generation begins at every drain of
# the ring buffer (50 ms; every 10 s on kernels without sched_exit_tp, where off-CPU stacks are
# taken at every blocked switch-out), and the one before last is emptied. Two generations,
# about 1 KiB of kernel memory per entry each; a stack that finds its bucket taken is counted
# (kotel.stacks.dropped). 1..=65536.
stack_storage_size = 4096
# Most time one drain of the ring buffer spends symbolizing user stacks not yet cached (and at
# most 64 such stacks); the rest keep module+0xoff frames, counted as deferred
# (kotel.stacks.user.symbolized). "0": no limit, however long it takes.
symbolize_budget = "50ms"
# Spans (and pictures) for kernel threads' run-queue and off-CPU time too. Off, they are
# still counted in the histograms but send nothing to userspace.
kernel_threads = false
# kotel run: most standalone spans per process and metrics interval. The slowest are kept
# (always the slowest of each probe, the exemplar), the rest are counted as skipped
# (kotel.spans.skipped, reason budget). Linked children never count against it. 0: no limit.
span_budget = 100

[metrics]
# How often histograms are read and exported.
interval = "5s"
# "cumulative" or "delta".
temporality = "cumulative"
# Most processes one metric reports separately; the rest fold into one series with
# otel.metric.overflow=true.
cardinality_limit = 2000

[resource]
# Add process.command_line (may carry secrets passed as arguments).
include_command_line = false
# Extra attributes on every resource, like OTEL_RESOURCE_ATTRIBUTES.
attributes = {}

[export]
# OTLP endpoint, e.g. "http://collector:4317". Empty: write OTLP JSON lines to out_dir.
endpoint = ""
# "grpc" or "http/protobuf".
protocol = "grpc"
# Extra request headers, e.g. { "x-api-key" = "..." }. Never logged.
headers = {}
# Deadline of one export call.
timeout = "10s"
# "gzip" or "none".
compression = "gzip"
# Most bytes the export queue holds: batches are kept protobuf-encoded, each counting its
# encoded size plus 128 bytes; past it batches are dropped and counted (queue_full).
queue_bytes = 67108864
# Where JSON lines files and summary.json go.
out_dir = "kotel-out"
# Spans wait at most this long before they are sent.
span_flush = "100ms"
# On SIGTERM or at the end of a run, how long to keep trying to deliver what is queued.
shutdown_grace = "5s"

[export.rotation]
# Without an endpoint, traces.jsonl, metrics.jsonl and logs.jsonl are rotated as the
# OpenTelemetry Collector's file exporter does: when a line would take the file past max_bytes,
# the file is renamed to a backup named for that moment (traces-2026-12-07T01-02-03.123.jsonl,
# UTC) and a fresh one is started under the same name. A line is never split; one larger than
# max_bytes is written whole to a fresh file. 0: never rotate (the files grow without bound).
max_bytes = 104857600
# Backups kept per file, the oldest deleted first (backups left in out_dir by an earlier run
# count too). 0 keeps none: a rotated file is deleted at once.
max_backups = 10

[export.tls]
# Client TLS of the exporter. An https:// endpoint is always TLS and http:// always plaintext;
# a gRPC endpoint without a scheme (host:port) is TLS unless insecure = true. A TLS failure
# never falls back to plaintext. OTEL_EXPORTER_OTLP_CERTIFICATE, _CLIENT_CERTIFICATE,
# _CLIENT_KEY and _INSECURE override these.
# CA certificates (PEM) the receiver's certificate must chain to. Empty: the system's roots.
ca_file = ""
# Client certificate chain (PEM) for mutual TLS; needs key_file. Empty: no client certificate.
cert_file = ""
# Private key (PEM: PKCS#8, PKCS#1 or SEC1) of cert_file. Its contents are never logged.
key_file = ""
# Plaintext for a gRPC endpoint given as host:port without a scheme (ignored for http:// and
# https:// endpoints, which say for themselves).
insecure = false

[export.retry]
# First wait after a retryable failure; doubles each time, with full jitter.
initial_interval = "1s"
# Longest single wait.
max_interval = "30s"
# Give up on a batch (and count it dropped) after retrying this long.
max_elapsed = "60s"

[receiver]
# OTLP/gRPC listener for applications' own telemetry ("none" disables). Everything received is
# forwarded upstream; spans get kernel child spans linked under them.
grpc = "127.0.0.1:4317"
# OTLP/HTTP listener (protobuf and JSON), or "none".
http = "127.0.0.1:4318"
# Largest request accepted, in bytes (after decompression).
max_request_bytes = 4194304
# File holding a bearer token (one line). When set, every OTLP request must carry
# "authorization: Bearer <token>" (gRPC metadata or HTTP header), or it is refused with
# UNAUTHENTICATED / 401 and counted. The environment variable KOTEL_RECEIVER_BEARER_TOKEN is
# used when this is empty. The token is never logged or printed.
bearer_token_file = ""

[receiver.tls]
# Serve both listeners over TLS with this certificate chain and private key (PEM files);
# both empty: plaintext (fine on loopback, the default address).
cert_file = ""
key_file = ""
# CA bundle (PEM) client certificates must chain to: turns on mutual TLS. Empty: no client
# certificates asked for.
client_ca_file = ""

[link]
# How long kernel events count toward the application spans that cover them (the spans'
# kotel.*.duration sums).
window = "30s"
# How long a kernel span waits, after its event ended, for the application span that covers
# it, to go out as that span's child (with a receiver running). Unclaimed, it then goes out on
# its own: each event is exported once. So standalone spans leave this much later while a
# receiver runs; an application's spans usually arrive within its SDK's batch delay (5 s by
# default) after they end. At most the window.
hold = "10s"
# Most kernel events held for linking; the oldest are evicted (and counted) past it.
buffer_events = 200000

[render]
# kotel-render sidecar (gRPC), e.g. "http://127.0.0.1:4320". Empty: render in-process into
# export.out_dir (heatmap-<pid>-<kind>.svg|png, offcpu-flame.svg|png; index.html links them).
renderer = ""
# Exemplar markers on heatmaps link here; {trace_id} and {span_id} are replaced (hex).
trace_url_template = "http://localhost:16686/trace/{trace_id}"
# Draw pictures at all.
enabled = true
# In-process rendering: most pictures kept in export.out_dir under their names (each an SVG
# and a PNG); past it the one drawn least recently is deleted (and leaves index.html).
max_pictures = 100
# In-process rendering: bytes kept in export.out_dir/artifacts, where every version of every
# picture is stored under its kotel.artifact.id (the exact picture an exemplar named); the
# oldest are deleted first, and any older than an hour. 0 keeps none.
store_max_bytes = 268435456

[render.tls]
# For an https:// renderer: CA bundle (PEM) to verify the sidecar's certificate with (empty:
# the system's roots), and a client certificate and key (PEM) when the sidecar requires
# mutual TLS. An http:// renderer with any of these set is refused.
ca_file = ""
cert_file = ""
key_file = ""

[profiles]
# Export off-CPU and slow-call stacks as OTLP profiles (profiles v1development, still changing
# upstream): profiles.jsonl in files mode, the ProfilesService over gRPC, or
# /v1development/profiles over HTTP. "auto": on in files mode, off when an endpoint is set
# (many receivers do not take profiles yet); true or false. A receiver that answers
# UNIMPLEMENTED or 404 gets one warning, and profiles are then dropped unsent and counted
# (reason unsupported). --profiles auto|on|off overrides it.
enabled = "auto"

[kubernetes]
# Pod metadata (k8s.pod.name, k8s.namespace.name, k8s.container.name, k8s.deployment.name)
# from the API server: "auto" (when KUBERNETES_SERVICE_HOST is set), "true" or "false".
enabled = "auto"

[telemetry]
# Loopback address for /metrics (Prometheus text), /healthz and /readyz; "none" disables.
listen = "127.0.0.1:9464"
"#;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// What the BPF side captures.
    pub capture: CaptureConfig,
    /// How histograms become OTLP metrics.
    pub metrics: MetricsConfig,
    /// What every resource carries.
    pub resource: ResourceConfig,
    /// Where and how data is exported.
    pub export: ExportSettings,
    /// The OTLP receiver for applications' telemetry.
    pub receiver: ReceiverSettings,
    /// Linking kernel events under application spans.
    pub link: LinkSettings,
    /// Heatmaps and flame graphs.
    pub render: RenderSettings,
    /// The agent's own HTTP endpoints.
    pub telemetry: TelemetryConfig,
    /// Pod metadata from the Kubernetes API.
    pub kubernetes: KubernetesConfig,
    /// OTLP profiles.
    pub profiles: ProfilesConfig,
}

/// `[kubernetes]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Whether to watch this node's pods for `k8s.*` resource attributes: `"auto"` (when
    /// `KUBERNETES_SERVICE_HOST` is set), `"true"` or `"false"`.
    pub enabled: KubernetesMode,
}

/// `[kubernetes] enabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubernetesMode {
    /// On when `KUBERNETES_SERVICE_HOST` is set, i.e. inside a pod.
    #[default]
    Auto,
    /// Always on; without a cluster, a warning and no metadata.
    True,
    /// Off.
    False,
}

impl KubernetesMode {
    /// Whether to watch pods, given whether `KUBERNETES_SERVICE_HOST` is set.
    pub fn wanted(self, in_cluster: bool) -> bool {
        match self {
            KubernetesMode::Auto => in_cluster,
            KubernetesMode::True => true,
            KubernetesMode::False => false,
        }
    }
}

/// `[render]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenderSettings {
    /// Sidecar gRPC endpoint; empty for in-process rendering.
    pub renderer: String,
    /// Trace link template for exemplar markers.
    pub trace_url_template: String,
    /// Draw pictures.
    pub enabled: bool,
    /// In-process: most pictures kept in the output folder.
    pub max_pictures: usize,
    /// In-process: bytes kept in the output folder's content-addressed `artifacts/` store.
    pub store_max_bytes: u64,
    /// TLS towards an `https://` sidecar.
    pub tls: RenderTlsSettings,
}

impl Default for RenderSettings {
    fn default() -> Self {
        RenderSettings {
            renderer: String::new(),
            trace_url_template: "http://localhost:16686/trace/{trace_id}".into(),
            enabled: true,
            max_pictures: 100,
            store_max_bytes: 256 << 20,
            tls: RenderTlsSettings::default(),
        }
    }
}

/// `[render.tls]`: the agent as a TLS client of the sidecar. Empty paths are unset.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenderTlsSettings {
    /// CA bundle to verify the sidecar with; empty: the system's roots.
    pub ca_file: PathBuf,
    /// Client certificate for mutual TLS.
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
}

impl RenderTlsSettings {
    /// Whether any file is set.
    pub fn is_set(&self) -> bool {
        [&self.ca_file, &self.cert_file, &self.key_file]
            .iter()
            .any(|p| !p.as_os_str().is_empty())
    }
}

/// `[receiver]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverSettings {
    /// OTLP/gRPC listen address, or "none".
    pub grpc: String,
    /// OTLP/HTTP listen address, or "none".
    pub http: String,
    /// Request size limit in bytes.
    pub max_request_bytes: usize,
    /// File holding the bearer token every request must carry; empty: none (or
    /// `KOTEL_RECEIVER_BEARER_TOKEN`). Only the path is kept here, never the token.
    pub bearer_token_file: PathBuf,
    /// TLS on both listeners.
    pub tls: ReceiverTlsSettings,
}

impl Default for ReceiverSettings {
    fn default() -> Self {
        ReceiverSettings {
            grpc: "127.0.0.1:4317".into(),
            http: "127.0.0.1:4318".into(),
            max_request_bytes: 4 << 20,
            bearer_token_file: PathBuf::new(),
            tls: ReceiverTlsSettings::default(),
        }
    }
}

/// `[receiver.tls]`. Empty paths are unset; `cert_file` and `key_file` go together.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverTlsSettings {
    /// Server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// CA bundle client certificates must chain to (mutual TLS).
    pub client_ca_file: PathBuf,
}

impl ReceiverTlsSettings {
    /// The files, when TLS is on (call after [`Config::validate`]).
    pub fn files(&self) -> Option<kotel_tls::ServerTlsFiles> {
        if self.cert_file.as_os_str().is_empty() {
            return None;
        }
        Some(kotel_tls::ServerTlsFiles {
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
            client_ca: Some(self.client_ca_file.clone()).filter(|p| !p.as_os_str().is_empty()),
        })
    }
}

/// `[link]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkSettings {
    /// How long events wait for their spans.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// How long a kernel span waits to become a child before it goes out on its own.
    #[serde(deserialize_with = "duration")]
    pub hold: Duration,
    /// Buffer capacity in events.
    pub buffer_events: usize,
}

impl Default for LinkSettings {
    fn default() -> Self {
        LinkSettings {
            window: Duration::from_secs(30),
            hold: Duration::from_secs(10),
            buffer_events: 200_000,
        }
    }
}

/// `[capture]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Probes to run.
    #[serde(deserialize_with = "probes")]
    pub probes: Vec<Probe>,
    /// Only these processes (empty: all).
    pub pids: Vec<u32>,
    /// Only tasks in this cgroup v2 directory (empty: all).
    pub cgroup: PathBuf,
    /// Events at least this long become spans.
    #[serde(deserialize_with = "duration")]
    pub span_threshold: Duration,
    /// Interruptible off-CPU waits (idle sleeps) at least this long become spans of their own
    /// (never below `span_threshold`); `None` (`"off"`): never. Linked ones become children
    /// from `span_threshold` on.
    #[serde(deserialize_with = "sleep_threshold")]
    pub sleep_threshold: Option<Duration>,
    /// Exponential histogram scale.
    pub scale: i32,
    /// Ring buffer bytes.
    pub ring_buffer_bytes: u32,
    /// Kernel histogram slots.
    pub max_histograms: u32,
    /// Stacks of off-CPU intervals and slow calls.
    pub stacks: bool,
    /// Entries of each stack-map generation.
    pub stack_storage_size: u32,
    /// Most time a drain spends symbolizing user stacks that miss the cache (zero: no limit).
    #[serde(deserialize_with = "duration")]
    pub symbolize_budget: Duration,
    /// Kernel threads' run-queue and off-CPU intervals become spans too (they are always
    /// counted in the histograms).
    pub kernel_threads: bool,
    /// Most standalone spans per process and metrics interval (0: no limit).
    pub span_budget: usize,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Export interval.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// Aggregation temporality.
    pub temporality: Temporality,
    /// Per-metric cardinality limit.
    pub cardinality_limit: usize,
}

/// `[resource]`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceConfig {
    /// Add `process.command_line`.
    pub include_command_line: bool,
    /// Extra attributes on every resource.
    pub attributes: BTreeMap<String, String>,
}

/// `[export]`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSettings {
    /// OTLP endpoint; empty for files.
    pub endpoint: String,
    /// `grpc` or `http/protobuf`.
    pub protocol: String,
    /// Extra request headers (secrets: never printed).
    pub headers: BTreeMap<String, String>,
    /// Per-call deadline.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// `gzip` or `none`.
    pub compression: String,
    /// Queue bound in bytes: what the queued batches hold, kept protobuf-encoded (each
    /// counts its encoded size plus a 128-byte entry).
    pub queue_bytes: usize,
    /// Output folder.
    pub out_dir: PathBuf,
    /// Longest wait of a span before it is sent.
    #[serde(deserialize_with = "duration")]
    pub span_flush: Duration,
    /// Delivery deadline at shutdown.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// Retry policy.
    pub retry: RetrySettings,
    /// Size-based rotation of the JSON lines files.
    pub rotation: RotationSettings,
    /// Client TLS.
    pub tls: ExportTlsSettings,
}

/// `[export.rotation]`: files mode's rotation, as the OpenTelemetry Collector's file exporter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotationSettings {
    /// Size a file may reach before it is rotated; 0 never rotates.
    pub max_bytes: u64,
    /// Backups kept per file; 0 keeps none.
    pub max_backups: usize,
}

impl Default for RotationSettings {
    fn default() -> Self {
        let r = crate::export::Rotation::DEFAULT;
        RotationSettings {
            max_bytes: r.max_bytes,
            max_backups: r.max_backups,
        }
    }
}

impl RotationSettings {
    /// As the file exporter takes it.
    pub fn rotation(&self) -> crate::export::Rotation {
        crate::export::Rotation {
            max_bytes: self.max_bytes,
            max_backups: self.max_backups,
        }
    }
}

/// `[export.tls]`. Empty paths are unset.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportTlsSettings {
    /// CA certificates (PEM) to verify the receiver; empty for the system roots.
    pub ca_file: PathBuf,
    /// Client certificate chain (PEM) for mTLS.
    pub cert_file: PathBuf,
    /// Private key (PEM) of `cert_file`; a path, so nothing secret is printed.
    pub key_file: PathBuf,
    /// Plaintext for a scheme-less gRPC endpoint.
    pub insecure: bool,
}

impl std::fmt::Debug for ExportSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportSettings")
            .field("endpoint", &crate::export::redact_endpoint(&self.endpoint))
            .field("protocol", &self.protocol)
            .field(
                "headers",
                &self
                    .headers
                    .keys()
                    .map(|k| (k, "<redacted>"))
                    .collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .field("compression", &self.compression)
            .field("queue_bytes", &self.queue_bytes)
            .field("out_dir", &self.out_dir)
            .field("span_flush", &self.span_flush)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("retry", &self.retry)
            .field("rotation", &self.rotation)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `[export.retry]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// First backoff.
    #[serde(deserialize_with = "duration")]
    pub initial_interval: Duration,
    /// Longest backoff.
    #[serde(deserialize_with = "duration")]
    pub max_interval: Duration,
    /// Give up after this long.
    #[serde(deserialize_with = "duration")]
    pub max_elapsed: Duration,
}

/// `[telemetry]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Listen address, or "none".
    pub listen: String,
}

impl CaptureConfig {
    /// Which events become spans, from `span_threshold` and `sleep_threshold`.
    pub fn span_rule(&self) -> SpanRule {
        SpanRule::new(self.span_threshold, self.sleep_threshold)
    }
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            probes: ProbeSet::defaults().iter().collect(),
            pids: Vec::new(),
            cgroup: PathBuf::new(),
            span_threshold: Duration::from_millis(1),
            sleep_threshold: parse_sleep_threshold(DEFAULT_SLEEP_THRESHOLD)
                .expect("the default sleep threshold parses"),
            scale: 3,
            ring_buffer_bytes: 8 << 20,
            max_histograms: 1024,
            stacks: true,
            stack_storage_size: kotel_bpf::DEFAULT_STACK_STORAGE,
            symbolize_budget: crate::kernel::ustack::TIME_PER_DRAIN,
            kernel_threads: false,
            span_budget: 100,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            interval: Duration::from_secs(5),
            temporality: Temporality::Cumulative,
            cardinality_limit: 2000,
        }
    }
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            endpoint: String::new(),
            protocol: "grpc".into(),
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            compression: "gzip".into(),
            queue_bytes: 64 << 20,
            out_dir: PathBuf::from("kotel-out"),
            span_flush: Duration::from_millis(100),
            shutdown_grace: Duration::from_secs(5),
            retry: RetrySettings::default(),
            rotation: RotationSettings::default(),
            tls: ExportTlsSettings::default(),
        }
    }
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(60),
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// A configuration that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A value out of range.
    #[error("config field {field}: {message}")]
    Invalid {
        /// Dotted field name, e.g. `capture.scale`.
        field: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl Config {
    /// Parses TOML text; `path` is only used in messages. Errors give the line, column and
    /// key but never quote the file's text, which may hold header values.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: parse_message(text, &e),
        })
    }

    /// Whether kotel exports OTLP profiles: `[profiles] enabled` (after `--profiles`),
    /// resolved against the effective export configuration (`"auto"` is on only without an
    /// endpoint).
    pub fn profiles_enabled(&self, export: &crate::export::ExportConfig) -> bool {
        self.profiles.enabled.wanted(export.endpoint.is_some())
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Checks every value that parsing alone does not, section by section; the first
    /// problem found is the error, naming its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_capture()?;
        self.validate_metrics()?;
        self.validate_export()?;
        self.validate_receiver()?;
        self.validate_render()?;
        self.validate_link_and_telemetry()
    }

    /// `[capture]`: probes, scale, ring buffer, histogram slots, pids.
    fn validate_capture(&self) -> Result<(), ConfigError> {
        let c = &self.capture;
        if c.probes.is_empty() {
            return bad("capture.probes", "at least one probe is needed".into());
        }
        if !(kotel_bpf::buckets::MIN_SCALE..=kotel_bpf::buckets::MAX_SCALE).contains(&c.scale) {
            return bad(
                "capture.scale",
                format!("{} is out of range 0..=4", c.scale),
            );
        }
        if !c.ring_buffer_bytes.is_power_of_two() || c.ring_buffer_bytes < 4096 {
            return bad(
                "capture.ring_buffer_bytes",
                format!(
                    "{} is not a power of two of at least 4096",
                    c.ring_buffer_bytes
                ),
            );
        }
        if c.max_histograms == 0 {
            return bad("capture.max_histograms", "must be at least 1".into());
        }
        if !(1..=kotel_bpf::abi::stack_id::MAX_ENTRIES).contains(&c.stack_storage_size) {
            return bad(
                "capture.stack_storage_size",
                format!(
                    "{} is not between 1 and {}",
                    c.stack_storage_size,
                    kotel_bpf::abi::stack_id::MAX_ENTRIES
                ),
            );
        }
        if c.pids.contains(&0) {
            return bad(
                "capture.pids",
                "pid 0 is the idle task, not a process".into(),
            );
        }
        Ok(())
    }

    /// `[metrics]`: interval and cardinality limit.
    fn validate_metrics(&self) -> Result<(), ConfigError> {
        if self.metrics.interval < Duration::from_millis(100) {
            return bad(
                "metrics.interval",
                format!("{:?} is shorter than 100ms", self.metrics.interval),
            );
        }
        if self.metrics.cardinality_limit == 0 {
            return bad("metrics.cardinality_limit", "must be at least 1".into());
        }
        Ok(())
    }

    /// `[export]`: endpoint (no credentials in it), TLS file pairs, protocol, compression, queue,
    /// timeout, retry, rotation.
    fn validate_export(&self) -> Result<(), ConfigError> {
        let e = &self.export;
        let scheme_ok = e.endpoint.starts_with("http://")
            || e.endpoint.starts_with("https://")
            || (e.protocol == "grpc" && !e.endpoint.contains("://") && e.endpoint.contains(':'));
        if !e.endpoint.is_empty() && !scheme_ok {
            return bad(
                "export.endpoint",
                format!(
                    "{:?} must start with http:// or https:// (for grpc, host:port is also \
                     accepted: TLS unless export.tls.insecure)",
                    crate::export::redact_endpoint(&e.endpoint)
                ),
            );
        }
        let authority = e
            .endpoint
            .split_once("://")
            .map_or(e.endpoint.as_str(), |(_, r)| r);
        if authority
            .split(['/', '?', '#'])
            .next()
            .unwrap_or("")
            .contains('@')
        {
            return bad(
                "export.endpoint",
                format!(
                    "{:?}: credentials in the URL are not supported (they would end up in \
                     logs); send them as a header (export.headers or OTEL_EXPORTER_OTLP_HEADERS)",
                    crate::export::redact_endpoint(&e.endpoint)
                ),
            );
        }
        let t = &e.tls;
        match (
            t.cert_file.as_os_str().is_empty(),
            t.key_file.as_os_str().is_empty(),
        ) {
            (false, true) => {
                return bad(
                    "export.tls.key_file",
                    "is needed with export.tls.cert_file".into(),
                )
            }
            (true, false) => {
                return bad(
                    "export.tls.cert_file",
                    "is needed with export.tls.key_file".into(),
                )
            }
            _ => {}
        }
        if !matches!(e.protocol.as_str(), "grpc" | "http/protobuf") {
            return bad(
                "export.protocol",
                format!("{:?} is not grpc or http/protobuf", e.protocol),
            );
        }
        if !matches!(e.compression.as_str(), "gzip" | "none") {
            return bad(
                "export.compression",
                format!("{:?} is not gzip or none", e.compression),
            );
        }
        if e.queue_bytes < 1024 {
            return bad(
                "export.queue_bytes",
                format!("{} is below 1024", e.queue_bytes),
            );
        }
        if e.timeout.is_zero() {
            return bad("export.timeout", "must be longer than 0".into());
        }
        if e.retry.initial_interval.is_zero() || e.retry.max_interval < e.retry.initial_interval {
            return bad(
                "export.retry",
                "initial_interval must be > 0 and <= max_interval".into(),
            );
        }
        let max = e.rotation.max_bytes;
        if max != 0 && max < MIN_ROTATE_BYTES {
            return bad(
                "export.rotation.max_bytes",
                format!(
                    "{max} is below {MIN_ROTATE_BYTES}; use 0 to never rotate (one OTLP request \
                     per line, a metrics request alone is often larger)"
                ),
            );
        }
        Ok(())
    }

    /// `[receiver]`: addresses, request limit, TLS file pairs.
    fn validate_receiver(&self) -> Result<(), ConfigError> {
        for (field, addr) in [
            ("receiver.grpc", &self.receiver.grpc),
            ("receiver.http", &self.receiver.http),
        ] {
            if addr != "none" && addr.parse::<std::net::SocketAddr>().is_err() {
                return bad(
                    field,
                    format!("{addr:?} is not an address:port or \"none\""),
                );
            }
        }
        if self.receiver.max_request_bytes < 1024 {
            return bad("receiver.max_request_bytes", "must be at least 1024".into());
        }
        let t = &self.receiver.tls;
        match (is_set(&t.cert_file), is_set(&t.key_file)) {
            (true, false) => {
                return bad(
                    "receiver.tls.key_file",
                    "cert_file is set: the matching private key file is needed too".into(),
                )
            }
            (false, true) => {
                return bad(
                    "receiver.tls.cert_file",
                    "key_file is set: the certificate file is needed too".into(),
                )
            }
            _ => {}
        }
        if is_set(&t.client_ca_file) && !is_set(&t.cert_file) {
            return bad(
                "receiver.tls.client_ca_file",
                "mutual TLS needs TLS: set cert_file and key_file too".into(),
            );
        }
        Ok(())
    }

    /// `[render]`: the renderer URL and its TLS files (never TLS files with a plaintext
    /// renderer), the picture count.
    fn validate_render(&self) -> Result<(), ConfigError> {
        let r = &self.render;
        let https = r.renderer.starts_with("https://");
        if !r.renderer.is_empty() && !https && !r.renderer.starts_with("http://") {
            return bad(
                "render.renderer",
                format!("{:?} must start with http:// or https://", r.renderer),
            );
        }
        if r.tls.is_set() && !https {
            return bad(
                "render.tls",
                format!(
                    "TLS files are set but render.renderer {:?} is not https://; use an \
                     https:// renderer (kotel never falls back to plaintext)",
                    r.renderer
                ),
            );
        }
        if is_set(&r.tls.cert_file) != is_set(&r.tls.key_file) {
            return bad(
                "render.tls.cert_file",
                "cert_file and key_file go together (mutual TLS)".into(),
            );
        }
        if r.max_pictures == 0 {
            return bad(
                "render.max_pictures",
                "must be at least 1 (to draw no pictures, set render.enabled = false)".into(),
            );
        }
        Ok(())
    }

    /// `[link]` and `[telemetry]`.
    fn validate_link_and_telemetry(&self) -> Result<(), ConfigError> {
        if self.link.buffer_events == 0 {
            return bad("link.buffer_events", "must be at least 1".into());
        }
        if self.link.hold > self.link.window {
            return bad(
                "link.hold",
                format!(
                    "{:?} is longer than link.window ({:?}): a span cannot wait for a link \
                     longer than its event is kept",
                    self.link.hold, self.link.window
                ),
            );
        }
        let l = &self.telemetry.listen;
        if l != "none" && l.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "telemetry.listen",
                format!("{l:?} is not an address:port or \"none\""),
            );
        }
        Ok(())
    }
}

/// The smallest `export.rotation.max_bytes` other than 0.
const MIN_ROTATE_BYTES: u64 = 4096;

/// Whether a path setting was given (empty means unset).
fn is_set(p: &Path) -> bool {
    !p.as_os_str().is_empty()
}

/// The error for an invalid `field`.
fn bad(field: &'static str, message: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid { field, message })
}

/// "line L, column C, key `k`: message", without the source snippet that toml's own
/// message carries (the line may hold a secret). The key is the text before `=` on the line,
/// or the `[table]` header.
fn parse_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return message.to_string();
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..start].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let key = if line.starts_with('[') {
        line.split(']').next().map(|t| format!("{t}]"))
    } else {
        line.split_once('=')
            .map(|(k, _)| k.trim().to_string())
            .filter(|k| !k.is_empty() && !k.contains(['"', '\'']))
    };
    match key {
        Some(key) => format!("line {line_no}, column {column}, key `{key}`: {message}"),
        None => format!("line {line_no}, column {column}: {message}"),
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e} (examples: 5s, 250ms)")))
}

fn sleep_threshold<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    parse_sleep_threshold(&s).map_err(serde::de::Error::custom)
}

fn probes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Probe>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    kotel_bpf::probe::parse_names(names.iter().map(String::as_str))
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_default_is_the_default() {
        let parsed = Config::parse(DEFAULT_TOML, Path::new("default.toml")).unwrap();
        assert_eq!(parsed, Config::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn the_sleep_threshold_is_a_duration_or_off() {
        let parse = |v: &str| {
            Config::parse(
                &format!("[capture]\nsleep_threshold = \"{v}\"\n"),
                Path::new("k.toml"),
            )
        };
        assert_eq!(parse("off").unwrap().capture.sleep_threshold, None);
        assert_eq!(
            parse("250ms").unwrap().capture.sleep_threshold,
            Some(Duration::from_millis(250))
        );
        let err = parse("sometimes").unwrap_err();
        assert!(err.to_string().contains("sleep_threshold"), "{err}");
        let rule = parse("10s").unwrap().capture.span_rule();
        assert_eq!(rule.tracer_thresholds(), (1_000_000, Some(10_000_000_000)));
    }

    #[test]
    fn kubernetes_modes() {
        for (text, mode) in [
            ("auto", KubernetesMode::Auto),
            ("true", KubernetesMode::True),
            ("false", KubernetesMode::False),
        ] {
            let toml = format!("[kubernetes]\nenabled = \"{text}\"\n");
            let cfg = Config::parse(&toml, Path::new("k.toml")).unwrap();
            assert_eq!(cfg.kubernetes.enabled, mode);
        }
        assert!(KubernetesMode::Auto.wanted(true));
        assert!(!KubernetesMode::Auto.wanted(false));
        assert!(KubernetesMode::True.wanted(false));
        assert!(!KubernetesMode::False.wanted(true));
        assert!(Config::parse("[kubernetes]\nenabled = \"yes\"\n", Path::new("k.toml")).is_err());
    }

    #[test]
    fn rotation_settings() {
        let d = Config::default();
        assert_eq!(
            d.export.rotation.rotation(),
            crate::export::Rotation::DEFAULT
        );
        assert_eq!(
            (d.render.max_pictures, d.render.store_max_bytes),
            (100, 256 << 20)
        );
        let cfg = Config::parse(
            "[export.rotation]\nmax_bytes = 0\nmax_backups = 0\n",
            Path::new("k.toml"),
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.export.rotation.rotation(), crate::export::Rotation::OFF);
        for text in [
            "[export.rotation]\nmax_backups = -1\n",
            "[export.rotation]\nmax_bytes = \"100MiB\"\n",
            "[export.rotation]\nmax_megabytes = 100\n",
        ] {
            let err = Config::parse(text, Path::new("k.toml")).unwrap_err();
            assert!(err.to_string().contains("max_"), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err =
            Config::parse("[capture]\nspan_treshold = \"2ms\"\n", Path::new("k.toml")).unwrap_err();
        assert!(err.to_string().contains("span_treshold"), "{err}");
        let err = Config::parse("[exporter]\n", Path::new("k.toml")).unwrap_err();
        assert!(err.to_string().contains("exporter"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        for (text, field) in [
            ("[capture]\nscale = 9\n", "capture.scale"),
            ("[capture]\nprobes = []\n", "capture.probes"),
            (
                "[capture]\nring_buffer_bytes = 5000\n",
                "capture.ring_buffer_bytes",
            ),
            (
                "[export]\nendpoint = \"ftp://collector:4317\"\n",
                "export.endpoint",
            ),
            ("[export]\nprotocol = \"http/json\"\n", "export.protocol"),
            ("[telemetry]\nlisten = \"everywhere\"\n", "telemetry.listen"),
            ("[metrics]\ninterval = \"1ms\"\n", "metrics.interval"),
            (
                "[receiver.tls]\ncert_file = \"/x.crt\"\n",
                "receiver.tls.key_file",
            ),
            (
                "[receiver.tls]\nkey_file = \"/x.key\"\n",
                "receiver.tls.cert_file",
            ),
            (
                "[receiver.tls]\nclient_ca_file = \"/ca.crt\"\n",
                "receiver.tls.client_ca_file",
            ),
            (
                "[render]\nrenderer = \"http://r:4320\"\n[render.tls]\nca_file = \"/ca.crt\"\n",
                "render.tls",
            ),
            (
                "[render]\nrenderer = \"https://r:4320\"\n[render.tls]\ncert_file = \"/c.crt\"\n",
                "render.tls.cert_file",
            ),
            ("[render]\nrenderer = \"r:4320\"\n", "render.renderer"),
            ("[render]\nmax_pictures = 0\n", "render.max_pictures"),
            (
                "[export.rotation]\nmax_bytes = 100\n",
                "export.rotation.max_bytes",
            ),
            (
                "[export.tls]\ncert_file = \"/c.pem\"\n",
                "export.tls.key_file",
            ),
            (
                "[export.tls]\nkey_file = \"/k.pem\"\n",
                "export.tls.cert_file",
            ),
            (
                "[export]\nprotocol = \"http/protobuf\"\nendpoint = \"collector:4318\"\n",
                "export.endpoint",
            ),
        ] {
            let cfg = Config::parse(text, Path::new("k.toml")).unwrap();
            let err = cfg.validate().unwrap_err();
            assert!(err.to_string().contains(field), "{text}: {err}");
        }
        let err =
            Config::parse("[capture]\nprobes = [\"kprobe\"]\n", Path::new("k.toml")).unwrap_err();
        assert!(
            err.to_string().contains("kprobe") && err.to_string().contains("probes"),
            "{err}"
        );
        let err =
            Config::parse("[metrics]\ninterval = \"soon\"\n", Path::new("k.toml")).unwrap_err();
        assert!(err.to_string().contains("interval"), "{err}");
    }

    #[test]
    fn parse_errors_never_quote_header_values() {
        for text in [
            "[export]\nheaders = { authorization = \"Bearer s3cret\", x = 5 }\n",
            "[export]\nheaders = { authorization = Bearer s3cret }\n",
            "[export.headers]\nauthorization = \"Bearer s3cret\"\nx-n = 7\n",
            "[export]\nheaders = { authorization = \"Bearer s3cret\" }\nbogus = 1\n",
        ] {
            let err = Config::parse(text, Path::new("k.toml")).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("s3cret"), "{text}: {shown}");
            assert!(shown.contains("line "), "{text}: {shown}");
        }
    }

    #[test]
    fn endpoint_credentials_are_refused_and_never_shown() {
        let cfg = Config::parse(
            "[export]\nendpoint = \"https://kotel:pa55w0rd@collector:4317/?k=t0ken\"\n",
            Path::new("k.toml"),
        )
        .unwrap();
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("pa55w0rd") && !shown.contains("t0ken"),
            "{shown}"
        );
        let err = cfg.validate().unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("export.endpoint"), "{shown}");
        assert!(
            !shown.contains("pa55w0rd") && !shown.contains("t0ken"),
            "{shown}"
        );
    }

    #[test]
    fn header_values_never_show_in_debug_output() {
        let cfg = Config::parse(
            "[export]\nheaders = { authorization = \"Bearer s3cret\" }\n",
            Path::new("k.toml"),
        )
        .unwrap();
        let shown = format!("{cfg:?}");
        assert!(
            shown.contains("authorization") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
