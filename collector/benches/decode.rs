//! Criterion benchmark of the userspace hot path: decoding ring-buffer records into domain
//! events, in ns per event.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use kotel_bpf::abi;
use kotel_collector::kernel::clock::Clock;
use kotel_collector::kernel::decode::decode_event;

mod common;

fn bench_decode(c: &mut Criterion) {
    let clock = Clock::with_offset(1_700_000_000_000_000_000);
    let batch: Vec<Vec<u8>> = (0..1024)
        .map(|i| {
            common::record(
                [abi::kind::WRITEV, abi::kind::TCP_SEND, abi::kind::OFFCPU][i % 3],
                4242,
                4243,
                123_456_789,
                2_500_000,
            )
        })
        .collect();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("mixed_1024", |b| {
        b.iter(|| {
            for r in &batch {
                black_box(decode_event(black_box(r), &clock).ok());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
