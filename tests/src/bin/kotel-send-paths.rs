//! Workload for the TCP probe, whose truth is known independently of kotel: known bytes sent
//! over loopback TCP through every send path the kernel has — write, writev, send, sendmsg,
//! sendmmsg, sendfile, splice and io_uring — one connection per path, plus one send that blocks
//! on a peer that starts reading late.
//!
//! It prints `{"pid":…}`, waits for a line on stdin, runs, and prints one JSON line: for each
//! path the sending thread, the local and peer addresses, the system calls made, the sends
//! (messages: sendmmsg sends several per call), the bytes the calls reported sent, the bytes
//! the peer received, and the summed wall time of the calls; for the blocking send also how
//! long the peer waited before reading.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Sends per path, of sizes 100 .. 30 000 bytes.
const SENDS: usize = 12;
/// How long the blocking send's peer waits before it reads.
const LATE_READER: Duration = Duration::from_millis(100);
/// The blocking send: far more than loopback's socket buffers hold.
const BIG_SEND: usize = 32 << 20;

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

fn size(i: usize) -> usize {
    100 + i * 2_711 % 30_000
}

/// One connection over loopback; its peer reads to the end (after `delay`) and counts.
struct Conn {
    stream: TcpStream,
    reader: JoinHandle<u64>,
    local: SocketAddr,
    peer: SocketAddr,
}

fn connect(delay: Duration) -> Conn {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let peer = listener.local_addr().expect("listener addr");
    let reader = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        thread::sleep(delay);
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf).expect("read") {
                0 => return total,
                n => total += n as u64,
            }
        }
    });
    let stream = TcpStream::connect(peer).expect("connect");
    let local = stream.local_addr().expect("local addr");
    Conn {
        stream,
        reader,
        local,
        peer,
    }
}

/// What one path did.
#[derive(Default)]
struct Tally {
    calls: u64,
    sends: u64,
    bytes: u64,
    call_ns: u64,
    /// (start, end) of each call timed by [`Tally::call`], Unix nanoseconds (CLOCK_REALTIME,
    /// the clock kotel converts kernel timestamps to).
    windows: Vec<[u64; 2]>,
}

/// Now, in Unix nanoseconds.
fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Tally {
    /// Times one call that returns bytes sent (or -1).
    fn call(&mut self, f: impl FnOnce() -> isize) -> usize {
        let (t, start) = (Instant::now(), unix_ns());
        let r = f();
        self.call_ns += t.elapsed().as_nanos() as u64;
        self.windows.push([start, unix_ns()]);
        assert!(r >= 0, "send failed: {}", std::io::Error::last_os_error());
        self.calls += 1;
        self.sends += 1;
        self.bytes += r as u64;
        r as usize
    }
}

fn finish(path: &str, conn: Conn, tally: Tally, tid: u32, extra: Value) -> Value {
    let Conn {
        stream,
        reader,
        local,
        peer,
    } = conn;
    drop(stream);
    let received = reader.join().expect("reader");
    assert_eq!(received, tally.bytes, "{path}: the peer got what was sent");
    let mut v = json!({
        "path": path, "tid": tid, "local": local.to_string(), "peer": peer.to_string(),
        "calls": tally.calls, "sends": tally.sends, "bytes": tally.bytes,
        "received": received, "call_ns": tally.call_ns, "call_windows": tally.windows,
    });
    if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        v.extend(extra.clone());
    }
    v
}

/// A memfd holding `n` bytes, for sendfile and splice.
fn memfd(n: usize) -> OwnedFd {
    // SAFETY: memfd_create with a NUL-terminated name; the fd is ours.
    let fd = unsafe { libc::memfd_create(c"kotel-send".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: we own the fd just created.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = std::fs::File::from(fd.try_clone().expect("dup"));
    f.write_all(&vec![0x42u8; n]).expect("fill memfd");
    fd
}

fn plain(path: &str) -> Value {
    let conn = connect(Duration::ZERO);
    let fd = conn.stream.as_raw_fd();
    let buf = vec![0x5au8; 64 * 1024];
    let mut t = Tally::default();
    for i in 0..SENDS {
        let n = size(i);
        let p = buf.as_ptr();
        let half = libc::iovec {
            iov_base: p as *mut libc::c_void,
            iov_len: n / 2,
        };
        let rest = libc::iovec {
            iov_base: p as *mut libc::c_void,
            iov_len: n - n / 2,
        };
        let iov = [half, rest];
        // SAFETY (each arm): the buffers outlive the call; fd is our connected socket.
        t.call(|| unsafe {
            match path {
                "write" => libc::write(fd, p.cast(), n),
                "writev" => libc::writev(fd, iov.as_ptr(), 2),
                "send" => libc::send(fd, p.cast(), n, 0),
                "sendmsg" => {
                    let mut m: libc::msghdr = std::mem::zeroed();
                    m.msg_iov = iov.as_ptr() as *mut libc::iovec;
                    m.msg_iovlen = 2;
                    libc::sendmsg(fd, &m, 0)
                }
                other => unreachable!("{other}"),
            }
        });
    }
    finish(path, conn, t, gettid(), json!({}))
}

fn sendmmsg() -> Value {
    let conn = connect(Duration::ZERO);
    let fd = conn.stream.as_raw_fd();
    let buf = vec![0x5au8; 64 * 1024];
    let mut t = Tally::default();
    for round in 0..SENDS / 4 {
        let mut iov: Vec<libc::iovec> = (0..4)
            .map(|j| libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: size(round * 4 + j),
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid; each points at one iovec of `iov`.
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let start = Instant::now();
        // SAFETY: msgs and the buffers they point to outlive the call.
        let sent = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), 4, 0) };
        t.call_ns += start.elapsed().as_nanos() as u64;
        // A blocking sendmmsg may still stop early (the kernel is allowed to): count what it
        // says it sent.
        assert!(sent > 0, "sendmmsg: {}", std::io::Error::last_os_error());
        t.calls += 1;
        t.sends += sent as u64;
        t.bytes += msgs[..sent as usize]
            .iter()
            .map(|m| u64::from(m.msg_len))
            .sum::<u64>();
    }
    finish("sendmmsg", conn, t, gettid(), json!({}))
}

