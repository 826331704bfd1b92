//! The report page: one self-contained HTML file (`index.html` in `kotel run --out`, the
//! sidecar's `/`) that answers "what was slow, where, and why". The page is fixed text
//! (`page.js` and `page.css` beside this file) plus the data, embedded as JSON
//! in a `<script type="application/json">` block that the script reads and draws with DOM
//! APIs only: every name is data, never markup. A Content-Security-Policy meta allows only
//! the page's own inline script and style (by hash) and images from its own folder; the page
//! fetches nothing, so it works from `file://`.

mod data;
mod recent;

use sha2::{Digest, Sha256};

pub use data::{Exemplar, Flame, HeatmapColumnData, HeatmapSeries, ReportData, Row};
pub use recent::{Recent, MAX_SERIES};

/// The page's script (table, heatmaps, flame graph, live reload).
const SCRIPT: &str = include_str!("page.js");
/// The page's style sheet.
const STYLE: &str = include_str!("page.css");

/// The page's Content-Security-Policy: nothing but its own inline script and style (by
/// hash) and images from its own folder; also sent as a header by the sidecar.
pub fn csp() -> String {
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; img-src 'self' data:; \
         base-uri 'none'; form-action 'none'",
        base64(&Sha256::digest(SCRIPT.as_bytes())),
        base64(&Sha256::digest(STYLE.as_bytes())),
    )
}

/// The whole page for `data`.
pub fn report_html(data: &ReportData) -> String {
    let json = script_safe_json(&serde_json::to_string(data).unwrap_or_else(|_| "{}".into()));
    let csp = csp();
    let title = crate::escape::escape(&data.title);
    let mut s = String::with_capacity(json.len() + SCRIPT.len() + STYLE.len() + 1024);
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    s.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"");
    s.push_str(&csp);
    s.push_str("\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    // No favicon request: from a server it would be a 404 in the console.
    s.push_str("<link rel=\"icon\" href=\"data:,\">\n");
    s.push_str("<title>");
    s.push_str(&title);
    s.push_str("</title>\n<style>");
    s.push_str(STYLE);
    s.push_str("</style>\n</head><body>\n<noscript>This report draws its table and pictures with JavaScript; the pictures are also files next to it.</noscript>\n");
    s.push_str("<script type=\"application/json\" id=\"kotel-data\">");
    s.push_str(&json);
    s.push_str("</script>\n<script>");
    s.push_str(SCRIPT);
    s.push_str("</script>\n</body></html>\n");
    s
}

/// JSON that cannot end its `<script>` block or open a comment: `<`, `>` and `&` become
/// `\u003c` etc. (also inside strings, where JSON allows the escape), and the line separators
/// U+2028/U+2029 are escaped too.
fn script_safe_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 with padding (for CSP hashes).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o, "{i}");
        }
    }

    #[test]
    fn names_stay_data_inside_the_json_block() {
        let data = ReportData {
            title: "</title><script>alert(1)</script>".into(),
            rows: vec![Row {
                name: "</script><img src=x onerror=alert(1)>\u{2028}".into(),
                ..Row::default()
            }],
            ..ReportData::default()
        };
        let html = report_html(&data);
        // Exactly the page's own two script elements and one style; no markup from the names.
        assert_eq!(html.matches("<script").count(), 2, "{html}");
        assert_eq!(html.matches("</script>").count(), 2);
        assert!(!html.contains("<img"));
        assert!(html.contains("&lt;/title&gt;"));
        // The block still parses back to the same name.
        let start = html.find("id=\"kotel-data\">").unwrap() + "id=\"kotel-data\">".len();
        let end = start + html[start..].find("</script>").unwrap();
        let back: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(back["rows"][0]["name"], data.rows[0].name.as_str());
    }

    #[test]
    fn the_policy_names_the_hashes_of_the_inline_script_and_style() {
        let html = report_html(&ReportData::default());
        let script = base64(&Sha256::digest(SCRIPT.as_bytes()));
        let style = base64(&Sha256::digest(STYLE.as_bytes()));
        assert!(html.contains(&format!("script-src 'sha256-{script}'")));
        assert!(html.contains(&format!("style-src 'sha256-{style}'")));
        assert!(html.contains(&format!("<script>{SCRIPT}</script>")));
        assert!(html.contains(&format!("<style>{STYLE}</style>")));
        assert!(!html.contains("unsafe-inline"));
    }
}
