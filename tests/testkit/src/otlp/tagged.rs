//! Requests told apart by a `tag` and sized by a count: `n` spans, points, records or profiles, under a
//! resource whose `process.pid` is the tag. The same `(tag, n)` always builds the same request,
//! and requests of one `n` whose tags are below 10 have the same protobuf size, so a test can
//! measure one and fill a queue with the others.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::profiles::v1development::{
    Function, KeyValueAndUnit, Line, Link, Location, Mapping, Profile, ProfilesDictionary,
    ResourceProfiles, Sample, ScopeProfiles, Stack, ValueType,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};

use super::{int_attr, resource, str_attr};

/// The resource of every tagged request: `process.pid` = `tag`.
fn tagged_resource(tag: u64) -> Option<Resource> {
    resource(vec![int_attr("process.pid", tag as i64)])
}

/// `n` kernel `writev` spans as kotel exports them. Span `i` has trace id `tag ‖ i` (two
/// big-endian u64s), span id `tag * 1000 + i + 1` (big-endian u64, so a test can read the
/// tag back from it), a 100 µs duration and `kotel.bytes` = 4096.
pub fn traces(tag: u64, n: usize) -> ExportTraceServiceRequest {
    spans(tag, n, None)
}

/// [`traces`] with one more attribute on each span, `pad`: a string of `pad` bytes, for tests
/// of size limits and compression.
pub fn padded_traces(tag: u64, n: usize, pad: usize) -> ExportTraceServiceRequest {
    spans(tag, n, Some(pad))
}

