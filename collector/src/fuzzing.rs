//! Entry points for kotel's `cargo fuzz` targets (`tests/fuzz`), hidden from the docs and not
//! a stable API. Each takes arbitrary bytes down the path real input takes and panics when an
//! invariant breaks: ring-buffer records and histogram snapshots through decoding to spans,
//! JSON lines and OTLP metrics; OTLP request bodies through the receiver's decoding, the peer
//! lookup and linking to what is forwarded; config text and `OTEL_*` variables through
//! [`crate::agent::effective_config`]. No sockets, no BPF; linking reads a small fixture `/proc`
//! tree written once to a temporary directory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kotel_bpf::abi::{self, RawHistogram};
use kotel_bpf::buckets::BucketTable;
use kotel_bpf::{HistogramSnapshot, Probe};
use kotel_testkit::proc_tree::{self, CONTAINER_PID, CONTAINER_THREAD, HOST_PID, HOST_THREAD};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::cli::RunArgs;
use crate::export::{Batch, Signal};
use crate::kernel::clock::Clock;
use crate::kernel::decode::{decode_histogram, decode_record, DecodeError, Record};
use crate::kernel::Stacks;
use crate::link::buffer::LinkBuffer;
use crate::link::Linker;
use crate::model::{Comm, KernelEvent};
use crate::otlp::metrics::{MetricsBuilder, Temporality};
use crate::otlp::pending::PendingSpan;
use crate::otlp::spans::{kernel_span, SpanIds};
use crate::output::jsonl::write_event;
use crate::receiver::http::{self, Format};
use crate::receiver::{PeerCache, Received};

/// Reads little-endian integers off the front of the input; zeros once it is used up.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

/// Clock offsets the decoder is tried with: none, today's, and both extremes.
const OFFSETS: [i128; 4] = [
    0,
    1_700_000_000_000_000_000,
    i64::MIN as i128,
    u64::MAX as i128,
];

/// The ring-buffer target. The first byte picks the clock offset (bits 0–1) and the path
/// (bits 2–3): `0` the rest is one record, `1` a stream of `EVENT_SIZE` records as the ring
/// buffer delivers them, `2` compact histogram snapshots (see [`histograms`]).
pub fn ring_buffer(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let clock = Clock::with_offset(OFFSETS[usize::from(mode & 3)]);
    match (mode >> 2) % 3 {
        0 => record(rest, &clock),
        1 => rest.chunks(abi::EVENT_SIZE).for_each(|c| record(c, &clock)),
        _ => histograms(rest),
    }
}

fn record(bytes: &[u8], clock: &Clock) {
    match decode_record(bytes, clock) {
        Err(DecodeError::Size(n)) => assert!(n == bytes.len() && n != abi::EVENT_SIZE),
        Err(DecodeError::Kind(k)) => assert!(
            Probe::from_kind(k).is_none() && k != abi::kind::EXEC && k != abi::kind::EXIT,
            "kind {k} refused"
        ),
        Err(DecodeError::OffcpuState(s)) => assert!(
            bytes[58] == abi::kind::OFFCPU
                && ![
                    abi::offcpu_state::INTERRUPTIBLE,
                    abi::offcpu_state::UNINTERRUPTIBLE
                ]
                .contains(&s),
            "off-CPU state {s} refused"
        ),
        Ok(Record::Exec { .. } | Record::Exit { .. }) => {}
        Ok(Record::Event(ev)) => event(&ev),
    }
}

/// What every decoded event must satisfy, and the paths it takes next: its span (encoded as
/// the exporter does) and its `kotel capture --format jsonl` line.
fn event(ev: &KernelEvent) {
    let syscall = matches!(ev.kind, Probe::Writev | Probe::TcpSend);
    assert!(ev.bytes.is_none() || ev.errno.is_none(), "bytes and errno");
    assert!(
        ev.fd.is_none_or(|fd| syscall && fd >= 0),
        "fd only on syscalls, never negative (the socket-tracepoint TCP probe has none)"
    );
    assert_eq!(ev.iovcnt.is_some(), ev.kind == Probe::Writev);
    if !syscall {
        assert_eq!((ev.bytes, ev.errno), (None, None));
    }
    if ev.kind != Probe::TcpSend {
        assert_eq!((ev.local, ev.peer), (None, None));
    }
    assert_eq!(ev.offcpu_state.is_some(), ev.kind == Probe::Offcpu);
    let span = kernel_span(
        ev,
        SpanIds {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
        },
    );
    assert_eq!(span.start_time_unix_nano, ev.start_unix_nano);
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    let wire = span.encode_to_vec();
    let back = opentelemetry_proto::tonic::trace::v1::Span::decode(wire.as_slice())
        .expect("an encoded span decodes");
    assert_eq!(back, span);

    let mut line = Vec::new();
    write_event(&mut line, ev, &Stacks::default()).expect("writing to memory");
    let value: serde_json::Value = serde_json::from_slice(&line).expect("the line is JSON");
    assert_eq!(value["pid"], ev.pid);
    assert_eq!(value["start_unix_nano"], ev.start_unix_nano);
    assert_eq!(value.get("state").is_some(), ev.offcpu_state.is_some());
}

