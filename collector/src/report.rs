//! The report page in the output folder, `index.html`: the per-process summary table (the
//! same figures as the terminal summary), the heatmap columns of the slowest series, the
//! off-CPU flame graph's stacks and links to the picture files, drawn by
//! [`kotel_render::report`]. Rewritten each metrics interval while the agent runs (the page
//! then reloads itself), and once more, final and static, when it stops. Written to a
//! temporary file and renamed, so a reader never sees half a page.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kotel_bpf::Probe;
use kotel_render::report::{
    report_html, Exemplar, Flame, HeatmapColumnData, HeatmapSeries, ReportData, Row,
};

use crate::artifacts::PictureLinks;
use crate::model::{Histogram, OffcpuState};
use crate::otlp::ids::hex;
use crate::otlp::metrics::ExemplarCandidate;
use crate::quantile::quantile_ns;

/// Most series whose heatmap columns go into the page (the slowest by p99).
pub const MAX_HEATMAPS: usize = 200;
/// Most folded stacks in the page's flame graph (the heaviest); the rest are named in a note.
pub const MAX_FLAME_STACKS: usize = 5_000;
/// Most processes whose /proc facts and exemplars are remembered before unlisted ones go.
const MAX_PROCS: usize = 16_384;
/// The kernel's flag for a kernel thread in `/proc/<pid>/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// What the page needs from the picture maker: each series' window of columns and pictures.
pub struct PictureInputs<'a> {
    /// Each series' columns: (end of column, Unix ns; what it gained).
    pub columns: &'a HashMap<(u32, Probe), VecDeque<(u64, Histogram)>>,
    /// Width of a column.
    pub column_width: Duration,
    /// Off-CPU folded stacks with their blocked time (ns).
    pub stacks: &'a HashMap<String, u64>,
}

/// What /proc said of a process once: kernel thread or not, and its executable's name.
#[derive(Debug, Clone, Default)]
struct ProcFacts {
    kernel_thread: bool,
    exe: String,
}

/// Writes `index.html`. Single-threaded.
pub struct ReportWriter {
    dir: PathBuf,
    title: String,
    refresh: Duration,
    trace_url_template: String,
    procs: HashMap<u32, ProcFacts>,
    exemplars: HashMap<(u32, Probe), ExemplarCandidate>,
    /// Pages that could not be written.
    pub failed: u64,
}

impl ReportWriter {
    /// A writer of `dir/index.html`, titled after `host`, reloading every `refresh` while live;
    /// exemplars link through `trace_url_template` (empty: the trace id is shown).
    pub fn new(dir: &Path, host: &str, refresh: Duration, trace_url_template: &str) -> Self {
        ReportWriter {
            dir: dir.to_path_buf(),
            title: format!("kotel report: {host}"),
            refresh,
            trace_url_template: trace_url_template.to_string(),
            procs: HashMap::new(),
            exemplars: HashMap::new(),
            failed: 0,
        }
    }