fn spans(tag: u64, n: usize, pad: Option<usize>) -> ExportTraceServiceRequest {
    let spans = (0..n as u64)
        .map(|i| Span {
            trace_id: [&tag.to_be_bytes()[..], &i.to_be_bytes()[..]].concat(),
            span_id: (tag * 1000 + i + 1).to_be_bytes().to_vec(),
            name: "writev".into(),
            kind: span::SpanKind::Internal as i32,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i,
            end_time_unix_nano: 1_700_000_000_000_100_000 + i,
            attributes: std::iter::once(int_attr("kotel.bytes", 4096))
                .chain(pad.map(|pad| str_attr("pad", "x".repeat(pad))))
                .collect(),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: tagged_resource(tag),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Two metrics, `n + 1` data points: a gauge `kotel.events.lost` with `n` integer points and
/// an exponential histogram `kotel.writev.duration` with one.
pub fn metrics(tag: u64, n: usize) -> ExportMetricsServiceRequest {
    let points = (0..n as u64)
        .map(|i| NumberDataPoint {
            time_unix_nano: 1_700_000_000_000_000_000 + i,
            value: Some(number_data_point::Value::AsInt(i as i64)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: tagged_resource(tag),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "kotel.events.lost".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: points,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "kotel.writev.duration".into(),
                        unit: "s".into(),
                        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint {
                                count: 3,
                                scale: 3,
                                ..Default::default()
                            }],
                            aggregation_temporality: 1,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// `n` log records, each with the body `record <tag>/<i>`.
pub fn logs(tag: u64, n: usize) -> ExportLogsServiceRequest {
    let records = (0..n as u64)
        .map(|i| LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000 + i,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!("record {tag}/{i}"))),
            }),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: tagged_resource(tag),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// `n` off-CPU profiles (`off_cpu` / `nanoseconds`) sharing one dictionary: one sample each,
/// the two-frame stack `main` → `nanosleep` (in mapping `/usr/bin/tagged`, whose build id is an
/// attribute) with a value of `(i + 1) * 1 ms`, linked to span `i` of [`traces`]`(tag, n)`.
/// Profile `i` has the id `tag ‖ i` (two big-endian u64s). Index 0 of every table is the empty
/// entry the OTLP profiles format asks for.
pub fn profiles(tag: u64, n: usize) -> ExportProfilesServiceRequest {
    let strings: Vec<String> = [
        "",
        "off_cpu",
        "nanoseconds",
        "main",
        "nanosleep",
        "/usr/bin/tagged",
        "process.executable.build_id.gnu",
    ]
    .map(String::from)
    .to_vec();
    let spans = traces(tag, n);
    let links = spans.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| Link {
            trace_id: s.trace_id.clone(),
            span_id: s.span_id.clone(),
        });
    let line = |function_index| Line {
        function_index,
        line: 10,
        column: 0,
    };
    let dictionary = ProfilesDictionary {
        mapping_table: vec![
            Mapping::default(),
            Mapping {
                memory_start: 0x40_0000,
                memory_limit: 0x50_0000,
                file_offset: 0,
                filename_strindex: 5,
                attribute_indices: vec![1],
            },
        ],
        location_table: vec![
            Location::default(),
            Location {
                mapping_index: 1,
                address: 0x40_1000,
                lines: vec![line(1)],
                attribute_indices: Vec::new(),
            },
            Location {
                mapping_index: 1,
                address: 0x40_2000,
                lines: vec![line(2)],
                attribute_indices: Vec::new(),
            },
        ],
        function_table: vec![
            Function::default(),
            Function {
                name_strindex: 3,
                system_name_strindex: 3,
                filename_strindex: 5,
                start_line: 1,
            },
            Function {
                name_strindex: 4,
                system_name_strindex: 4,
                filename_strindex: 5,
                start_line: 1,
            },
        ],
        link_table: std::iter::once(Link::default()).chain(links).collect(),
        string_table: strings,
        attribute_table: vec![
            Default::default(),
            KeyValueAndUnit {
                key_strindex: 6,
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!("{tag:016x}"))),
                }),
                unit_strindex: 0,
            },
        ],
        // Leaf first: nanosleep called from main.
        stack_table: vec![
            Stack::default(),
            Stack {
                location_indices: vec![2, 1],
            },
        ],
    };
    let profiles = (0..n as u64)
        .map(|i| Profile {
            sample_type: Some(ValueType {
                type_strindex: 1,
                unit_strindex: 2,
            }),
            samples: vec![Sample {
                stack_index: 1,
                attribute_indices: Vec::new(),
                link_index: i as i32 + 1,
                values: vec![(i as i64 + 1) * 1_000_000],
                timestamps_unix_nano: vec![1_700_000_000_000_000_000 + i],
            }],
            time_unix_nano: 1_700_000_000_000_000_000,
            duration_nano: 1_000_000_000,
            profile_id: [&tag.to_be_bytes()[..], &i.to_be_bytes()[..]].concat(),
            ..Default::default()
        })
        .collect();
    ExportProfilesServiceRequest {
        resource_profiles: vec![ResourceProfiles {
            resource: tagged_resource(tag),
            scope_profiles: vec![ScopeProfiles {
                profiles,
                ..Default::default()
            }],
            ..Default::default()
        }],
        dictionary: Some(dictionary),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn the_tag_is_the_pid_and_can_be_read_back_from_the_span_id() {
        let r = traces(7, 3);
        let rs = &r.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes,
            vec![int_attr("process.pid", 7)]
        );
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans.len(), 3);
        for (i, s) in spans.iter().enumerate() {
            let id = u64::from_be_bytes(s.span_id[..].try_into().unwrap());
            assert_eq!((id / 1000, id % 1000), (7, i as u64 + 1));
            assert_eq!(s.trace_id.len(), 16);
        }
    }

    #[test]
    fn profiles_index_their_dictionary_in_range_and_link_to_the_tagged_spans() {
        let r = profiles(3, 4);
        let d = r.dictionary.as_ref().unwrap();
        assert_eq!(d.string_table[0], "");
        let spans = traces(3, 4);
        let spans = &spans.resource_spans[0].scope_spans[0].spans;
        let ps = &r.resource_profiles[0].scope_profiles[0].profiles;
        assert_eq!(ps.len(), 4);
        for (i, p) in ps.iter().enumerate() {
            let sample = &p.samples[0];
            let link = &d.link_table[sample.link_index as usize];
            assert_eq!(link.span_id, spans[i].span_id);
            for l in &d.stack_table[sample.stack_index as usize].location_indices {
                let loc = &d.location_table[*l as usize];
                let f = &d.function_table[loc.lines[0].function_index as usize];
                assert!((f.name_strindex as usize) < d.string_table.len());
                assert!((loc.mapping_index as usize) < d.mapping_table.len());
            }
            assert_eq!(p.profile_id.len(), 16);
        }
    }

    #[test]
    fn padding_adds_one_attribute_of_the_asked_size() {
        let plain = traces(1, 2);
        let padded = padded_traces(1, 2, 100);
        let (p, q) = (
            &plain.resource_spans[0].scope_spans[0].spans,
            &padded.resource_spans[0].scope_spans[0].spans,
        );
        for (a, b) in p.iter().zip(q) {
            assert_eq!(b.attributes[..1], a.attributes[..]);
            assert_eq!(b.attributes[1], str_attr("pad", "x".repeat(100)));
        }
    }

    #[test]
    fn counts_follow_n_and_sizes_do_not_depend_on_small_tags() {
        let points = |r: &ExportMetricsServiceRequest| -> usize {
            r.resource_metrics[0].scope_metrics[0]
                .metrics
                .iter()
                .map(|m| match &m.data {
                    Some(metric::Data::Gauge(g)) => g.data_points.len(),
                    Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
                    _ => 0,
                })
                .sum()
        };
        assert_eq!(points(&metrics(3, 4)), 5);
        assert_eq!(
            logs(2, 6).resource_logs[0].scope_logs[0].log_records.len(),
            6
        );
        for tag in 0..10 {
            assert_eq!(traces(tag, 5).encoded_len(), traces(0, 5).encoded_len());
            assert_eq!(metrics(tag, 5).encoded_len(), metrics(0, 5).encoded_len());
            assert_eq!(logs(tag, 5).encoded_len(), logs(0, 5).encoded_len());
            assert_eq!(profiles(tag, 5).encoded_len(), profiles(0, 5).encoded_len());
        }
    }
}
