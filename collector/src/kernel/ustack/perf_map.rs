//! JIT perf maps (`/tmp/perf-<pid>.map`, one `START SIZE name` line per compiled function, in
//! hex, appended as the runtime compiles: V8 with `--perf-basic-prof`, JVMs with a perf-map
//! agent) read where the process wrote them: inside its own root, named by its pid in its own
//! pid namespace (`/proc/<pid>/root/tmp/perf-<nspid>.map`, nspid the last field of `NSpid:` in
//! `/proc/<pid>/status`). blazesym 0.2.3 reads only `/tmp/perf-<pid>.map` in kotel's own mount
//! namespace by the host pid, with no way to name another file, so a containerized process (or
//! any process, when kotel itself runs in a container) would go unnamed. The file is read
//! incrementally (only what was appended since the last read), and at most [`MAX_MAPS`]
//! processes' maps of at most [`MAX_MAP_BYTES`] each are kept.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::files::{in_root, FileId};

/// Processes whose perf maps are kept.
const MAX_MAPS: usize = 64;
/// Bytes of one perf map kotel reads; past them, the rest of the map is ignored.
const MAX_MAP_BYTES: u64 = 64 << 20;

/// A function a perf map names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct JitFunction {
    /// Its name as the runtime wrote it.
    pub name: String,
    /// Its first address.
    pub start: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// One process's perf map as read so far.
#[derive(Debug, Default)]
struct Loaded {
    /// The file's identity: another file (the process exec'd, the map was rewritten) is read
    /// again from the start.
    id: FileId,
    /// Bytes consumed (whole lines).
    read: u64,
    /// Functions by start address, each `(size, name)`; a later line replaces what it covers.
    functions: BTreeMap<u64, (u64, String)>,
}

/// Perf maps by host pid.
#[derive(Debug, Default)]
pub(super) struct PerfMaps {
    maps: HashMap<u32, Loaded>,
}

impl PerfMaps {
    /// The function of process `pid`'s perf map that holds `addr`, reading what the runtime
    /// appended since the last call. `None` when the process has no readable perf map or
    /// the map names nothing there.
    pub(super) fn find(&mut self, pid: u32, addr: u64) -> Option<JitFunction> {
        let path = map_path(pid)?;
        let mut file = std::fs::File::open(&path).ok()?;
        let meta = file.metadata().ok()?;
        let id = (meta.dev(), meta.ino());
        if !self.maps.contains_key(&pid) && self.maps.len() >= MAX_MAPS {
            self.maps.clear();
        }
        let loaded = self.maps.entry(pid).or_default();
        if loaded.id != id || meta.len() < loaded.read {
            *loaded = Loaded {
                id,
                ..Loaded::default()
            };
        }
        let end = meta.len().min(MAX_MAP_BYTES);
        if end > loaded.read && file.seek(SeekFrom::Start(loaded.read)).is_ok() {
            let mut appended = Vec::new();
            if file
                .take(end - loaded.read)
                .read_to_end(&mut appended)
                .is_ok()
            {
                loaded.read += add_lines(&mut loaded.functions, &appended);
            }
        }
        let (&start, (size, name)) = loaded.functions.range(..=addr).next_back()?;
        let covers = addr < start.saturating_add(*size) || (*size == 0 && addr == start);
        covers.then(|| JitFunction {
            name: name.clone(),
            start,
            size: *size,
        })
    }

    /// `pid` exec'd or exited: its map goes.
    pub(super) fn forget(&mut self, pid: u32) {
        self.maps.remove(&pid);
    }

    /// Bytes the names and entries of every kept map take, roughly.
    pub(super) fn bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u64, (u64, String))>();
        self.maps
            .values()
            .flat_map(|m| m.functions.values())
            .map(|(_, name)| entry + name.capacity())
            .sum()
    }
}

/// `/proc/<pid>/root/tmp/perf-<nspid>.map`.
fn map_path(pid: u32) -> Option<PathBuf> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let nspid = nspid(&status).unwrap_or(pid);
    Some(in_root(pid, format!("/tmp/perf-{nspid}.map").as_ref()))
}

/// The pid in the process's own (innermost) pid namespace: the last field of `NSpid:`.
fn nspid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .next_back()?
        .parse()
        .ok()
}

/// Adds the whole lines of `text` (`START SIZE name`, hex, `0x` optional) to `functions`, a
/// later line replacing the entries it covers (the runtime reused the memory); lines that do
/// not parse are skipped. Returns the bytes consumed: up to the last newline, since the
/// runtime may be writing the line after it.
fn add_lines(functions: &mut BTreeMap<u64, (u64, String)>, text: &[u8]) -> u64 {
    let Some(last) = text.iter().rposition(|b| *b == b'\n') else {
        return 0;
    };
    for line in text[..last].split(|b| *b == b'\n') {
        let Some((start, size, name)) = parse_line(&String::from_utf8_lossy(line)) else {
            continue;
        };
        let covered: Vec<u64> = functions
            .range(start..start.saturating_add(size.max(1)))
            .map(|(s, _)| *s)
            .collect();
        for s in covered {
            functions.remove(&s);
        }
        functions.insert(start, (size, name));
    }
    last as u64 + 1
}

/// One perf map line: start, size, name.
fn parse_line(line: &str) -> Option<(u64, u64, String)> {
    let mut fields = line.splitn(3, ' ');
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let start = hex(fields.next()?)?;
    let size = hex(fields.next()?)?;
    let name = fields.next()?.trim_end();
    (!name.is_empty()).then(|| (start, size, name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nspid_is_the_innermost_pid() {
        assert_eq!(nspid("Name:\tnode\nNSpid:\t4242\t7\n"), Some(7));
        assert_eq!(nspid("NSpid:\t4242\n"), Some(4242));
        assert_eq!(nspid("Name:\tx\n"), None);
    }

    #[test]
    fn later_lines_replace_what_they_cover_and_a_partial_line_waits() {
        let mut f = BTreeMap::new();
        let text = b"1000 100 LazyCompile:~a x.js:1\n0x1040 20 stale\nzz 1 junk\n2000 10 *b";
        let partial = b"2000 10 *b".len();
        assert_eq!(add_lines(&mut f, text), (text.len() - partial) as u64);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(add_lines(&mut f, b"1000 80 *a x.js:1\n"), 18);
        assert_eq!(f.len(), 1, "the new line replaced both it covers: {f:?}");
        assert_eq!(f[&0x1000], (0x80, "*a x.js:1".to_string()));
    }

    #[test]
    fn this_process_map_is_found_by_its_own_pid() {
        let pid = std::process::id();
        let path = format!("/tmp/perf-{pid}.map");
        std::fs::write(&path, "7f0000001000 40 kotel_jit_marker\n").unwrap();
        let mut maps = PerfMaps::default();
        let found = maps.find(pid, 0x7f00_0000_1010);
        let beyond = maps.find(pid, 0x7f00_0000_1040);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            found,
            Some(JitFunction {
                name: "kotel_jit_marker".to_string(),
                start: 0x7f00_0000_1000,
                size: 0x40
            })
        );
        assert_eq!(beyond, None);
        assert!(maps.bytes() > 0);
    }
}
