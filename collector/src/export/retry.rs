//! Which export failures are worth retrying (per the OTLP specification), how long the receiver
//! asked us to wait, and exponential backoff with full jitter for when it did not say.

use std::time::Duration;

use hyper::StatusCode;
use prost::Message;
use tonic::Code;

use super::ExportError;

/// How the export worker retries a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Upper bound of the first backoff delay (default 1 s).
    pub initial_interval: Duration,
    /// Growth of the upper bound after each attempt (default 2).
    pub multiplier: u32,
    /// Largest upper bound a backoff delay can have (default 30 s).
    pub max_interval: Duration,
    /// Give up on a batch once retrying it would take longer than this since its first attempt
    /// (default 60 s). `Duration::ZERO` disables retries.
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_interval: Duration::from_secs(1),
            multiplier: 2,
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(60),
        }
    }
}

/// Exponential backoff with full jitter: the n-th delay (from 0) is uniform in
/// `[0, min(max_interval, initial_interval × multiplier^n)]`.
#[derive(Debug)]
pub struct Backoff {
    config: RetryConfig,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// A fresh backoff for one batch.
    pub fn new(config: &RetryConfig) -> Backoff {
        Backoff {
            config: config.clone(),
            attempt: 0,
            rng: fastrand::Rng::new(),
        }
    }

    /// The same with a fixed seed, for reproducible tests.
    pub fn with_seed(config: &RetryConfig, seed: u64) -> Backoff {
        Backoff {
            rng: fastrand::Rng::with_seed(seed),
            ..Backoff::new(config)
        }
    }

    /// The upper bound of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = self.config.multiplier.max(1).saturating_pow(self.attempt);
        self.config
            .initial_interval
            .saturating_mul(factor)
            .min(self.config.max_interval)
    }

    /// The next delay, and a step up the exponential.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.u64(0..=nanos))
    }
}

/// Classifies a failed gRPC export as the OTLP specification says: CANCELLED,
/// DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS are retryable;
/// RESOURCE_EXHAUSTED only when the status details carry a `google.rpc.RetryInfo` (the receiver
/// can recover); everything else is permanent. A `RetryInfo.retry_delay` becomes the
/// [`ExportError::Retryable`] `retry_after`.
pub fn classify_grpc(status: &tonic::Status) -> ExportError {
    let retry_info = retry_info(status.details());
    let retryable = match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => retry_info.is_some(),
        _ => false,
    };
    let reason = format!(
        "gRPC status {:?}: {}",
        status.code(),
        printable(status.message())
    );
    if retryable {
        ExportError::Retryable {
            reason,
            retry_after: retry_info.flatten(),
        }
    } else {
        ExportError::Permanent { reason }
    }
}

/// Classifies a failed OTLP/HTTP export as the OTLP specification says: 429, 502, 503 and 504
/// are retryable, honouring a `Retry-After` given in seconds (an HTTP-date is ignored and the
/// backoff used instead); every other status is permanent. `detail` is what the body said.
pub fn classify_http(status: StatusCode, retry_after: Option<&str>, detail: &str) -> ExportError {
    let reason = if detail.is_empty() {
        format!("HTTP status {status}")
    } else {
        format!("HTTP status {status}: {}", printable(detail))
    };
    match status.as_u16() {
        429 | 502 | 503 | 504 => ExportError::Retryable {
            reason,
            retry_after: retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        },
        _ => ExportError::Permanent { reason },
    }
}

