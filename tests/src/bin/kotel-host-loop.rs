//! Benchmark workload for what tracing costs the host, not the calls kotel times:
//! - `getppid`: a tight loop of getppid(2), a system call no probe is about;
//! - `pingpong`: two processes pinned to one CPU passing a byte back and forth over two pipes
//!   (per round trip: 4 system calls, 2 blocked switch-outs, 2 wakeups);
//! - `tcpsend`: 64-byte sends on a loopback TCP connection whose peer, a thread on another
//!   CPU, reads everything (the cost of one TCP send, the call kotel's tcp_send probe times).
//!
//! - `hold`: attaches `--floor` and holds it until killed (for benchmarks of other programs,
//!   such as nginx, under the floor), after printing `floor attached` on stderr.
//!
//! `kotel-host-loop getppid|pingpong|tcpsend|hold [--calls N] [--cpu C] [--floor tcp|tcp_timed]`
//!
//! `--floor` attaches, in-process, empty programs on the TCP probe's socket tracepoints
//! (`tcp`) or the least a timer of TCP sends does on them (`tcp_timed`): the floor kotel's
//! `tcp_send` cost is compared with.
//!
//! Prints one JSON line: the mode, the calls or round trips made, elapsed time and
//! nanoseconds per call or round trip.
//!
//! Built only with the `bench` feature: `cargo build --release -p kotel-e2e --features bench`
//! (scripts/bench-host.sh does).

use std::time::Instant;

use kotel_bpf::floor::{Floor, FloorHooks};

use serde_json::json;

fn pin(cpu: usize) {
    // SAFETY: sets this thread's affinity from a cpu_set_t we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn getppid_loop(calls: u64) {
    for _ in 0..calls {
        // SAFETY: getppid has no preconditions.
        std::hint::black_box(unsafe { libc::getppid() });
    }
}

fn pipe() -> [i32; 2] {
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two fds into an array we own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    fds
}

fn pass(from: i32, to: i32, rounds: u64) {
    let mut b = [0u8; 1];
    for _ in 0..rounds {
        // SAFETY: one-byte reads and writes on pipe fds we own, into a buffer we own.
        unsafe {
            assert_eq!(libc::write(to, b.as_ptr().cast(), 1), 1, "write");
            assert_eq!(libc::read(from, b.as_mut_ptr().cast(), 1), 1, "read");
        }
    }
}

/// Round trips between this process and a forked child on the same CPU.
fn pingpong(rounds: u64) {
    let (there, back) = (pipe(), pipe());
    // SAFETY: the child only makes system calls and exits; it touches no lock of the parent's.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        let mut b = [0u8; 1];
        for _ in 0..rounds {
            // SAFETY: as in `pass`.
            unsafe {
                if libc::read(there[0], b.as_mut_ptr().cast(), 1) != 1 {
                    libc::_exit(1);
                }
                if libc::write(back[1], b.as_ptr().cast(), 1) != 1 {
                    libc::_exit(1);
                }
            }
        }
        // SAFETY: leaves the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    pass(back[0], there[1], rounds);
    let mut status = 0;
    // SAFETY: waits for the child we forked.
    unsafe { libc::waitpid(child, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed"
    );
}

/// Sends of 64 bytes on a loopback connection drained by a reader thread.
fn tcpsend(calls: u64) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        while s.read(&mut buf).expect("read") > 0 {}
    });
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    let msg = [0x5au8; 64];
    for _ in 0..calls {
        c.write_all(&msg).expect("send");
    }
    drop(c);
    reader.join().expect("reader");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let (mut calls, mut cpu, mut floor) = (0u64, None, None);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        let num = || -> u64 {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--calls" => calls = num(),
            "--cpu" => cpu = Some(num() as usize),
            "--floor" => {
                floor = Some(match value.as_str() {
                    "tcp" => FloorHooks::TcpSocket,
                    "tcp_timed" => FloorHooks::TcpTimed,
                    "tcp_pcpu" => FloorHooks::TcpPerCpu,
                    other => panic!("--floor: unknown '{other}' (tcp, tcp_timed)"),
                })
            }
            other => panic!("unknown flag {other}"),
        }
    }
    let _floor = floor.map(|f| Floor::attach(f).expect("attach the floor programs"));
    if mode == "hold" {
        eprintln!("floor attached");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    if let Some(c) = cpu {
        pin(c); // before the fork: the child inherits it, so both share one CPU
    }
    let run: fn(u64) = match mode.as_str() {
        "getppid" => getppid_loop,
        "pingpong" => pingpong,
        "tcpsend" => tcpsend,
        other => panic!("unknown mode '{other}': getppid, pingpong or tcpsend"),
    };
    if calls == 0 {
        calls = if mode == "getppid" {
            5_000_000
        } else {
            200_000
        };
    }
    run(calls / 10); // warm-up
    let t = Instant::now();
    run(calls);
    let ns = t.elapsed().as_nanos() as f64;
    println!(
        "{}",
        json!({"mode": mode, "calls": calls, "elapsed_ns": ns as u64, "ns_per_call": ns / calls as f64})
    );
}
