//! Size-based rotation of the OTLP JSON lines files, after the OpenTelemetry Collector's file
//! exporter (`rotation: {max_megabytes, max_backups}`, lumberjack underneath): when a line
//! would take the active file (`traces.jsonl`) past the size, the file is renamed to a backup
//! named for the moment of rotation (`traces-2026-12-07T01-02-03.123.jsonl`, UTC), a fresh
//! active file is opened under the same name, and backups beyond the count are deleted,
//! oldest first. A line is never split across files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use super::Signal;

/// When the active file is rotated and how many backups are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Size in bytes the active file may reach; a line that would take it past this goes to a
    /// fresh file (a line larger than this on its own is written whole to a fresh file).
    /// 0 never rotates: the file grows without bound.
    pub max_bytes: u64,
    /// Backups kept per file; past it the oldest are deleted. 0 keeps none: the rotated file
    /// is deleted at once.
    pub max_backups: usize,
}

impl Rotation {
    /// Rotation off: one file per signal that grows without bound.
    pub const OFF: Rotation = Rotation {
        max_bytes: 0,
        max_backups: 0,
    };

    /// The defaults (`export.rotation`): 100 MiB, 10 backups (docs/configuration.md says why).
    pub const DEFAULT: Rotation = Rotation {
        max_bytes: 100 << 20,
        max_backups: 10,
    };

    /// Whether files are rotated at all.
    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation::DEFAULT
    }
}

#[derive(Debug, Default)]
struct Counters {
    rotated: AtomicU64,
    removed: AtomicU64,
}

/// Cloneable handle on what rotation did, per signal; cheap to read from any thread.
#[derive(Debug, Clone, Default)]
pub struct FileStats {
    inner: Arc<[Counters; Signal::ALL.len()]>,
}

impl FileStats {
    /// Active files of `signal` renamed to backups.
    pub fn rotated(&self, signal: Signal) -> u64 {
        self.inner[signal.index()].rotated.load(Ordering::Relaxed)
    }

    /// Backups of `signal` deleted because more than `max_backups` were kept.
    pub fn removed(&self, signal: Signal) -> u64 {
        self.inner[signal.index()].removed.load(Ordering::Relaxed)
    }

    fn counters(&self, signal: Signal) -> &Counters {
        &self.inner[signal.index()]
    }
}

/// A file operation that failed, with the file it failed on.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct FileError {
    /// What was being done ("opening", "writing", "rotating", …).
    pub op: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

fn failed(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError { op, path, source }
}

/// The active JSON lines file of one signal, `<dir>/<signal>.jsonl`, and its backups.
/// Created (with its directory) on the first line, appended to, never truncated; an existing
/// file is continued and counts towards the size. Not shared: one writer per file.
#[derive(Debug)]
pub struct RotatingFile {
    dir: PathBuf,
    signal: Signal,
    rotation: Rotation,
    stats: FileStats,
    file: Option<File>,
    /// Bytes in the active file.
    size: u64,
    /// Whether the last write may have left an unterminated line.
    broken: bool,
}

impl RotatingFile {
    /// The file of `signal` in `dir`, rotated as `rotation` says and counted in `stats`.
    /// Nothing is touched until the first line.
    pub fn new(dir: &Path, signal: Signal, rotation: Rotation, stats: FileStats) -> RotatingFile {
        RotatingFile {
            dir: dir.to_path_buf(),
            signal,
            rotation,
            stats,
            file: None,
            size: 0,
            broken: false,
        }
    }

