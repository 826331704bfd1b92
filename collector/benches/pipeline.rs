//! Criterion benchmarks of the userspace pipeline per core: decode → enrich → aggregate (the
//! span-free path every event takes), and decode → enrich → span → OTLP protobuf encode as
//! `ExportQueue::submit` does it (the path of events above the span threshold).

use std::path::PathBuf;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use kotel_bpf::abi;
use kotel_collector::enrich::{HostInfo, ProcessCache, ResourceOptions};
use kotel_collector::export::Batch;
use kotel_collector::kernel::clock::Clock;
use kotel_collector::kernel::decode::decode_event;
use kotel_collector::otlp::ids::IdGenerator;
use kotel_collector::otlp::metrics::{ExemplarCandidate, MetricsBuilder, Temporality};
use kotel_collector::otlp::spans::{kernel_span, SpanIds};
use kotel_collector::otlp::traces::SpanBatcher;

mod common;

const BATCH: usize = 4096;

fn records() -> Vec<Vec<u8>> {
    let pid = std::process::id();
    let kinds = [
        abi::kind::WRITEV,
        abi::kind::TCP_SEND,
        abi::kind::RUNQUEUE,
        abi::kind::OFFCPU,
    ];
    (0..BATCH)
        .map(|i| {
            let (i, n) = (i as u64, i);
            common::record(
                kinds[n % 4],
                pid,
                pid + (n % 8) as u32,
                1_000_000 + i,
                1_500_000 + (i * 7919) % 3_000_000,
            )
        })
        .collect()
}

fn bench_pipeline(c: &mut Criterion) {
    let recs = records();
    let clock = Clock::with_offset(1_700_000_000_000_000_000);
    let host = HostInfo::detect(std::path::Path::new("/proc"));
    let opts = ResourceOptions::default();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.measurement_time(Duration::from_secs(4));

    g.bench_function("span_free_decode_enrich_aggregate", |b| {
        let mut cache = ProcessCache::new(PathBuf::from("/proc"), 1024);
        let mut metrics = MetricsBuilder::new(Temporality::Cumulative, 2000, 0);
        b.iter(|| {
            for r in &recs {
                let Ok(ev) = decode_event(r, &clock) else {
                    continue;
                };
                let info = cache.get(ev.pid, "");
                black_box(&info);
                metrics.observe(
                    ev.pid,
                    ev.kind,
                    ExemplarCandidate {
                        duration_ns: ev.duration_ns,
                        time_unix_nano: ev.start_unix_nano,
                        trace_id: [1; 16],
                        span_id: [1; 8],
                        offcpu_state: ev.offcpu_state,
                    },
                );
            }
        })
    });

    g.bench_function("spans_decode_enrich_span_encode", |b| {
        let mut cache = ProcessCache::new(PathBuf::from("/proc"), 1024);
        let mut ids = IdGenerator::with_seed(1);
        let mut batcher = SpanBatcher::new(usize::MAX, Duration::from_secs(3600));
        b.iter(|| {
            for r in &recs {
                let Ok(ev) = decode_event(r, &clock) else {
                    continue;
                };
                let span = kernel_span(
                    &ev,
                    SpanIds {
                        trace_id: ids.trace_id(),
                        span_id: ids.span_id(),
                        parent_span_id: None,
                    },
                );
                batcher.push(ev.pid, span);
            }
            let req = batcher
                .take(&mut |pid| cache.get(pid, "").resource(&host, &opts))
                .expect("spans");
            // What `ExportQueue::submit` does on the main loop's thread: encode once.
            let batch = Batch::Traces(req).encode();
            black_box(batch.bytes().len());
        })
    });
    g.finish();
}

criterion_group!(benches, bench_pipeline);
criterion_main!(benches);
