//! User stack symbolization with blazesym: instruction pointers of a process to
//! `function (file:line)` where the binary names them, `module+0xoff [buildid …]` where it does
//! not, and `0x… [unknown]` when not even the mapping is known (the process is gone, its maps
//! unreadable).
//!
//! Files are opened through `/proc/<pid>/root/<path>`, so binaries in other mount namespaces
//! (containers) resolve with `CAP_SYS_PTRACE`, which kotel keeps after attaching. The program
//! a process runs, once deleted or replaced since it started, is opened through
//! `/proc/<pid>/exe` (the same access). A deleted shared library is left to blazesym's
//! `/proc/<pid>/map_files/`, which the kernel opens only with `CAP_SYS_ADMIN` (or
//! `CAP_CHECKPOINT_RESTORE`); without it those frames keep `module+0xoff` and are counted
//! (`files`). JIT frames come from the perf map inside the process's root, named by its pid
//! in its own namespace (`perf_map`). Resolved frames are cached by file identity (device and
//! inode of the file as the process sees it) and file offset, bounded by
//! [`MAX_CACHED_FRAMES`]. Each drain may symbolize at most
//! [`STACKS_PER_DRAIN`] stacks that miss the cache, for at most [`TIME_PER_DRAIN`]; the rest
//! keep `module+0xoff` and are counted as deferred, so symbolization never holds the pipeline
//! up for long. Parsed files (ELF, DWARF) are shared by every process that maps them, keyed
//! by device and inode, at most `MAX_FILES`.

mod files;
mod perf_map;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blazesym::helper::ElfResolver;
use blazesym::normalize::{Normalizer, UserMeta};
use blazesym::symbolize::{
    self, FindSymOpts, Input, ProcessMemberInfo, ProcessMemberType, Reason, Resolve, ResolvedSym,
    Sym, Symbolize, Symbolized, Symbolizer, TranslateFileOffset,
};
use blazesym::Pid;

use super::frame::{Frame, FrameKind, Module};
use files::{FileId, ProcessFiles, Reach};
use perf_map::{JitFunction, PerfMaps};

/// Stacks with at least one frame missing from the cache that one drain may symbolize.
pub const STACKS_PER_DRAIN: usize = 64;
/// Resolved frames the cache holds before it starts over.
pub const MAX_CACHED_FRAMES: usize = 65_536;
/// Time one drain may spend symbolizing stacks that miss the cache by default
/// (`capture.symbolize_budget`); past it, stacks are deferred. A stack already begun is
/// finished: the first stack of a program with large DWARF (libc's) takes about 100 ms.
pub const TIME_PER_DRAIN: Duration = Duration::from_millis(50);
/// Parsed files (ELF and DWARF) kept for reuse across processes.
const MAX_FILES: usize = 256;
/// Processes blazesym's own per-process state may cover before the symbolizer is rebuilt.
const MAX_PROCESSES: usize = 256;

/// The innermost frame of the process's own program (its executable) that resolved to a
/// function, else the innermost frame that resolved to a function: for `code.*` attributes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CodeLocation {
    /// The function's name, demangled.
    pub function: String,
    /// The source file, where DWARF names it.
    pub file: Option<String>,
    /// The source line, where DWARF names it.
    pub line: Option<u32>,
}

/// A symbolized user stack.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UserStack {
    /// Frames, innermost first.
    pub frames: Vec<Frame>,
    /// The innermost frame that resolved to a function ([`CodeLocation`] says which).
    pub innermost: Option<CodeLocation>,
}

/// What symbolization did, counted per stack.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UstackCounts {
    /// Stacks whose every mapped frame came from the cache.
    pub hits: u64,
    /// Stacks symbolized with blazesym (at least one frame missed the cache).
    pub misses: u64,
    /// Stacks that could not be symbolized (process gone, maps or files unreadable).
    pub failures: u64,
    /// Stacks past the drain's budget, left as `module+0xoff`.
    pub deferred: u64,
    /// Frames left as `module+0xoff` because their file (a shared library) was deleted or
    /// replaced since the process mapped it, and only `/proc/<pid>/map_files/` (which needs
    /// `CAP_SYS_ADMIN`) reaches it; counted when a stack is symbolized.
    pub deleted_frames: u64,
}

/// One frame's place in a file: the file's identity and the offset in it.
type FrameKey = (String, u64);