fn tables() -> &'static [BucketTable] {
    static TABLES: OnceLock<Vec<BucketTable>> = OnceLock::new();
    TABLES.get_or_init(|| {
        (kotel_bpf::buckets::MIN_SCALE..=kotel_bpf::buckets::MAX_SCALE)
            .map(|s| BucketTable::new(s).expect("a supported scale"))
            .collect()
    })
}

/// Histogram snapshots in a compact form, as many as the input holds: kind (u8), pid (u8,
/// so series repeat), scale (u8), zero count, sum, max, bytes and clamped (u64 each), then a
/// count of buckets (u8) and that many (slot u16, count u64) pairs. They go through
/// [`decode_histogram`] and then [`MetricsBuilder::build`] twice, as two delta intervals.
fn histograms(mut rest: &[u8]) {
    let scale_at = rest.get(2).copied().unwrap_or(0);
    let table = &tables()[usize::from(scale_at) % tables().len()];
    let mut decoded = Vec::new();
    while !rest.is_empty() && decoded.len() < 64 {
        let mut b = Bytes(rest);
        let kind = b.u8() % 8;
        let pid = u32::from(b.u8());
        let _scale = b.u8();
        let mut raw = RawHistogram {
            zero_count: b.u64(),
            sum_ns: b.u64(),
            max_ns: b.u64(),
            bytes: b.u64(),
            clamped: b.u64(),
            ..Default::default()
        };
        for _ in 0..b.u8() {
            let slot = usize::from(b.u16()) % raw.buckets.len();
            raw.buckets[slot] = b.u64();
        }
        rest = b.0;
        let snap = HistogramSnapshot { pid, kind, raw };
        let Some(h) = decode_histogram(&snap, table) else {
            assert!(usize::from(kind) >= abi::kind::HIST_KINDS);
            continue;
        };
        assert_eq!(h.offcpu_state.is_some(), h.kind == Probe::Offcpu);
        assert_eq!(h.scale, table.scale());
        if let (Some(first), Some(last)) = (h.bucket_counts.first(), h.bucket_counts.last()) {
            assert!(*first != 0 && *last != 0, "trimmed");
            assert!(h.offset >= table.offset());
        }
        decoded.push(h);
    }
    let mut builder = MetricsBuilder::new(Temporality::Delta, 4, 1_000);
    let agent = Resource::default();
    for now in [2_000, 3_000] {
        let req = builder.build(
            &decoded,
            now,
            &mut |_| Resource::default(),
            agent.clone(),
            &[],
        );
        let wire = req.encode_to_vec();
        let back = opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest::decode(
            wire.as_slice(),
        )
        .expect("an encoded request decodes");
        assert_eq!(back.encode_to_vec(), wire);
    }
}

/// The fixture `/proc` ([`proc_tree`]), written once per process to a temporary directory.
fn fixture_proc() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = scratch(&std::env::temp_dir(), "kotel-fuzz-proc-");
        let _ = std::fs::remove_dir_all(&root);
        proc_tree::write(&root).expect("writing the fixture /proc");
        root
    })
}