/// At most 200 characters of a receiver's message, without control characters, so a hostile
/// or broken receiver cannot flood or garble our logs.
pub(crate) fn printable(message: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = message
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if message.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// Looks for a `google.rpc.RetryInfo` in encoded `google.rpc.Status` details (what gRPC sends
/// as `grpc-status-details-bin` and what an OTLP/HTTP error body holds). `None`: no RetryInfo;
/// `Some(None)`: a RetryInfo without a usable delay; `Some(Some(d))`: wait `d`.
pub(crate) fn retry_info(details: &[u8]) -> Option<Option<Duration>> {
    if details.is_empty() {
        return None;
    }
    let status = rpc::Status::decode(details).ok()?;
    status
        .details
        .iter()
        .find(|any| {
            any.type_url == rpc::RETRY_INFO_TYPE_URL
                || any.type_url.ends_with("/google.rpc.RetryInfo")
        })
        .map(|any| {
            rpc::RetryInfo::decode(any.value.as_slice())
                .ok()
                .and_then(|info| info.retry_delay)
                .and_then(|d| d.to_std())
        })
}

/// The error message of an encoded `google.rpc.Status`, when `bytes` is one.
pub(crate) fn rpc_status_message(bytes: &[u8]) -> Option<String> {
    rpc::Status::decode(bytes)
        .ok()
        .map(|s| s.message)
        .filter(|m| !m.is_empty())
}

/// The few `google.rpc` / `google.protobuf` messages OTLP error handling needs, by hand so no
/// extra crate is pulled in. Field numbers follow `google/rpc/status.proto`,
/// `google/rpc/error_details.proto`, `google/protobuf/any.proto` and `duration.proto`.
pub(crate) mod rpc {
    /// The type URL of [`RetryInfo`] inside an `Any`.
    pub const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

    /// `google.rpc.Status`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        /// The gRPC status code.
        #[prost(int32, tag = "1")]
        pub code: i32,
        /// A developer-facing message.
        #[prost(string, tag = "2")]
        pub message: String,
        /// Typed details, e.g. a `RetryInfo`.
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }

    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        /// Names the type of `value`.
        #[prost(string, tag = "1")]
        pub type_url: String,
        /// The encoded message.
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    /// `google.rpc.RetryInfo`: when the client should retry.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        /// How long to wait before retrying.
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<ProtoDuration>,
    }

    /// `google.protobuf.Duration`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProtoDuration {
        /// Whole seconds.
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        /// Nanoseconds, 0..=999_999_999, same sign as `seconds`.
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    impl ProtoDuration {
        /// The duration, when it is non-negative and well formed.
        pub fn to_std(&self) -> Option<std::time::Duration> {
            let seconds = u64::try_from(self.seconds).ok()?;
            let nanos = u32::try_from(self.nanos)
                .ok()
                .filter(|n| *n < 1_000_000_000)?;
            Some(std::time::Duration::new(seconds, nanos))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encoded `google.rpc.Status` details carrying a RetryInfo of `delay`, as a server sends.
    pub fn retry_info_details(code: Code, delay: Duration) -> Vec<u8> {
        let info = rpc::RetryInfo {
            retry_delay: Some(rpc::ProtoDuration {
                seconds: delay.as_secs() as i64,
                nanos: delay.subsec_nanos() as i32,
            }),
        };
        rpc::Status {
            code: code as i32,
            message: "slow down".into(),
            details: vec![
                rpc::Any {
                    type_url: "type.googleapis.com/google.rpc.DebugInfo".into(),
                    value: vec![0x0a, 0x01, b'x'],
                },
                rpc::Any {
                    type_url: rpc::RETRY_INFO_TYPE_URL.into(),
                    value: info.encode_to_vec(),
                },
            ],
        }
        .encode_to_vec()
    }

    const ALL_CODES: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    #[test]
    fn grpc_codes_classified_as_the_spec_says() {
        let retryable = [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ];
        for code in ALL_CODES {
            let e = classify_grpc(&tonic::Status::new(code, "x"));
            assert_eq!(e.is_retryable(), retryable.contains(&code), "{code:?}: {e}");
            if let ExportError::Retryable { retry_after, .. } = e {
                assert_eq!(retry_after, None, "{code:?}");
            }
        }
    }

    #[test]
    fn resource_exhausted_needs_retry_info() {
        let plain = tonic::Status::new(Code::ResourceExhausted, "quota");
        assert!(!classify_grpc(&plain).is_retryable());

        let details = retry_info_details(Code::ResourceExhausted, Duration::from_millis(1500));
        let with = tonic::Status::with_details(Code::ResourceExhausted, "quota", details.into());
        assert_eq!(
            classify_grpc(&with),
            ExportError::Retryable {
                reason: "gRPC status ResourceExhausted: quota".into(),
                retry_after: Some(Duration::from_millis(1500)),
            }
        );
    }

    #[test]
    fn retry_info_delay_honoured_on_unavailable_too() {
        let details = retry_info_details(Code::Unavailable, Duration::from_secs(3));
        let s = tonic::Status::with_details(Code::Unavailable, "down", details.into());
        let ExportError::Retryable { retry_after, .. } = classify_grpc(&s) else {
            panic!("UNAVAILABLE is retryable");
        };
        assert_eq!(retry_after, Some(Duration::from_secs(3)));
    }

    #[test]
    fn retry_info_decoding_edge_cases() {
        assert_eq!(retry_info(&[]), None);
        assert_eq!(
            retry_info(&[0xff, 0xff, 0xff]),
            None,
            "garbage is no RetryInfo"
        );
        let no_info = rpc::Status {
            code: 8,
            message: "m".into(),
            details: vec![],
        }
        .encode_to_vec();
        assert_eq!(retry_info(&no_info), None);

        // A RetryInfo without a delay, or with a negative one: retryable, backoff decides.
        for delay in [
            None,
            Some(rpc::ProtoDuration {
                seconds: -1,
                nanos: 0,
            }),
        ] {
            let blob = rpc::Status {
                code: 8,
                message: String::new(),
                details: vec![rpc::Any {
                    type_url: "example.com/google.rpc.RetryInfo".into(),
                    value: rpc::RetryInfo { retry_delay: delay }.encode_to_vec(),
                }],
            }
            .encode_to_vec();
            assert_eq!(retry_info(&blob), Some(None));
            let s = tonic::Status::with_details(Code::ResourceExhausted, "", blob.into());
            assert!(classify_grpc(&s).is_retryable());
        }
    }

    #[test]
    fn hand_built_details_blob_decodes() {
        // google.rpc.Status{code: 8, details: [Any{type_url: RetryInfo, value: RetryInfo{
        // retry_delay: Duration{seconds: 2, nanos: 500_000_000}}}]}, encoded by hand.
        let duration = [0x08, 0x02, 0x10, 0x80, 0xca, 0xb5, 0xee, 0x01];
        let mut retry_info_msg = vec![0x0a, duration.len() as u8];
        retry_info_msg.extend_from_slice(&duration);
        let type_url = b"type.googleapis.com/google.rpc.RetryInfo";
        let mut any = vec![0x0a, type_url.len() as u8];
        any.extend_from_slice(type_url);
        any.extend_from_slice(&[0x12, retry_info_msg.len() as u8]);
        any.extend_from_slice(&retry_info_msg);
        let mut blob = vec![0x08, 0x08, 0x1a, any.len() as u8];
        blob.extend_from_slice(&any);
        assert_eq!(retry_info(&blob), Some(Some(Duration::from_millis(2500))));
    }

    #[test]
    fn http_statuses_classified_as_the_spec_says() {
        for code in 100..600u16 {
            let Ok(status) = StatusCode::from_u16(code) else {
                continue;
            };
            let e = classify_http(status, None, "");
            let want = matches!(code, 429 | 502 | 503 | 504);
            assert_eq!(e.is_retryable(), want, "{code}");
        }
    }

    #[test]
    fn retry_after_seconds_honoured() {
        let e = classify_http(StatusCode::TOO_MANY_REQUESTS, Some(" 7 "), "busy");
        assert_eq!(
            e,
            ExportError::Retryable {
                reason: "HTTP status 429 Too Many Requests: busy".into(),
                retry_after: Some(Duration::from_secs(7)),
            }
        );
        let date = classify_http(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("Wed, 21 Oct 2015 07:28:00 GMT"),
            "",
        );
        assert!(matches!(
            date,
            ExportError::Retryable {
                retry_after: None,
                ..
            }
        ));
        // Retry-After on a permanent status does not make it retryable.
        assert!(!classify_http(StatusCode::BAD_REQUEST, Some("1"), "").is_retryable());
    }

    #[test]
    fn receiver_messages_are_bounded_and_printable() {
        let long = "a\n".repeat(500);
        let p = printable(&long);
        assert!(p.chars().count() <= 201);
        assert!(!p.contains('\n'));
    }

    #[test]
    fn backoff_stays_within_its_ceiling() {
        let config = RetryConfig::default();
        let mut b = Backoff::with_seed(&config, 7);
        let ceilings: Vec<u64> = (0..8)
            .map(|_| {
                let c = b.ceiling();
                let d = b.next_delay();
                assert!(d <= c, "{d:?} > {c:?}");
                c.as_secs()
            })
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 30, 30, 30]);
        // After many attempts it neither overflows nor exceeds max_interval.
        for _ in 0..100 {
            assert!(b.next_delay() <= config.max_interval);
        }
    }

    #[test]
    fn backoff_jitter_spreads_over_the_whole_interval() {
        let config = RetryConfig {
            initial_interval: Duration::from_millis(100),
            multiplier: 2,
            max_interval: Duration::from_millis(100),
            max_elapsed_time: Duration::from_secs(1),
        };
        let mut b = Backoff::with_seed(&config, 42);
        let delays: Vec<Duration> = (0..1000).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(100)));
        assert!(delays.iter().any(|d| *d < Duration::from_millis(10)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(90)));
    }
}
