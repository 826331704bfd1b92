//! Renders the README pictures from realistic synthetic data:
//! `cargo run -p kotel-render --example pictures -- docs/img` writes `heatmap.png` and
//! `offcpu-flame.png` (and their SVGs) into the given directory.

#[path = "../tests/common/mod.rs"]
mod common;

use anyhow::Context as _;
use kotel_render::{flame_svg, heatmap_svg, svg_to_png, HeatmapOptions};

fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    std::fs::create_dir_all(&dir).context("creating the output directory")?;
    let heatmap = heatmap_svg(
        &common::heatmap_request(60, 120),
        &HeatmapOptions {
            trace_url_template: "http://localhost:16686/trace/{trace_id}".into(),
        },
    )?;
    let mut flame_req = common::flame_request(0);
    let input = include_str!("../tests/data/offcpu-flame/input.folded");
    flame_req.stacks = input
        .lines()
        .filter_map(|l| {
            let (s, w) = l.rsplit_once(' ')?;
            Some(kotel_proto::render::v1::FoldedStack {
                stack: s.into(),
                weight_nanos: w.parse().ok()?,
            })
        })
        .collect();
    let flame = flame_svg(&flame_req)?;
    for (name, svg) in [("heatmap", heatmap), ("offcpu-flame", flame)] {
        let (png, w, h) = svg_to_png(&svg)?;
        std::fs::write(dir.join(format!("{name}.png")), &png)?;
        std::fs::write(dir.join(format!("{name}.svg")), &svg)?;
        println!(
            "{name}: {w}x{h}, PNG {} bytes, SVG {} bytes",
            png.len(),
            svg.len()
        );
    }
    Ok(())
}
