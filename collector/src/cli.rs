//! Command-line interface: `kotel capture …`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kotel_bpf::Probe;

use crate::config::ProfilesMode;
use crate::spans::policy::{parse_sleep_threshold, DEFAULT_SLEEP_THRESHOLD};

/// What `kotel --version` prints after the name: kotel's version and the OTLP protobuf
/// definitions it speaks ([`crate::export::OTLP_PROTO_VERSION`]; profiles are still the
/// `v1development` package, whose layout changes between releases).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (OTLP proto 1.10.0; profiles v1development)"
);

/// kotel: kernel-latency observability for OpenTelemetry.
#[derive(Debug, Parser)]
#[command(name = "kotel", version = VERSION, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// kotel's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture kernel latency events for a while and print them.
    Capture(CaptureArgs),
    /// Run the agent: kernel spans and metrics exported as OTLP (files by default).
    Run(Box<RunArgs>),
    /// Show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `kotel config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the documented default configuration (TOML).
    Default,
    /// Check a configuration file and print it as kotel reads it (secrets redacted).
    Check {
        /// The file.
        path: PathBuf,
    },
}

/// Options of `kotel run`; each overrides the config file and the environment.
#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    /// How long to run, e.g. 10s; without it (or with 0) kotel runs until SIGINT or SIGTERM.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Only this process id (repeat for several).
    #[arg(long = "pid", value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,

    /// Only tasks in this cgroup v2 directory or below it.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Events at least this long become spans (every event is counted in the metrics).
    #[arg(long, value_parser = parse_duration)]
    pub span_threshold: Option<Duration>,

    /// Off-CPU waits in an interruptible sleep (idle waits) become spans of their own only from
    /// this long on, or never with "off" (`capture.sleep_threshold`) [default: 1s]; linked ones
    /// are children from --span-threshold on, and all are counted in the metrics.
    #[arg(long, value_name = "DURATION|off", value_parser = parse_sleep)]
    pub sleep_threshold: Option<SleepThreshold>,

    /// How often metrics are exported.
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Folder for OTLP JSON lines files (without an endpoint) and summary.json.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Without an endpoint: rotate traces.jsonl, metrics.jsonl and logs.jsonl when a line would
    /// take them past this many bytes (`export.rotation.max_bytes`, 100 MiB; 0 never rotates).
    #[arg(long, value_name = "BYTES")]
    pub rotate_bytes: Option<u64>,

    /// Backups kept per rotated file, the oldest deleted first (`export.rotation.max_backups`,
    /// 10; 0 keeps none).
    #[arg(long, value_name = "N")]
    pub rotate_backups: Option<usize>,

    /// OTLP endpoint, e.g. http://127.0.0.1:4317; without one kotel writes files.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// OTLP protocol: grpc or http/protobuf.
    #[arg(long, value_name = "PROTOCOL", value_parser = ["grpc", "http/protobuf"])]
    pub otlp_protocol: Option<String>,

    /// Most bytes the export queue holds (batches kept protobuf-encoded, 128 bytes extra each);
    /// past it batches are dropped and counted.
    #[arg(long, value_name = "BYTES")]
    pub queue_bytes: Option<usize>,

    /// Probes to run, comma-separated, or "all" [default: tcp_send,runqueue,offcpu; writev
    /// taxes every system call on the host, see docs/performance.md].
    #[arg(long, value_parser = parse_probes)]
    pub probes: Option<ProbeList>,

    /// Spans for kernel threads' run-queue and off-CPU intervals too (`capture.kernel_threads`;
    /// they are always counted in the histograms).
    #[arg(long)]
    pub kernel_threads: bool,

    /// Most standalone spans per process and metrics interval: the slowest are kept, the rest
    /// counted as skipped (`capture.span_budget`; 0: no limit). Linked children are not
    /// counted against it.
    #[arg(long, value_name = "N")]
    pub span_budget: Option<usize>,

    /// Most time one drain spends symbolizing user stacks not yet cached; the rest keep
    /// module+0xoff (`capture.symbolize_budget`; 0: no limit) [default: 50ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub symbolize_budget: Option<Duration>,

    /// OTLP/gRPC receiver address for applications' telemetry, or "none".
    #[arg(long, value_name = "ADDR")]
    pub receiver_grpc: Option<String>,

    /// OTLP/HTTP receiver address (protobuf and JSON), or "none".
    #[arg(long, value_name = "ADDR")]
    pub receiver_http: Option<String>,

    /// How long kernel events wait for the application spans they belong to.
    #[arg(long, value_parser = parse_duration)]
    pub link_window: Option<Duration>,

    /// kotel-render sidecar (gRPC URL); without it pictures are rendered in-process into --out.
    #[arg(long, value_name = "URL")]
    pub renderer: Option<String>,

    /// Most pictures kept in --out when rendering in-process (`render.max_pictures`, 100); the
    /// one drawn least recently is deleted first.
    #[arg(long, value_name = "N")]
    pub max_pictures: Option<usize>,

    /// Bytes kept in --out/artifacts, every version of every picture under its id, when
    /// rendering in-process (`render.store_max_bytes`, 256 MiB; 0 keeps none).
    #[arg(long, value_name = "BYTES")]
    pub picture_store_bytes: Option<u64>,

    /// Address for /metrics, /healthz and /readyz, or "none".
    #[arg(long, value_name = "ADDR")]
    pub telemetry: Option<String>,

    /// OTLP profiles of off-CPU and slow-call stacks: auto (on in files mode, off with an
    /// endpoint), on or off (`profiles.enabled`) [default: auto].
    #[arg(long, value_name = "auto|on|off", value_parser = parse_profiles)]
    pub profiles: Option<ProfilesMode>,

    /// Metrics temporality: cumulative or delta.
    #[arg(long, value_parser = ["cumulative", "delta"])]
    pub temporality: Option<String>,

    /// Configuration file (TOML); `kotel config default` prints a documented one.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// How `kotel capture` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A live status line, then a per-process summary (for people).
    Table,
    /// One JSON object per line: events, then histograms, then losses (for programs).
    Jsonl,
}

