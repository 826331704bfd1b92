//! Hostile names: a process named `</text><script>alert(1)</script>` (and friends with quotes,
//! control characters and entities) must give well-formed SVG with no script element and no
//! event handler attribute, in the heatmap, the flame graph and the PNG path.

mod common;

use kotel_proto::render::v1::{FoldedStack, RenderFlameRequest};
use kotel_render::{flame_svg, heatmap_svg, svg_to_png, HeatmapOptions};

const HOSTILE: &[&str] = &[
    "</text><script>alert(1)</script>",
    "\"><script xmlns=\"http://www.w3.org/2000/svg\">alert(1)</script><text x=\"",
    "'><a href='javascript:alert(1)'>x</a>",
    "]]><script>alert(1)</script><![CDATA[",
    "&lt;script&gt; &amp; &#x3c;script&#x3e; &unknown;",
    "ctl\u{1}\u{8}\u{1b}[31m\u{0}nul\u{FFFF}",
    "<!-- -->--><?xml version=\"1.0\"?><!DOCTYPE x>",
];

fn assert_clean(svg: &str, what: &str) {
    let names = common::element_names(svg);
    assert!(
        !names.iter().any(|n| n.eq_ignore_ascii_case("script")),
        "{what}: script element in {names:?}"
    );
    let attrs = common::attribute_names(svg);
    assert!(
        !attrs
            .iter()
            .any(|a| a.to_ascii_lowercase().starts_with("on")),
        "{what}: event handler attribute in {attrs:?}"
    );
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, opts).unwrap();
    for n in doc.descendants() {
        for a in n.attributes() {
            if a.name() == "href" {
                assert!(
                    a.value().starts_with("http://") || a.value().starts_with("https://"),
                    "{what}: link to {}",
                    a.value()
                );
            }
        }
    }
}

#[test]
fn heatmap_titles_and_labels_are_escaped() {
    for h in HOSTILE {
        let mut req = common::heatmap_request(10, 40);
        req.title = format!("{h} (pid 1) writev");
        req.labels.insert(h.to_string(), h.to_string());
        let opts = HeatmapOptions {
            trace_url_template: "http://localhost:16686/trace/{trace_id}?q=\"<x>".into(),
        };
        let svg = heatmap_svg(&req, &opts).unwrap();
        assert_clean(&svg, h);
        assert!(svg.contains("&lt;") || !h.contains('<'));
    }
}

#[test]
fn flame_titles_and_frames_are_escaped() {
    for h in HOSTILE {
        let req = RenderFlameRequest {
            title: h.to_string(),
            stacks: vec![
                FoldedStack {
                    stack: format!("{h};inner;{h}"),
                    weight_nanos: 5_000_000,
                },
                FoldedStack {
                    stack: format!("main;{h}\nsecond line 3"),
                    weight_nanos: 2_000_000,
                },
            ],
            ..Default::default()
        };
        let svg = flame_svg(&req).unwrap();
        assert_clean(&svg, h);
    }
}

#[test]
fn hostile_svgs_still_rasterize() {
    let mut req = common::heatmap_request(10, 40);
    req.title = HOSTILE[0].into();
    let svg = heatmap_svg(&req, &HeatmapOptions::default()).unwrap();
    let (png, w, h) = svg_to_png(&svg).unwrap();
    assert_eq!((w, h), (1000, 400));
    assert!(png.starts_with(b"\x89PNG"));
}
