//! OTLP JSON for profiles requests. `opentelemetry-proto`'s serde support writes profiles the
//! way it writes traces except for a few fields: link trace and span ids come out as arrays of
//! numbers (OTLP JSON wants hex, as for span ids), `original_payload` as an array (the protobuf
//! JSON mapping wants base64), and most 64-bit integers as JSON numbers (the mapping writes them
//! as strings, which is also what the traces file does for times). [`to_json`] fixes those
//! fields after serde, [`from_json`] undoes it before serde, so a line decodes with the official
//! protobuf JSON parsers and with the crate alike.

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use serde_json::Value;

use crate::otlp::ids::hex;

/// How one field differs between the crate's serde form and OTLP JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Bytes as lower-case hex (trace and span ids).
    Hex,
    /// Bytes as standard base64.
    Base64,
    /// A 64-bit integer (or an array of them) as decimal strings.
    Int64,
}

/// Where the fields are, as the path of camelCase keys from the request (arrays on the way are
/// walked element by element), with their OTLP JSON form.
const FIELDS: &[(&[&str], Form)] = &[
    (&["dictionary", "linkTable", "traceId"], Form::Hex),
    (&["dictionary", "linkTable", "spanId"], Form::Hex),
    (&["dictionary", "mappingTable", "memoryStart"], Form::Int64),
    (&["dictionary", "mappingTable", "memoryLimit"], Form::Int64),
    (&["dictionary", "mappingTable", "fileOffset"], Form::Int64),
    (&["dictionary", "locationTable", "address"], Form::Int64),
    (
        &["dictionary", "locationTable", "lines", "line"],
        Form::Int64,
    ),
    (
        &["dictionary", "locationTable", "lines", "column"],
        Form::Int64,
    ),
    (&["dictionary", "functionTable", "startLine"], Form::Int64),
    (
        &[PROFILES, "scopeProfiles", "profiles", "timeUnixNano"],
        Form::Int64,
    ),
    (
        &[PROFILES, "scopeProfiles", "profiles", "durationNano"],
        Form::Int64,
    ),
    (
        &[PROFILES, "scopeProfiles", "profiles", "period"],
        Form::Int64,
    ),
    (
        &[PROFILES, "scopeProfiles", "profiles", "originalPayload"],
        Form::Base64,
    ),
    (
        &[PROFILES, "scopeProfiles", "profiles", "samples", "values"],
        Form::Int64,
    ),
];

const PROFILES: &str = "resourceProfiles";

/// `request` as one line of OTLP JSON (no newline).
pub fn to_json(request: &ExportProfilesServiceRequest) -> serde_json::Result<Vec<u8>> {
    let mut value = serde_json::to_value(request)?;
    for (path, form) in FIELDS {
        visit(&mut value, path, &mut |v| to_otlp(v, *form));
    }
    serde_json::to_vec(&value)
}

/// A request from a line [`to_json`] wrote (or any OTLP JSON profiles request whose ids are
/// hex and 64-bit integers numbers or strings).
pub fn from_json(line: &str) -> serde_json::Result<ExportProfilesServiceRequest> {
    let mut value: Value = serde_json::from_str(line)?;
    let mut bad = None;
    for (path, form) in FIELDS {
        visit(&mut value, path, &mut |v| {
            if let Err(e) = from_otlp(v, *form) {
                bad.get_or_insert(e);
            }
        });
    }
    if let Some(e) = bad {
        return Err(serde::de::Error::custom(e));
    }
    serde_json::from_value(value)
}

/// Calls `f` on every value at `path` under `value`, walking into arrays on the way.
fn visit(value: &mut Value, path: &[&str], f: &mut dyn FnMut(&mut Value)) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| visit(v, path, f)),
        Value::Object(map) => match path {
            [] => f(value),
            [key, rest @ ..] => {
                if let Some(v) = map.get_mut(*key) {
                    if rest.is_empty() {
                        f(v)
                    } else {
                        visit(v, rest, f)
                    }
                }
            }
        },
        _ => {}
    }
}

/// The crate's serde form of one field → OTLP JSON.
fn to_otlp(value: &mut Value, form: Form) {
    match form {
        Form::Hex | Form::Base64 => {
            let Some(bytes) = byte_array(value) else {
                return;
            };
            *value = Value::String(match form {
                Form::Hex => hex(&bytes),
                _ => base64::engine::general_purpose::STANDARD.encode(bytes),
            });
        }
        Form::Int64 => match value {
            Value::Array(items) => items.iter_mut().for_each(int_to_string),
            v => int_to_string(v),
        },
    }
}

