//! Phase: what applications sent to the OTLP receiver. Their traces get kernel child spans
//! (and their processes become link targets); everything is then forwarded to the export
//! queue.

use super::Agent;
use crate::export::Batch;
use crate::otlp::metrics::ExemplarCandidate;
use crate::receiver::Received;

impl Agent {
    /// Stops the receiver: requests in flight are answered and reach the channel, new ones
    /// are refused.
    pub(super) fn close_receiver(&mut self) {
        if let Some(handle) = self.receiver.take() {
            self.runtime.block_on(handle.shutdown());
        }
    }

    /// Takes what the receiver has; it is linked after this round's drain.
    pub(super) fn take_arrived(&mut self) {
        if let Some(rx) = self.received.as_mut() {
            while let Ok(r) = rx.try_recv() {
                self.arrived.push(r);
            }
        }
    }

    /// Links and forwards what arrived before this round's drain.
    pub(super) fn link_arrived(&mut self) {
        for r in std::mem::take(&mut self.arrived) {
            let batch = match r {
                Received::Traces { mut request, peer } => {
                    let linked = self.linker.link(&mut request, peer);
                    for c in linked.children {
                        self.budget.unpin(&c.span_id);
                        let o = &c.observation;
                        self.metrics.observe(
                            o.pid,
                            o.kind,
                            ExemplarCandidate {
                                duration_ns: o.duration_ns,
                                time_unix_nano: o.end(),
                                trace_id: c.trace_id,
                                span_id: c.span_id,
                                offcpu_state: o.offcpu_state,
                            },
                        );
                        if let Some(b) = self.profiles.as_mut() {
                            b.add(c.observation, Some((c.trace_id, c.span_id)));
                        }
                    }
                    for pid in linked.pids {
                        if self.link_targets.insert(pid) {
                            if let Err(e) = self.kernel.add_link_target(pid) {
                                tracing::warn!(pid, error = %e, "kotel.link.target_failed");
                            }
                        }
                    }
                    Batch::Traces(request)
                }
                other => other.into_batch(),
            };
            let _ = self.queue.submit(batch); // a refusal is counted by the queue
        }
    }
}