    /// The active file, `<dir>/<signal>.jsonl`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.jsonl", self.signal.as_str()))
    }

    /// Appends `line` and a newline with one write, rotating first when it would take the
    /// active file past the size. After a failed write the next line starts on a line of its
    /// own, so a reader loses only the broken one.
    pub fn write_line(&mut self, line: &[u8]) -> Result<(), FileError> {
        self.write_line_at(line, SystemTime::now())
    }

    /// [`RotatingFile::write_line`] with `now` naming a backup made on the way.
    fn write_line_at(&mut self, line: &[u8], now: SystemTime) -> Result<(), FileError> {
        let path = self.path();
        if self.file.is_none() {
            self.open(&path)?;
        }
        let needed = line.len() as u64 + 1 + u64::from(self.broken);
        if self.rotation.enabled() && self.size > 0 && self.size + needed > self.rotation.max_bytes
        {
            self.rotate(&path, now)?;
        }
        let mut bytes = Vec::with_capacity(line.len() + 2);
        if self.broken {
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
        let Some(file) = self.file.as_mut() else {
            return Err(FileError {
                op: "writing",
                path,
                source: io::Error::other("the file is not open"),
            });
        };
        match file.write_all(&bytes).and_then(|()| file.flush()) {
            Ok(()) => {
                self.broken = false;
                self.size += bytes.len() as u64;
                Ok(())
            }
            Err(source) => {
                // What reached the file is unknown: reopen (and re-read the size) next time.
                self.broken = true;
                self.file = None;
                Err(FileError {
                    op: "writing",
                    path,
                    source,
                })
            }
        }
    }

    fn open(&mut self, path: &Path) -> Result<(), FileError> {
        fs::create_dir_all(&self.dir).map_err(failed("creating directory", &self.dir))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(failed("opening", path))?;
        self.size = file
            .metadata()
            .map_err(failed("reading the size of", path))?
            .len();
        self.file = Some(file);
        Ok(())
    }

    /// Renames the active file to a new backup, deletes the backups beyond the count and opens
    /// a fresh active file.
    fn rotate(&mut self, path: &Path, now: SystemTime) -> Result<(), FileError> {
        self.file = None;
        let backup = self.free_backup_path(now);
        match fs::rename(path, &backup) {
            Ok(()) => {
                self.stats
                    .counters(self.signal)
                    .rotated
                    .fetch_add(1, Ordering::Relaxed);
            }
            // Someone removed the active file: there is nothing to keep, start afresh.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(FileError {
                    op: "rotating",
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
        self.broken = false;
        self.prune();
        self.open(path)
    }

    /// `<signal>-<time>.jsonl`, or with `-1`, `-2`, … after the time when that time is taken
    /// (two rotations in one millisecond, or a clock set back): one past the highest suffix of
    /// that time still on disk, so that a newer backup never sorts before an older one, even
    /// when pruning has deleted the older one's base name.
    fn free_backup_path(&self, now: SystemTime) -> PathBuf {
        let stamp = backup_stamp(now);
        let first = backups(&self.dir, self.signal)
            .into_iter()
            .filter(|((time, _), _)| *time == stamp)
            .map(|((_, n), _)| n + 1)
            .max()
            .unwrap_or(0);
        let name = |n: u32| {
            let suffix = if n == 0 {
                String::new()
            } else {
                format!("-{n}")
            };
            self.dir
                .join(format!("{}-{stamp}{suffix}.jsonl", self.signal.as_str()))
        };
        (first..)
            .map(name)
            .find(|p| fs::symlink_metadata(p).is_err())
            .expect("some suffix is free")
    }

    /// Deletes the oldest backups of this signal until at most `max_backups` are left. Only
    /// files named exactly as backups are touched. A failure is logged and the file stays.
    fn prune(&self) {
        let mut backups = backups(&self.dir, self.signal);
        let excess = backups.len().saturating_sub(self.rotation.max_backups);
        backups.sort();
        for (_, name) in backups.into_iter().take(excess) {
            let path = self.dir.join(&name);
            match fs::remove_file(&path) {
                Ok(()) => {
                    self.stats
                        .counters(self.signal)
                        .removed
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "kotel.export.backup_not_removed"
                ),
            }
        }
    }
}

/// The time part of a backup's name: UTC to the millisecond, `2026-12-07T01-02-03.123`
/// (lumberjack's layout: colons would trouble some file systems and tools).
fn backup_stamp(now: SystemTime) -> String {
    let rfc3339 = humantime::format_rfc3339_millis(now).to_string();
    rfc3339.trim_end_matches('Z').replace(':', "-")
}

/// The backups of `signal` in `dir`, each as its sort key (time, then suffix) and file name.
pub(crate) fn backups(dir: &Path, signal: Signal) -> Vec<((String, u32), String)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let key = parse_backup_name(&name, signal)?;
            Some((key, name))
        })
        .collect()
}