/// OTLP JSON of one field → the crate's serde form.
fn from_otlp(value: &mut Value, form: Form) -> Result<(), String> {
    match form {
        Form::Hex | Form::Base64 => {
            let Value::String(text) = value else {
                return Ok(());
            };
            let bytes = match form {
                Form::Hex => unhex(text).ok_or_else(|| format!("{text:?} is not hex"))?,
                _ => base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|e| format!("{text:?} is not base64: {e}"))?,
            };
            *value = Value::Array(bytes.into_iter().map(Value::from).collect());
            Ok(())
        }
        Form::Int64 => match value {
            Value::Array(items) => items.iter_mut().try_for_each(string_to_int),
            v => string_to_int(v),
        },
    }
}

fn byte_array(value: &Value) -> Option<Vec<u8>> {
    value
        .as_array()?
        .iter()
        .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
        .collect()
}

fn int_to_string(value: &mut Value) {
    if let Value::Number(n) = value {
        *value = Value::String(n.to_string());
    }
}

fn string_to_int(value: &mut Value) -> Result<(), String> {
    if let Value::String(text) = value {
        let number = match text.parse::<u64>() {
            Ok(u) => Value::from(u),
            Err(_) => Value::from(
                text.parse::<i64>()
                    .map_err(|_| format!("{text:?} is not a 64-bit integer"))?,
            ),
        };
        *value = number;
    }
    Ok(())
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use kotel_testkit::otlp::tagged;

    use super::*;

    #[test]
    fn ids_are_hex_and_64_bit_integers_strings() {
        let mut request = tagged::profiles(5, 2);
        let profile = &mut request.resource_profiles[0].scope_profiles[0].profiles[0];
        profile.original_payload = b"pprof\xff".to_vec();
        profile.original_payload_format = "pprof".into();
        let line = to_json(&request).unwrap();
        let v: Value = serde_json::from_slice(&line).unwrap();
        let link = &v["dictionary"]["linkTable"][1];
        assert_eq!(link["traceId"], "00000000000000050000000000000000");
        assert_eq!(link["spanId"], "0000000000001389");
        assert_eq!(v["dictionary"]["linkTable"][0]["spanId"], "");
        let p = &v["resourceProfiles"][0]["scopeProfiles"][0]["profiles"][0];
        assert_eq!(p["profileId"], "00000000000000050000000000000000");
        assert_eq!(p["timeUnixNano"], "1700000000000000000");
        assert_eq!(p["originalPayload"], "cHByb2b/");
        assert_eq!(p["samples"][0]["values"][0], "1000000");
        assert_eq!(
            p["samples"][0]["timestampsUnixNano"][0],
            "1700000000000000000"
        );
        assert_eq!(
            v["dictionary"]["locationTable"][1]["address"],
            (0x40_1000u64).to_string()
        );
        assert_eq!(v["dictionary"]["stringTable"][0], "");
    }

    #[test]
    fn lines_decode_back_to_the_same_request() {
        let mut request = tagged::profiles(9, 3);
        let dictionary = request.dictionary.as_mut().unwrap();
        // Values a JSON number would round: a kernel address and a negative line.
        dictionary.location_table[1].address = 0xffff_ffff_8100_0001;
        dictionary.location_table[1].lines[0].line = -1;
        // Names are data: quotes, escapes, newlines and non-ASCII survive.
        dictionary.string_table[3] = "ma\"in\\\n\u{1F600}<&>".into();
        request.resource_profiles[0].scope_profiles[0].profiles[1].original_payload = vec![0, 1, 2];
        let line = to_json(&request).unwrap();
        assert!(!line.contains(&b'\n'));
        let back = from_json(std::str::from_utf8(&line).unwrap()).unwrap();
        assert_eq!(back, request);
    }

    #[test]
    fn bad_ids_are_errors_not_panics() {
        let line = r#"{"dictionary":{"linkTable":[{"traceId":"zz","spanId":""}]}}"#;
        assert!(from_json(line).is_err());
        let line = r#"{"dictionary":{"linkTable":[{"traceId":"abc","spanId":""}]}}"#;
        assert!(from_json(line).is_err());
    }
}
