//! Export configuration and the standard `OTEL_EXPORTER_OTLP_*` environment variables that
//! override it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{RetryConfig, Rotation, TlsFile, TlsSettings};
use crate::enrich::percent_decode;

/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// `OTEL_EXPORTER_OTLP_HEADERS`.
const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// `OTEL_EXPORTER_OTLP_TIMEOUT`.
const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
/// `OTEL_EXPORTER_OTLP_COMPRESSION`.
const COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`: CA certificates (PEM) to verify the receiver with.
const CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
/// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`: kotel's certificate chain (PEM) for mTLS.
const CLIENT_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE";
/// `OTEL_EXPORTER_OTLP_CLIENT_KEY`: the private key (PEM) of the client certificate.
const CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_CLIENT_KEY";
/// `OTEL_EXPORTER_OTLP_INSECURE`: plaintext for a gRPC endpoint without a scheme.
const INSECURE: &str = "OTEL_EXPORTER_OTLP_INSECURE";

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OTLP/gRPC (`grpc`), conventionally port 4317. kotel's default, as for the OpenTelemetry
    /// Collector's `otlp` exporter.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`), conventionally port 4318.
    HttpProtobuf,
}

/// Compression of request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// gzip (the default).
    #[default]
    Gzip,
    /// Uncompressed.
    None,
}

/// Where and how export sends data.
#[derive(Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// OTLP receiver, e.g. `http://localhost:4317`; `None` writes OTLP JSON lines to `out_dir`
    /// instead. For OTLP/HTTP, `/v1/traces` etc. are appended to it.
    pub endpoint: Option<String>,
    /// gRPC or HTTP/protobuf.
    pub protocol: Protocol,
    /// Extra request headers (gRPC metadata), e.g. an API key. Values are secrets: they never
    /// appear in `Debug` output, logs or errors.
    pub headers: Vec<(String, String)>,
    /// Bound on one export attempt, connection included (default 10 s).
    pub timeout: Duration,
    /// Request body compression (default gzip).
    pub compression: Compression,
    /// Bound on the encoded size of all batches waiting or being exported (default 8 MiB).
    pub queue_bytes: usize,
    /// Backoff and give-up policy.
    pub retry: RetryConfig,
    /// Directory for `traces.jsonl`, `metrics.jsonl` and `logs.jsonl` when there is no
    /// endpoint (default `kotel-otlp`).
    pub out_dir: PathBuf,
    /// Size-based rotation of those files (default 100 MiB, 10 backups).
    pub rotation: Rotation,
    /// Client TLS: CA file, client certificate and key (mTLS), insecure.
    pub tls: TlsSettings,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            endpoint: None,
            protocol: Protocol::default(),
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            compression: Compression::default(),
            queue_bytes: 8 << 20,
            retry: RetryConfig::default(),
            out_dir: PathBuf::from("kotel-otlp"),
            rotation: Rotation::default(),
            tls: TlsSettings::default(),
        }
    }
}

impl fmt::Debug for ExportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, _)| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("ExportConfig")
            .field(
                "endpoint",
                &self.endpoint.as_deref().map(super::redact_endpoint),
            )
            .field("protocol", &self.protocol)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("compression", &self.compression)
            .field("queue_bytes", &self.queue_bytes)
            .field("retry", &self.retry)
            .field("out_dir", &self.out_dir)
            .field("rotation", &self.rotation)
            .field("tls", &self.tls)
            .finish()
    }
}

/// A bad `OTEL_EXPORTER_OTLP_*` value. Every variant names the variable; header values never
/// appear.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportConfigError {
    /// The value is not one the variable accepts.
    #[error("{var}={value:?} is invalid: {expected}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value (never used for headers).
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// A well-formed protocol kotel does not implement.
    #[error("{var}={value:?} is not supported by kotel; use grpc or http/protobuf")]
    UnsupportedProtocol {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// One `key=value` entry of the headers variable is malformed. Only its position (and the
    /// key, when there is one) is reported, since values are secrets.
    #[error("{var}: header entry {position} {problem}; expected comma-separated key=value pairs with percent-encoded values")]
    Header {
        /// The variable.
        var: &'static str,
        /// 1-based position of the entry.
        position: usize,
        /// What is wrong with it.
        problem: String,
    },
}

