//! Benchmark workload: a tight loop of 1-byte writev calls to /dev/null on one or more pinned
//! threads, optionally with the empty "floor" BPF programs attached in-process. Prints one JSON
//! line: calls made, elapsed time and nanoseconds per call.
//!
//! `kotel-writev-loop [--calls N] [--threads T] [--floor none|raw|syscalls|timed] [--cpu C]`

use std::os::fd::AsRawFd;
use std::time::Instant;

use kotel_bpf::floor::{Floor, FloorHooks};

struct Args {
    calls: u64,
    threads: usize,
    floor: Option<FloorHooks>,
    cpu: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        calls: 2_000_000,
        threads: 1,
        floor: None,
        cpu: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--calls" => a.calls = value()?.parse().map_err(|e| format!("--calls: {e}"))?,
            "--threads" => a.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--cpu" => a.cpu = Some(value()?.parse().map_err(|e| format!("--cpu: {e}"))?),
            "--floor" => {
                a.floor = match value()?.as_str() {
                    "none" => None,
                    "raw" => Some(FloorHooks::RawSyscalls),
                    "syscalls" => Some(FloorHooks::WritevSyscall),
                    "timed" => Some(FloorHooks::Timed),
                    other => {
                        return Err(format!(
                            "--floor: unknown '{other}' (none, raw, syscalls, timed)"
                        ))
                    }
                }
            }
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

fn writev_loop(calls: u64) -> u64 {
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
    let mut written = 0u64;
    for _ in 0..calls {
        // SAFETY: one iovec pointing at a live byte.
        written += unsafe { libc::writev(fd, &iov, 1) } as u64;
    }
    written
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("kotel-writev-loop: {e}");
        std::process::exit(2);
    });
    let _floor = args.floor.map(|h| {
        Floor::attach(h).unwrap_or_else(|e| {
            eprintln!("kotel-writev-loop: {e}");
            std::process::exit(1);
        })
    });
    // Warm up page tables and caches outside the timed part.
    writev_loop(10_000);
    let start = Instant::now();
    let threads: Vec<_> = (0..args.threads)
        .map(|i| {
            let cpu = args.cpu.map(|c| c + i);
            let calls = args.calls;
            std::thread::spawn(move || {
                if let Some(c) = cpu {
                    pin(c);
                }
                writev_loop(calls)
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
        "{{\"calls\":{calls},\"threads\":{},\"elapsed_ns\":{},\"ns_per_call\":{:.1},\"pid\":{}}}",
        args.threads,
        elapsed.as_nanos(),
        elapsed.as_nanos() as f64 * args.threads as f64 / calls as f64,
        std::process::id()
    );
}