    /// Reads what /proc says of `pid` now, once (kernel thread or not, its executable), so a
    /// process that exits before the next page is still named and classed right. A process
    /// already gone is tried again next time it is seen.
    pub fn saw(&mut self, pid: u32) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.procs.entry(pid) {
            if let Some(f) = read_proc(pid) {
                e.insert(f);
            }
        }
    }

    /// `pid` called execve: its executable changed, read it again.
    pub fn exec(&mut self, pid: u32) {
        self.procs.remove(&pid);
        self.saw(pid);
    }

    /// Keeps this interval's slowest exemplar of each series (the one its picture marks).
    pub fn note_exemplars(&mut self, slowest: &HashMap<(u32, Probe), ExemplarCandidate>) {
        for (k, e) in slowest {
            self.exemplars.insert(*k, *e);
        }
    }

    /// Writes the page from `histograms` (the summary's), named by `name`; `live` pages reload
    /// themselves. A page that cannot be written is counted and logged, never fatal.
    pub fn write(
        &mut self,
        histograms: &[Histogram],
        name: &dyn Fn(u32) -> String,
        pictures: Option<(&PictureInputs<'_>, &PictureLinks)>,
        now_unix_nano: u64,
        live: bool,
    ) {
        for h in histograms {
            self.saw(h.pid);
        }
        let procs = &self.procs;
        let facts = |pid| procs.get(&pid).cloned().unwrap_or_default();
        let mut data = build(histograms, name, &facts, pictures, &self.exemplars);
        data.title = self.title.clone();
        data.generated_unix_nano = now_unix_nano;
        data.live = live;
        data.refresh_seconds = self.refresh.as_secs().max(1);
        data.trace_url_template = self.trace_url_template.clone();
        // Past the bound, forget processes no longer listed. Not sooner: between its exit and
        // its final histogram's return a process is briefly unlisted, and /proc is gone.
        if self.procs.len() > MAX_PROCS || self.exemplars.len() > MAX_PROCS {
            let listed: std::collections::HashSet<u32> = histograms.iter().map(|h| h.pid).collect();
            self.procs.retain(|pid, _| listed.contains(pid));
            self.exemplars.retain(|(pid, _), _| listed.contains(pid));
        }
        let html = report_html(&data);
        let tmp = self.dir.join(".index.html.tmp");
        let written = std::fs::write(&tmp, html)
            .and_then(|()| std::fs::rename(&tmp, self.dir.join("index.html")));
        if let Err(e) = written {
            self.failed += 1;
            if self.failed == 1 || self.failed.is_power_of_two() {
                tracing::warn!(
                    dir = %self.dir.display(),
                    error = %e,
                    failed = self.failed,
                    "kotel.report.not_written"
                );
            }
        }
    }
}

