//! Ring-buffer records for the benchmarks, laid out exactly as the kernel writes them.

use kotel_bpf::abi::{self, RawEvent};

/// The bytes of one `kotel_event`: a TCP-looking record of `kind` for process `pid`, thread
/// `tid`, `duration_ns` long, starting at monotonic `start_ns`.
pub fn record(kind: u8, pid: u32, tid: u32, start_ns: u64, duration_ns: u64) -> Vec<u8> {
    let mut e = RawEvent {
        kind,
        start_ns,
        duration_ns,
        bytes: 1448,
        pid,
        tid,
        cpu: tid % 2,
        fd: 7,
        iovcnt: 2,
        kstack_id: -1,
        ustack_id: -1,
        family: 2,
        lport: 40_000,
        dport: 443,
        // An off-CPU record always says how its thread waited; the other kinds ignore it.
        offcpu_state: abi::offcpu_state::UNINTERRUPTIBLE,
        ..Default::default()
    };
    e.laddr[..4].copy_from_slice(&[10, 0, 0, 2]);
    e.daddr[..4].copy_from_slice(&[10, 0, 0, 3]);
    for (d, s) in e.comm.iter_mut().zip(b"bench-worker") {
        *d = *s as i8;
    }
    // SAFETY: RawEvent is plain old data without padding.
    unsafe { std::slice::from_raw_parts((&e as *const RawEvent).cast::<u8>(), abi::EVENT_SIZE) }
        .to_vec()
}
