//! Phase: processes that called execve or exited. Their cached metadata goes stale, their
//! link targets end, and the histogram slots of exited processes go back to the kernel, their
//! final counts exported once more.

use std::time::Duration;

use super::{Agent, RunError};
use crate::telemetry;

/// Most final histograms of exited processes kept for the closing summary.
const SUMMARY_ENDED: usize = 4096;
/// Most process names remembered for the summary.
const MAX_NAMES: usize = 65_536;
/// How long an exited process's resource outlives the metrics interval: its last spans and
/// final metrics still need it.
const EXITED_GRACE: Duration = Duration::from_secs(2);

impl Agent {
    /// Handles the exec (`false`) and exit (`true`) records of one drain.
    pub(super) fn handle_lifecycle(&mut self, records: &[(u32, bool)]) {
        for &(pid, exited) in records {
            if exited {
                self.resources
                    .cache
                    .exited(pid, self.plan.interval + EXITED_GRACE);
                if self.link_targets.remove(&pid) {
                    self.kernel.remove_link_target(pid);
                }
            } else {
                self.resources.cache.invalidate(pid);
                self.report.exec(pid);
            }
            telemetry::add(&self.tele.stats.process_invalidations, 1);
        }
    }

    /// Takes back the histogram slots of exited processes (all of them when `done`); their
    /// final counts go to the next metrics round and to the closing summary.
    pub(super) fn retire_exited(&mut self, done: bool) -> Result<(), RunError> {
        let finals = self.kernel.recycle(done)?;
        if !finals.is_empty() {
            let room = SUMMARY_ENDED.saturating_sub(self.ended.len());
            self.ended
                .extend(finals.iter().filter(|h| h.count > 0).take(room).cloned());
            if let Some(a) = self.artifacts.as_mut() {
                a.retire(&finals);
            }
            self.metrics.retire(finals);
        }
        if self.resources.comms.len() > MAX_NAMES {
            self.resources.comms.clear(); // names only label the summary; /proc fills in
        }
        Ok(())
    }
}
