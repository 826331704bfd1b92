//! `OTEL_RESOURCE_ATTRIBUTES`: comma-separated, percent-encoded `key=value` pairs, parsed for
//! kotel's own configuration and for the service name a process declares in its environment.

/// Why resource metadata could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrichError {
    /// An `OTEL_RESOURCE_ATTRIBUTES` entry without `=` or with an empty key.
    #[error(
        "resource attribute {0:?} is not key=value; write entries as key=value separated by \
         commas, percent-encoding any ',' or '=' in values"
    )]
    MalformedPair(String),
    /// An `OTEL_RESOURCE_ATTRIBUTES` value whose percent-encoding is broken or not UTF-8.
    #[error(
        "resource attribute {0:?} has an invalid percent-encoding; '%' must be followed by two \
         hex digits and the decoded bytes must be UTF-8"
    )]
    BadEncoding(String),
}

/// Parses `OTEL_RESOURCE_ATTRIBUTES`: comma-separated `key=value` pairs, whitespace around keys
/// and values trimmed, values percent-decoded. Empty entries (`a=1,,b=2`, a trailing comma) are
/// skipped; pairs keep their order and duplicates are kept.
pub fn parse_resource_attributes(s: &str) -> Result<Vec<(String, String)>, EnrichError> {
    let mut pairs = Vec::new();
    for pair in s.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| EnrichError::MalformedPair(pair.to_owned()))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(EnrichError::MalformedPair(pair.to_owned()));
        }
        let value = percent_decode(value.trim())
            .ok_or_else(|| EnrichError::BadEncoding(pair.to_owned()))?;
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

/// `%XX` escapes decoded; `None` for a malformed escape or bytes that are not UTF-8. Shared
/// with the exporter's `OTEL_EXPORTER_OTLP_HEADERS` parsing.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn resource_attributes_parse() {
        assert_eq!(parse_resource_attributes(""), Ok(vec![]));
        assert_eq!(parse_resource_attributes("  "), Ok(vec![]));
        assert_eq!(
            parse_resource_attributes(" a = 1 ,b=x%2Cy%3Dz, c=%E2%9C%93 ,d=,e=f=g,"),
            Ok(pairs(&[
                ("a", "1"),
                ("b", "x,y=z"),
                ("c", "✓"),
                ("d", ""),
                ("e", "f=g"),
            ]))
        );
        assert_eq!(
            parse_resource_attributes("a=1,,a=2"),
            Ok(pairs(&[("a", "1"), ("a", "2")]))
        );
    }

    #[test]
    fn malformed_resource_attributes_name_the_pair() {
        assert_eq!(
            parse_resource_attributes("a=1, oops ,b=2"),
            Err(EnrichError::MalformedPair("oops".into()))
        );
        assert_eq!(
            parse_resource_attributes("=1"),
            Err(EnrichError::MalformedPair("=1".into()))
        );
        for bad in ["a=%", "a=%4", "a=%zz", "a=%ff"] {
            assert_eq!(
                parse_resource_attributes(bad),
                Err(EnrichError::BadEncoding(bad.into())),
                "{bad}"
            );
        }
        let message = parse_resource_attributes("x=1,nope")
            .unwrap_err()
            .to_string();
        assert!(message.contains("\"nope\""), "{message}");
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC*") {
            let _ = parse_resource_attributes(&s);
        }

        #[test]
        fn encoded_values_round_trip(
            key in "[a-z][a-z.]{0,12}",
            value in "\\PC{0,24}",
        ) {
            let encoded: String = value
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {
                        char::from(b).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            let parsed = parse_resource_attributes(&format!("{key}={encoded},other=1"));
            prop_assert_eq!(
                parsed,
                Ok(vec![(key, value), ("other".to_string(), "1".to_string())])
            );
        }
    }
}
