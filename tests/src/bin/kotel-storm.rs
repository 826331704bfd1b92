//! Cardinality-storm workload: starts many short-lived processes (fork + exec of itself), each
//! making a known number of 1-byte `writev` calls to /dev/null before it exits. Prints its pid
//! as one JSON line, waits for "go" on stdin (so a test can move it into a cgroup first), runs,
//! and prints the truth as one JSON line: processes started, processes that succeeded and
//! `writev` calls made in all. The launcher itself never calls `writev`.
//!
//! `kotel-storm [--procs N] [--writes W] [--parallel P]`

use std::io::BufRead;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes one line with write(2) (never writev), so the launcher adds nothing to the count.
fn say(line: &str) {
    let bytes = format!("{line}\n");
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: writes from a live buffer to stdout.
        let n = unsafe { libc::write(1, bytes[off..].as_ptr().cast(), bytes.len() - off) };
        if n <= 0 {
            std::process::exit(3);
        }
        off += n as usize;
    }
}

/// The child: `writes` 1-byte writev calls, then exit without flushing anything.
fn child(writes: u64) -> ! {
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap_or_else(|_| unsafe { libc::_exit(4) });
    let byte = [b'x'];
    let iov = libc::iovec {
        iov_base: byte.as_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    for _ in 0..writes {
        // SAFETY: one iovec pointing at a live byte.
        if unsafe { libc::writev(null.as_raw_fd(), &iov, 1) } != 1 {
            unsafe { libc::_exit(5) };
        }
    }
    // SAFETY: ends the process at once; nothing to flush.
    unsafe { libc::_exit(0) }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{flag}: not a number: {v}"))
            })
            .unwrap_or(default)
    };
    if args.first().map(String::as_str) == Some("--child") {
        child(value("--child", 1));
    }
    let procs = value("--procs", 10_000);
    let writes = value("--writes", 3);
    let parallel = value("--parallel", 4).max(1);

    say(&format!("{{\"pid\":{}}}", std::process::id()));
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).ok();
    if line.trim() != "go" {
        std::process::exit(2);
    }

    let exe = std::env::current_exe().expect("own executable");
    let started = AtomicU64::new(0);
    let ok = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                if started.fetch_add(1, Ordering::Relaxed) >= procs {
                    break;
                }
                let status = Command::new(&exe)
                    .args(["--child", &writes.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                if status.is_ok_and(|s| s.success()) {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let ok = ok.load(Ordering::Relaxed);
    say(&format!(
        "{{\"procs\":{procs},\"succeeded\":{ok},\"writes_per_proc\":{writes},\"writev_calls\":{}}}",
        ok * writes
    ));
}