/// Kernel events of the fixture's processes, in two time ranges: near 0 and near
/// 1 700 000 000 s (the seeds' spans sit in both).
fn fixture_buffer() -> LinkBuffer {
    let mut buffer = LinkBuffer::new(64, u64::MAX);
    let mut n = 0u64;
    for base in [0u64, 1_700_000_000_000_000_000] {
        for (pid, tid) in [
            (HOST_PID, HOST_PID),
            (HOST_PID, HOST_THREAD),
            (CONTAINER_PID, CONTAINER_PID),
            (CONTAINER_PID, CONTAINER_THREAD),
        ] {
            for (i, kind) in Probe::ALL.into_iter().enumerate() {
                n += 1;
                let start = base + 1_000 + (i as u64) * 2_000 + n * 10;
                let ev = KernelEvent {
                    kind,
                    pid,
                    tid,
                    comm: Comm::from_kernel(b"app\0"),
                    cpu: 0,
                    start_unix_nano: start,
                    duration_ns: 5_000 + n,
                    bytes: matches!(kind, Probe::Writev | Probe::TcpSend).then_some(64),
                    errno: None,
                    fd: matches!(kind, Probe::Writev | Probe::TcpSend).then_some(3),
                    iovcnt: (kind == Probe::Writev).then_some(1),
                    local: None,
                    peer: None,
                    kernel_stack_id: None,
                    user_stack_id: None,
                    offcpu_state: None,
                };
                let pending = (n % 2 == 0).then(|| PendingSpan {
                    event: ev.clone(),
                    trace_id: [3; 16],
                    span_id: n.to_be_bytes(),
                    stacks: Stacks::default(),
                    standalone: true,
                    exemplar_offered: false,
                });
                let released = buffer.push(&ev, pending);
                assert!(released.is_empty(), "the fixture fits the buffer");
            }
        }
    }
    buffer
}

/// The receiver target. The first byte picks the signal (`% 3`: traces, metrics, logs), the
/// encoding (bit 2: JSON), gzip (bit 3) and the connection's peer (bits 4–5: none, the
/// fixture's socket, an unknown one, an IPv6 one); the rest is the request body. It goes
/// through the receiver's own body decoding (size cap, gunzip, protobuf or OTLP/JSON), then
/// what the receiver and the agent's loop do with an accepted request: the peer lookup,
/// linking for traces, and the encodings it is forwarded in (protobuf for gRPC and HTTP,
/// JSON for the files).
pub fn otlp_request(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let signal = Signal::ALL[usize::from(mode) % 3];
    let format = if mode & 4 != 0 {
        Format::Json
    } else {
        Format::Protobuf
    };
    let gzip = mode & 8 != 0;
    let peer: Option<SocketAddr> = match (mode >> 4) & 3 {
        0 => None,
        1 => Some(proc_tree::PEER.parse().expect("an address")),
        2 => Some("127.0.0.1:40001".parse().expect("an address")),
        _ => Some("[::1]:40000".parse().expect("an address")),
    };
    // The receiver's default limit is 4 MiB; libFuzzer's inputs are far smaller, so a small
    // cap lets the fuzzer reach the oversize paths too.
    let Some(batch) = decode_body(signal, format, gzip, body, 64 << 10) else {
        return;
    };
    assert_eq!(batch.signal(), signal);
    let items = batch.items();
    let root = fixture_proc();
    let peers = PeerCache::new(root.to_path_buf());
    if let (Some(addr), Signal::Traces) = (peer, signal) {
        let owner = peers.resolve(addr);
        assert_eq!(
            owner.is_some(),
            addr.to_string() == proc_tree::PEER,
            "{addr}"
        );
    }
    match Received::new(batch, peer) {
        Received::Traces { mut request, peer } => {
            let before = request.clone();
            let mut linker = Linker::new(root.to_path_buf(), fixture_buffer());
            let linked = linker.link(&mut request, peer);
            let pids = &linked.pids;
            assert!(
                pids.iter().all(|p| [HOST_PID, CONTAINER_PID].contains(p)),
                "{pids:?}"
            );
            assert_eq!(linked.children.len() as u64, linker.stats().child_spans);
            check_linked(&before, &request, linker.stats().child_spans);
            assert_eq!(Batch::Traces(before).items(), items);
            forward(Batch::Traces(request));
        }
        other => {
            assert_eq!(other.signal(), signal);
            forward(other.into_batch());
        }
    }
}

/// A span's (trace id, span id).
type SpanKey<'a> = (&'a [u8], &'a [u8]);

