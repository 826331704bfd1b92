//! Requests shaped like what an instrumented application's OpenTelemetry SDK sends: spans of
//! one trace with a parent and a child on a named thread, the three kinds of metric an SDK
//! reports, a log record inside a span. Fixed contents: the fuzz seeds are built from them and
//! must stay byte for byte the same from one run of the generator to the next.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric, number_data_point, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::{int_attr, resource, str_attr};

/// The trace every [`traces`] span belongs to.
pub const TRACE_ID: [u8; 16] = [0xab; 16];
/// The `thread.id` of the child span of [`traces`].
pub const CHILD_THREAD: i64 = 101;

/// Two server spans of trace [`TRACE_ID`] under a resource of `resource_attributes`: the
/// root (span id `[1; 8]`) over `[base, base + 20 µs)`, and its child (span id `[2; 8]`,
/// `thread.id` [`CHILD_THREAD`]) over `[base + 2 µs, base + 9 µs)`.
pub fn traces(resource_attributes: Vec<KeyValue>, base: u64) -> ExportTraceServiceRequest {
    let span = |id: u8, start: u64, end: u64, thread: Option<i64>| Span {
        trace_id: TRACE_ID.to_vec(),
        span_id: vec![id; 8],
        parent_span_id: if id == 1 { vec![] } else { vec![1; 8] },
        name: "handle_request".into(),
        kind: 2,
        start_time_unix_nano: base + start,
        end_time_unix_nano: base + end,
        attributes: thread
            .map(|t| vec![int_attr("thread.id", t)])
            .unwrap_or_default(),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(resource_attributes),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(1, 0, 20_000, None),
                    span(2, 2_000, 9_000, Some(CHILD_THREAD)),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A `service.name` = `shop` resource with a gauge (two points), a monotonic cumulative sum
/// (one point) and a delta exponential histogram (one point with a zero count and positive
/// buckets).
pub fn metrics() -> ExportMetricsServiceRequest {
    let metric = |name: &str, data| Metric {
        name: name.into(),
        unit: "s".into(),
        data: Some(data),
        ..Default::default()
    };
    let number = |v: f64| NumberDataPoint {
        time_unix_nano: 1_700_000_000_000_000_000,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(vec![str_attr("service.name", "shop")]),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    metric(
                        "queue.depth",
                        metric::Data::Gauge(Gauge {
                            data_points: vec![number(3.0), number(4.5)],
                        }),
                    ),
                    metric(
                        "requests",
                        metric::Data::Sum(Sum {
                            data_points: vec![number(10.0)],
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        }),
                    ),
                    metric(
                        "latency",
                        metric::Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint {
                                count: 6,
                                sum: Some(0.25),
                                scale: 3,
                                zero_count: 1,
                                positive: Some(Buckets {
                                    offset: -80,
                                    bucket_counts: vec![2, 0, 3],
                                }),
                                ..Default::default()
                            }],
                            aggregation_temporality: 1,
                        }),
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One INFO log record, `order placed`, inside the root span of [`traces`].
pub fn logs() -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 1_700_000_000_000_000_000,
                    severity_number: 9,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("order placed".into())),
                    }),
                    trace_id: TRACE_ID.to_vec(),
                    span_id: vec![1; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