/// sendfile or splice of a 300 000-byte file, in calls of at most 64 KiB.
fn from_file(path: &str) -> Value {
    const FILE: usize = 300_000;
    let conn = connect(Duration::ZERO);
    let sock = conn.stream.as_raw_fd();
    let file = memfd(FILE);
    let mut t = Tally::default();
    let mut off: libc::off_t = 0;
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: pipe writes two fds we then own.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    while (off as usize) < FILE {
        let want = (FILE - off as usize).min(64 * 1024);
        if path == "sendfile" {
            // SAFETY: fds are ours; off is ours.
            t.call(|| unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut off, want) });
        } else {
            // file → pipe (not a send), then pipe → socket (the send).
            // SAFETY: fds are ours; off is ours.
            let n = unsafe {
                libc::splice(
                    file.as_raw_fd(),
                    &mut off,
                    pipe[1],
                    std::ptr::null_mut(),
                    want,
                    0,
                )
            };
            assert!(n > 0, "splice into the pipe");
            let mut left = n as usize;
            while left > 0 {
                // SAFETY: fds are ours.
                left -= t.call(|| unsafe {
                    libc::splice(
                        pipe[0],
                        std::ptr::null_mut(),
                        sock,
                        std::ptr::null_mut(),
                        left,
                        0,
                    )
                });
            }
        }
    }
    // SAFETY: closing the pipe fds we own.
    unsafe {
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    finish(path, conn, t, gettid(), json!({}))
}

/// IORING_OP_SEND, one submission and completion at a time; the io_uring_enter calls are
/// timed. Returns None where the kernel refuses io_uring.
fn io_uring() -> Option<Value> {
    let mut ring = io_uring::IoUring::new(8).ok()?;
    let conn = connect(Duration::ZERO);
    let fd = io_uring::types::Fd(conn.stream.as_raw_fd());
    let buf = vec![0x5au8; 64 * 1024];
    let mut t = Tally::default();
    for i in 0..SENDS {
        let n = size(i);
        let sqe = io_uring::opcode::Send::new(fd, buf.as_ptr(), n as u32)
            .build()
            .user_data(i as u64);
        // SAFETY: the buffer outlives the submission, which completes before the next.
        unsafe { ring.submission().push(&sqe).expect("queue has room") };
        let start = Instant::now();
        ring.submit_and_wait(1).expect("io_uring_enter");
        t.call_ns += start.elapsed().as_nanos() as u64;
        let cqe = ring.completion().next().expect("a completion");
        assert!(cqe.result() >= 0, "io_uring send: {}", cqe.result());
        t.calls += 1;
        t.sends += 1;
        t.bytes += cqe.result() as u64;
    }
    Some(finish("io_uring", conn, t, gettid(), json!({})))
}

/// Writes far larger than the socket buffers, to a peer that waits before reading: the first
/// call blocks in the kernel until the peer drains it. A blocking write may still return short
/// (the kernel is allowed to), so each write(2) is its own call and send here.
fn blocking() -> Value {
    // The buffer first: filling 32 MiB takes a while, and the write must start right after the
    // connection, so that it waits for nearly all of the reader's delay.
    let buf = vec![0x5au8; BIG_SEND];
    let conn = connect(LATE_READER);
    let fd = conn.stream.as_raw_fd();
    let mut t = Tally::default();
    let mut sent = 0;
    while sent < BIG_SEND {
        // SAFETY: the slice outlives the call; fd is our connected socket.
        sent += t.call(|| unsafe { libc::write(fd, buf[sent..].as_ptr().cast(), BIG_SEND - sent) });
    }
    finish(
        "blocking",
        conn,
        t,
        gettid(),
        json!({"reader_delay_ns": LATE_READER.as_nanos() as u64}),
    )
}

fn main() {
    let mut out = std::io::stdout();
    writeln!(out, "{}", json!({"pid": std::process::id()})).expect("stdout");
    out.flush().expect("stdout");
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go).expect("stdin");

    let mut paths: Vec<Value> = ["write", "writev", "send", "sendmsg"]
        .into_iter()
        .map(plain)
        .collect();
    paths.push(sendmmsg());
    paths.push(from_file("sendfile"));
    paths.push(from_file("splice"));
    paths.extend(io_uring());
    paths.push(blocking());
    writeln!(out, "{}", json!({ "paths": paths })).expect("stdout");
}