/// `(time, suffix)` of a backup's name (`traces-2026-12-07T01-02-03.123-2.jsonl` →
/// `("2026-12-07T01-02-03.123", 2)`), or `None` for any other name.
fn parse_backup_name(name: &str, signal: Signal) -> Option<(String, u32)> {
    let rest = name
        .strip_prefix(signal.as_str())?
        .strip_prefix('-')?
        .strip_suffix(".jsonl")?;
    const LAYOUT: &[u8] = b"0000-00-00T00-00-00.000";
    let stamp = rest.get(..LAYOUT.len())?;
    let shape_ok = stamp.bytes().zip(LAYOUT).all(|(b, &l)| match l {
        b'0' => b.is_ascii_digit(),
        _ => b == l,
    });
    if !shape_ok {
        return None;
    }
    let suffix = match &rest[LAYOUT.len()..] {
        "" => 0,
        s => {
            let digits = s.strip_prefix('-')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()?
        }
    };
    Some((stamp.to_string(), suffix))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            TempDir(std::env::temp_dir().join(format!(
                "kotel-rotate-{name}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            )))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// 2026-12-07T01:02:03.123Z plus `ms` milliseconds.
    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_605_323_123 + ms)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn lines_of(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// A line of `len` bytes (newline excluded) that says which it is.
    fn line(n: usize, len: usize) -> Vec<u8> {
        let head = format!("{{\"n\":{n},\"pad\":\"");
        let tail = "\"}";
        let pad = len - head.len() - tail.len();
        format!("{head}{}{tail}", "x".repeat(pad)).into_bytes()
    }

    #[test]
    fn backup_names_follow_lumberjack_in_utc() {
        assert_eq!(backup_stamp(at(0)), "2026-12-07T01-02-03.123");
        assert_eq!(backup_stamp(at(877)), "2026-12-07T01-02-04.000");
        let tmp = TempDir::new("names");
        let mut f = RotatingFile::new(
            &tmp.0,
            Signal::Traces,
            Rotation {
                max_bytes: 100,
                max_backups: 5,
            },
            FileStats::default(),
        );
        for (n, ms) in [(0, 0), (1, 5), (2, 5), (3, 5)] {
            f.write_line_at(&line(n, 80), at(ms)).unwrap();
        }
        // Three rotations, two of them in one millisecond: no backup overwrites another.
        assert_eq!(
            names(&tmp.0),
            [
                "traces-2026-12-07T01-02-03.128-1.jsonl",
                "traces-2026-12-07T01-02-03.128-2.jsonl",
                "traces-2026-12-07T01-02-03.128.jsonl",
                "traces.jsonl",
            ]
        );
        let first = |name: &str| lines_of(&tmp.0.join(name))[0].clone();
        assert!(first("traces-2026-12-07T01-02-03.128.jsonl").starts_with("{\"n\":0,"));
        assert!(first("traces-2026-12-07T01-02-03.128-1.jsonl").starts_with("{\"n\":1,"));
        assert!(first("traces-2026-12-07T01-02-03.128-2.jsonl").starts_with("{\"n\":2,"));
        assert!(first("traces.jsonl").starts_with("{\"n\":3,"));
    }

    /// Rotations within one millisecond while pruning deletes the oldest: a new backup never
    /// takes a deleted one's name, which would sort it before the older one still kept.
    #[test]
    fn a_pruned_name_is_not_reused_within_its_millisecond() {
        let tmp = TempDir::new("reuse");
        let mut f = RotatingFile::new(
            &tmp.0,
            Signal::Traces,
            Rotation {
                max_bytes: 100,
                max_backups: 1,
            },
            FileStats::default(),
        );
        for n in 0..5 {
            f.write_line_at(&line(n, 80), at(5)).unwrap();
        }
        assert_eq!(
            names(&tmp.0),
            ["traces-2026-12-07T01-02-03.128-3.jsonl", "traces.jsonl"]
        );
        let first = |name: &str| lines_of(&tmp.0.join(name))[0].clone();
        assert!(first("traces-2026-12-07T01-02-03.128-3.jsonl").starts_with("{\"n\":3,"));
    }

    #[test]
    fn parses_only_its_own_backup_names() {
        let t = Signal::Traces;
        assert_eq!(
            parse_backup_name("traces-2026-12-07T01-02-03.123.jsonl", t),
            Some(("2026-12-07T01-02-03.123".into(), 0))
        );
        assert_eq!(
            parse_backup_name("traces-2026-12-07T01-02-03.123-12.jsonl", t),
            Some(("2026-12-07T01-02-03.123".into(), 12))
        );
        for other in [
            "traces.jsonl",
            "metrics-2026-12-07T01-02-03.123.jsonl",
            "traces-2026-12-07T01-02-03.123.json",
            "traces-2026-12-07T01:02:03.123.jsonl",
            "traces-2026-12-07T01-02-03.123-.jsonl",
            "traces-2026-12-07T01-02-03.123-x.jsonl",
            "traces-2026-12-07T01-02-03.12.jsonl",
            "traces-copy.jsonl",
            "traces-2026-12-07T01-02-03.123.jsonl.gz",
        ] {
            assert_eq!(parse_backup_name(other, t), None, "{other}");
        }
    }

    /// Many lines through a small size: every file but one holds at most the size, no line
    /// is split or lost among the files kept, and only `max_backups` backups remain, the
    /// newest ones.
    #[test]
    fn keeps_the_size_the_count_and_whole_lines() {
        let tmp = TempDir::new("count");
        let stats = FileStats::default();
        let rotation = Rotation {
            max_bytes: 1000,
            max_backups: 3,
        };
        let mut f = RotatingFile::new(&tmp.0, Signal::Metrics, rotation, stats.clone());
        // 300-byte lines (301 with the newline): three fit in 1000 bytes, a fourth does not.
        for n in 0..40 {
            f.write_line_at(&line(n, 300), at(n as u64 * 10)).unwrap();
        }
        let files = names(&tmp.0);
        assert_eq!(files.len(), 4, "{files:?}");
        assert_eq!(files.last().map(String::as_str), Some("metrics.jsonl"));
        // 40 lines, 3 per file: 13 rotations, 10 backups deleted.
        assert_eq!(stats.rotated(Signal::Metrics), 13);
        assert_eq!(stats.removed(Signal::Metrics), 10);
        assert_eq!(stats.rotated(Signal::Traces), 0);
        let mut seen = Vec::new();
        for name in &files {
            let path = tmp.0.join(name);
            assert!(fs::metadata(&path).unwrap().len() <= 1000, "{name}");
            for l in lines_of(&path) {
                let v: serde_json::Value = serde_json::from_str(&l).expect("a whole line");
                seen.push(v["n"].as_u64().unwrap());
            }
        }
        // Backups sort by name in time order, the active file last: the newest lines, in order.
        assert_eq!(seen, (30..40).collect::<Vec<_>>());
    }

    #[test]
    fn a_line_larger_than_the_size_is_written_whole_to_a_fresh_file() {
        let tmp = TempDir::new("large");
        let rotation = Rotation {
            max_bytes: 1000,
            max_backups: 10,
        };
        let mut f = RotatingFile::new(&tmp.0, Signal::Traces, rotation, FileStats::default());
        f.write_line_at(&line(0, 100), at(0)).unwrap();
        f.write_line_at(&line(1, 5000), at(1)).unwrap();
        f.write_line_at(&line(2, 100), at(2)).unwrap();
        let files = names(&tmp.0);
        assert_eq!(files.len(), 3, "{files:?}");
        let sizes: Vec<Vec<usize>> = files
            .iter()
            .map(|n| lines_of(&tmp.0.join(n)).iter().map(String::len).collect())
            .collect();
        assert_eq!(sizes, [vec![100], vec![5000], vec![100]]);
    }

    #[test]
    fn zero_backups_deletes_each_rotated_file() {
        let tmp = TempDir::new("zero");
        let stats = FileStats::default();
        let rotation = Rotation {
            max_bytes: 1000,
            max_backups: 0,
        };
        let mut f = RotatingFile::new(&tmp.0, Signal::Logs, rotation, stats.clone());
        for n in 0..7 {
            f.write_line_at(&line(n, 400), at(n as u64)).unwrap();
        }
        assert_eq!(names(&tmp.0), ["logs.jsonl"]);
        assert_eq!(lines_of(&f.path()).len(), 1);
        assert_eq!(
            (stats.rotated(Signal::Logs), stats.removed(Signal::Logs)),
            (3, 3)
        );
    }

    #[test]
    fn rotation_off_never_rotates() {
        let tmp = TempDir::new("off");
        let stats = FileStats::default();
        let mut f = RotatingFile::new(&tmp.0, Signal::Traces, Rotation::OFF, stats.clone());
        for n in 0..50 {
            f.write_line_at(&line(n, 1000), at(n as u64)).unwrap();
        }
        assert_eq!(names(&tmp.0), ["traces.jsonl"]);
        assert_eq!(lines_of(&f.path()).len(), 50);
        assert_eq!(stats.rotated(Signal::Traces), 0);
    }

    /// A file left by an earlier run counts towards the size, and its backups towards the
    /// count; files that are not backups of this signal are never touched.
    #[test]
    fn an_earlier_runs_files_count_and_others_are_left_alone() {
        let tmp = TempDir::new("earlier");
        fs::create_dir_all(&tmp.0).unwrap();
        fs::write(
            tmp.0.join("traces.jsonl"),
            [line(100, 900), b"\n".to_vec()].concat(),
        )
        .unwrap();
        for old in [
            "traces-2020-01-01T00-00-00.000.jsonl",
            "traces-2020-01-02T00-00-00.000.jsonl",
        ] {
            fs::write(tmp.0.join(old), b"{}\n").unwrap();
        }
        let strangers = [
            "metrics-2020-01-01T00-00-00.000.jsonl",
            "traces-notes.jsonl",
            "traces.jsonl.bak",
        ];
        for s in strangers {
            fs::write(tmp.0.join(s), b"keep me").unwrap();
        }
        let stats = FileStats::default();
        let rotation = Rotation {
            max_bytes: 1000,
            max_backups: 2,
        };
        let mut f = RotatingFile::new(&tmp.0, Signal::Traces, rotation, stats.clone());
        f.write_line_at(&line(0, 200), at(0)).unwrap();
        assert_eq!(
            (stats.rotated(Signal::Traces), stats.removed(Signal::Traces)),
            (1, 1)
        );
        let files = names(&tmp.0);
        assert!(!files.contains(&"traces-2020-01-01T00-00-00.000.jsonl".to_string()));
        assert!(files.contains(&"traces-2020-01-02T00-00-00.000.jsonl".to_string()));
        assert!(files.contains(&"traces-2026-12-07T01-02-03.123.jsonl".to_string()));
        for s in strangers {
            assert_eq!(fs::read(tmp.0.join(s)).unwrap(), b"keep me", "{s}");
        }
        assert_eq!(lines_of(&f.path()).len(), 1);
    }

    #[test]
    fn a_removed_active_file_starts_afresh() {
        let tmp = TempDir::new("removed");
        let stats = FileStats::default();
        let rotation = Rotation {
            max_bytes: 1000,
            max_backups: 2,
        };
        let mut f = RotatingFile::new(&tmp.0, Signal::Traces, rotation, stats.clone());
        f.write_line_at(&line(0, 600), at(0)).unwrap();
        fs::remove_file(f.path()).unwrap();
        f.write_line_at(&line(1, 600), at(1)).unwrap();
        assert_eq!(names(&tmp.0), ["traces.jsonl"]);
        assert_eq!(stats.rotated(Signal::Traces), 0);
    }
}