/// A resolved frame from the cache: the frames it stands for (more than one when functions
/// were inlined), innermost first, named but not yet placed in a module, and the innermost
/// location.
#[derive(Debug, Clone)]
struct Resolved {
    frames: Vec<Frame>,
    location: Option<CodeLocation>,
}

/// The user stack symbolizer, with its caches and counters.
pub struct UserSymbolizer {
    symbolizer: Symbolizer,
    files: Files,
    normalizer: Normalizer,
    /// Resolved frames by file identity and offset; `None` for offsets no symbol covers.
    frames: HashMap<FrameKey, Option<Resolved>>,
    /// Build-ids by file identity; `None` for files without one.
    build_ids: HashMap<String, Option<String>>,
    /// Processes the symbolizer holds state for since it was built.
    processes: HashSet<u32>,
    /// Stacks that missed the cache this drain.
    spent: usize,
    /// Time spent on them.
    spent_time: Duration,
    /// Time per drain; zero: no limit, in time or in stacks.
    budget: Duration,
    counts: UstackCounts,
    /// The files of the process being symbolized, shared with the dispatcher.
    process: Rc<RefCell<Rc<ProcessFiles>>>,
    /// The files of each process symbolized this drain: read once per process and drain.
    files_this_drain: HashMap<u32, Rc<ProcessFiles>>,
    /// JIT perf maps, read in each process's own root.
    perf_maps: PerfMaps,
}

impl Default for UserSymbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl UserSymbolizer {
    /// A symbolizer with empty caches and the default budget per drain.
    pub fn new() -> Self {
        Self::with_budget(TIME_PER_DRAIN)
    }

    /// A symbolizer with empty caches that spends at most `budget` per drain on stacks that
    /// miss the cache (and at most [`STACKS_PER_DRAIN`] of them); zero: no limit.
    pub fn with_budget(budget: Duration) -> Self {
        let files = Files::default();
        let process = Rc::default();
        UserSymbolizer {
            symbolizer: new_symbolizer(&files, &process),
            files,
            normalizer: Normalizer::builder().enable_build_ids(false).build(),
            frames: HashMap::new(),
            build_ids: HashMap::new(),
            processes: HashSet::new(),
            spent: 0,
            spent_time: Duration::ZERO,
            budget,
            counts: UstackCounts::default(),
            process,
            files_this_drain: HashMap::new(),
            perf_maps: PerfMaps::default(),
        }
    }

    /// A new drain starts: the budget is full again.
    pub fn new_drain(&mut self) {
        self.files_this_drain.clear();
        self.spent = 0;
        self.spent_time = Duration::ZERO;
    }

    /// `pid` called execve or exited: what the symbolizer holds for it goes. blazesym keeps
    /// per-process state (its members by mapping) it cannot drop one process at a time, so
    /// the symbolizer starts over; that is cheap, since the parsed files, the frame cache and
    /// the build-ids, all keyed by file identity, stay.
    pub fn forget(&mut self, pid: u32) {
        self.perf_maps.forget(pid);
        self.files_this_drain.remove(&pid);
        if self.processes.remove(&pid) {
            self.symbolizer = new_symbolizer(&self.files, &self.process);
            self.processes.clear();
        }
    }

    /// The identity of the file `path` names in process `pid` (device and inode of the file
    /// it maps, reached through its root or, for its program once deleted, `/proc/<pid>/exe`),
    /// its build-id in hex where it has one, and whether it is a deleted file kotel cannot
    /// open. A file that cannot be reached is named by the process and path.
    fn module(&mut self, pid: u32, path: &Path) -> (String, Option<String>, bool) {
        let reach = self.process.borrow().reach(path);
        let (real, (dev, ino)) = match reach {
            Reach::Open { path, id } => (path, id),
            other => {
                let deleted = other == Reach::Deleted;
                return (format!("{pid}:{}", path.display()), None, deleted);
            }
        };
        let id = format!("{dev}:{ino}");
        if self.build_ids.len() >= MAX_CACHED_FRAMES {
            self.build_ids.clear();
        }
        let build_id = self
            .build_ids
            .entry(id.clone())
            .or_insert_with(|| {
                blazesym::helper::read_elf_build_id(&real)
                    .ok()
                    .flatten()
                    .map(|b| hex(&b))
            })
            .clone();
        (id, build_id, false)
    }

