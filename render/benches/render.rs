//! Criterion benchmarks: a 1000×400 heatmap with 60×64 cells as SVG alone and as SVG+PNG
//! (target ≤ 10 ms), and a flame graph of 10 k stacks.

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kotel_render::{flame_svg, heatmap_svg, svg_to_png, HeatmapOptions};

fn benches(c: &mut Criterion) {
    let req = common::heatmap_request(60, 64);
    let opts = HeatmapOptions {
        trace_url_template: "http://localhost:16686/trace/{trace_id}".into(),
    };
    // Warm the font database once, as a long-running renderer would.
    let _ = svg_to_png(&heatmap_svg(&req, &opts).unwrap()).unwrap();
    let mut g = c.benchmark_group("heatmap_1000x400_60x64");
    g.bench_function("svg", |b| {
        b.iter(|| heatmap_svg(black_box(&req), &opts).unwrap())
    });
    g.bench_function("svg+png", |b| {
        b.iter(|| {
            let svg = heatmap_svg(black_box(&req), &opts).unwrap();
            svg_to_png(&svg).unwrap()
        })
    });
    g.finish();

    let flame = common::flame_request(10_000);
    let mut g = c.benchmark_group("flame_10k_stacks");
    g.sample_size(20);
    g.bench_function("svg", |b| b.iter(|| flame_svg(black_box(&flame)).unwrap()));
    g.finish();
}

criterion_group!(render, benches);
criterion_main!(render);
