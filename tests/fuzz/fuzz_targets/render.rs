//! Fuzz target: render requests as the sidecar receives them (protobuf), through the limits
//! check and SVG generation. What comes out must be well-formed XML holding only the elements
//! and attributes kotel draws, with no script, no event handler and no link but the trace
//! link, and a printable title must show as text, escaped rather than lost. The first byte
//! picks the picture (bit 0: flame graph) and whether to rasterize it too (bits 1 and 2 both
//! set: a quarter of the inputs, as rasterizing costs more than the rest).
#![no_main]

use kotel_proto::render::v1::{RenderFlameRequest, RenderHeatmapRequest};
use kotel_render::heatmap::{heatmap_size, heatmap_svg, HeatmapOptions};
use kotel_render::limits::{check_flame, check_heatmap};
use kotel_render::{flame, flame_svg, svg_to_png, Limits};
use prost::Message;

/// The trace link every exemplar marker gets.
const TEMPLATE: &str = "http://localhost:16686/trace/{trace_id}?span={span_id}";

const ELEMENTS: [&str; 12] = [
    "svg",
    "g",
    "a",
    "path",
    "rect",
    "text",
    "tspan",
    "title",
    "defs",
    "linearGradient",
    "stop",
    "style",
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let limits = Limits::default();
    let (svg, size, title) = if mode & 1 == 0 {
        let Ok(req) = RenderHeatmapRequest::decode(body) else {
            return;
        };
        if check_heatmap(&req, &limits).is_err() {
            return;
        }
        let opts = HeatmapOptions {
            trace_url_template: TEMPLATE.into(),
        };
        let svg = heatmap_svg(&req, &opts).expect("a request that passed the check renders");
        (svg, heatmap_size(&req), req.title)
    } else {
        let Ok(req) = RenderFlameRequest::decode(body) else {
            return;
        };
        if check_flame(&req, &limits).is_err() {
            return;
        }
        let svg = flame_svg(&req).expect("a request that passed the check renders");
        let size = flame::svg_size(&svg).expect("a flame graph has a size");
        (svg, size, req.title)
    };
    check_svg(&svg, &title);
    if mode & 6 == 6 && u64::from(size.0) * u64::from(size.1) <= 1000 * 400 {
        let (png, w, h) = svg_to_png(&svg).expect("kotel's own SVG rasterizes");
        assert!(png.starts_with(b"\x89PNG"));
        assert_eq!((w, h), size);
    }
});

fn check_svg(svg: &str, title: &str) {
    let doc = roxmltree::Document::parse(svg)
        .unwrap_or_else(|e| panic!("the SVG is not well-formed XML: {e}"));
    for node in doc.descendants().filter(|n| n.is_element()) {
        let name = node.tag_name().name();
        assert!(ELEMENTS.contains(&name), "unexpected element <{name}>");
        for a in node.attributes() {
            let key = a.name();
            assert!(
                !key.to_ascii_lowercase().starts_with("on"),
                "event handler {key}"
            );
            if key == "href" {
                assert!(
                    a.value().starts_with("http://localhost:16686/trace/"),
                    "link {:?}",
                    a.value()
                );
            }
        }
    }
    // A printable title reaches the picture as text (escaped, not dropped or cut short).
    let shown: String = title.chars().take(100).collect();
    if !shown.trim().is_empty()
        && shown.chars().all(|c| (' '..='~').contains(&c))
        && !shown.contains("  ")
    {
        let found = doc
            .descendants()
            .filter_map(|n| n.text())
            .any(|t| t.contains(shown.trim()));
        assert!(found, "title {title:?} is not shown");
    }
}