/// Linking only adds: every application span keeps its ids and times, and the added kernel
/// spans sit in the trace of an application span, under it.
fn check_linked(before: &ExportTraceServiceRequest, after: &ExportTraceServiceRequest, kids: u64) {
    assert_eq!(before.resource_spans.len(), after.resource_spans.len());
    let mut added = 0u64;
    for (b, a) in before.resource_spans.iter().zip(&after.resource_spans) {
        assert_eq!(b.resource, a.resource);
        let n = b.scope_spans.len();
        assert!(a.scope_spans.len() == n || a.scope_spans.len() == n + 1);
        // (trace id, span id) → (start, end) of each application span; a request may
        // repeat ids.
        let mut parents: HashMap<SpanKey, Vec<(u64, u64)>> = HashMap::new();
        for (sb, sa) in b.scope_spans.iter().zip(&a.scope_spans) {
            assert_eq!(sb.spans.len(), sa.spans.len());
            for (x, y) in sb.spans.iter().zip(&sa.spans) {
                assert_eq!((&x.trace_id, &x.span_id), (&y.trace_id, &y.span_id));
                assert_eq!(x.start_time_unix_nano, y.start_time_unix_nano);
                assert_eq!(x.end_time_unix_nano, y.end_time_unix_nano);
                assert_eq!(x.attributes[..], y.attributes[..x.attributes.len()]);
                parents
                    .entry((&y.trace_id, &y.span_id))
                    .or_default()
                    .push((y.start_time_unix_nano, y.end_time_unix_nano));
            }
        }
        for kid in a.scope_spans.iter().skip(n).flat_map(|s| &s.spans) {
            added += 1;
            let spans = parents
                .get(&(kid.trace_id.as_slice(), kid.parent_span_id.as_slice()))
                .expect("a kernel child hangs under an application span of its resource");
            assert!(
                spans.iter().any(|&(start, end)| {
                    kid.start_time_unix_nano < end && kid.end_time_unix_nano > start
                }),
                "a child [{}, {}) overlaps no parent of its ids: {spans:?}",
                kid.start_time_unix_nano,
                kid.end_time_unix_nano
            );
        }
    }
    assert_eq!(added, kids);
}

/// The encodings a request is forwarded in: protobuf, encoded once when queued (the queue
/// holds those bytes and the gRPC and HTTP exporters send them), and OTLP/JSON lines (the file
/// exporter decodes the queued bytes back and writes JSON).
fn forward(batch: Batch) {
    let encoded = batch.encode();
    assert_eq!(encoded.bytes().len(), batch.encoded_len());
    assert_eq!(
        (encoded.signal(), encoded.items()),
        (batch.signal(), batch.items())
    );
    let back = encoded
        .decode()
        .expect("kotel decodes the protobuf it queued");
    let json = match &back {
        Batch::Traces(r) => serde_json::to_vec(r),
        Batch::Metrics(r) => serde_json::to_vec(r),
        Batch::Logs(r) => serde_json::to_vec(r),
        Batch::Profiles(r) => crate::export::profiles_json::to_json(r),
    };
    let json = json.expect("a decoded request serializes to OTLP/JSON");
    let again = http::decode(batch.signal(), Format::Json, &json)
        .expect("kotel reads back the OTLP/JSON it writes");
    assert_eq!(again.items(), batch.items());
}

/// The config target. Up to the first NUL byte the input is the config file; after it,
/// `NAME=value` lines are the environment. Both go through [`crate::agent::effective_config`]
/// as `kotel run --config FILE` does, and the file through `kotel config check`'s parse,
/// validation and printing. Header values are secrets: they must never show in what is
/// printed or in an error.
pub fn config(data: &[u8]) {
    let (file, env_text) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let env: HashMap<String, String> = String::from_utf8_lossy(env_text)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let path = config_file();
    std::fs::write(path, file).expect("writing the fuzz config file");
    let text = String::from_utf8_lossy(file);

    // `kotel config check`.
    let mut secrets = Vec::new();
    if let Ok(cfg) = crate::config::Config::parse(&text, path) {
        let shown = match cfg.validate() {
            Ok(()) => format!("{cfg:#?}"),
            Err(e) => e.to_string(),
        };
        let mut redacted = cfg.clone();
        redacted.export.headers.values_mut().for_each(String::clear);
        // A value that also reads as something else is not a leak.
        let context = format!("{redacted:#?}{}", String::from_utf8_lossy(env_text));
        for v in cfg.export.headers.values() {
            if v.len() >= 6 && !context.contains(v.as_str()) {
                assert!(
                    !shown.contains(v.as_str()),
                    "header value {v:?} shows: {shown}"
                );
                secrets.push(v.clone());
            }
        }
    }

    // `kotel run --config FILE`, against the same run with the environment's header values
    // blanked: what shows only with them is a leak.
    let run = |env: &HashMap<String, String>| {
        let args = RunArgs {
            config: Some(path.to_path_buf()),
            ..RunArgs::default()
        };
        match crate::agent::effective_config(&args, &|name: &str| env.get(name).cloned()) {
            Ok((cfg, export)) => format!("{cfg:#?}{export:#?}"),
            Err(e) => e.to_string(),
        }
    };
    let shown = run(&env);
    if let Some(headers) = env.get(HEADERS_VAR) {
        let mut blank = env.clone();
        // Entries without '=' stay as they are, and a value that is not valid percent-encoding
        // becomes another invalid one, so the blanked run fails the same way.
        let entries: Vec<(&str, Option<&str>)> = headers
            .split(',')
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (e, None),
            })
            .collect();
        let blanked: Vec<String> = entries
            .iter()
            .map(|(k, v)| match v {
                Some(v) if percent_decodes(v.trim()) => format!("{k}="),
                Some(_) => format!("{k}=%zz"),
                None => k.to_string(),
            })
            .collect();
        blank.insert(HEADERS_VAR.into(), blanked.join(","));
        let shown_blank = run(&blank);
        for (key, value) in entries {
            let Some(value) = value.map(str::trim) else {
                continue;
            };
            if value.len() >= 6
                && !key.contains(value)
                && !text.contains(value)
                && !shown_blank.contains(value)
            {
                secrets.push(value.to_string());
            }
        }
    }
    for s in &secrets {
        assert!(
            !shown.contains(s.as_str()),
            "header value {s:?} shows: {shown}"
        );
    }
}