    /// The counts since the last call.
    pub fn take_counts(&mut self) -> UstackCounts {
        std::mem::take(&mut self.counts)
    }

    /// Resolved frames in the cache.
    pub fn cached_frames(&self) -> usize {
        self.frames.len()
    }

    /// Files parsed (ELF, DWARF) and kept for reuse.
    pub fn cached_files(&self) -> usize {
        self.files.borrow().len()
    }

    /// Bytes the perf maps kept take, roughly (names and entries).
    pub fn perf_map_bytes(&self) -> usize {
        self.perf_maps.bytes()
    }

    /// Symbolizes `ips` (innermost first) of process `pid`.
    pub fn symbolize(&mut self, pid: u32, ips: &[u64]) -> UserStack {
        let modules: Vec<Option<(u64, PathBuf)>> =
            match self.normalizer.normalize_user_addrs(Pid::from(pid), ips) {
                Ok(out) => out
                    .outputs
                    .iter()
                    .map(|(off, meta)| match out.meta.get(*meta) {
                        Some(UserMeta::Elf(elf)) => Some((*off, elf.path.clone())),
                        _ => None,
                    })
                    .collect(),
                Err(e) => {
                    tracing::debug!(pid, error = %e, "kotel.ustack.maps_unreadable");
                    self.counts.failures += 1;
                    return UserStack {
                        frames: ips.iter().map(|ip| Frame::unnamed(None, *ip)).collect(),
                        innermost: None,
                    };
                }
            };
        // The program the process runs, and which of its files are deleted, as of this drain.
        let files = self
            .files_this_drain
            .entry(pid)
            .or_insert_with(|| Rc::new(ProcessFiles::read(pid)));
        *self.process.borrow_mut() = Rc::clone(files);
        let places: Vec<Option<Place>> = modules
            .into_iter()
            .map(|m| {
                let (off, path) = m?;
                let (id, build_id, deleted) = self.module(pid, &path);
                Some(Place {
                    key: (id, off),
                    module: Arc::new(Module {
                        path: path.display().to_string(),
                        build_id,
                    }),
                    main: self.process.borrow().is_program(&path),
                    deleted,
                })
            })
            .collect();
        // A frame outside any file (JIT code a perf map may name) is never cached: a stack
        // with one is symbolized again.
        let all_cached = places
            .iter()
            .all(|p| p.as_ref().is_some_and(|p| self.frames.contains_key(&p.key)));
        if all_cached {
            self.counts.hits += 1;
            return self.assemble(ips, &places, true, &[]);
        }
        let limited = !self.budget.is_zero();
        if limited && (self.spent >= STACKS_PER_DRAIN || self.spent_time >= self.budget) {
            self.counts.deferred += 1;
            return self.assemble(ips, &places, false, &[]);
        }
        self.spent += 1;
        let started = Instant::now();
        if self.frames.len() >= MAX_CACHED_FRAMES {
            self.frames.clear();
        }
        if self.processes.len() >= MAX_PROCESSES && !self.processes.contains(&pid) {
            self.symbolizer = new_symbolizer(&self.files, &self.process);
            self.processes.clear();
        }
        self.processes.insert(pid);
        // Perf maps are read in the process's own root ([`perf_map`]), not blazesym's.
        let mut process = symbolize::source::Process::new(Pid::from(pid));
        process.perf_map = false;
        let src = symbolize::source::Source::Process(process);
        // One file blazesym cannot read fails the whole call: then address by address, so
        // that the others still resolve.
        let syms: Vec<Option<Resolved>> = match self.symbolizer.symbolize(&src, Input::AbsAddr(ips))
        {
            Ok(syms) => {
                self.counts.misses += 1;
                syms.iter().map(resolved).collect()
            }
            Err(e) => {
                tracing::debug!(pid, error = %e, "kotel.ustack.symbolize_failed");
                let mut any = false;
                let one_by_one = ips
                    .iter()
                    .map(|ip| {
                        let r = self.symbolizer.symbolize_single(&src, Input::AbsAddr(*ip));
                        any |= r.is_ok();
                        r.ok().as_ref().and_then(resolved)
                    })
                    .collect();
                if any {
                    self.counts.misses += 1;
                } else {
                    self.counts.failures += 1;
                }
                one_by_one
            }
        };
        let syms = self.fill_unnamed(pid, ips, &places, syms);
        self.spent_time += started.elapsed();
        for (place, sym) in places.iter().zip(&syms) {
            if let Some(p) = place {
                self.frames.insert(p.key.clone(), sym.clone());
            }
        }
        self.assemble(ips, &places, true, &syms)
    }