/// The page's data: one row per histogram (as the terminal summary), the heatmaps of the
/// slowest series that have columns, and the flame graph's heaviest stacks.
fn build(
    histograms: &[Histogram],
    name: &dyn Fn(u32) -> String,
    facts: &dyn Fn(u32) -> ProcFacts,
    pictures: Option<(&PictureInputs<'_>, &PictureLinks)>,
    exemplars: &HashMap<(u32, Probe), ExemplarCandidate>,
) -> ReportData {
    let mut names: HashMap<u32, String> = HashMap::new();
    let rows: Vec<Row> = histograms
        .iter()
        .filter(|h| h.count > 0)
        .map(|h| {
            let n = names.entry(h.pid).or_insert_with(|| name(h.pid)).clone();
            let f = facts(h.pid);
            Row {
                pid: h.pid,
                exe: if f.exe == n { String::new() } else { f.exe },
                name: n,
                probe: h.kind.name().to_string(),
                state: h.offcpu_state.map_or("", OffcpuState::name).to_string(),
                kernel_thread: f.kernel_thread,
                count: h.count,
                p50_ns: quantile_ns(h, 0.5).unwrap_or(0),
                p99_ns: quantile_ns(h, 0.99).unwrap_or(0),
                max_ns: h.max_ns,
                bytes: matches!(h.kind, Probe::Writev | Probe::TcpSend).then_some(h.bytes),
            }
        })
        .collect();
    let mut data = ReportData {
        rows,
        ..ReportData::default()
    };
    let Some((p, links)) = pictures else {
        return data;
    };
    // The slowest series first, as the table opens (user processes before kernel threads,
    // which it hides); each (process, probe) once.
    let mut order: Vec<&Row> = data.rows.iter().collect();
    order.sort_by(|a, b| {
        (a.kernel_thread, b.p99_ns, a.pid).cmp(&(b.kernel_thread, a.p99_ns, b.pid))
    });
    let mut seen = std::collections::HashSet::new();
    for r in order {
        let Some(probe) = Probe::ALL.into_iter().find(|k| k.name() == r.probe) else {
            continue;
        };
        let key = (r.pid, probe);
        if !seen.insert(key) {
            continue;
        }
        let Some(cols) = p.columns.get(&key) else {
            continue;
        };
        if data.heatmaps.len() >= MAX_HEATMAPS {
            data.notes.push(format!(
                "Heatmaps are kept for the {MAX_HEATMAPS} slowest series only."
            ));
            break;
        }
        data.heatmaps
            .push(series(key, &r.name, cols, p, links, exemplars.get(&key)));
    }
    data.flame = flame(p, links, &mut data.notes);
    data
}

fn series(
    (pid, probe): (u32, Probe),
    name: &str,
    cols: &VecDeque<(u64, Histogram)>,
    p: &PictureInputs<'_>,
    links: &PictureLinks,
    exemplar: Option<&ExemplarCandidate>,
) -> HeatmapSeries {
    let width = p.column_width.as_nanos() as u64;
    let first_end = cols.front().map_or(0, |(t, _)| *t);
    HeatmapSeries {
        pid,
        name: name.to_string(),
        probe: probe.name().to_string(),
        start_unix_nano: first_end.saturating_sub(width),
        column_width_nanos: width,
        scale: cols.back().map_or(0, |(_, h)| h.scale),
        columns: cols
            .iter()
            .map(|(_, h)| HeatmapColumnData {
                zero_count: h.zero_count,
                offset: h.offset,
                counts: h.bucket_counts.clone(),
            })
            .collect(),
        exemplar: exemplar.map(|e| Exemplar {
            time_unix_nano: e.time_unix_nano,
            value_ns: e.duration_ns,
            trace_id: hex(&e.trace_id),
            span_id: hex(&e.span_id),
        }),
        pictures: links.series.get(&(pid, probe)).cloned().unwrap_or_default(),
    }
}

/// The heaviest [`MAX_FLAME_STACKS`] stacks, in name order; a note says what was left out.
fn flame(p: &PictureInputs<'_>, links: &PictureLinks, notes: &mut Vec<String>) -> Option<Flame> {
    if p.stacks.is_empty() {
        return None;
    }
    let mut stacks: Vec<(String, u64)> = p.stacks.iter().map(|(s, w)| (s.clone(), *w)).collect();
    stacks.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if stacks.len() > MAX_FLAME_STACKS {
        let rest: u64 = stacks[MAX_FLAME_STACKS..].iter().map(|s| s.1).sum();
        let total: u64 = stacks.iter().map(|s| s.1).sum();
        notes.push(format!(
            "The flame graph shows the {MAX_FLAME_STACKS} heaviest of {} stacks; the other {:.1}% of off-CPU time is left out.",
            stacks.len(),
            100.0 * rest as f64 / total.max(1) as f64
        ));
        stacks.truncate(MAX_FLAME_STACKS);
    }
    stacks.sort_by(|a, b| a.0.cmp(&b.0));
    Some(Flame {
        title: "Off-CPU time by stack".into(),
        stacks,
        pictures: links.flame.clone(),
    })
}

/// Whether `pid` is a kernel thread (`PF_KTHREAD` in `/proc/<pid>/stat`) and its executable's
/// name (empty when unreadable); `None` for a process already gone.
fn read_proc(pid: u32) -> Option<ProcFacts> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcFacts {
        kernel_thread: stat_flags(&stat).is_some_and(|f| f & PF_KTHREAD != 0),
        exe: std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default(),
    })
}

