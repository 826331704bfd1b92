//! A workload whose threads each wait in one known way, one thread after the other, so that
//! every off-CPU interval of a thread is of the kind it was made for:
//!
//! - `fsync`: writes 32 MiB to a new file in the directory given as the first argument (on a
//!   disk-backed filesystem; its `statfs` magic is reported) and fsyncs it: it blocks
//!   uninterruptibly, on page writeback and the journal;
//! - `spawn`: starts `/bin/true` ten times with `posix_spawn`, which glibc implements as
//!   vfork + exec: the parent waits, uninterruptibly (`TASK_KILLABLE`), until the child has
//!   exec'd (the children are reaped afterwards by the main thread, whose waits are its own);
//! - `sleeper`: sleeps 20, 35 and 50 ms in `nanosleep`: interruptible;
//! - `spinner`: spins for 200 ms and never blocks.
//!
//! It prints `{"pid":…}`, waits for a line on stdin, runs, and prints each thread's id and what
//! it did as one JSON line.

use std::ffi::CString;
use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

const FSYNC_BYTES: usize = 32 << 20;
const SPAWNS: usize = 10;
const SLEEPS_MS: [u64; 3] = [20, 35, 50];
const SPIN: Duration = Duration::from_millis(200);

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// The `statfs` magic number of the filesystem holding `dir`.
fn fs_magic(dir: &Path) -> i64 {
    let c = CString::new(dir.as_os_str().as_bytes()).expect("no NUL in the path");
    // SAFETY: a zeroed statfs is valid; statfs fills the one we own from a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    assert_eq!(
        r,
        0,
        "statfs {}: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
    st.f_type as i64
}

/// Writes FSYNC_BYTES to a new file in `dir` and fsyncs it.
fn do_fsync(dir: PathBuf) -> serde_json::Value {
    let path = dir.join(format!("kotel-waits-{}.data", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("create the file to fsync");
    let chunk = vec![0x6bu8; 1 << 20];
    for _ in 0..FSYNC_BYTES / chunk.len() {
        f.write_all(&chunk).expect("write");
    }
    let t = Instant::now();
    f.sync_all().expect("fsync");
    let fsync_ns = t.elapsed().as_nanos() as u64;
    drop(f);
    std::fs::remove_file(&path).expect("remove the fsynced file");
    json!({"tid": gettid(), "bytes": FSYNC_BYTES, "fsync_ns": fsync_ns, "fs_magic": fs_magic(&dir)})
}

/// Starts /bin/true SPAWNS times with posix_spawn (vfork + exec); returns the children.
fn do_spawns() -> (serde_json::Value, Vec<libc::pid_t>) {
    let prog = CString::new("/bin/true").expect("no NUL");
    let argv = [prog.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let mut children = Vec::new();
    for _ in 0..SPAWNS {
        let mut pid: libc::pid_t = 0;
        // SAFETY: the path, argv and envp are NUL-terminated and outlive the call; no file
        // actions or attributes are passed.
        let r = unsafe {
            libc::posix_spawn(
                &mut pid,
                prog.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                argv.as_ptr() as *const *mut libc::c_char,
                envp.as_ptr() as *const *mut libc::c_char,
            )
        };
        assert_eq!(r, 0, "posix_spawn /bin/true: error {r}");
        children.push(pid);
    }
    (json!({"tid": gettid(), "spawns": SPAWNS}), children)
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

fn do_spin() -> serde_json::Value {
    let t = Instant::now();
    let mut x = 0u64;
    while t.elapsed() < SPIN {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    std::hint::black_box(x);
    json!({"tid": gettid(), "spin_ns": t.elapsed().as_nanos() as u64})
}

fn main() {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .expect("usage: kotel-waits DIR (a directory on a disk-backed filesystem)"),
    );
    let mut out = std::io::stdout();
    writeln!(out, "{}", json!({"pid": std::process::id()})).expect("stdout");
    out.flush().expect("stdout");
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go).expect("stdin");

    let fsync = thread::spawn(move || do_fsync(dir))
        .join()
        .expect("fsync thread");
    let (spawn, children) = thread::spawn(do_spawns).join().expect("spawn thread");
    for pid in children {
        let mut status = 0;
        // SAFETY: waits for a child we started, writing into a local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid, "waitpid {pid}");
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "/bin/true failed"
        );
    }
    let sleeper = thread::spawn(do_sleeps).join().expect("sleeper thread");
    let spinner = thread::spawn(do_spin).join().expect("spinner thread");

    let truth = json!({"fsync": fsync, "spawn": spawn, "sleeper": sleeper, "spinner": spinner});
    writeln!(out, "{truth}").expect("stdout");
}