    /// The stack's frames from the cache where `use_cache`, else from their modules; frames
    /// outside any file are named from `fresh` (this call's results: JIT code the perf map
    /// names, never cached) where it has them.
    fn assemble(
        &self,
        ips: &[u64],
        places: &[Option<Place>],
        use_cache: bool,
        fresh: &[Option<Resolved>],
    ) -> UserStack {
        let mut out = UserStack::default();
        // Whether `out.innermost` is a frame of the process's own program.
        let mut in_main = false;
        for (i, (ip, place)) in ips.iter().zip(places).enumerate() {
            let found = match place {
                None => fresh.get(i).cloned().flatten(),
                Some(p) => self
                    .frames
                    .get(&p.key)
                    .filter(|_| use_cache)
                    .cloned()
                    .flatten(),
            };
            match found {
                Some(r) => {
                    let main = place.as_ref().is_some_and(|p| p.main);
                    if let Some(loc) = r.location {
                        // The innermost frame of the program itself wins over the libraries
                        // it called (libc's system-call wrappers sit above it).
                        if out.innermost.is_none() || (main && !in_main) {
                            out.innermost = Some(loc);
                            in_main = main;
                        }
                    }
                    out.frames.extend(r.frames.into_iter().map(|mut f| {
                        if let Some(p) = place {
                            f.module = Some(Arc::clone(&p.module));
                            f.address = p.key.1;
                        } else {
                            f.address = *ip;
                        }
                        f
                    }));
                }
                None => out.frames.push(match place {
                    Some(p) => Frame::unnamed(Some(Arc::clone(&p.module)), p.key.1),
                    None => Frame::unnamed(None, *ip),
                }),
            }
        }
        out
    }
}

impl UserSymbolizer {
    /// `syms` (blazesym's frames for `ips`) with the frames outside any file that it left
    /// unnamed named from the process's perf map; frames of deleted files it left unnamed
    /// are counted.
    fn fill_unnamed(
        &mut self,
        pid: u32,
        ips: &[u64],
        places: &[Option<Place>],
        mut syms: Vec<Option<Resolved>>,
    ) -> Vec<Option<Resolved>> {
        for ((ip, place), sym) in ips.iter().zip(places).zip(syms.iter_mut()) {
            match place {
                None if sym.is_none() => {
                    *sym = self
                        .perf_maps
                        .find(pid, *ip)
                        .and_then(|f| jit_frame(*ip, &f));
                }
                Some(p) if p.deleted && sym.is_none() => self.counts.deleted_frames += 1,
                _ => {}
            }
        }
        syms
    }
}

/// Where one frame's address lies.
struct Place {
    /// The file's identity and the offset in it.
    key: FrameKey,
    /// The file, as frames that nothing names show it (`module+0xoff [buildid …]`).
    module: Arc<Module>,
    /// Whether the file is the program the process runs.
    main: bool,
    /// Whether the file is deleted and kotel cannot open it.
    deleted: bool,
}

/// The frame a perf map's function stands for at `ip`, as blazesym would have named it.
fn jit_frame(ip: u64, f: &JitFunction) -> Option<Resolved> {
    let sym = Symbolized::Sym(Sym {
        name: Cow::Borrowed(&f.name),
        module: None,
        addr: f.start,
        offset: usize::try_from(ip - f.start).unwrap_or(usize::MAX),
        size: usize::try_from(f.size).ok(),
        code_info: None,
        inlined: Box::new([]),
        _non_exhaustive: (),
    });
    resolved(&sym)
}

/// One file's resolver, shared by every process that maps the file.
#[derive(Debug, Clone)]
struct Shared(Rc<ElfResolver>);

impl Symbolize for Shared {
    fn find_sym(
        &self,
        addr: blazesym::Addr,
        opts: &FindSymOpts,
    ) -> blazesym::Result<Result<ResolvedSym<'_>, Reason>> {
        self.0.find_sym(addr, opts)
    }
}