/// Options of `kotel capture`.
#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// How long to capture, e.g. 5s, 250ms, 1m; 0 runs until Ctrl-C.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Only this process id (repeat for several).
    #[arg(long = "pid", value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,

    /// Only tasks in this cgroup v2 directory, e.g. /sys/fs/cgroup/system.slice/nginx.service.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Events at least this long are reported one by one; every event is counted in the
    /// histograms whatever its length.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub min_latency: Duration,

    /// Off-CPU waits in an interruptible sleep (idle waits) are reported only from this long
    /// on (never below --min-latency), or never with "off"; `0` reports them like any other
    /// event. Every wait is counted in the histogram of its state.
    #[arg(long, value_name = "DURATION|off", default_value = DEFAULT_SLEEP_THRESHOLD, value_parser = parse_sleep)]
    pub sleep_threshold: SleepThreshold,

    /// Probes to run, comma-separated, or "all" (writev taxes every system call on the host,
    /// see docs/performance.md).
    #[arg(long, default_value = kotel_bpf::DEFAULT_PROBES, value_parser = parse_probes)]
    pub probes: ProbeList,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// OTLP exponential histogram scale (0..=4; 3 gives buckets about 9% wide).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(0..=4))]
    pub scale: i32,

    /// Ring buffer size in bytes (a power of two).
    #[arg(long, default_value_t = 8 << 20, value_parser = parse_ring_size)]
    pub ring_buffer_bytes: u32,

    /// How many (process, probe) histograms the kernel keeps (about 5 KiB each; off-CPU time
    /// takes two, one per state); events of further ones are counted in the overflow
    /// histograms.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_histograms: u32,

    /// Take no kernel or user stacks (off-CPU intervals, slow writev and TCP sends).
    #[arg(long)]
    pub no_stacks: bool,

    /// Distinct stacks the kernel holds per generation (a new one every drain, 50 ms, or every
    /// 10 s on kernels without sched_exit_tp; two generations of about 1 KiB per entry); a
    /// stack that finds its bucket taken is counted as not stored.
    #[arg(long, value_name = "N", default_value_t = kotel_bpf::DEFAULT_STACK_STORAGE,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(kotel_bpf::abi::stack_id::MAX_ENTRIES)))]
    pub stack_storage_size: u32,

    /// Most time one drain spends symbolizing user stacks not yet cached; the rest keep
    /// module+0xoff (0: no limit).
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = parse_duration)]
    pub symbolize_budget: Duration,

    /// Report kernel threads' run-queue and off-CPU intervals too (always counted in the
    /// histograms).
    #[arg(long)]
    pub kernel_threads: bool,

    /// Kernel BTF file for CO-RE, for kernels without /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "PATH", default_value = kotel_bpf::preflight::SYSFS_BTF)]
    pub btf: PathBuf,
}

