//! Phase: the kernel events of one drain. Each event long enough for a span is built into one
//! at once (ids, attributes, stacks) and then settles exactly once: while an OTLP receiver
//! runs it waits in the link buffer for the application span that covers it (a child there)
//! or for its window to pass; then, or at once without a receiver, it goes out on its own
//! through the span budget. Which events become spans, as children or on their own, is the
//! span rule's ([`crate::spans::policy`]). Settling is also when its exemplar is offered, so an exemplar
//! always points at a span that is exported where it points.

use super::profiles::record;
use super::Agent;
use crate::kernel::folded::folded;
use crate::kernel::Drained;
use crate::model::KernelEvent;
use crate::otlp::pending::PendingSpan;
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

    /// Adds what user stack symbolization did in this drain to the self-metrics.
    pub(super) fn count_ustacks(&self) {
        let c = self.kernel.take_ustack_counts();
        let s = &self.tele.stats;
        telemetry::add(&s.ustack_hits, c.hits);
        telemetry::add(&s.ustack_misses, c.misses);
        telemetry::add(&s.ustack_failures, c.failures);
        telemetry::add(&s.ustack_deferred, c.deferred);
        telemetry::add(&s.ustack_deleted_frames, c.deleted_frames);
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

    /// Fixes the span of `ev`: its ids and its stacks, symbolized now (the kernel's stack map
    /// does not keep them); its stacks go into its probe's flame graph. A standalone span of a
    /// process that sends no spans of its own is offered as an exemplar now, in the interval
    /// its event is counted in, though the link buffer may hold the span itself for a while
    /// (a link target's waits for its claim: as a child it belongs to another trace).
    fn build(&mut self, ev: &KernelEvent, standalone: bool) -> PendingSpan {
        if self.resources.comms.insert(ev.pid, ev.comm).is_none() {
            // While it lives: a short-lived process may be gone by the next page.
            self.report.saw(ev.pid);
        }
        let stacks = self.kernel.stacks(ev);
        if let Some(a) = self.artifacts.as_mut() {
            if let Some(line) = folded(&ev.comm.to_string_lossy(), &stacks) {
                let end = ev.start_unix_nano.saturating_add(ev.duration_ns);
                a.add_stack(ev.kind, line, ev.duration_ns, end);
            }
        }
        if standalone {
            telemetry::add(&self.tele.stats.spans_produced, 1);
        }
        let mut p = PendingSpan {
            event: ev.clone(),
            trace_id: self.ids.trace_id(),
            span_id: self.ids.span_id(),
            stacks,
            standalone,
            exemplar_offered: false,
        };
        if standalone && !self.link_targets.contains(&ev.pid) {
            self.metrics.observe(p.pid(), p.kind(), p.exemplar());
            p.exemplar_offered = true;
        }
        p
    }

    /// What the link buffer still held at the end (oldest first), settled interval by
    /// interval of their events: each interval's spans meet the budget among themselves, as
    /// they would have, had the run gone on.
    pub(super) fn settle_by_interval(&mut self, released: Vec<PendingSpan>) {
        let interval = u64::try_from(self.plan.interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut current = None;
        for p in released {
            let index = p.end().saturating_sub(self.timers.started_unix) / interval;
            if current.is_some_and(|c| c != index) {
                let profiles = &mut self.profiles;
                let mut sent = |p: &PendingSpan| record(profiles, p, true);
                for (pid, span) in self.budget.drain(&mut |_, _| Vec::new(), &mut sent) {
                    self.batcher.push(pid, span);
                }
            }
            current = Some(index);
            self.settle([p]);
        }
    }

    /// Spans that no application span claimed: those that stand on their own are offered as
    /// exemplars and to the budget; the others (children only) end here.
    pub(super) fn settle(&mut self, released: impl IntoIterator<Item = PendingSpan>) {
        for p in released.into_iter().filter(|p| p.standalone) {
            if !p.exemplar_offered {
                self.metrics.observe(p.pid(), p.kind(), p.exemplar());
            }
            let offered = self.budget.offer(p);
            if let Some(skipped) = offered.skipped {
                telemetry::add(&self.tele.stats.spans_skipped_budget, 1);
                record(&mut self.profiles, &skipped, false);
            }
            if let Some(now) = offered.now {
                record(&mut self.profiles, &now, true);
                self.batcher.push(now.pid(), now.into_span());
            }
        }
    }
}
