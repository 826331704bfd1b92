//! Phase: the report page. Each metrics interval `index.html` in the output folder is
//! rewritten from the live histograms (and those of processes that ended), live; at stop, from
//! the closing summary's, final.

use super::Agent;
use crate::model::Histogram;

impl Agent {
    /// Rewrites the live page from the kernel's histograms; a failed read skips this round.
    pub(super) fn report_live(&mut self) {
        let Ok(live) = self.kernel.histograms() else {
            return;
        };
        let mut histograms: Vec<Histogram> = live
            .into_iter()
            .chain(self.ended.iter().cloned())
            .filter(|h| h.count > 0)
            .collect();
        histograms.sort_by_key(Histogram::series);
        self.write_report(&histograms, true);
    }

    /// Writes the page from `histograms`, `live` or final.
    pub(super) fn write_report(&mut self, histograms: &[Histogram], live: bool) {
        let comms = &self.resources.comms;
        let name = |pid: u32| match comms.get(&pid) {
            Some(c) => c.to_string_lossy(),
            None => std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim_end().to_string())
                .unwrap_or_else(|_| "?".to_string()),
        };
        if let Some(slowest) = self.artifacts.as_ref().map(|_| self.metrics.slowest()) {
            self.report.note_exemplars(slowest);
        }
        let inputs = self.artifacts.as_ref().map(|a| a.report_inputs());
        let pictures = inputs.as_ref().map(|(i, l)| (i, l));
        self.report
            .write(histograms, &name, pictures, super::setup::unix_now(), live);
        crate::telemetry::set(&self.tele.stats.report_failed, self.report.failed);
    }
}