impl ExportConfig {
    /// Overrides fields from the standard OpenTelemetry exporter variables, read through `get`
    /// (pass `|n| std::env::var(n).ok()`; tests pass a map). Unset or empty variables leave
    /// the field alone. Headers from the environment replace configured headers of the same
    /// name (case-insensitively) and add the others.
    ///
    /// - `OTEL_EXPORTER_OTLP_ENDPOINT`: an `http://` or `https://` URL (for gRPC also a bare
    ///   `host:port`, which is TLS unless insecure).
    /// - `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or `http/protobuf`; `http/json` is refused.
    /// - `OTEL_EXPORTER_OTLP_HEADERS`: `key1=value1,key2=value2`, values percent-decoded.
    /// - `OTEL_EXPORTER_OTLP_TIMEOUT`: whole milliseconds, more than 0.
    /// - `OTEL_EXPORTER_OTLP_COMPRESSION`: `gzip` or `none`.
    /// - `OTEL_EXPORTER_OTLP_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`,
    ///   `OTEL_EXPORTER_OTLP_CLIENT_KEY`: PEM file paths (read when the exporter is built).
    /// - `OTEL_EXPORTER_OTLP_INSECURE`: `true` or `false` (case-insensitive); as the
    ///   specification says, only `true` is true, and it only matters for a gRPC endpoint
    ///   without a scheme. Any other value counts as `false` with a warning.
    ///
    /// The per-signal variants (`OTEL_EXPORTER_OTLP_TRACES_*`, …) are not read: kotel sends
    /// every signal to one endpoint.
    ///
    /// On error the configuration may be partly updated; callers stop on the error anyway.
    pub fn apply_env(
        &mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ExportConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());

        if let Some(value) = var(ENDPOINT) {
            let endpoint = value.trim();
            let lower = endpoint.to_ascii_lowercase();
            let has_host = match endpoint.split_once("://") {
                Some((_, rest)) => !rest.is_empty() && !rest.starts_with('/'),
                // A bare host:port (gRPC only; the exporter checks the protocol).
                None => endpoint.contains(':') && !endpoint.starts_with(':'),
            };
            let scheme_ok = lower.starts_with("http://")
                || lower.starts_with("https://")
                || !endpoint.contains("://");
            if !scheme_ok || !has_host {
                return Err(ExportConfigError::Invalid {
                    var: ENDPOINT,
                    value: super::redact_endpoint(&value),
                    expected: "an http:// or https:// URL such as https://collector:4317",
                });
            }
            self.endpoint = Some(endpoint.to_string());
        }

        if let Some(value) = var(PROTOCOL) {
            self.protocol = match value.trim() {
                "grpc" => Protocol::Grpc,
                "http/protobuf" => Protocol::HttpProtobuf,
                "http/json" => {
                    return Err(ExportConfigError::UnsupportedProtocol {
                        var: PROTOCOL,
                        value,
                    })
                }
                _ => {
                    return Err(ExportConfigError::Invalid {
                        var: PROTOCOL,
                        value,
                        expected: "grpc or http/protobuf",
                    })
                }
            };
        }

        if let Some(value) = var(HEADERS) {
            for (key, val) in parse_headers(&value)? {
                self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
                self.headers.push((key, val));
            }
        }

        if let Some(value) = var(TIMEOUT) {
            match value.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => self.timeout = Duration::from_millis(ms),
                _ => {
                    return Err(ExportConfigError::Invalid {
                        var: TIMEOUT,
                        value,
                        expected: "a whole number of milliseconds greater than 0",
                    })
                }
            }
        }

        for (name, slot) in [
            (CERTIFICATE, &mut self.tls.ca_file),
            (CLIENT_CERTIFICATE, &mut self.tls.cert_file),
            (CLIENT_KEY, &mut self.tls.key_file),
        ] {
            if let Some(value) = var(name) {
                *slot = Some(TlsFile::new(value.trim(), name));
            }
        }
        if let Some(value) = var(INSECURE) {
            let v = value.trim();
            self.tls.insecure = v.eq_ignore_ascii_case("true");
            if !self.tls.insecure && !v.eq_ignore_ascii_case("false") {
                tracing::warn!(
                    value = v,
                    "kotel.export.insecure_invalid: {INSECURE} is neither true nor false; \
                     taken as false (TLS), as the OpenTelemetry specification says"
                );
            }
        }

        if let Some(value) = var(COMPRESSION) {
            self.compression = match value.trim() {
                "gzip" => Compression::Gzip,
                "none" => Compression::None,
                _ => {
                    return Err(ExportConfigError::Invalid {
                        var: COMPRESSION,
                        value,
                        expected: "gzip or none",
                    })
                }
            };
        }
        Ok(())
    }
}