const HEADERS_VAR: &str = "OTEL_EXPORTER_OTLP_HEADERS";

/// Whether `s` is valid percent-encoded UTF-8, as `OTEL_EXPORTER_OTLP_HEADERS` values must be.
fn percent_decodes(s: &str) -> bool {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let Some(byte) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            else {
                return false;
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).is_ok()
}

/// The file the config target writes each input to: in memory (`/dev/shm`) when there is
/// one, since rewriting a file on ext4 flushes it to disk on close, a millisecond or more.
fn config_file() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        scratch(&dir, "kotel-fuzz-config-")
    })
}

/// `dir/<prefix><our pid>`, after removing what earlier processes, now gone, left there
/// (libFuzzer exits without running destructors).
fn scratch(dir: &Path, prefix: &str) -> PathBuf {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
            let _ = std::fs::remove_file(entry.path());
        }
    }
    dir.join(format!("{prefix}{}", std::process::id()))
}

/// What the HTTP receiver does with a body once its headers are accepted: refuse it over
/// `max` bytes, gunzip it (within `max`), decode it.
fn decode_body(
    signal: Signal,
    format: Format,
    gzip: bool,
    body: &[u8],
    max: usize,
) -> Option<Batch> {
    if body.len() > max {
        return None;
    }
    let plain = if gzip {
        http::gunzip(body, max).ok()?
    } else {
        body.to_vec()
    };
    http::decode(signal, format, &plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fuzz/corpus")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect()
    }

    /// The committed seeds (and the inputs kept from findings) pass every check.
    #[test]
    fn every_seed_passes() {
        for (target, run) in [
            ("decode", ring_buffer as fn(&[u8])),
            ("otlp_receiver", otlp_request),
            ("config", config),
        ] {
            let seeds = corpus(target);
            assert!(seeds.len() >= 4, "{target}: {} seeds", seeds.len());
            for (name, bytes) in seeds {
                eprintln!("{name}");
                run(&bytes);
            }
        }
    }

    /// The fixture is what the receiver seeds are built for: the resource's pid, the
    /// container's pid and the connection each find their process, and events become children.
    #[test]
    fn seeds_reach_linking() {
        for (seed, want) in [
            ("traces-pid.pb", HOST_PID),
            ("traces-pid-today.json", HOST_PID),
            ("traces-container.pb", CONTAINER_PID),
            ("traces-peer.pb", HOST_PID),
        ] {
            let bytes = corpus("otlp_receiver")
                .into_iter()
                .find(|(n, _)| n.ends_with(&format!("/{seed}")))
                .unwrap()
                .1;
            let (mode, body) = bytes.split_first().unwrap();
            let format = if mode & 4 != 0 {
                Format::Json
            } else {
                Format::Protobuf
            };
            let Some(Batch::Traces(mut req)) =
                decode_body(Signal::Traces, format, false, body, usize::MAX)
            else {
                panic!("{seed} decodes");
            };
            let peer = (mode >> 4 & 3 == 1).then(|| proc_tree::PEER.parse().unwrap());
            let mut linker = Linker::new(fixture_proc().to_path_buf(), fixture_buffer());
            let linked = linker.link(&mut req, peer);
            assert_eq!(linked.pids, vec![want], "{seed}");
            assert!(linker.stats().child_spans > 0, "{seed}");
        }
    }
}
