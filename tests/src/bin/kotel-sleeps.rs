//! A workload that blocks a known number of times: its one thread sleeps `SLEEPS` times for
//! `SLEEP` each in `nanosleep`, and records each sleep's window in `CLOCK_REALTIME`, the clock
//! of kotel's event timestamps. Each sleep is one blocked switch-out, one wakeup and one
//! switch-in; the thread's own voluntary-switch count (`getrusage(RUSAGE_THREAD)`) says so
//! independently, sleep by sleep.
//!
//! Arguments: the number of sleeps and the sleep in microseconds. It prints `{"pid":…}`, waits
//! for a line on stdin, sleeps, and prints `{"tid":…,"sleep_ns":…,"windows":[[start,end,
//! voluntary switches, involuntary switches],…]}`.

use std::io::BufRead;
use std::time::Duration;

use serde_json::json;

fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    assert_eq!(r, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// (Voluntary, involuntary) context switches of the calling thread so far.
fn switches() -> (i64, i64) {
    // SAFETY: a zeroed rusage is valid; getrusage fills the one we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(r, 0, "getrusage");
    (ru.ru_nvcsw, ru.ru_nivcsw)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sleeps: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: kotel-sleeps SLEEPS SLEEP_US");
    let sleep_us: u64 = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .expect("usage: kotel-sleeps SLEEPS SLEEP_US");
    let sleep = Duration::from_micros(sleep_us);
    println!("{}", json!({ "pid": std::process::id() }));
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go).expect("go line");

    let mut windows = Vec::with_capacity(sleeps);
    for _ in 0..sleeps {
        let before = switches();
        let start = realtime_ns();
        std::thread::sleep(sleep);
        let end = realtime_ns();
        let after = switches();
        windows.push([
            start,
            end,
            (after.0 - before.0) as u64,
            (after.1 - before.1) as u64,
        ]);
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    println!(
        "{}",
        json!({ "tid": tid, "sleep_ns": sleep.as_nanos() as u64, "windows": windows })
    );
}
