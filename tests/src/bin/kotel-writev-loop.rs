//! Benchmark workload: a tight loop of 1-byte writev calls to /dev/null on one or more pinned
//! threads, optionally paced, optionally with the empty "floor" BPF programs attached
//! in-process. Prints one JSON line: calls made, elapsed time and nanoseconds per call.
//!
//! `kotel-writev-loop [--calls N] [--threads T] [--rate PER_THREAD_PER_S]
//!                    [--floor none|raw|syscalls|timed] [--cpu C]`

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use kotel_bpf::floor::{Floor, FloorHooks};

struct Args {
    calls: u64,
    threads: usize,
    rate: u64,
    floor: Option<FloorHooks>,
    cpu: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        calls: 2_000_000,
        threads: 1,
        rate: 0,
        floor: None,
        cpu: None,
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
            "--floor" => {
                a.floor = match value.as_str() {
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
    let _floor = args.floor.map(|h| {
        Floor::attach(h).unwrap_or_else(|e| {
            eprintln!("kotel-writev-loop: {e}");
            std::process::exit(1);
        })
    });
    // Warm up page tables and caches outside the timed part.
    writev_loop(10_000, 0);
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
