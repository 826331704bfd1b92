//! Criterion benchmark of the linking path: an application's export request of spans is
//! linked against a buffer of 100 000 kernel events (receive → link → forward, without the
//! network), in spans per second; and the buffer's memory per 100 000 events. Each iteration
//! links against a fresh buffer (built outside the timing): a span claimed as a child is
//! taken from the buffer, so a second pass would find nothing to build.

use std::path::PathBuf;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kotel_bpf::Probe;
use kotel_collector::kernel::Stacks;
use kotel_collector::link::buffer::LinkBuffer;
use kotel_collector::link::Linker;
use kotel_collector::model::{Comm, KernelEvent};
use kotel_collector::otlp::attrs;
use kotel_collector::otlp::pending::PendingSpan;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

const EVENTS: u64 = 100_000;
const SPANS: usize = 512;

fn event(i: u64, tid: u32) -> KernelEvent {
    KernelEvent {
        kind: [
            Probe::Writev,
            Probe::TcpSend,
            Probe::Runqueue,
            Probe::Offcpu,
        ][(i % 4) as usize],
        pid: std::process::id(),
        tid,
        comm: Comm::default(),
        cpu: 0,
        start_unix_nano: 1_000_000_000 + i * 10_000,
        duration_ns: 5_000 + i % 7_000,
        bytes: Some(100),
        errno: None,
        fd: Some(3),
        iovcnt: None,
        local: None,
        peer: None,
        kernel_stack_id: None,
        user_stack_id: None,
        offcpu_state: None,
    }
}

fn bench_link(c: &mut Criterion) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    // Spans of 50 µs each spread over the buffer's time range, all on this thread.
    let spans: Vec<Span> = (0..SPANS as u64)
        .map(|i| {
            let start = 1_000_000_000 + i * (EVENTS * 10_000 / SPANS as u64);
            Span {
                trace_id: vec![1; 16],
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: "handle_request".into(),
                start_time_unix_nano: start,
                end_time_unix_nano: start + 50_000,
                attributes: vec![attrs::int("thread.id", i64::from(tid))],
                ..Default::default()
            }
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attrs::int("process.pid", i64::from(std::process::id()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let filled = || {
        let mut linker = Linker::new(
            PathBuf::from("/proc"),
            LinkBuffer::new(EVENTS as usize, u64::MAX),
        );
        for i in 0..EVENTS {
            let ev = event(i, tid);
            let pending = (i % 10 == 0).then(|| PendingSpan {
                event: ev.clone(),
                trace_id: [2; 16],
                span_id: i.to_be_bytes(),
                stacks: Stacks::default(),
                standalone: true,
                exemplar_offered: false,
            });
            let released = linker.remember(&ev, pending);
            assert!(released.is_empty());
        }
        (linker, request.clone())
    };
    let mut g = c.benchmark_group("link");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_function("link_512_spans_against_100k_events", |b| {
        b.iter_batched(
            filled,
            |(mut linker, mut req)| {
                black_box(linker.link(&mut req, None));
                (linker, req)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
    let per_event = std::mem::size_of::<kotel_collector::link::buffer::LinkedEvent>()
        + std::mem::size_of::<u32>();
    let full = std::mem::size_of::<PendingSpan>();
    eprintln!(
        "link buffer memory per 100k events: {:.1} MiB compact, +{:.1} MiB (plus symbolized stacks) for each 10% waiting to become a span",
        (per_event as f64 * 100_000.0) / 1_048_576.0,
        (full as f64 * 10_000.0) / 1_048_576.0
    );
}

criterion_group!(benches, bench_link);
criterion_main!(benches);