/// The `flags` field (the 9th) of a `/proc/<pid>/stat` line; the name in parentheses may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn stat_flags(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state (3), ppid, pgrp, session, tty_nr, tpgid, flags (9).
    rest.split_whitespace().nth(6)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_are_told_by_their_stat_flags() {
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0";
        let user = "77 (my (odd) name) S 1 77 77 0 -1 4194560 9 0 0 0 0 0 0 0 20 0 1 0 5 0 0";
        assert_eq!(stat_flags(kthread), Some(2_129_984));
        assert!(stat_flags(kthread).unwrap() & PF_KTHREAD != 0);
        assert_eq!(stat_flags(user), Some(4_194_560));
        assert!(stat_flags(user).unwrap() & PF_KTHREAD == 0);
        assert_eq!(stat_flags(""), None);
        // This test's own process is no kernel thread.
        assert!(!read_proc(std::process::id()).unwrap().kernel_thread);
    }

    #[test]
    fn rows_carry_the_terminal_summarys_figures() {
        let mut tcp = Histogram::of(Probe::TcpSend, 7, 3, &[10_000, 20_000, 3_000_000]);
        tcp.bytes = 4096;
        let mut off = Histogram::of(Probe::Offcpu, 7, 3, &[5_000_000]);
        off.offcpu_state = Some(OffcpuState::Uninterruptible);
        let kt = Histogram::of(Probe::Runqueue, 2, 3, &[1_000]);
        let hs = [tcp.clone(), off, kt];
        let facts = |pid| ProcFacts {
            kernel_thread: pid == 2,
            exe: if pid == 7 {
                "db-server".into()
            } else {
                String::new()
            },
        };
        let data = build(&hs, &|pid| format!("p{pid}"), &facts, None, &HashMap::new());
        assert_eq!(data.rows.len(), 3);
        let r = &data.rows[0];
        assert_eq!(
            (r.pid, r.name.as_str(), r.exe.as_str(), r.probe.as_str()),
            (7, "p7", "db-server", "tcp_send")
        );
        assert_eq!((r.count, r.bytes, r.max_ns), (3, Some(4096), 3_000_000));
        assert_eq!(r.p50_ns, quantile_ns(&tcp, 0.5).unwrap());
        assert_eq!(r.p99_ns, quantile_ns(&tcp, 0.99).unwrap());
        assert_eq!(
            (data.rows[1].state.as_str(), data.rows[1].bytes),
            ("uninterruptible", None)
        );
        assert!(data.rows[2].kernel_thread);
        assert!(data.heatmaps.is_empty() && data.flame.is_none());
    }

    #[test]
    fn heatmaps_follow_the_slowest_series_and_stacks_are_bounded() {
        let slow = Histogram::of(Probe::Offcpu, 9, 3, &[9_000_000]);
        let fast = Histogram::of(Probe::Runqueue, 8, 3, &[1_000]);
        let columns: HashMap<_, _> = [
            (
                (9, Probe::Offcpu),
                VecDeque::from([(5_000_000_000u64, slow.clone())]),
            ),
            (
                (8, Probe::Runqueue),
                VecDeque::from([(5_000_000_000u64, fast.clone())]),
            ),
        ]
        .into_iter()
        .collect();
        let stacks: HashMap<String, u64> = (0..MAX_FLAME_STACKS as u64 + 10)
            .map(|i| (format!("main;f{i}"), i + 1))
            .collect();
        let links = PictureLinks {
            series: [((9, Probe::Offcpu), vec!["heatmap-9-offcpu.svg".to_string()])]
                .into_iter()
                .collect(),
            flame: Vec::new(),
        };
        let inputs = PictureInputs {
            columns: &columns,
            column_width: Duration::from_secs(1),
            stacks: &stacks,
        };
        let ex = ExemplarCandidate {
            duration_ns: 9_000_000,
            time_unix_nano: 4_500_000_000,
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            offcpu_state: None,
        };
        let exemplars = [((9, Probe::Offcpu), ex)].into_iter().collect();
        let data = build(
            &[fast, slow],
            &|pid| pid.to_string(),
            &|_| ProcFacts::default(),
            Some((&inputs, &links)),
            &exemplars,
        );
        let keys: Vec<(u32, &str)> = data
            .heatmaps
            .iter()
            .map(|h| (h.pid, h.probe.as_str()))
            .collect();
        assert_eq!(keys, [(9, "offcpu"), (8, "runqueue")]);
        let h = &data.heatmaps[0];
        assert_eq!(
            (h.start_unix_nano, h.column_width_nanos),
            (4_000_000_000, 1_000_000_000)
        );
        assert_eq!(h.columns[0].counts.iter().sum::<u64>(), 1);
        assert_eq!(h.exemplar.as_ref().unwrap().trace_id, "ab".repeat(16));
        assert_eq!(h.pictures, ["heatmap-9-offcpu.svg"]);
        let flame = data.flame.unwrap();
        assert_eq!(flame.stacks.len(), MAX_FLAME_STACKS);
        // The ten lightest went, and a note says so.
        assert!(!flame.stacks.iter().any(|(s, _)| s == "main;f0"));
        assert!(
            data.notes.iter().any(|n| n.contains("heaviest")),
            "{:?}",
            data.notes
        );
    }
}
