//! Benchmark workload: a tight loop of 1-byte writev calls to /dev/null on one or more pinned
//! threads, optionally paced, optionally with the empty "floor" BPF programs attached
//! in-process (`--floor`, in builds with the `bench` feature). Prints one JSON line: calls
//! made, elapsed time and nanoseconds per call.
//!
//! `kotel-writev-loop [--calls N] [--threads T] [--rate PER_THREAD_PER_S]
//!                    [--floor none|raw|syscalls|timed] [--cpu C]
//!                    [--until-eof 1 [--slow-every K]]`
//!
//! With `--until-eof 1` the call count is open-ended: after its warm-up it prints
//! `{"pid":N}`, waits for a line on stdin, then every thread calls writev (unpaced, or paced
//! to `--rate`) until stdin reaches end of file, and the JSON line counts exactly the calls
//! made after that first line (the warm-up is not in it). `--slow-every K` makes every K-th
//! call of a thread a 256 KiB write to a memfd, slow enough to cross a span threshold of a few
//! microseconds, so the span rate is chosen rather than left to chance.

use std::io::{BufRead, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floor::FloorHooks;

/// `--floor`: the empty "floor" BPF programs, which only builds with the `bench` feature
/// (`cargo build --release -p kotel-e2e --features bench`) hold. The end-to-end tests run this
/// workload without them.
#[cfg(feature = "bench")]
mod floor {
    pub use kotel_bpf::floor::{Floor, FloorHooks};

    /// The hooks `--floor <name>` names; `None` for `none`.
    pub fn parse(name: &str) -> Result<Option<FloorHooks>, String> {
        match name {
            "none" => Ok(None),
            "raw" => Ok(Some(FloorHooks::RawSyscalls)),
            "syscalls" => Ok(Some(FloorHooks::WritevSyscall)),
            "timed" => Ok(Some(FloorHooks::Timed)),
            other => Err(format!(
                "--floor: unknown '{other}' (none, raw, syscalls, timed)"
            )),
        }
    }

    /// Attaches the floor programs on `hooks` until the returned value is dropped; exits the
    /// process when that fails.
    pub fn attach(hooks: FloorHooks) -> Floor {
        Floor::attach(hooks).unwrap_or_else(|e| {
            eprintln!("kotel-writev-loop: {e}");
            std::process::exit(1);
        })
    }
}

/// `--floor` in a build without the `bench` feature: only `none`.
#[cfg(not(feature = "bench"))]
mod floor {
    /// No floor programs in this build, so no hooks to name.
    #[derive(Debug, Clone, Copy)]
    pub enum FloorHooks {}

    /// `None` for `none`; any other name is an error that says how to build with the floor.
    pub fn parse(name: &str) -> Result<Option<FloorHooks>, String> {
        match name {
            "none" => Ok(None),
            other => Err(format!(
                "--floor {other}: this build has no floor programs; build it with \
                 `cargo build --release -p kotel-e2e --features bench`"
            )),
        }
    }

    /// Nothing to attach: there are no hooks.
    pub fn attach(hooks: FloorHooks) {
        match hooks {}
    }
}

struct Args {
    calls: u64,
    threads: usize,
    rate: u64,
    floor: Option<FloorHooks>,
    cpu: Option<usize>,
    until_eof: bool,
    slow_every: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        calls: 2_000_000,
        threads: 1,
        rate: 0,
        floor: None,
        cpu: None,
        until_eof: false,
        slow_every: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--calls" => a.calls = num(&value)?,
            "--threads" => a.threads = num(&value)? as usize,
            "--rate" => a.rate = num(&value)?,
            "--cpu" => a.cpu = Some(num(&value)? as usize),
            "--until-eof" => a.until_eof = num(&value)? != 0,
            "--slow-every" => a.slow_every = num(&value)?,
            "--floor" => a.floor = floor::parse(&value)?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn pin(cpu: usize) {
    // SAFETY: sets this thread's affinity from a cpu_set_t we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Bytes of each deliberately slow writev (`--slow-every`): copying them into a memfd takes
/// microseconds, far above a 1-byte write to /dev/null.
const SLOW_BYTES: usize = 256 << 10;

/// writev calls until `stop` is set (checked every 256 calls): 1-byte writes to /dev/null,
/// and with `slow_every` > 0 every `slow_every`-th call a [`SLOW_BYTES`] write to a memfd
/// (rewound with lseek, which is not a writev). With `rate` > 0 (calls per second) paced like
/// [`writev_loop`]. Returns (calls, slow calls).
fn writev_until(stop: &AtomicBool, rate: u64, slow_every: u64) -> (u64, u64) {
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null");
    // SAFETY: memfd_create with a valid C string; the fd is owned by this function.
    let memfd = unsafe { libc::memfd_create(c"kotel-slow".as_ptr(), 0) };
    assert!(memfd >= 0, "memfd_create failed");
    let byte = [0u8; 1];
    let big = vec![7u8; SLOW_BYTES];
    let iov = |b: &[u8]| libc::iovec {
        iov_base: b.as_ptr() as *mut libc::c_void,
        iov_len: b.len(),
    };
    let (small, large) = (iov(&byte), iov(&big));
    let fd = null.as_raw_fd();
    let (mut done, mut slow) = (0u64, 0u64);
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..256 {
            done += 1;
            if slow_every > 0 && done % slow_every == 0 {
                // SAFETY: one iovec over a live buffer; the memfd is ours.
                let n = unsafe { libc::writev(memfd, &large, 1) };
                assert_eq!(n as usize, SLOW_BYTES, "slow writev");
                // SAFETY: rewinds our memfd so its pages are reused.
                unsafe { libc::lseek(memfd, 0, libc::SEEK_SET) };
                slow += 1;
            } else {
                // SAFETY: one iovec pointing at a live byte.
                let n = unsafe { libc::writev(fd, &small, 1) };
                assert_eq!(n, 1, "writev to /dev/null");
            }
        }
        if let Some(due_ns) = (done * 1_000_000_000).checked_div(rate) {
            if let Some(wait) = Duration::from_nanos(due_ns).checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    // SAFETY: closes the memfd opened above.
    unsafe { libc::close(memfd) };
    (done, slow)
}

/// `--until-eof`: pid line, "go", calls until stdin closes, then the truth line.
fn run_until_eof(args: &Args) {
    println!("{{\"pid\":{}}}", std::process::id());
    let mut stdin = std::io::stdin().lock();
    let mut go = String::new();
    stdin.read_line(&mut go).expect("read go");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..args.threads)
        .map(|i| {
            let cpu = args.cpu.map(|c| c + i);
            let (stop, rate, slow_every) = (stop.clone(), args.rate, args.slow_every);
            std::thread::spawn(move || {
                if let Some(c) = cpu {
                    pin(c);
                }
                let t0 = Instant::now();
                let (calls, slow) = writev_until(&stop, rate, slow_every);
                (calls, slow, t0.elapsed())
            })
        })
        .collect();
    let mut rest = Vec::new();
    let _ = stdin.read_to_end(&mut rest);
    stop.store(true, Ordering::Relaxed);
    let per_thread: Vec<(u64, u64, Duration)> = threads
        .into_iter()
        .map(|t| t.join().expect("loop thread"))
        .collect();
    let elapsed = start.elapsed();
    let calls: u64 = per_thread.iter().map(|(c, _, _)| c).sum();
    let slow: u64 = per_thread.iter().map(|(_, s, _)| s).sum();
    let loop_ns = per_thread
        .iter()
        .map(|(_, _, d)| d.as_nanos())
        .max()
        .unwrap_or(0);
    println!(
        "{{\"calls\":{calls},\"slow_calls\":{slow},\"threads\":{},\"elapsed_ns\":{},\"loop_ns\":{loop_ns},\"calls_per_s\":{:.0},\"pid\":{}}}",
        args.threads,
        elapsed.as_nanos(),
        calls as f64 * 1e9 / loop_ns.max(1) as f64,
        std::process::id()
    );
}

/// `calls` writev calls; with `rate` > 0, paced to that many per second in 1 ms batches with
/// sleeps between them, so a consumer on the same cores gets CPU time.
fn writev_loop(calls: u64, rate: u64) -> u64 {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null");
    let byte = [0u8; 1];
    let iov = libc::iovec {
        iov_base: byte.as_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    let fd = f.as_raw_fd();
    let batch = if rate == 0 {
        calls
    } else {
        (rate / 1000).max(1)
    };
    let start = Instant::now();
    let (mut written, mut done) = (0u64, 0u64);
    while done < calls {
        let n = batch.min(calls - done);
        for _ in 0..n {
            // SAFETY: one iovec pointing at a live byte.
            written += unsafe { libc::writev(fd, &iov, 1) } as u64;
        }
        done += n;
        if let Some(due_ns) = (done * 1_000_000_000).checked_div(rate) {
            if let Some(wait) = Duration::from_nanos(due_ns).checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    written
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("kotel-writev-loop: {e}");
        std::process::exit(2);
    });
    let _floor = args.floor.map(floor::attach);
    // Warm up page tables and caches outside the timed part.
    writev_loop(10_000, 0);
    if args.until_eof {
        run_until_eof(&args);
        return;
    }
    let start = Instant::now();
    let threads: Vec<_> = (0..args.threads)
        .map(|i| {
            let cpu = args.cpu.map(|c| c + i);
            let (calls, rate) = (args.calls, args.rate);
            std::thread::spawn(move || {
                if let Some(c) = cpu {
                    pin(c);
                }
                writev_loop(calls, rate)
            })
        })
        .collect();
    let written: u64 = threads
        .into_iter()
        .map(|t| t.join().expect("loop thread"))
        .sum();
    let elapsed = start.elapsed();
    let calls = args.calls * args.threads as u64;
    assert_eq!(written, calls, "every writev wrote its byte");
    println!(
        "{{\"calls\":{calls},\"threads\":{},\"elapsed_ns\":{},\"ns_per_call\":{:.1},\"calls_per_s\":{:.0},\"pid\":{}}}",
        args.threads,
        elapsed.as_nanos(),
        elapsed.as_nanos() as f64 * args.threads as f64 / calls as f64,
        calls as f64 / elapsed.as_secs_f64(),
        std::process::id()
    );
}
