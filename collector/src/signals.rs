//! SIGINT/SIGTERM → a flag the capture and run loops check, so the first signal ends kotel
//! cleanly (flush within the grace period, detach, summary). A second signal while that is
//! under way exits at once: the kernel closes kotel's BPF links and maps with its descriptors,
//! so nothing stays attached, but whatever was still queued is not delivered.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// What a forced exit writes to stderr (one `write(2)`, which is async-signal-safe).
const FORCED: &[u8] = b"kotel: second signal: exiting now without flushing; BPF programs \
are detached as the process exits\n";

extern "C" fn on_signal(sig: libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is a static.
        unsafe {
            libc::write(libc::STDERR_FILENO, FORCED.as_ptr().cast(), FORCED.len());
            libc::_exit(128 + sig);
        }
    }
}

/// Installs the handlers (without SA_RESTART, so a blocking poll returns early).
pub fn install() {
    // SAFETY: the handler only touches an atomic, or calls async-signal-safe functions; the
    // sigaction struct is fully initialised before use.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

/// Whether a stop was requested.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
