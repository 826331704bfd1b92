//! Criterion benchmark of OTLP profiles: one interval's slow events with stacks (10 000 of
//! them, from 20 processes, over 200 distinct stacks of 24 frames: 12 kernel, 12 user, as a
//! blocked thread's look) added to the builder and built into one request, in events per
//! second; and the request's encoded size against the same events as spans' stack attributes.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kotel_bpf::Probe;
use kotel_collector::kernel::frame::{texts, Frame, Module};
use kotel_collector::kernel::Stacks;
use kotel_collector::model::{Comm, OffcpuState};
use kotel_collector::otlp::ids::IdGenerator;
use kotel_collector::otlp::profiles::{Observation, ProfileBuilder};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

const EVENTS: u64 = 10_000;
const STACKS: u64 = 200;
const PROCESSES: u64 = 20;
const DEPTH: u64 = 12;

/// Stack `n`: kernel frames of the scheduler, user frames in a program and libc, each stack
/// its own innermost functions.
fn stacks(n: u64, libc: &Arc<Module>, program: &Arc<Module>) -> Stacks {
    let kernel: Vec<Frame> = (0..DEPTH)
        .map(|i| {
            let name = format!("kernel_fn_{}", (n + i) % 40);
            Frame::kernel(0xffff_ffff_8100_0000 + i * 0x40, Some((&name, i)))
        })
        .collect();
    let user: Vec<Frame> = (0..DEPTH)
        .map(|i| Frame {
            function: Some(format!("app::module::function_{}_{}", n % 50, i)),
            file: Some(format!("/src/app/module_{}.rs", i % 7)),
            line: Some((10 + i * 3) as u32),
            ..Frame::unnamed(
                Some(Arc::clone(if i < 3 { libc } else { program })),
                0x1000 + n * 0x100 + i * 8,
            )
        })
        .collect();
    Stacks {
        kernel: Some(kernel.into()),
        user: Some(user.into()),
        user_code: None,
    }
}

fn observations() -> Vec<Observation> {
    let libc = Arc::new(Module {
        path: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
        build_id: Some("0a1b2c3d4e5f60718293a4b5c6d7e8f901234567".into()),
    });
    let program = Arc::new(Module {
        path: "/opt/app/bin/server".into(),
        build_id: Some("fedcba9876543210fedcba9876543210fedcba98".into()),
    });
    let table: Vec<Stacks> = (0..STACKS).map(|n| stacks(n, &libc, &program)).collect();
    (0..EVENTS)
        .map(|i| Observation {
            pid: 1000 + (i % PROCESSES) as u32,
            tid: 2000 + (i % 97) as u32,
            comm: Comm::from_kernel(b"worker"),
            kind: if i % 3 == 0 {
                Probe::Writev
            } else {
                Probe::Offcpu
            },
            offcpu_state: (i % 3 != 0).then_some(OffcpuState::Interruptible),
            start_unix_nano: 1_700_000_000_000_000_000 + i * 1_000_000,
            duration_ns: 2_000_000 + i,
            stacks: table[(i % STACKS) as usize].clone(),
        })
        .collect()
}

fn resource(pid: u32) -> Resource {
    Resource {
        attributes: vec![kotel_collector::otlp::attrs::int(
            "process.pid",
            i64::from(pid),
        )],
        ..Default::default()
    }
}

fn bench_profiles(c: &mut Criterion) {
    let observed = observations();
    // Sizes, once: the request, and the same stacks as spans carry them (text attributes).
    let mut b = ProfileBuilder::new();
    for (i, o) in observed.iter().enumerate() {
        b.add(
            o.clone(),
            (i % 2 == 0).then_some(([1; 16], (i as u64).to_be_bytes())),
        );
    }
    let req = b
        .build(&mut resource, &mut IdGenerator::default())
        .expect("a request");
    let as_text: usize = observed
        .iter()
        .map(|o| {
            let k = texts(o.stacks.kernel.as_deref().unwrap_or_default());
            let u = texts(o.stacks.user.as_deref().unwrap_or_default());
            k.iter().chain(&u).map(String::len).sum::<usize>()
        })
        .sum();
    eprintln!(
        "{EVENTS} events, {STACKS} stacks: profiles request {} bytes encoded ({} per event); \
         the same stacks as span attributes' text: {as_text} bytes ({} per event)",
        req.encoded_len(),
        req.encoded_len() as u64 / EVENTS,
        as_text as u64 / EVENTS
    );

    let mut group = c.benchmark_group("profiles");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("add and build one interval", |bench| {
        bench.iter_batched(
            || observed.clone(),
            |events| {
                let mut b = ProfileBuilder::new();
                for (i, o) in events.into_iter().enumerate() {
                    b.add(
                        o,
                        (i % 2 == 0).then_some(([1; 16], (i as u64).to_be_bytes())),
                    );
                }
                black_box(b.build(&mut resource, &mut IdGenerator::default()))
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_profiles);
criterion_main!(benches);
