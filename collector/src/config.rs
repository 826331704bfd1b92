//! kotel's TOML configuration: every field documented, unknown keys rejected, validated before
//! any BPF program loads, with errors that name the field. `kotel config default` prints
//! [`DEFAULT_TOML`], which parses to [`Config::default`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kotel_bpf::Probe;
use serde::{Deserialize, Deserializer};

use crate::otlp::metrics::Temporality;

/// The documented default configuration, as `kotel config default` prints it.
pub const DEFAULT_TOML: &str = r#"# kotel configuration. Every key is optional; this file shows the defaults.
# Command-line flags override the file, and OTEL_* environment variables override the
# export settings of the file (flags still win).

[capture]
# Probes to run: writev, tcp_send, runqueue, offcpu.
probes = ["writev", "tcp_send", "runqueue", "offcpu"]
# Only these process ids (empty: every process).
pids = []
# Only tasks in this cgroup v2 directory (empty: every cgroup).
cgroup = ""
# Events at least this long become spans; every event is counted in the histograms.
span_threshold = "1ms"
# OTLP exponential histogram scale, 0..=4 (3: buckets about 9% wide).
scale = 3
# Ring buffer size in bytes, a power of two.
ring_buffer_bytes = 8388608
# (process, probe) histograms the kernel keeps at once, about 5 KiB each; an exited
# process's slots are recycled.
max_histograms = 1024
# Take kernel and user stacks when a thread blocks (about 1.4 us per blocked switch).
stacks = true

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
# Most bytes of encoded batches waiting to be exported; past it batches are dropped and
# counted.
queue_bytes = 67108864
# Where JSON lines files and summary.json go.
out_dir = "kotel-out"
# Spans wait at most this long before they are sent.
span_flush = "100ms"
# On SIGTERM or at the end of a run, how long to keep trying to deliver what is queued.
shutdown_grace = "5s"

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

[link]
# How long kernel events wait for the application spans they belong to.
window = "30s"
# Most kernel events held for linking; the oldest are evicted (and counted) past it.
buffer_events = 200000

[render]
# kotel-render sidecar (gRPC), e.g. "http://127.0.0.1:4320". Empty: render in-process into
# export.out_dir (heatmap-<pid>-<kind>.svg|png, offcpu-flame.svg|png, index.html).
renderer = ""
# Exemplar markers on heatmaps link here; {trace_id} and {span_id} are replaced (hex).
trace_url_template = "http://localhost:16686/trace/{trace_id}"
# Draw pictures at all.
enabled = true

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
}

impl Default for RenderSettings {
    fn default() -> Self {
        RenderSettings {
            renderer: String::new(),
            trace_url_template: "http://localhost:16686/trace/{trace_id}".into(),
            enabled: true,
        }
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
}

impl Default for ReceiverSettings {
    fn default() -> Self {
        ReceiverSettings {
            grpc: "127.0.0.1:4317".into(),
            http: "127.0.0.1:4318".into(),
            max_request_bytes: 4 << 20,
        }
    }
}

/// `[link]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkSettings {
    /// How long events wait for their spans.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Buffer capacity in events.
    pub buffer_events: usize,
}

impl Default for LinkSettings {
    fn default() -> Self {
        LinkSettings {
            window: Duration::from_secs(30),
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
    /// Exponential histogram scale.
    pub scale: i32,
    /// Ring buffer bytes.
    pub ring_buffer_bytes: u32,
    /// Kernel histogram slots.
    pub max_histograms: u32,
    /// Stacks at off-CPU switch-out.
    pub stacks: bool,
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
    /// Queue bound in bytes.
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
}

impl std::fmt::Debug for ExportSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportSettings")
            .field("endpoint", &self.endpoint)
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

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            probes: Probe::ALL.to_vec(),
            pids: Vec::new(),
            cgroup: PathBuf::new(),
            span_threshold: Duration::from_millis(1),
            scale: 3,
            ring_buffer_bytes: 8 << 20,
            max_histograms: 1024,
            stacks: true,
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
    /// Parses TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Checks every value that parsing alone does not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, message: String| Err(ConfigError::Invalid { field, message });
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
        if c.pids.contains(&0) {
            return bad(
                "capture.pids",
                "pid 0 is the idle task, not a process".into(),
            );
        }
        if self.metrics.interval < Duration::from_millis(100) {
            return bad(
                "metrics.interval",
                format!("{:?} is shorter than 100ms", self.metrics.interval),
            );
        }
        if self.metrics.cardinality_limit == 0 {
            return bad("metrics.cardinality_limit", "must be at least 1".into());
        }
        let e = &self.export;
        let scheme_ok = e.endpoint.starts_with("http://") || e.endpoint.starts_with("https://");
        if !e.endpoint.is_empty() && !scheme_ok {
            return bad(
                "export.endpoint",
                format!("{:?} must start with http:// or https://", e.endpoint),
            );
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
        if self.link.buffer_events == 0 {
            return bad("link.buffer_events", "must be at least 1".into());
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

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e} (examples: 5s, 250ms)")))
}

fn probes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Probe>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .map(|n| n.parse::<Probe>().map_err(serde::de::Error::custom))
        .collect()
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
                "[export]\nendpoint = \"collector:4317\"\n",
                "export.endpoint",
            ),
            ("[export]\nprotocol = \"http/json\"\n", "export.protocol"),
            ("[telemetry]\nlisten = \"everywhere\"\n", "telemetry.listen"),
            ("[metrics]\ninterval = \"1ms\"\n", "metrics.interval"),
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
