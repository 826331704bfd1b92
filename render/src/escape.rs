//! Escaping for every string that reaches SVG or HTML. Names come from whoever runs a process,
//! so they may hold markup, quotes or control characters that XML 1.0 does not allow.

use std::fmt::Write as _;

/// Replaces characters that are not allowed in XML 1.0 (C0 controls other than tab, newline
/// and carriage return, U+FFFE, U+FFFF) with U+FFFD, leaving markup characters alone. Used on
/// strings handed to inferno, which escapes markup itself but not control characters.
pub fn xml_safe_chars(s: &str) -> String {
    s.chars()
        .map(|c| if allowed(c) { c } else { '\u{FFFD}' })
        .collect()
}

/// Like [`xml_safe_chars`] but also turns newlines and tabs into spaces, for single-line
/// input such as folded stack lines.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if allowed(c) => c,
            _ => '\u{FFFD}',
        })
        .collect()
}

fn allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes `s` for use as XML/HTML text or a double- or single-quoted attribute value:
/// `& < > " '` become entities and characters XML forbids become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    push_escaped(&mut out, s);
    out
}

/// Appends the escaped form of `s` to `out` (see [`escape`]).
pub fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if allowed(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
}

/// Percent-encodes `s` for use inside a URL component: everything but unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`) is encoded as `%XX` of its UTF-8 bytes.
pub fn url_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_quotes_become_entities() {
        assert_eq!(
            escape(r#"</text><script>alert("x'")</script>&"#),
            "&lt;/text&gt;&lt;script&gt;alert(&quot;x&#39;&quot;)&lt;/script&gt;&amp;"
        );
    }

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(escape("a\u{1}b\u{FFFF}"), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(xml_safe_chars("a\u{0}<b>"), "a\u{FFFD}<b>");
        assert_eq!(one_line("a\nb\tc\u{7}"), "a b c\u{FFFD}");
    }

    #[test]
    fn url_components_and_hex() {
        assert_eq!(url_component("a/b c?&"), "a%2Fb%20c%3F%26");
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
    }
}
