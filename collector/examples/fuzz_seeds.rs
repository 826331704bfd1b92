//! Writes the seed corpora of the fuzz targets in `tests/fuzz/corpus/<target>/`: real
//! `kotel_event` records, real OTLP requests in protobuf and JSON, render requests and config
//! files, each with the mode byte its target reads first. Deterministic; run it again after a
//! format changes:
//!
//! ```text
//! cargo run -p kotel-collector --example fuzz_seeds -- tests/fuzz/corpus
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use kotel_bpf::abi::{self, RawEvent};
use kotel_collector::config::DEFAULT_TOML;
use kotel_proto::render::v1::{
    ExemplarMarker, FoldedStack, Format, HeatmapColumn, RenderFlameRequest, RenderHeatmapRequest,
};
use kotel_testkit::otlp::{int_attr, sdk, str_attr};
use kotel_testkit::proc_tree::{CONTAINER_ID, CONTAINER_NS_PID, HOST_PID};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "tests/fuzz/corpus".into()),
    );
    decode(&out.join("decode"))?;
    otlp(&out.join("otlp_receiver"))?;
    render(&out.join("render"))?;
    config(&out.join("config"))?;
    Ok(())
}

fn put(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn with_mode(mode: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(body);
    v
}

fn raw_bytes(e: &RawEvent) -> Vec<u8> {
    // SAFETY: RawEvent is plain old data (integers and byte arrays) without padding, as the
    // layout tests in kotel-bpf pin; reading its bytes is sound.
    unsafe { std::slice::from_raw_parts((e as *const RawEvent).cast::<u8>(), abi::EVENT_SIZE) }
        .to_vec()
}

fn event(kind: u8) -> RawEvent {
    let mut e = RawEvent {
        kind,
        start_ns: 5_000_000_000,
        duration_ns: 1_500_000,
        bytes: 4096,
        pid: 4242,
        tid: 4243,
        cpu: 1,
        fd: 7,
        iovcnt: 2,
        kstack_id: -1,
        ustack_id: -1,
        ..Default::default()
    };
    for (d, s) in e.comm.iter_mut().zip(b"postgres") {
        *d = *s as _;
    }
    e
}

/// Ring-buffer records: one of each kind, failed calls, both address families, a stream of
/// several, and histogram snapshots in the target's compact form.
fn decode(dir: &Path) -> std::io::Result<()> {
    let mut tcp4 = event(abi::kind::TCP_SEND);
    tcp4.family = 2;
    tcp4.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    tcp4.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
    (tcp4.lport, tcp4.dport) = (40000, 443);
    let mut tcp6 = tcp4;
    tcp6.family = 10;
    tcp6.laddr = std::net::Ipv6Addr::LOCALHOST.octets();
    tcp6.daddr = "2001:db8::2"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let mut failed = event(abi::kind::WRITEV);
    failed.bytes = -32;
    let mut offcpu = event(abi::kind::OFFCPU);
    (offcpu.kstack_id, offcpu.ustack_id) = (12, 13);
    let mut hostile = event(abi::kind::RUNQUEUE);
    for (d, s) in hostile.comm.iter_mut().zip(b"</text><\"x\xff\x01") {
        *d = *s as _;
    }
    let records = [
        ("writev", event(abi::kind::WRITEV)),
        ("writev-failed", failed),
        ("tcp-v4", tcp4),
        ("tcp-v6", tcp6),
        ("runqueue-hostile-comm", hostile),
        ("offcpu-stacks", offcpu),
        ("exec", event(abi::kind::EXEC)),
        ("exit", event(abi::kind::EXIT)),
    ];
    let mut stream = Vec::new();
    for (i, (name, e)) in records.iter().enumerate() {
        // Mode: path 0 (one record), clock offset i % 4.
        put(
            dir,
            &format!("record-{name}"),
            &with_mode(i as u8 % 4, &raw_bytes(e)),
        )?;
        stream.extend(raw_bytes(e));
    }
    put(dir, "stream", &with_mode(0b0101, &stream))?;
    // Histograms: kind, pid, scale, zero, sum, max, bytes, clamped, n, (slot u16, count u64)*.
    let mut h = Vec::new();
    for (kind, pid, counts) in [
        (abi::kind::WRITEV, 1u8, &[(100u16, 5u64), (140, 2)][..]),
        (abi::kind::OFFCPU, 2, &[(60, 1)][..]),
        (abi::kind::WRITEV, 1, &[(100, 9), (150, 1)][..]),
    ] {
        h.extend([kind, pid, 3]);
        for v in [1u64, 123_456_789, 5_000_000, 8192, 0] {
            h.extend(v.to_le_bytes());
        }
        h.push(counts.len() as u8);
        for (slot, n) in counts {
            h.extend(slot.to_le_bytes());
            h.extend(n.to_le_bytes());
        }
    }
    put(dir, "histograms", &with_mode(0b1000, &h))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// OTLP requests (the testkit's [`sdk`] ones, made for the fixture `/proc` the target links
/// against). Mode: signal (0 traces, 1 metrics, 2 logs), bit 2 JSON, bit 3 gzip, bits 4–5 the
/// peer (1 = the fixture's socket, owned by its host process).
fn otlp(dir: &Path) -> std::io::Result<()> {
    let pid = |p: u32| int_attr("process.pid", i64::from(p));
    let cases: Vec<(&str, u8, ExportTraceServiceRequest)> = vec![
        ("traces-pid", 0, sdk::traces(vec![pid(HOST_PID)], 0)),
        (
            "traces-pid-today",
            0,
            sdk::traces(vec![pid(HOST_PID)], 1_700_000_000_000_000_000),
        ),
        (
            "traces-container",
            0,
            sdk::traces(
                vec![
                    pid(CONTAINER_NS_PID),
                    str_attr("container.id", CONTAINER_ID),
                ],
                0,
            ),
        ),
        ("traces-peer", 0b01_0000, sdk::traces(Vec::new(), 0)),
    ];
    for (name, mode, req) in &cases {
        let wire = req.encode_to_vec();
        let json = serde_json::to_vec(req).unwrap();
        put(dir, &format!("{name}.pb"), &with_mode(*mode, &wire))?;
        put(dir, &format!("{name}.json"), &with_mode(mode | 4, &json))?;
    }
    let wire = cases[0].2.encode_to_vec();
    put(dir, "traces-pid.pb.gz", &with_mode(8, &gzip(&wire)))?;
    let m = sdk::metrics();
    put(dir, "metrics.pb", &with_mode(1, &m.encode_to_vec()))?;
    put(
        dir,
        "metrics.json",
        &with_mode(5, &serde_json::to_vec(&m).unwrap()),
    )?;
    let l = sdk::logs();
    put(dir, "logs.pb", &with_mode(2, &l.encode_to_vec()))?;
    put(
        dir,
        "logs.json.gz",
        &with_mode(2 | 4 | 8, &gzip(&serde_json::to_vec(&l).unwrap())),
    )
}

fn heatmap(title: &str) -> RenderHeatmapRequest {
    let columns = (0..12u64)
        .map(|i| HeatmapColumn {
            zero_count: i % 3,
            offset: -160 + i as i32,
            bucket_counts: (0..40u64).map(|j| (j * 7 + i * 3) % 11).collect(),
        })
        .collect();
    RenderHeatmapRequest {
        title: title.into(),
        labels: [
            ("host.name".to_string(), "db-1".to_string()),
            (
                "k8s.pod.name".to_string(),
                "<img src=x onerror=alert(1)>".to_string(),
            ),
        ]
        .into_iter()
        .collect(),
        scale: 3,
        start_unix_nano: 1_714_564_800_000_000_000,
        column_width_nanos: 1_000_000_000,
        columns,
        markers: vec![ExemplarMarker {
            time_unix_nano: 1_714_564_805_000_000_000,
            value_seconds: 0.004,
            trace_id: vec![0x11; 16],
            span_id: vec![0x22; 8],
        }],
        formats: vec![Format::Svg as i32],
        width: 0,
        height: 0,
        include_bytes: false,
    }
}

/// Render requests. Mode: bit 0 flame graph, bits 1 and 2 both set: also rasterize.
fn render(dir: &Path) -> std::io::Result<()> {
    put(
        dir,
        "heatmap",
        &with_mode(0, &heatmap("postgres (pid 4242) writev").encode_to_vec()),
    )?;
    put(
        dir,
        "heatmap-hostile-png",
        &with_mode(
            6,
            &heatmap("</text><script>alert(1)</script>&amp;\u{1}'\"").encode_to_vec(),
        ),
    )?;
    let folded = include_str!("../../render/tests/data/offcpu-flame/input.folded");
    let mut stacks: Vec<FoldedStack> = folded
        .lines()
        .filter_map(|l| {
            let (stack, w) = l.rsplit_once(' ')?;
            Some(FoldedStack {
                stack: stack.into(),
                weight_nanos: w.parse().ok()?,
            })
        })
        .collect();
    let flame = RenderFlameRequest {
        title: "Off-CPU time: nginx, postgres".into(),
        stacks: stacks.clone(),
        ..Default::default()
    };
    put(dir, "flame", &with_mode(1, &flame.encode_to_vec()))?;
    stacks.push(FoldedStack {
        stack: "</text><script>alert(1)</script>;a\"b;\u{7};]]>".into(),
        weight_nanos: 5_000_000,
    });
    let hostile = RenderFlameRequest {
        title: "<svg onload=alert(1)>".into(),
        stacks,
        width: 600,
        ..Default::default()
    };
    put(
        dir,
        "flame-hostile-png",
        &with_mode(7, &hostile.encode_to_vec()),
    )
}

/// Config files, then after a NUL byte the environment.
fn config(dir: &Path) -> std::io::Result<()> {
    put(dir, "default.toml", DEFAULT_TOML.as_bytes())?;
    let custom = r#"
[capture]
probes = ["writev", "offcpu"]
span_threshold = "250us"
scale = 2
ring_buffer_bytes = 65536

[metrics]
interval = "1s"
temporality = "delta"
cardinality_limit = 10

[export]
endpoint = "http://collector:4317"
protocol = "grpc"
compression = "none"
timeout = "3s"
headers = { authorization = "Bearer file-secret-0123456789" }

[receiver]
grpc = "127.0.0.1:14317"
http = "none"

[link]
window = "5s"
buffer_events = 1000
"#;
    put(dir, "custom.toml", custom.as_bytes())?;
    let env = "OTEL_EXPORTER_OTLP_HEADERS=api-key=env-secret-abcdef,x-tenant=acme%20corp\n\
               OTEL_EXPORTER_OTLP_ENDPOINT=https://otel.example.com:4317\n\
               OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf\n\
               OTEL_EXPORTER_OTLP_TIMEOUT=2500\n\
               OTEL_EXPORTER_OTLP_COMPRESSION=gzip\n\
               OTEL_RESOURCE_ATTRIBUTES=service.name=shop,deployment.environment=prod\n";
    let mut with_env = custom.as_bytes().to_vec();
    with_env.push(0);
    with_env.extend_from_slice(env.as_bytes());
    put(dir, "custom-env.toml", &with_env)?;
    let bad_header = "\0OTEL_EXPORTER_OTLP_HEADERS=api-key=bad%zzsecret-value,=x\n";
    put(dir, "bad-header-env", bad_header.as_bytes())
}
