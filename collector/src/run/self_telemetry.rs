//! What kotel's own `/metrics` endpoint reads: the main loop's and the export queue's counters,
//! the kernel's drop counts and the OTLP receiver's refusals, as Prometheus samples.

use super::*;

/// What the telemetry endpoints read: counters updated by the main loop and the export queue.
pub(super) struct Telemetry {
    pub(super) stats: Arc<SelfStats>,
    pub(super) export: ExportStats,
    pub(super) drops: std::sync::Mutex<DropCounts>,
    /// The OTLP receiver's counters, once it runs.
    pub(super) receiver: std::sync::OnceLock<Arc<receiver::ReceiverStats>>,
}

impl SampleSource for Telemetry {
    fn samples(&self) -> Vec<Sample> {
        let drops = self.drops.lock().map(|d| *d).unwrap_or_default();
        let mut out = Vec::new();
        let s = |name: &str, help, labels, value| Sample {
            name: name.to_string(),
            help,
            labels,
            value,
        };
        out.push(s(
            "kotel_events_received_total",
            "Kernel events decoded",
            vec![],
            telemetry::get(&self.stats.events_received),
        ));
        for p in Probe::ALL {
            out.push(s(
                "kotel_events_lost_total",
                "Events the ring buffer had no room for",
                vec![("kind", p.name().to_string())],
                drops.ringbuf[usize::from(p.kind())],
            ));
        }
        out.push(s(
            "kotel_histogram_events_dropped_total",
            "Events counted in the overflow histogram: no free slot",
            vec![],
            drops.hist_full,
        ));
        out.push(s(
            "kotel_task_storage_unavailable_total",
            "Events missed: no task storage",
            vec![],
            drops.task_storage,
        ));
        out.push(s(
            "kotel_stacks_dropped_total",
            "Off-CPU stacks the stack map could not hold",
            vec![],
            drops.stack,
        ));
        out.push(s(
            "kotel_records_undecodable_total",
            "Ring-buffer records that could not be decoded",
            vec![],
            telemetry::get(&self.stats.records_undecodable),
        ));
        out.push(s(
            "kotel_spans_produced_total",
            "Spans built from kernel events",
            vec![],
            telemetry::get(&self.stats.spans_produced),
        ));
        for sig in Signal::ALL {
            let st = self.export.signal(sig);
            let l = || vec![("signal", sig.as_str().to_string())];
            out.push(s(
                "kotel_export_exported_items_total",
                "Items the receiver accepted",
                l(),
                st.exported_items,
            ));
            out.push(s(
                "kotel_export_rejected_items_total",
                "Items the receiver rejected (partial success)",
                l(),
                st.rejected_items,
            ));
            for (reason, value) in st.dropped_by_reason() {
                let mut labels = l();
                labels.push(("reason", reason.as_str().to_string()));
                out.push(s(
                    "kotel_export_dropped_items_total",
                    "Items dropped before delivery, by reason",
                    labels,
                    value,
                ));
            }
        }
        if let Some(r) = self.receiver.get() {
            out.extend(receiver_samples(r));
        }
        out.push(s(
            "kotel_export_tls_failures_total",
            "Export attempts that failed in TLS (handshake refused either way)",
            vec![],
            crate::export::tls::failures(),
        ));
        out
    }

    fn ready(&self) -> bool {
        self.stats.ready.load(Ordering::Relaxed)
    }
}

/// `/metrics` lines for the OTLP receiver: what it accepted, and what it refused, by reason.
pub(super) fn receiver_samples(r: &receiver::ReceiverStats) -> Vec<Sample> {
    let mut out = Vec::new();
    for sig in Signal::ALL {
        out.push(Sample {
            name: "kotel_receiver_accepted_items_total".into(),
            help: "Items applications sent that the OTLP receiver accepted",
            labels: vec![("signal", sig.as_str().to_string())],
            value: r.signal(sig).accepted_items.load(Ordering::Relaxed),
        });
    }
    for (reason, counter) in [
        ("malformed", &r.rejected_malformed),
        ("oversize", &r.rejected_oversize),
        ("busy", &r.rejected_busy),
        ("closed", &r.rejected_closed),
        ("unauthenticated", &r.rejected_unauthenticated),
        ("tls_handshake", &r.rejected_handshake),
    ] {
        out.push(Sample {
            name: "kotel_receiver_rejected_total".into(),
            help: "Requests (or, for tls_handshake, connections) the OTLP receiver refused",
            labels: vec![("reason", reason.to_string())],
            value: counter.load(Ordering::Relaxed),
        });
    }
    out
}