impl TranslateFileOffset for Shared {
    fn file_offset_to_virt_offset(&self, offset: u64) -> blazesym::Result<Option<blazesym::Addr>> {
        self.0.file_offset_to_virt_offset(offset)
    }
}

/// Parsed files by identity (device, inode): a library many processes map (libc) is read and
/// its DWARF parsed once, not once per process.
type Files = Rc<RefCell<HashMap<FileId, Rc<ElfResolver>>>>;

/// Opens the files of a process through `/proc/<pid>/root`, or its program through
/// `/proc/<pid>/exe` once deleted (both need `CAP_SYS_PTRACE`, not the `CAP_SYS_ADMIN` that
/// `map_files` needs), once per file identity; `None` hands the member to blazesym's own
/// handling (`map_files` for a deleted library, the vDSO).
fn dispatch(
    files: &Files,
    process: &RefCell<Rc<ProcessFiles>>,
    info: ProcessMemberInfo<'_>,
) -> blazesym::Result<Option<Box<dyn Resolve>>> {
    let ProcessMemberType::Path(entry) = info.member_entry else {
        return Ok(None);
    };
    // `/proc/<pid>/map_files/<range>`: the process's pid.
    let Some(pid) = entry
        .maps_file
        .strip_prefix("/proc")
        .ok()
        .and_then(|p| p.components().next())
        .and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok())
    else {
        return Ok(None);
    };
    if process.borrow().pid() != pid {
        *process.borrow_mut() = Rc::new(ProcessFiles::read(pid));
    }
    let Reach::Open { path, id } = process.borrow().reach(&entry.symbolic_path) else {
        return Ok(None);
    };
    if let Some(r) = files.borrow().get(&id) {
        return Ok(Some(Box::new(Shared(Rc::clone(r)))));
    }
    match ElfResolver::open(&path) {
        Ok(resolver) => {
            let resolver = Rc::new(resolver);
            let mut files = files.borrow_mut();
            if files.len() >= MAX_FILES {
                files.clear();
            }
            files.insert(id, Rc::clone(&resolver));
            Ok(Some(Box::new(Shared(resolver))))
        }
        Err(_) => Ok(None),
    }
}

