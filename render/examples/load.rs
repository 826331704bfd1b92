//! Sidecar throughput under concurrent requests: N concurrent gRPC clients each ask a running
//! `kotel-render` for distinct 1000×400 heatmaps (60×64 cells, SVG + PNG) and the renders per
//! second and the latency percentiles are printed.
//!
//! `cargo run --release -p kotel-render --example load -- http://127.0.0.1:4320 [clients] [per_client]`

use std::time::{Duration, Instant};

use kotel_proto::render::v1::renderer_client::RendererClient;
use kotel_proto::render::v1::{Format, HeatmapColumn, RenderHeatmapRequest};

/// A realistic picture: a fast mode around 20 µs and a slow mode around 4 ms, with noise
/// (varied per request so the sidecar's cache never answers).
fn request(seed: u64) -> RenderHeatmapRequest {
    let offset = -160; // about 1 µs at scale 3
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut noise = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        0.7 + 0.6 * ((x >> 11) as f64 / (1u64 << 53) as f64)
    };
    let columns = (0..60)
        .map(|_| HeatmapColumn {
            zero_count: 0,
            offset,
            bucket_counts: (0..64)
                .map(|j| {
                    let log2 = f64::from(offset + j) / 8.0;
                    let fast = 400.0 * (-(log2 + 15.6).powi(2) / 0.8).exp();
                    let slow = 30.0 * (-(log2 + 8.0).powi(2) / 1.5).exp();
                    ((fast + slow) * noise()) as u64
                })
                .collect(),
        })
        .collect();
    RenderHeatmapRequest {
        title: format!("load test {seed}"),
        scale: 3,
        start_unix_nano: 1_795_000_000_000_000_000,
        column_width_nanos: 1_000_000_000,
        columns,
        formats: vec![Format::Svg as i32, Format::Png as i32],
        width: 1000,
        height: 400,
        ..Default::default()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:4320".into());
    let clients: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(4);
    let per_client: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = RendererClient::connect(endpoint).await?;
            let mut latencies = Vec::new();
            for i in 0..per_client {
                let t = Instant::now();
                client.render_heatmap(request(c * 1_000_000 + i)).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all: Vec<Duration> = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed();
    all.sort();
    let pct = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    println!(
        "{} renders by {clients} clients in {:.2}s: {:.0} renders/s, p50 {:.1} ms, p99 {:.1} ms",
        all.len(),
        elapsed.as_secs_f64(),
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    Ok(())
}