/// A `--sleep-threshold` value: a duration, or `off` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SleepThreshold(pub Option<Duration>);

fn parse_sleep(s: &str) -> Result<SleepThreshold, String> {
    parse_sleep_threshold(s).map(SleepThreshold)
}

fn parse_profiles(s: &str) -> Result<ProfilesMode, String> {
    s.parse()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 5s, 250ms, 1m)"))
}

/// A `--probes` value: probe names separated by commas, or `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeList(pub Vec<Probe>);

fn parse_probes(s: &str) -> Result<ProbeList, String> {
    kotel_bpf::probe::parse_names(s.split(',')).map(ProbeList)
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if n.is_power_of_two() && n >= 4096 {
        Ok(n)
    } else {
        Err(format!("{n} is not a power of two of at least 4096"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<CaptureArgs, clap::Error> {
        let mut all = vec!["kotel", "capture"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| match c.command {
            Command::Capture(a) => a,
            _ => unreachable!("capture was parsed"),
        })
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.duration, Duration::from_secs(5));
        assert_eq!(a.min_latency, Duration::from_millis(1));
        assert_eq!(
            a.probes.0.iter().copied().collect::<kotel_bpf::ProbeSet>(),
            kotel_bpf::ProbeSet::defaults()
        );
        assert!(!a.probes.0.contains(&Probe::Writev));
        assert_eq!(a.format, Format::Table);
        assert!(a.pids.is_empty());
        assert_eq!(
            a.sleep_threshold.0,
            crate::config::CaptureConfig::default().sleep_threshold,
            "capture and run default to the same sleep threshold"
        );
    }

    #[test]
    fn flags_parse() {
        let a = parse(&[
            "--duration",
            "250ms",
            "--pid",
            "12",
            "--pid",
            "13",
            "--min-latency",
            "0",
            "--probes",
            "writev,offcpu",
            "--format",
            "jsonl",
            "--sleep-threshold",
            "off",
        ])
        .unwrap();
        assert_eq!(a.sleep_threshold, SleepThreshold(None));
        assert_eq!(a.duration, Duration::from_millis(250));
        assert_eq!(a.pids, vec![12, 13]);
        assert_eq!(a.min_latency, Duration::ZERO);
        assert_eq!(a.probes.0, vec![Probe::Writev, Probe::Offcpu]);
        let all = parse(&["--probes", "all"]).unwrap();
        assert_eq!(all.probes.0, Probe::ALL.to_vec());
        assert_eq!(a.format, Format::Jsonl);
    }

    #[test]
    fn version_names_the_otlp_proto_release_and_the_profiles_package() {
        use clap::CommandFactory;
        let err = Cli::try_parse_from(["kotel", "--version"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
        let shown = Cli::command().render_version();
        assert_eq!(
            shown.trim_end(),
            format!(
                "kotel {} (OTLP proto {}; profiles v1development)",
                env!("CARGO_PKG_VERSION"),
                crate::export::OTLP_PROTO_VERSION
            )
        );
        assert!(crate::export::OTLP_PROFILES_PACKAGE.ends_with(".v1development"));
    }

    #[test]
    fn run_takes_a_profiles_mode() {
        let run = |args: &[&str]| {
            let mut all = vec!["kotel", "run"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).map(|c| match c.command {
                Command::Run(a) => a.profiles,
                _ => unreachable!("run was parsed"),
            })
        };
        assert_eq!(run(&[]).unwrap(), None);
        assert_eq!(run(&["--profiles", "on"]).unwrap(), Some(ProfilesMode::On));
        assert_eq!(
            run(&["--profiles", "off"]).unwrap(),
            Some(ProfilesMode::Off)
        );
        assert_eq!(
            run(&["--profiles", "auto"]).unwrap(),
            Some(ProfilesMode::Auto)
        );
        let err = run(&["--profiles", "maybe"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--profiles"), "{err}");
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, flag) in [
            (&["--duration", "soon"][..], "--duration"),
            (&["--probes", "writev,kprobe"][..], "--probes"),
            (&["--pid", "0"][..], "--pid"),
            (&["--format", "xml"][..], "--format"),
            (&["--scale", "9"][..], "--scale"),
            (&["--ring-buffer-bytes", "1000"][..], "--ring-buffer-bytes"),
            (&["--sleep-threshold", "later"][..], "--sleep-threshold"),
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }
}
