//! A workload whose truth is known independently of kotel: N writev calls of known sizes, M TCP
//! sends of known sizes over loopback (IPv4 and IPv6), a thread that sleeps known durations, and
//! two threads spinning on one CPU, pinned to it from their creation. It prints `{"pid":…}`,
//! waits for a line on stdin, runs, and prints what it did as one JSON line. Only write(2) is
//! used for its own output, so its writev and TCP counts are exactly the workload's.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

const WRITEV_CALLS: usize = 200;
const TCP_SENDS: usize = 40;
const SLEEPS_MS: [u64; 3] = [20, 35, 50];
const SPIN: Duration = Duration::from_millis(300);

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

fn cpu_time_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// writev to /dev/null with 1..=4 iovecs of varying sizes; returns (tid, calls, bytes).
fn do_writev() -> serde_json::Value {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null");
    let buf = vec![0xabu8; 4096];
    let mut bytes = 0u64;
    for i in 0..WRITEV_CALLS {
        let n = i % 4 + 1;
        let iov: Vec<libc::iovec> = (0..n)
            .map(|j| libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: (i * 37 + j * 101) % 4000 + 1,
            })
            .collect();
        // SAFETY: the iovecs point into `buf`, which outlives the call.
        let r =
            unsafe { libc::writev(std::os::fd::AsRawFd::as_raw_fd(&f), iov.as_ptr(), n as i32) };
        let want: usize = iov.iter().map(|v| v.iov_len).sum();
        assert_eq!(r as usize, want, "writev to /dev/null writes everything");
        bytes += r as u64;
    }
    json!({"tid": gettid(), "calls": WRITEV_CALLS, "bytes": bytes, "fd": std::os::fd::AsRawFd::as_raw_fd(&f)})
}

/// Sends of known sizes to a listener on `bind`; returns what was sent and the addresses.
fn do_tcp(bind: &str) -> Option<serde_json::Value> {
    let listener = TcpListener::bind(bind).ok()?;
    let server = listener.local_addr().ok()?;
    let reader = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut sink = Vec::new();
        s.read_to_end(&mut sink).expect("read");
        sink.len() as u64
    });
    let mut c = TcpStream::connect(server).expect("connect");
    let local: SocketAddr = c.local_addr().expect("local addr");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&c);
    let payload = vec![0x5au8; 64 * 1024];
    let (mut calls, mut bytes) = (0u64, 0u64);
    for i in 0..TCP_SENDS {
        let size = 100 + i * 997 % 30_000;
        let n = c.write(&payload[..size]).expect("send"); // send(2) → sendto
        calls += 1;
        bytes += n as u64;
    }
    let tid = gettid();
    drop(c);
    let received = reader.join().expect("reader");
    assert_eq!(received, bytes, "the peer got what was sent");
    Some(
        json!({"tid": tid, "fd": fd, "calls": calls, "bytes": bytes, "local": local.to_string(), "peer": server.to_string()}),
    )
}

fn do_sleeps() -> serde_json::Value {
    let sleeps: Vec<_> = SLEEPS_MS
        .iter()
        .map(|&ms| {
            let t = Instant::now();
            thread::sleep(Duration::from_millis(ms));
            json!({"requested_ns": ms * 1_000_000, "elapsed_ns": t.elapsed().as_nanos() as u64})
        })
        .collect();
    json!({"tid": gettid(), "sleeps": sleeps})
}

const CPU_SET_BYTES: usize = std::mem::size_of::<libc::cpu_set_t>();

/// The calling thread's CPU affinity.
fn affinity() -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills the one we own.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::sched_getaffinity(0, CPU_SET_BYTES, &mut set) };
    let err = std::io::Error::last_os_error();
    assert_eq!(r, 0, "sched_getaffinity: {err}");
    set
}

/// Sets the calling thread's CPU affinity; when it returns, the thread runs inside `set`.
fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: sched_setaffinity reads a cpu_set_t we own.
    let r = unsafe { libc::sched_setaffinity(0, CPU_SET_BYTES, set) };
    let err = std::io::Error::last_os_error();
    assert_eq!(r, 0, "sched_setaffinity: {err}");
}

fn first_allowed_cpu() -> usize {
    let set = affinity();
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads a cpu_set_t we own; `c` is below CPU_SETSIZE.
        .find(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .unwrap_or(0)
}

/// Spawns `f` on a thread that is pinned to `cpu` from its creation: the caller pins itself,
/// spawns (a new thread inherits its creator's affinity, and the kernel places it inside it)
/// and restores its own affinity. So every run-queue wait of the new thread, its first one
/// included, ends on `cpu`.
fn spawn_pinned<T: Send + 'static>(
    cpu: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let own = affinity();
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET adds `cpu` to the set we own.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    };
    set_affinity(&pinned);
    let handle = thread::spawn(f);
    set_affinity(&own);
    handle
}

/// Two threads pinned to one CPU from their creation, spinning for the same wall time: each
/// waits for the other.
fn do_spinners() -> serde_json::Value {
    let cpu = first_allowed_cpu();
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            spawn_pinned(cpu, move || {
                barrier.wait();
                let (t, cpu0) = (Instant::now(), cpu_time_ns());
                let mut x = 0u64;
                while t.elapsed() < SPIN {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                std::hint::black_box(x);
                let wall = t.elapsed().as_nanos() as u64;
                json!({"tid": gettid(), "wall_ns": wall, "cpu_ns": cpu_time_ns() - cpu0})
            })
        })
        .collect();
    let spinners: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("spinner"))
        .collect();
    json!({"cpu": cpu, "threads": spinners})
}

fn main() {
    // KOTEL_WORKLOAD_NAME renames the process (and so every thread it starts): the tests use
    // hostile names to check that everything reaching SVG and HTML is escaped.
    if let Ok(name) = std::env::var("KOTEL_WORKLOAD_NAME") {
        let c = std::ffi::CString::new(name).expect("no NUL in the name");
        // SAFETY: PR_SET_NAME reads a NUL-terminated string (the kernel truncates to 15 bytes).
        unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr(), 0, 0, 0) };
    }
    let mut out = std::io::stdout();
    writeln!(out, "{}", json!({"pid": std::process::id()})).expect("stdout");
    out.flush().expect("stdout");
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go).expect("stdin");

    let writev = thread::spawn(do_writev).join().expect("writev thread");
    let tcp4 = thread::spawn(|| do_tcp("127.0.0.1:0"))
        .join()
        .expect("tcp4 thread");
    let tcp6 = thread::spawn(|| do_tcp("[::1]:0"))
        .join()
        .expect("tcp6 thread");
    let sleeper = thread::spawn(do_sleeps).join().expect("sleeper thread");
    let spinners = do_spinners();

    let truth =
        json!({"writev": writev, "tcp": [tcp4, tcp6], "sleeper": sleeper, "spinners": spinners});
    writeln!(out, "{truth}").expect("stdout");
}
