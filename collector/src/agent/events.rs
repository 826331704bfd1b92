//! Phase: the kernel events of one drain. Each event long enough for a span is built into one
//! at once (ids, attributes, stacks) and then settles exactly once: while an OTLP receiver
//! runs it waits in the link buffer for the application span that covers it (a child there)
//! or for its window to pass; then, or at once without a receiver, it goes out on its own
//! through the span budget. Which events become spans, as children or on their own, is the
//! span rule's ([`crate::spans::policy`]). Settling is also when its exemplar is offered, so an exemplar
//! always points at a span that is exported where it points.

use kotel_bpf::Probe;

use super::Agent;
use crate::enrich::semconv::{KOTEL_STACK_KERNEL, KOTEL_STACK_USER};
use crate::kernel::symbols::folded;
use crate::kernel::Drained;
use crate::model::KernelEvent;
use crate::otlp::attrs;
use crate::otlp::pending::PendingSpan;
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
            let child = self.plan.spans.child(&ev);
            let standalone = self.plan.spans.standalone(&ev);
            let pending = (child || standalone).then(|| self.build(&ev, standalone));
            if self.plan.linking {
                let released = self.linker.remember(&ev, pending);
                self.settle(released);
            } else if let Some(p) = pending {
                self.settle([p]);
            }
        }
    }

    /// Builds the span of `ev` with its stacks; its off-CPU stack goes into the flame graph.
    fn build(&mut self, ev: &KernelEvent, standalone: bool) -> PendingSpan {
        let ids = SpanIds {
            trace_id: self.ids.trace_id(),
            span_id: self.ids.span_id(),
            parent_span_id: None,
        };
        self.resources.comms.insert(ev.pid, ev.comm);
        let mut span = kernel_span(ev, ids);
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
        if standalone {
            telemetry::add(&self.tele.stats.spans_produced, 1);
        }
        PendingSpan {
            pid: ev.pid,
            kind: ev.kind,
            duration_ns: ev.duration_ns,
            offcpu_state: ev.offcpu_state,
            end: ev.start_unix_nano.saturating_add(ev.duration_ns),
            standalone,
            span,
        }
    }

    /// Spans that no application span claimed: those that stand on their own are offered as
    /// exemplars and to the budget; the others (children only) end here.
    pub(super) fn settle(&mut self, released: impl IntoIterator<Item = PendingSpan>) {
        for p in released.into_iter().filter(|p| p.standalone) {
            self.metrics.observe(p.pid, p.kind, p.exemplar());
            let skipped = self.budget.offer(p);
            telemetry::add(&self.tele.stats.spans_skipped_budget, skipped);
        }
    }
}
