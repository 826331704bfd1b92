//! Phase: OTLP profiles. Every slow event with stacks is added to its profile once its span's
//! fate is known (sent on its own, a child of an application span, or skipped by the budget),
//! linked to the span it became; once per metrics interval the profiles go to the export
//! queue, after the interval's spans, so that each link names a span already queued.

use super::Agent;
use crate::export::Batch;
use crate::otlp::pending::PendingSpan;
use crate::otlp::profiles::ProfileBuilder;
use crate::telemetry;

/// Adds the event of `p` to its profile: linked to its own span when `sent`, else to none.
pub(super) fn record(profiles: &mut Option<ProfileBuilder>, p: &PendingSpan, sent: bool) {
    if let Some(b) = profiles.as_mut() {
        b.add(p.observation(), sent.then_some((p.trace_id, p.span_id)));
    }
}

impl Agent {
    /// Queues the profiles of everything added since the last call, one request.
    pub(super) fn queue_profiles(&mut self) {
        let Some(b) = self.profiles.as_mut() else {
            return;
        };
        let counts = b.take_counts();
        telemetry::add(&self.tele.stats.profile_samples, counts.observed);
        telemetry::add(&self.tele.stats.profile_samples_dropped, counts.dropped);
        let resources = &mut self.resources;
        if let Some(req) = b.build(&mut |pid| resources.of(pid), &mut self.ids) {
            let _ = self.queue.submit(Batch::Profiles(req)); // a refusal is counted by the queue
        }
    }
}
