//! Golden SVGs: the heatmap and flame graph of fixed inputs, compared byte for byte with
//! `tests/data/<case>/expected.svg`. Re-bless with `KOTEL_BLESS=1 cargo test -p kotel-render`.

mod common;

use std::path::PathBuf;

use kotel_proto::render::v1::{FoldedStack, RenderFlameRequest};
use kotel_render::{flame_svg, heatmap_svg, HeatmapOptions};

fn compare(case: &str, actual: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(case);
    let path = dir.join("expected.svg");
    if std::env::var_os("KOTEL_BLESS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, actual).unwrap();
        eprintln!("blessed {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with KOTEL_BLESS=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{case}: SVG differs from {} (first at line {}); if the change is intended, re-bless with KOTEL_BLESS=1",
            path.display(),
            line + 1
        );
    }
}

#[test]
fn heatmap_writev_golden() {
    let req = common::heatmap_request(60, 120);
    let opts = HeatmapOptions {
        trace_url_template: "http://localhost:16686/trace/{trace_id}".into(),
    };
    let svg = heatmap_svg(&req, &opts).unwrap();
    assert_eq!(svg, heatmap_svg(&req, &opts).unwrap(), "not deterministic");
    compare("heatmap-writev", &svg);
}

#[test]
fn offcpu_flame_golden() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/offcpu-flame");
    let input = std::fs::read_to_string(dir.join("input.folded")).unwrap();
    let stacks = input
        .lines()
        .filter_map(|l| {
            let (stack, w) = l.rsplit_once(' ')?;
            Some(FoldedStack {
                stack: stack.into(),
                weight_nanos: w.parse().ok()?,
            })
        })
        .collect();
    let req = RenderFlameRequest {
        title: "Off-CPU time: nginx, postgres, java".into(),
        stacks,
        ..Default::default()
    };
    let svg = flame_svg(&req).unwrap();
    assert_eq!(svg, flame_svg(&req).unwrap(), "not deterministic");
    compare("offcpu-flame", &svg);
}
