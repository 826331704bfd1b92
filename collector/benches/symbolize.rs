//! Criterion benchmark of user stack symbolization on real processes: a four-frame stack of a
//! child `sleep` (three addresses in libc, where its `clock_nanosleep`, `nanosleep` and `exit`
//! are, and one in the program) symbolized cold (a fresh symbolizer, the first stack of that
//! process: maps read, libc's ELF and DWARF parsed, every frame resolved) and warm (the same
//! stack again: every frame from the cache; the process's files, which are deleted and which
//! is its program, are read once per drain: with a new drain per stack, and within one). Then the memory the caches hold for 100
//! processes (100 `sleep`s mapping the same libc and program, one stack each): the bench
//! process's resident memory before and after, anonymous (heap: caches, parsed DWARF) and
//! file-backed (the ELF and DWARF files blazesym maps) apart, from `/proc/self/status`.

use std::process::{Child, Command};

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use kotel_collector::kernel::ustack::UserSymbolizer;

/// Processes of the memory measurement.
const PROCESSES: usize = 100;

/// A `sleep` that lives until killed, once it has exec'd (its maps show libc).
fn sleeper() -> Child {
    let child = Command::new("sleep").arg("600").spawn().expect("sleep");
    let maps = format!("/proc/{}/maps", child.id());
    while !std::fs::read_to_string(&maps)
        .unwrap_or_default()
        .contains("/libc.so")
    {
        std::thread::yield_now();
    }
    child
}

/// The start of the first executable mapping of `pid` whose path holds `name`, and the start
/// of that file's first mapping (the base file offsets count from).
fn text_of(pid: u32, name: &str) -> (u64, u64) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let start = |l: &str| u64::from_str_radix(l.split('-').next().unwrap_or(""), 16).ok();
    let mut lines = maps.lines().filter(|l| l.contains(name));
    let base = lines.clone().find_map(start).expect("a mapping");
    let text = lines
        .find(|l| l.contains("r-xp"))
        .and_then(start)
        .expect("an executable mapping");
    (text, base)
}

/// A stack of `pid` (innermost first): libc's `clock_nanosleep`, `nanosleep` and `exit` at
/// the offsets they have in this process's libc (the same file), then the program's text.
fn stack_of(pid: u32) -> Vec<u64> {
    let me = std::process::id();
    let (_, my_libc) = text_of(me, "/libc.so");
    let (_, libc) = text_of(pid, "/libc.so");
    let (program, _) = text_of(pid, "/sleep");
    let functions = [
        libc::clock_nanosleep as *const () as u64,
        libc::nanosleep as *const () as u64,
        libc::exit as *const () as u64,
    ];
    let mut ips: Vec<u64> = functions.iter().map(|f| f - my_libc + libc + 4).collect();
    ips.push(program + 0x100);
    ips
}

/// `field` of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The caches' memory for [`PROCESSES`] processes, measured first, on a heap nothing has
/// used and freed yet (memory freed before would be reused and hide the growth).
fn cache_memory() {
    let mut children: Vec<Child> = (0..PROCESSES).map(|_| sleeper()).collect();
    let stacks: Vec<(u32, Vec<u64>)> = children
        .iter()
        .map(|c| (c.id(), stack_of(c.id())))
        .collect();
    let (anon, file) = (status_kib("RssAnon:"), status_kib("RssFile:"));
    let mut s = UserSymbolizer::with_budget(std::time::Duration::ZERO);
    for (pid, ips) in &stacks {
        black_box(s.symbolize(*pid, ips));
    }
    let (anon_after, file_after) = (status_kib("RssAnon:"), status_kib("RssFile:"));
    let counts = s.take_counts();
    eprintln!(
        "caches for {PROCESSES} processes: +{} KiB anonymous, +{} KiB file-backed resident; \
         {} frames, {} files cached; {} stacks symbolized, {} from the cache",
        anon_after.saturating_sub(anon),
        file_after.saturating_sub(file),
        s.cached_frames(),
        s.cached_files(),
        counts.misses,
        counts.hits
    );
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn bench_symbolize(c: &mut Criterion) {
    cache_memory();
    let mut child = sleeper();
    let pid = child.id();
    let ips = stack_of(pid);
    let mut group = c.benchmark_group("user_stack");
    group.sample_size(20);
    group.bench_function("cold (fresh symbolizer, first stack of a process)", |b| {
        b.iter_batched(
            || UserSymbolizer::with_budget(std::time::Duration::ZERO),
            |mut s| {
                black_box(s.symbolize(pid, &ips));
                s
            },
            BatchSize::PerIteration,
        )
    });
    let mut warm = UserSymbolizer::with_budget(std::time::Duration::ZERO);
    let first = warm.symbolize(pid, &ips);
    let names: Vec<String> = first.frames.iter().map(|f| f.to_string()).collect();
    eprintln!("the stack: {names:?}");
    group.sample_size(100);
    group.bench_function(
        "warm (every frame from the cache), first stack of a drain",
        |b| {
            b.iter(|| {
                warm.new_drain();
                black_box(warm.symbolize(pid, &ips))
            })
        },
    );
    group.bench_function(
        "warm (every frame from the cache), later stacks of a drain",
        |b| b.iter(|| black_box(warm.symbolize(pid, &ips))),
    );
    group.finish();
    assert_eq!(warm.take_counts().misses, 1, "one miss, then hits");
    drop(warm);
    child.kill().expect("kill");
    child.wait().expect("wait");
}

criterion_group!(benches, bench_symbolize);
criterion_main!(benches);
