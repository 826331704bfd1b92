//! One metrics export: the kernel histograms become OTLP metrics with exemplars (pointing at
//! their pictures), plus kotel's own counters and gauges as self metrics.

use super::*;
use crate::enrich::semconv;

/// Reads the kernel histograms and queues one metrics request.
pub(super) fn export_metrics(
    tracer: &Tracer,
    metrics: &mut MetricsBuilder,
    resources: &mut Resources,
    queue: &ExportQueue,
    drops: &DropCounts,
    stats: &SelfStats,
    receiver: Option<&receiver::ReceiverStats>,
) -> Result<(), RunError> {
    let table = tracer.bucket_table();
    let histograms: Vec<_> = tracer
        .histograms()?
        .iter()
        .filter_map(|s| decode_histogram(s, table))
        .collect();
    let mut self_metrics: Vec<SelfMetric> = Probe::ALL
        .iter()
        .map(|p| SelfMetric {
            name: "kotel.events.lost",
            description: "Kernel events the ring buffer had no room for",
            attributes: vec![attrs::string(semconv::KOTEL_KIND, p.name())],
            value: drops.ringbuf[usize::from(p.kind())],
        })
        .collect();
    let export = queue.stats();
    for sig in [Signal::Traces, Signal::Metrics] {
        let s = export.signal(sig);
        let a = || vec![attrs::string(semconv::KOTEL_SIGNAL, sig.as_str())];
        for (reason, value) in s.dropped_by_reason() {
            let mut attributes = a();
            attributes.push(attrs::string(semconv::KOTEL_REASON, reason.as_str()));
            self_metrics.push(SelfMetric {
                name: "kotel.export.dropped",
                description: "Items dropped before delivery, by reason",
                attributes,
                value,
            });
        }
        self_metrics.push(SelfMetric {
            name: "kotel.export.offered",
            description: "Items submitted for export (exported + rejected + dropped + queued)",
            attributes: a(),
            value: s.offered_items,
        });
        self_metrics.push(SelfMetric {
            name: "kotel.export.exported",
            description: "Items the receiver accepted",
            attributes: a(),
            value: s.exported_items,
        });
    }
    self_metrics.push(SelfMetric {
        name: "kotel.events.received",
        description: "Ring-buffer events decoded",
        attributes: vec![],
        value: telemetry::get(&stats.events_received),
    });
    self_metrics.push(SelfMetric {
        name: "kotel.spans.produced",
        description: "Spans built from kernel events",
        attributes: vec![],
        value: telemetry::get(&stats.spans_produced),
    });
    self_metrics.push(SelfMetric {
        name: "kotel.histograms.dropped",
        description: "Events of processes that found no free histogram slot (counted in the overflow series instead)",
        attributes: vec![],
        value: drops.hist_full,
    });
    self_metrics.push(SelfMetric {
        name: "kotel.histograms.after_exit",
        description: "Events of threads still running after their process's exit retired its histograms (counted in the overflow series)",
        attributes: vec![],
        value: drops.hist_exited,
    });
    self_metrics.push(SelfMetric {
        name: "kotel.histograms.recycled",
        description: "Histogram slots of exited processes read one last time and reused",
        attributes: vec![],
        value: tracer.recycled_histograms(),
    });
    self_metrics.push(SelfMetric {
        name: "kotel.stacks.dropped",
        description: "Off-CPU stacks the stack map could not hold",
        attributes: vec![],
        value: drops.stack,
    });
    self_metrics.push(SelfMetric {
        name: "kotel.records.undecodable",
        description: "Ring-buffer records that could not be decoded",
        attributes: vec![],
        value: telemetry::get(&stats.records_undecodable),
    });
    if let Some(pods) = &resources.pods {
        let st = pods.stats();
        self_metrics.push(SelfMetric {
            name: "kotel.k8s.api_errors",
            description: "Kubernetes API calls that failed (pod metadata is missing meanwhile)",
            attributes: vec![],
            value: st.api_errors,
        });
        self_metrics.push(SelfMetric {
            name: "kotel.k8s.evictions",
            description: "Pods dropped from the metadata cache because it was full",
            attributes: vec![],
            value: st.evictions,
        });
    }
    self_metrics.push(SelfMetric {
        name: "kotel.artifacts.skipped",
        description: "Pictures skipped because rendering failed or the renderer was unreachable",
        attributes: vec![],
        value: telemetry::get(&stats.artifacts_skipped),
    });
    if let Some(r) = receiver {
        for sample in receiver_samples(r)
            .into_iter()
            .filter(|s| s.name == "kotel_receiver_rejected_total")
        {
            let reason = sample.labels[0].1.clone();
            self_metrics.push(SelfMetric {
                name: "kotel.receiver.rejected",
                description:
                    "Requests (or, for tls_handshake, connections) the OTLP receiver refused",
                attributes: vec![attrs::string(semconv::KOTEL_REASON, reason)],
                value: sample.value,
            });
        }
    }
    self_metrics.push(SelfMetric {
        name: "kotel.metric.overflow.series",
        description: "Series folded into the overflow series",
        attributes: vec![],
        value: metrics.overflowed_series(),
    });
    metrics.set_gauges(vec![
        SelfMetric {
            name: "kotel.process_cache.size",
            description: "Processes whose metadata the agent holds",
            attributes: vec![],
            value: resources.cache.len() as u64,
        },
        SelfMetric {
            name: "kotel.histograms.live",
            description: "In-kernel histograms of live processes (slots in use)",
            attributes: vec![],
            value: histograms
                .iter()
                .filter(|h| h.pid != kotel_bpf::OVERFLOW_PID)
                .count() as u64,
        },
        SelfMetric {
            name: "kotel.metric.series",
            description: "Processes with series of their own, summed over probes (each probe at most metrics.cardinality_limit)",
            attributes: vec![],
            value: metrics.admitted_series() as u64,
        },
    ]);
    let agent = resources.agent();
    let req = metrics.build(
        &histograms,
        unix_now(),
        &mut |pid| resources.of(pid),
        agent,
        &self_metrics,
    );
    let _ = queue.submit(Batch::Metrics(req)); // a refusal is counted by the queue
    telemetry::add(&stats.metric_rounds, 1);
    Ok(())
}

/// The exemplar/span attributes that point at a picture.
pub(super) fn artifact_attrs(
    r: &crate::artifacts::ArtifactRef,
) -> Vec<opentelemetry_proto::tonic::common::v1::KeyValue> {
    vec![
        attrs::string(semconv::KOTEL_ARTIFACT_URL, r.url.clone()),
        attrs::string(semconv::KOTEL_ARTIFACT_ID, r.id.clone()),
        attrs::string(semconv::KOTEL_ARTIFACT_MEDIA_TYPE, r.media_type.clone()),
    ]
}
