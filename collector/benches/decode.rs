//! Criterion benchmark of the userspace hot path: decoding ring-buffer records into domain
//! events, in ns per event.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use kotel_bpf::abi::{self, RawEvent};
use kotel_collector::clock::Clock;
use kotel_collector::decode::decode_event;

fn record(kind: u8) -> Vec<u8> {
    let mut e = RawEvent {
        kind,
        start_ns: 123_456_789,
        duration_ns: 2_500_000,
        bytes: 1448,
        pid: 4242,
        tid: 4243,
        cpu: 1,
        fd: 7,
        iovcnt: 2,
        kstack_id: -1,
        ustack_id: -1,
        family: 2,
        lport: 40_000,
        dport: 443,
        ..Default::default()
    };
    e.laddr[..4].copy_from_slice(&[10, 0, 0, 2]);
    e.daddr[..4].copy_from_slice(&[10, 0, 0, 3]);
    for (d, s) in e.comm.iter_mut().zip(b"nginx-worker") {
        *d = *s as i8;
    }
    // SAFETY: RawEvent is plain old data without padding.
    unsafe { std::slice::from_raw_parts((&e as *const RawEvent).cast::<u8>(), abi::EVENT_SIZE) }
        .to_vec()
}

fn bench_decode(c: &mut Criterion) {
    let clock = Clock::with_offset(1_700_000_000_000_000_000);
    let batch: Vec<Vec<u8>> = (0..1024)
        .map(|i| record([abi::kind::WRITEV, abi::kind::TCP_SEND, abi::kind::OFFCPU][i % 3]))
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