/// Parses `OTEL_EXPORTER_OTLP_HEADERS`: comma-separated `key=value` entries, whitespace around
/// keys and values trimmed, both percent-decoded, empty entries skipped.
fn parse_headers(raw: &str) -> Result<Vec<(String, String)>, ExportConfigError> {
    let mut out = Vec::new();
    for (i, entry) in raw.split(',').enumerate() {
        let position = i + 1;
        let err = |problem: String| ExportConfigError::Header {
            var: HEADERS,
            position,
            problem,
        };
        if entry.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = entry.split_once('=') else {
            return Err(err("has no '='".into()));
        };
        let key = percent_decode(key.trim())
            .ok_or_else(|| err("has a key that is not valid percent-encoded UTF-8".into()))?;
        if key.is_empty() {
            return Err(err("has an empty key".into()));
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(err("has a key that is not a valid header name".into()));
        }
        let value = percent_decode(value.trim()).ok_or_else(|| {
            err(format!(
                "(key {key:?}) has a value that is not valid percent-encoded UTF-8"
            ))
        })?;
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn apply(pairs: &[(&str, &str)]) -> Result<ExportConfig, ExportConfigError> {
        let mut c = ExportConfig::default();
        c.apply_env(env(pairs))?;
        Ok(c)
    }

    #[test]
    fn defaults_untouched_without_variables() {
        assert_eq!(apply(&[]).unwrap(), ExportConfig::default());
        let c = ExportConfig::default();
        assert_eq!(c.endpoint, None);
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.compression, Compression::Gzip);
        // Empty values count as unset.
        assert_eq!(
            apply(&[(ENDPOINT, ""), (TIMEOUT, " ")]).unwrap(),
            ExportConfig::default()
        );
    }

    #[test]
    fn every_variable_applies() {
        let c = apply(&[
            (ENDPOINT, "http://collector:4318/base"),
            (PROTOCOL, "http/protobuf"),
            (HEADERS, "api-key=s%3Dcr%2Cet, x-tenant = acme ,"),
            (TIMEOUT, "2500"),
            (COMPRESSION, "none"),
        ])
        .unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://collector:4318/base"));
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(
            c.headers,
            vec![
                ("api-key".to_string(), "s=cr,et".to_string()),
                ("x-tenant".to_string(), "acme".to_string()),
            ]
        );
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.compression, Compression::None);
        let c = apply(&[(PROTOCOL, "grpc"), (COMPRESSION, "gzip")]).unwrap();
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.compression, Compression::Gzip);
    }

    #[test]
    fn env_headers_override_configured_ones_by_name() {
        let mut c = ExportConfig {
            headers: vec![
                ("API-Key".into(), "old".into()),
                ("keep".into(), "1".into()),
            ],
            ..ExportConfig::default()
        };
        c.apply_env(env(&[(HEADERS, "api-key=new")])).unwrap();
        assert_eq!(
            c.headers,
            vec![
                ("keep".to_string(), "1".to_string()),
                ("api-key".to_string(), "new".to_string()),
            ]
        );
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&str, &str)] = &[
            (ENDPOINT, "ftp://localhost:4317"),
            (ENDPOINT, ":4317"),
            (ENDPOINT, "http://"),
            (PROTOCOL, "thrift"),
            (TIMEOUT, "10s"),
            (TIMEOUT, "-5"),
            (TIMEOUT, "0"),
            (COMPRESSION, "zstd"),
            (HEADERS, "novalue"),
            (HEADERS, "=v"),
            (HEADERS, "a=%zz"),
            (HEADERS, "bad key=v"),
        ];
        for (var, value) in cases {
            let err = apply(&[(var, value)]).expect_err(value);
            assert!(err.to_string().contains(var), "{var}={value}: {err}");
        }
    }

    #[test]
    fn tls_variables_apply_and_name_themselves() {
        let c = apply(&[
            (ENDPOINT, "https://collector:4317"),
            (CERTIFICATE, "/etc/kotel/ca.pem"),
            (CLIENT_CERTIFICATE, " /etc/kotel/client.pem "),
            (CLIENT_KEY, "/etc/kotel/client.key"),
            (INSECURE, "TRUE"),
        ])
        .unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("https://collector:4317"));
        assert_eq!(
            c.tls,
            TlsSettings {
                ca_file: Some(TlsFile::new("/etc/kotel/ca.pem", CERTIFICATE)),
                cert_file: Some(TlsFile::new("/etc/kotel/client.pem", CLIENT_CERTIFICATE)),
                key_file: Some(TlsFile::new("/etc/kotel/client.key", CLIENT_KEY)),
                insecure: true,
            }
        );
        for value in ["false", "yes", "1"] {
            let c = apply(&[(INSECURE, value)]).unwrap();
            assert!(!c.tls.insecure, "{value}");
        }
        assert_eq!(
            apply(&[(ENDPOINT, "collector:4317")])
                .unwrap()
                .endpoint
                .as_deref(),
            Some("collector:4317")
        );
    }

    #[test]
    fn http_json_is_refused_clearly() {
        let err = apply(&[(PROTOCOL, "http/json")]).unwrap_err();
        assert!(matches!(err, ExportConfigError::UnsupportedProtocol { .. }));
        assert!(err.to_string().contains("http/protobuf"), "{err}");
    }

    #[test]
    fn header_values_never_leak() {
        let secret = "hunter2-s3cr3t";
        let c = apply(&[(HEADERS, &format!("authorization=Bearer%20{secret}"))]).unwrap();
        assert_eq!(c.headers[0].1, format!("Bearer {secret}"));
        let debug = format!("{c:?} {c:#?}");
        assert!(!debug.contains(secret), "{debug}");
        assert!(debug.contains("authorization"), "{debug}");

        for bad in [
            format!("authorization=Bearer%2{secret}"),
            format!("authorization=%ff{secret}"),
            format!("ok=1,{secret}"),
        ] {
            let err = apply(&[(HEADERS, &bad)]).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Cc").as_deref(), Some("a b,c"));
        assert_eq!(percent_decode("%E2%9C%93").as_deref(), Some("✓"));
        assert_eq!(percent_decode("100%"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