/// A symbolizer whose per-process state is new (the parsed files in `files` are kept);
/// `process` is the process being symbolized.
fn new_symbolizer(files: &Files, process: &Rc<RefCell<Rc<ProcessFiles>>>) -> Symbolizer {
    let files = Rc::clone(files);
    let process = Rc::clone(process);
    Symbolizer::builder()
        .set_process_dispatcher(move |info: ProcessMemberInfo<'_>| dispatch(&files, &process, info))
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .build()
}

/// The frames one symbolized address stands for, innermost first: the functions inlined at
/// it, then the function that holds the code.
fn resolved(sym: &Symbolized) -> Option<Resolved> {
    let Symbolized::Sym(sym) = sym else {
        return None;
    };
    let mut frames: Vec<Frame> = sym
        .inlined
        .iter()
        .rev()
        .map(|f| named(&f.name, f.code_info.as_ref(), true))
        .collect();
    frames.push(named(&sym.name, sym.code_info.as_deref(), false));
    let (function, info) = match sym.inlined.last() {
        Some(f) => (f.name.to_string(), f.code_info.as_ref()),
        None => (sym.name.to_string(), sym.code_info.as_deref()),
    };
    Some(Resolved {
        frames,
        location: Some(CodeLocation {
            function,
            file: info.map(|c| path_of(c).display().to_string()),
            line: info.and_then(|c| c.line),
        }),
    })
}

/// The frame of function `name`, with its source file and line where DWARF has them; placed
/// in its module by [`UserSymbolizer::assemble`].
fn named(name: &str, info: Option<&symbolize::CodeInfo>, inlined: bool) -> Frame {
    Frame {
        kind: FrameKind::User,
        function: Some(name.to_string()),
        file: info.map(|c| path_of(c).display().to_string()),
        line: info.and_then(|c| c.line),
        symbol_offset: None,
        module: None,
        address: 0,
        inlined,
    }
}

fn path_of(c: &symbolize::CodeInfo) -> std::path::PathBuf {
    match &c.dir {
        Some(dir) => dir.join(&c.file),
        None => Path::new(&c.file).to_path_buf(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn kotel_unit_marker() -> u64 {
        std::hint::black_box(42)
    }

    #[test]
    fn an_address_of_this_process_names_its_function() {
        kotel_unit_marker();
        let ip = kotel_unit_marker as *const () as usize as u64;
        let mut s = UserSymbolizer::new();
        let stack = s.symbolize(std::process::id(), &[ip]);
        assert!(
            stack.frames[0].to_string().contains("kotel_unit_marker"),
            "{:?}",
            stack.frames
        );
        assert_eq!(
            s.take_counts(),
            UstackCounts {
                misses: 1,
                ..Default::default()
            }
        );
        let again = s.symbolize(std::process::id(), &[ip]);
        assert_eq!(again, stack);
        assert_eq!(s.take_counts().hits, 1);
        // An exec drops the process's state; what is keyed by file stays.
        s.forget(std::process::id());
        assert!(s.processes.is_empty());
        assert_eq!(s.symbolize(std::process::id(), &[ip]), stack);
        assert_eq!(s.take_counts().hits, 1);
    }

    #[test]
    fn code_location_prefers_the_program_over_its_libraries() {
        let marker = kotel_unit_marker as *const () as usize as u64;
        let libc_fn = libc::nanosleep as *const () as usize as u64;
        let mut s = UserSymbolizer::new();
        let stack = s.symbolize(std::process::id(), &[libc_fn + 1, marker + 1]);
        assert!(
            stack.frames[0].to_string().contains("nanosleep"),
            "{:?}",
            stack.frames
        );
        let libc = stack.frames[0]
            .module
            .as_ref()
            .expect("libc's frame has its module");
        assert!(libc.path.contains("libc.so"), "{libc:?}");
        assert!(libc.build_id.is_some(), "Debian's libc has a build-id");
        let code = stack.innermost.expect("a resolved frame");
        assert!(code.function.contains("kotel_unit_marker"), "{code:?}");
        assert!(
            code.file
                .as_deref()
                .is_some_and(|f| f.ends_with("ustack.rs")),
            "{code:?}"
        );
    }

    /// The start of the executable mapping of libc in process `pid`.
    fn libc_text(pid: u32) -> u64 {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let line = maps
            .lines()
            .find(|l| l.contains("r-xp") && l.contains("/libc.so"))
            .unwrap_or_else(|| panic!("libc in {maps}"));
        u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap()
    }

    #[test]
    fn a_library_is_parsed_once_for_every_process_that_maps_it() {
        let mut s = UserSymbolizer::new();
        let mut sleepers: Vec<std::process::Child> = (0..2)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("30")
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut files = Vec::new();
        for child in &sleepers {
            // `sleep` has exec'd once its maps show libc.
            let pid = child.id();
            while !std::fs::read_to_string(format!("/proc/{pid}/maps"))
                .unwrap_or_default()
                .contains("/libc.so")
            {
                std::thread::yield_now();
            }
            let ip = libc_text(pid) + 0x100;
            let _ = s.symbolize(pid, &[ip]);
            files.push(s.files.borrow().len());
        }
        for mut child in sleepers.drain(..) {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert!(files[0] >= 1, "libc parsed: {files:?}");
        assert_eq!(files[0], files[1], "and not again: {files:?}");
    }

    #[test]
    fn past_the_budget_frames_keep_their_module() {
        let ip = kotel_unit_marker as *const () as usize as u64;
        let mut s = UserSymbolizer::new();
        s.spent = STACKS_PER_DRAIN;
        let stack = s.symbolize(std::process::id(), &[ip]);
        let text = stack.frames[0].to_string();
        assert!(text.contains("+0x"), "{text}");
        assert!(!text.contains("kotel_unit_marker"));
        assert_eq!(s.take_counts().deferred, 1);
        s.new_drain();
        assert!(s.symbolize(std::process::id(), &[ip]).frames[0]
            .to_string()
            .contains("kotel_unit_marker"));
    }

    #[test]
    fn a_process_that_is_gone_is_a_counted_failure() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut s = UserSymbolizer::new();
        let stack = s.symbolize(pid, &[0x1000]);
        assert_eq!(
            super::super::frame::texts(&stack.frames),
            vec!["0x1000 [unknown]"]
        );
        assert_eq!(s.take_counts().failures, 1);
    }
}
