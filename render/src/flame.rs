//! Latency flame graphs: folded stacks weighted by nanoseconds (blocked, or spent in a slow
//! call), laid out by inferno.
//! A pure function from a request to SVG text; the same request always gives the same bytes.
//!
//! The SVG is static: inferno's zoom/search JavaScript is removed, so no artifact carries a
//! script (frames keep their `<title>` tooltips).

use inferno::flamegraph::{self, color::BasicPalette, Options, Palette};
use kotel_proto::render::v1::RenderFlameRequest;

use crate::error::RenderError;
use crate::escape::{one_line, xml_safe_chars};

/// Default picture width in pixels.
pub const DEFAULT_WIDTH: u32 = 1200;

/// Renders the flame graph as SVG text. Checks the request for malformed values (not for
/// size: that is [`crate::limits::check_flame`]'s job): [`RenderError::Invalid`] for an unknown
/// format or nothing to draw.
pub fn flame_svg(req: &RenderFlameRequest) -> Result<String, RenderError> {
    crate::limits::validate_flame(req)?;
    let mut lines: Vec<String> = req
        .stacks
        .iter()
        .filter(|s| s.weight_nanos > 0)
        .map(|s| {
            let stack = one_line(&s.stack);
            let stack = if stack.trim().is_empty() {
                "[unknown]".to_string()
            } else {
                stack
            };
            format!("{stack} {}", s.weight_nanos)
        })
        .collect();
    lines.sort_unstable();

    let mut opt = Options::default();
    opt.title = if req.title.is_empty() {
        "Off-CPU Time Flame Graph".into()
    } else {
        xml_safe_chars(&req.title)
    };
    opt.colors = Palette::Basic(BasicPalette::Io);
    opt.hash = true;
    opt.deterministic = true;
    opt.count_name = "ns".into();
    opt.name_type = "Function:".into();
    opt.font_type = "sans-serif".into();
    opt.image_width = Some(if req.width == 0 {
        DEFAULT_WIDTH as usize
    } else {
        req.width as usize
    });
    opt.no_sort = true;

    let mut out = Vec::with_capacity(64 * 1024);
    flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), &mut out)
        .map_err(|e| RenderError::Invalid(format!("flame graph layout failed: {e}")))?;
    let svg = String::from_utf8(out)
        .map_err(|e| RenderError::Invalid(format!("flame graph is not UTF-8: {e}")))?;
    Ok(make_static(&svg))
}

/// Removes inferno's DOCTYPE and `<script>` element, the `onload` hook and the UI texts that only the
/// script drives (search, reset zoom, details), leaving a static picture.
fn make_static(svg: &str) -> String {
    let mut s = svg.replacen(r#" onload="init(evt)""#, "", 1);
    // The SVG 1.1 DOCTYPE only makes strict XML parsers refuse the file.
    if let Some(a) = s.find("<!DOCTYPE") {
        if let Some(len) = s[a..].find('>') {
            s.replace_range(a..a + len + 1, "");
        }
    }
    if let (Some(a), Some(b)) = (s.find("<script"), s.find("</script>")) {
        if a < b {
            s.replace_range(a..b + "</script>".len(), "");
        }
    }
    for id in ["details", "unzoom", "search", "matched"] {
        let open = format!(r#"<text id="{id}""#);
        if let Some(a) = s.find(&open) {
            if let Some(len) = s[a..].find("</text>") {
                s.replace_range(a..a + len + "</text>".len(), "");
            }
        }
    }
    s
}

/// Width and height in pixels from the root `<svg>` element of an SVG text.
pub fn svg_size(svg: &str) -> Option<(u32, u32)> {
    let start = svg.find("<svg")?;
    let tag = &svg[start..start + svg[start..].find('>')?];
    let attr = |name: &str| -> Option<u32> {
        let key = format!(" {name}=\"");
        let a = tag.find(&key)? + key.len();
        let b = a + tag[a..].find('"')?;
        tag[a..b].trim().parse().ok()
    };
    Some((attr("width")?, attr("height")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kotel_proto::render::v1::FoldedStack;

    fn req(stacks: &[(&str, u64)]) -> RenderFlameRequest {
        RenderFlameRequest {
            title: "off-CPU: nginx".into(),
            stacks: stacks
                .iter()
                .map(|&(s, w)| FoldedStack {
                    stack: s.into(),
                    weight_nanos: w,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn deterministic_static_and_sized() {
        let r = req(&[
            ("main;read;vfs_read;schedule", 3_000_000),
            ("main;write;sock_sendmsg;schedule", 1_000_000),
            ("main;futex_wait;schedule", 5_000_000),
        ]);
        let a = flame_svg(&r).unwrap();
        assert_eq!(a, flame_svg(&r).unwrap());
        assert!(!a.contains("<script") && !a.contains("onload"));
        assert!(a.contains("vfs_read"));
        let (w, h) = svg_size(&a).unwrap();
        assert_eq!(w, 1200);
        assert!(h > 50);
        roxmltree::Document::parse(&a).unwrap();
    }

    #[test]
    fn nothing_to_draw_is_invalid() {
        assert!(matches!(
            flame_svg(&req(&[("a;b", 0)])),
            Err(RenderError::Invalid(_))
        ));
    }
}
