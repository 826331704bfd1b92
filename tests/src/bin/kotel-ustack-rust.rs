//! A Rust workload for user stack symbolization: a thread of its own sleeps three times 30 ms in
//! `kotel_ustack_rust::blocker::Sleeper::kotel_rust_block_here`, which makes the `nanosleep`
//! system call itself (inline assembly), so the sleeping instruction is in that function
//! whether or not anything on the way keeps frame pointers.
//!
//! It prints `{"pid":…}`, waits for a line on stdin, sleeps, prints
//! `{"tid":…,"function":…,"sleeps":…}` (`function`: the demangled path it defined), and exits
//! after another line (so that its stacks are symbolized while its maps exist).

use std::io::BufRead;

use serde_json::json;

mod blocker {
    /// Sleeps in a method whose mangled name the symbolizer has to demangle.
    pub struct Sleeper;

    impl Sleeper {
        /// `nanosleep` for `ms` milliseconds, by the system call; returns its result.
        #[inline(never)]
        pub fn kotel_rust_block_here(&self, ms: u64) -> i64 {
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: (ms * 1_000_000) as libc::c_long,
            };
            let ret: i64;
            // SAFETY: nanosleep reads the timespec we own and writes nothing (no remainder
            // pointer); the syscall clobbers rcx and r11 only.
            unsafe {
                std::arch::asm!(
                    "syscall",
                    inlateout("rax") libc::SYS_nanosleep => ret,
                    in("rdi") &ts as *const libc::timespec,
                    in("rsi") 0usize,
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack),
                );
            }
            ret
        }
    }
}

fn main() {
    println!("{}", json!({ "pid": std::process::id() }));
    let mut line = String::new();
    let stdin = std::io::stdin();
    stdin.lock().read_line(&mut line).expect("read go");
    // A thread of its own, whose only waits are the sleeps.
    let (tid, sleeps) = std::thread::spawn(|| {
        let sleeper = blocker::Sleeper;
        let mut sleeps = 0;
        for _ in 0..3 {
            assert_eq!(sleeper.kotel_rust_block_here(30), 0, "nanosleep failed");
            sleeps += 1;
        }
        // SAFETY: gettid has no preconditions.
        (unsafe { libc::gettid() }, sleeps)
    })
    .join()
    .expect("the sleeping thread");
    println!(
        "{}",
        json!({
            "tid": tid,
            "function": "kotel_ustack_rust::blocker::Sleeper::kotel_rust_block_here",
            "sleeps": sleeps,
        })
    );
    stdin.lock().read_line(&mut line).expect("read exit");
}
