//! PNG output decodes, has the right size, real content, and text that actually rendered
//! (the bundled font is used whatever the SVG's font-family says).

mod common;

use kotel_render::{flame_svg, heatmap_svg, svg_to_png, HeatmapOptions};

/// Decodes a PNG into (width, height, RGBA bytes).
fn decode(png: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut dec = png::Decoder::new(png);
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    assert_eq!(info.color_type, png::ColorType::Rgba);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

fn pixel(rgba: &[u8], w: u32, x: u32, y: u32) -> [u8; 4] {
    let i = ((y * w + x) * 4) as usize;
    [rgba[i], rgba[i + 1], rgba[i + 2], rgba[i + 3]]
}

fn distinct_colours(rgba: &[u8]) -> usize {
    let mut v: Vec<[u8; 4]> = rgba
        .chunks_exact(4)
        .map(|p| [p[0], p[1], p[2], p[3]])
        .collect();
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// Pixels that differ between two same-sized images inside a rectangle.
fn diff_in(a: &[u8], b: &[u8], w: u32, (x0, y0, x1, y1): (u32, u32, u32, u32)) -> usize {
    let mut n = 0;
    for y in y0..y1 {
        for x in x0..x1 {
            if pixel(a, w, x, y) != pixel(b, w, x, y) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn heatmap_png_has_size_and_content() {
    let req = common::heatmap_request(60, 120);
    let svg = heatmap_svg(&req, &HeatmapOptions::default()).unwrap();
    let (png, w, h) = svg_to_png(&svg).unwrap();
    let (dw, dh, rgba) = decode(&png);
    assert_eq!((w, h), (1000, 400));
    assert_eq!((dw, dh), (1000, 400));
    assert!(distinct_colours(&rgba) > 20, "too few colours");
    // The title area (top-left) has dark text pixels on the white background.
    let dark = (0..400)
        .flat_map(|x| (2..22).map(move |y| (x, y)))
        .filter(|&(x, y)| pixel(&rgba, w, x, y)[0] < 100)
        .count();
    assert!(dark > 200, "title text missing: {dark} dark pixels");
}

#[test]
fn text_really_renders_in_every_family() {
    for family in ["sans-serif", "serif", "monospace", "Verdana", "DejaVu Sans"] {
        let with = format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="300" height="60"><rect width="300" height="60" fill="#fff"/><text x="10" y="40" font-family="{family}" font-size="24">Hello kotel µs</text></svg>"##
        );
        let without = r##"<svg xmlns="http://www.w3.org/2000/svg" width="300" height="60"><rect width="300" height="60" fill="#fff"/></svg>"##;
        let (a, w, _) = svg_to_png(&with).unwrap();
        let (b, _, _) = svg_to_png(without).unwrap();
        let (_, _, a) = decode(&a);
        let (_, _, b) = decode(&b);
        let n = diff_in(&a, &b, w, (0, 0, 300, 60));
        assert!(n > 300, "{family}: only {n} text pixels");
    }
}

#[test]
fn flame_png_has_text_and_frames() {
    let svg = flame_svg(&common::flame_request(40)).unwrap();
    let (png, w, h) = svg_to_png(&svg).unwrap();
    let (dw, dh, rgba) = decode(&png);
    assert_eq!((dw, dh), (w, h));
    assert_eq!(w, 1200);
    assert!(distinct_colours(&rgba) > 10);
    // Title line, centred near the top.
    let dark = (400..800)
        .flat_map(|x| (10..32).map(move |y| (x, y)))
        .filter(|&(x, y)| pixel(&rgba, w, x, y)[0] < 100)
        .count();
    assert!(dark > 100, "flame title text missing: {dark}");
}
