//! Phase: the kernel events of one drain. Every event can be linked; those the span rule
//! ([`crate::spans::policy`]) makes standalone also become spans of their own, with their
//! stacks, an exemplar candidate for their histogram, and (off-CPU) a frame in the flame graph.

use kotel_bpf::Probe;

use super::Agent;
use crate::enrich::semconv::{KOTEL_STACK_KERNEL, KOTEL_STACK_USER};
use crate::kernel::symbols::folded;
use crate::kernel::Drained;
use crate::model::KernelEvent;
use crate::otlp::attrs;
use crate::otlp::metrics::ExemplarCandidate;
use crate::otlp::spans::{kernel_span, SpanIds};
use crate::telemetry;

impl Agent {
    /// Counts the records of a drain that could not be decoded, and logs the drain's first
    /// error (at most once a second, saying how many lines were held back).
    pub(super) fn count_undecodable(&self, drained: &Drained) {
        let Some(e) = &drained.first_error else {
            return;
        };
        let counter = &self.tele.stats.records_undecodable;
        self.decode_log.count_and_log(
            counter,
            drained.undecodable,
            |suppressed| tracing::warn!(error = %e, suppressed, "kotel.decode.failed"),
        );
    }

    /// Handles the events of one drain.
    pub(super) fn handle_events(&mut self, events: Vec<KernelEvent>) {
        telemetry::add(&self.tele.stats.events_received, events.len() as u64);
        for ev in events {
            // Link targets send shorter events too, for exact sums.
            if self.plan.linking {
                self.linker.remember(&ev, self.plan.spans.child(&ev));
            }
            if self.plan.spans.standalone(&ev) {
                self.span_of(&ev);
            }
        }
    }

    /// Builds the span of one slow event and sends it on, or holds it back as the slowest of
    /// its series.
    fn span_of(&mut self, ev: &KernelEvent) {
        let span_ids = SpanIds {
            trace_id: self.ids.trace_id(),
            span_id: self.ids.span_id(),
            parent_span_id: None,
        };
        self.metrics.observe(
            ev.pid,
            ev.kind,
            ExemplarCandidate {
                duration_ns: ev.duration_ns,
                time_unix_nano: ev.start_unix_nano.saturating_add(ev.duration_ns),
                trace_id: span_ids.trace_id,
                span_id: span_ids.span_id,
                offcpu_state: ev.offcpu_state,
            },
        );
        self.resources.comms.insert(ev.pid, ev.comm);
        let mut span = kernel_span(ev, span_ids);
        let stacks = self.kernel.stacks(ev);
        if let Some(frames) = &stacks.kernel {
            span.attributes
                .push(attrs::strings(KOTEL_STACK_KERNEL, frames.clone()));
            if ev.kind == Probe::Offcpu {
                if let Some(a) = self.artifacts.as_mut() {
                    a.add_offcpu_stack(folded(&ev.comm.to_string_lossy(), frames), ev.duration_ns);
                }
            }
        }
        if let Some(frames) = stacks.user {
            span.attributes
                .push(attrs::strings(KOTEL_STACK_USER, frames));
        }
        if let Some(now) = self.held.offer(ev.pid, ev.kind, ev.duration_ns, span) {
            self.batcher.push(ev.pid, now);
        }
        telemetry::add(&self.tele.stats.spans_produced, 1);
    }
}
