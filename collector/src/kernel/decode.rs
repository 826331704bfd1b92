//! Turns raw ring-buffer records and histogram snapshots into owned domain types. The only
//! place that reads kernel ABI structs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use kotel_bpf::abi::{self, RawEvent};
use kotel_bpf::buckets::BucketTable;
use kotel_bpf::{HistogramSnapshot, Probe};

use crate::kernel::clock::Clock;
use crate::model::{Comm, Histogram, KernelEvent, OffcpuState};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record is not one `kotel_event`.
    #[error("ring-buffer record of {0} bytes, expected {size}", size = abi::EVENT_SIZE)]
    Size(usize),
    /// The kind is not one kotel knows.
    #[error("unknown event kind {0}")]
    Kind(u8),
    /// An off-CPU event whose state is not one kotel knows.
    #[error("unknown off-CPU state {0}")]
    OffcpuState(u8),
}

/// One decoded ring-buffer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A timed kernel event at or above the threshold.
    Event(KernelEvent),
    /// The process called execve: its cached metadata is stale.
    Exec {
        /// The process.
        pid: u32,
    },
    /// The process exited.
    Exit {
        /// The process.
        pid: u32,
    },
}

/// Decodes one ring-buffer record.
pub fn decode_record(bytes: &[u8], clock: &Clock) -> Result<Record, DecodeError> {
    let raw = abi::event_from_bytes(bytes).ok_or(DecodeError::Size(bytes.len()))?;
    match raw.kind {
        abi::kind::EXEC => Ok(Record::Exec { pid: raw.pid }),
        abi::kind::EXIT => Ok(Record::Exit { pid: raw.pid }),
        _ => event_from_raw(&raw, clock).map(Record::Event),
    }
}

/// Decodes one ring-buffer record that must be a timed event.
pub fn decode_event(bytes: &[u8], clock: &Clock) -> Result<KernelEvent, DecodeError> {
    let raw = abi::event_from_bytes(bytes).ok_or(DecodeError::Size(bytes.len()))?;
    event_from_raw(&raw, clock)
}

fn event_from_raw(raw: &RawEvent, clock: &Clock) -> Result<KernelEvent, DecodeError> {
    let kind = Probe::from_kind(raw.kind).ok_or(DecodeError::Kind(raw.kind))?;
    let syscall = matches!(kind, Probe::Writev | Probe::TcpSend);
    let (bytes, errno) = match (syscall, raw.bytes) {
        (false, _) => (None, None),
        (true, n) if n >= 0 => (Some(n as u64), None),
        // checked: a corrupt i64::MIN has no negation.
        (true, n) => (None, n.checked_neg().and_then(|e| i32::try_from(e).ok())),
    };
    let (local, peer) = match kind {
        Probe::TcpSend => (
            socket_addr(raw.family, &raw.laddr, raw.lport),
            socket_addr(raw.family, &raw.daddr, raw.dport),
        ),
        _ => (None, None),
    };
    let offcpu_state = match kind {
        Probe::Offcpu => {
            Some(state_of(raw.offcpu_state).ok_or(DecodeError::OffcpuState(raw.offcpu_state))?)
        }
        _ => None,
    };
    let comm_bytes: [u8; 16] = raw.comm.map(|c| c as u8);
    Ok(KernelEvent {
        kind,
        pid: raw.pid,
        tid: raw.tid,
        comm: Comm::from_kernel(&comm_bytes),
        cpu: raw.cpu,
        start_unix_nano: clock.to_unix_nanos(raw.start_ns),
        duration_ns: raw.duration_ns,
        bytes,
        errno,
        // The socket-tracepoint TCP probe knows no fd.
        fd: (syscall && raw.fd >= 0).then_some(raw.fd),
        iovcnt: (kind == Probe::Writev).then_some(raw.iovcnt),
        local,
        peer,
        kernel_stack_id: (raw.kstack_id >= 0).then_some(raw.kstack_id),
        user_stack_id: (raw.ustack_id >= 0).then_some(raw.ustack_id),
        offcpu_state,
    })
}

/// The state of an off-CPU event's `offcpu_state` byte; `None` for a value that is none.
fn state_of(raw: u8) -> Option<OffcpuState> {
    match raw {
        abi::offcpu_state::INTERRUPTIBLE => Some(OffcpuState::Interruptible),
        abi::offcpu_state::UNINTERRUPTIBLE => Some(OffcpuState::Uninterruptible),
        _ => None,
    }
}

fn socket_addr(family: u16, addr: &[u8; 16], port: u16) -> Option<SocketAddr> {
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(*addr)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Converts one in-kernel histogram to OTLP shape: bucket slot `i` of the kernel table is OTLP
/// index `table.offset() + i`; empty buckets at either end are trimmed. The kernel's off-CPU
/// series are the probe's two states. `None` for an unknown kind.
pub fn decode_histogram(snap: &HistogramSnapshot, table: &BucketTable) -> Option<Histogram> {
    let (kind, offcpu_state) = match snap.kind {
        abi::kind::OFFCPU_SLEEP => (Probe::Offcpu, Some(OffcpuState::Interruptible)),
        abi::kind::OFFCPU => (Probe::Offcpu, Some(OffcpuState::Uninterruptible)),
        k => (Probe::from_kind(k)?, None),
    };
    let raw = &snap.raw;
    let used = &raw.buckets[..table.bounds().len().min(raw.buckets.len())];
    let first = used.iter().position(|&c| c != 0);
    let (offset, bucket_counts) = match first {
        Some(first) => {
            let last = used.iter().rposition(|&c| c != 0).unwrap_or(first);
            (table.offset() + first as i32, used[first..=last].to_vec())
        }
        None => (0, Vec::new()),
    };
    Some(Histogram {
        kind,
        pid: snap.pid,
        offcpu_state,
        // Saturating: counts from a corrupt or hostile map must not wrap (or panic).
        count: used
            .iter()
            .fold(raw.zero_count, |acc, &c| acc.saturating_add(c)),
        sum_ns: raw.sum_ns,
        max_ns: raw.max_ns,
        zero_count: raw.zero_count,
        bytes: raw.bytes,
        clamped: raw.clamped,
        scale: table.scale(),
        offset,
        bucket_counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw_event(kind: u8) -> RawEvent {
        let mut e = RawEvent {
            kind,
            start_ns: 1_000,
            duration_ns: 5_000,
            bytes: 42,
            pid: 7,
            tid: 8,
            cpu: 1,
            fd: 3,
            iovcnt: 2,
            kstack_id: -1,
            ustack_id: -1,
            ..Default::default()
        };
        e.comm[..4].copy_from_slice(&[b'c' as i8, b'u' as i8, b'r' as i8, b'l' as i8]);
        e
    }

    fn bytes_of(e: &RawEvent) -> Vec<u8> {
        // SAFETY: RawEvent is plain old data without padding; reading its bytes is sound.
        unsafe { std::slice::from_raw_parts((e as *const RawEvent).cast::<u8>(), abi::EVENT_SIZE) }
            .to_vec()
    }

    #[test]
    fn writev_record_decodes_with_its_fields() {
        let clock = Clock::with_offset(1_000_000);
        let ev = decode_event(&bytes_of(&raw_event(abi::kind::WRITEV)), &clock).unwrap();
        assert_eq!(ev.kind, Probe::Writev);
        assert_eq!((ev.pid, ev.tid, ev.cpu), (7, 8, 1));
        assert_eq!(ev.start_unix_nano, 1_001_000);
        assert_eq!((ev.bytes, ev.fd, ev.iovcnt), (Some(42), Some(3), Some(2)));
        assert_eq!(ev.comm.to_string_lossy(), "curl");
        assert_eq!((ev.local, ev.peer), (None, None));
    }

    #[test]
    fn tcp_addresses_decode_for_both_families() {
        let clock = Clock::with_offset(0);
        let mut e = raw_event(abi::kind::TCP_SEND);
        e.family = AF_INET;
        e.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        e.lport = 40000;
        e.dport = 443;
        let ev = decode_event(&bytes_of(&e), &clock).unwrap();
        assert_eq!(ev.local, Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!(ev.peer, Some("10.1.2.3:443".parse().unwrap()));
        assert_eq!(ev.iovcnt, None);

        e.family = AF_INET6;
        e.laddr = Ipv6Addr::LOCALHOST.octets();
        e.daddr = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        let ev = decode_event(&bytes_of(&e), &clock).unwrap();
        assert_eq!(ev.local, Some("[::1]:40000".parse().unwrap()));
        assert_eq!(ev.peer, Some("[2001:db8::1]:443".parse().unwrap()));
    }

    #[test]
    fn a_send_without_an_fd_has_none() {
        // The socket-tracepoint TCP probe knows the socket, not the fd: it sends -1.
        let mut e = raw_event(abi::kind::TCP_SEND);
        e.fd = -1;
        let ev = decode_event(&bytes_of(&e), &Clock::with_offset(0)).unwrap();
        assert_eq!((ev.fd, ev.bytes), (None, Some(42)));
    }

    #[test]
    fn failed_syscalls_carry_errno_not_bytes() {
        let mut e = raw_event(abi::kind::WRITEV);
        e.bytes = -11;
        let ev = decode_event(&bytes_of(&e), &Clock::with_offset(0)).unwrap();
        assert_eq!((ev.bytes, ev.errno), (None, Some(11)));
    }

    #[test]
    fn sched_events_have_no_syscall_fields() {
        let mut e = raw_event(abi::kind::OFFCPU);
        e.kstack_id = 12;
        e.offcpu_state = abi::offcpu_state::UNINTERRUPTIBLE;
        let ev = decode_event(&bytes_of(&e), &Clock::with_offset(0)).unwrap();
        assert_eq!((ev.bytes, ev.fd, ev.iovcnt), (None, None, None));
        assert_eq!((ev.kernel_stack_id, ev.user_stack_id), (Some(12), None));
    }

    #[test]
    fn offcpu_events_carry_their_state_and_only_they() {
        let clock = Clock::with_offset(0);
        let mut e = raw_event(abi::kind::OFFCPU);
        for (byte, state) in [
            (abi::offcpu_state::INTERRUPTIBLE, OffcpuState::Interruptible),
            (
                abi::offcpu_state::UNINTERRUPTIBLE,
                OffcpuState::Uninterruptible,
            ),
        ] {
            e.offcpu_state = byte;
            let ev = decode_event(&bytes_of(&e), &clock).unwrap();
            assert_eq!(ev.offcpu_state, Some(state));
        }
        // An off-CPU event always has a state: none, or one kotel does not know, is corrupt.
        for byte in [abi::offcpu_state::NONE, 3, 255] {
            e.offcpu_state = byte;
            assert_eq!(
                decode_event(&bytes_of(&e), &clock),
                Err(DecodeError::OffcpuState(byte))
            );
        }
        // Other kinds ignore the byte.
        let mut r = raw_event(abi::kind::RUNQUEUE);
        r.offcpu_state = abi::offcpu_state::INTERRUPTIBLE;
        assert_eq!(
            decode_event(&bytes_of(&r), &clock).unwrap().offcpu_state,
            None
        );
    }

    #[test]
    fn lifecycle_records_decode_to_their_pid() {
        let clock = Clock::with_offset(0);
        let exec = decode_record(&bytes_of(&raw_event(abi::kind::EXEC)), &clock).unwrap();
        assert_eq!(exec, Record::Exec { pid: 7 });
        let exit = decode_record(&bytes_of(&raw_event(abi::kind::EXIT)), &clock).unwrap();
        assert_eq!(exit, Record::Exit { pid: 7 });
        let ev = decode_record(&bytes_of(&raw_event(abi::kind::RUNQUEUE)), &clock).unwrap();
        assert!(matches!(ev, Record::Event(e) if e.kind == Probe::Runqueue));
    }

    #[test]
    fn bad_records_are_errors() {
        let clock = Clock::with_offset(0);
        assert_eq!(decode_event(&[0; 3], &clock), Err(DecodeError::Size(3)));
        assert_eq!(
            decode_event(&bytes_of(&raw_event(9)), &clock),
            Err(DecodeError::Kind(9))
        );
    }

    #[test]
    fn histograms_are_trimmed_and_offset() {
        let table = BucketTable::new(3).unwrap();
        let mut raw = kotel_bpf::abi::RawHistogram {
            sum_ns: 3_000_100,
            zero_count: 1,
            ..Default::default()
        };
        let slot_us = table.slot_of(1_000);
        let slot_ms = table.slot_of(1_500_000);
        raw.buckets[slot_us] = 2;
        raw.buckets[slot_ms] = 1;
        let snap = HistogramSnapshot {
            pid: 5,
            kind: abi::kind::RUNQUEUE,
            raw,
        };
        let h = decode_histogram(&snap, &table).unwrap();
        assert_eq!((h.kind, h.offcpu_state), (Probe::Runqueue, None));
        assert_eq!(h.offset, table.index_of(1_000));
        assert_eq!(h.bucket_counts.len(), slot_ms - slot_us + 1);
        assert_eq!(h.bucket_counts.iter().sum::<u64>(), 3);
        assert_eq!(h.count, 4, "the zero-length event counts too");
        assert_eq!(*h.bucket_counts.last().unwrap(), 1);
    }

    #[test]
    fn the_two_offcpu_series_are_the_two_states() {
        let table = BucketTable::new(3).unwrap();
        let mut raw = kotel_bpf::abi::RawHistogram::default();
        raw.buckets[table.slot_of(2_000_000)] = 1;
        let of = |kind| {
            let h = decode_histogram(&HistogramSnapshot { pid: 5, kind, raw }, &table).unwrap();
            (h.kind, h.offcpu_state, h.count)
        };
        assert_eq!(
            of(abi::kind::OFFCPU),
            (Probe::Offcpu, Some(OffcpuState::Uninterruptible), 1)
        );
        assert_eq!(
            of(abi::kind::OFFCPU_SLEEP),
            (Probe::Offcpu, Some(OffcpuState::Interruptible), 1)
        );
        let beyond = HistogramSnapshot {
            pid: 5,
            kind: abi::kind::HIST_KINDS as u8,
            raw,
        };
        assert!(decode_histogram(&beyond, &table).is_none());
    }

    /// Found by the `decode` fuzz target: a return value of `i64::MIN` overflowed its
    /// negation into an errno.
    #[test]
    fn the_most_negative_return_value_is_no_errno() {
        let mut e = raw_event(abi::kind::WRITEV);
        e.bytes = i64::MIN;
        let ev = decode_event(&bytes_of(&e), &Clock::with_offset(0)).unwrap();
        assert_eq!((ev.bytes, ev.errno), (None, None));
    }

    /// Found by the `decode` fuzz target: bucket counts whose sum passes `u64::MAX` overflowed
    /// (a panic with overflow checks, a wrong count without).
    #[test]
    fn histogram_counts_saturate() {
        let table = BucketTable::new(3).unwrap();
        let mut raw = kotel_bpf::abi::RawHistogram {
            zero_count: 1,
            ..Default::default()
        };
        raw.buckets[10] = u64::MAX;
        raw.buckets[11] = 5;
        let snap = HistogramSnapshot {
            pid: 1,
            kind: abi::kind::WRITEV,
            raw,
        };
        let h = decode_histogram(&snap, &table).unwrap();
        assert_eq!(h.count, u64::MAX);
        assert_eq!(h.bucket_counts, vec![u64::MAX, 5]);
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_event(&bytes, &Clock::with_offset(i128::from(i64::MAX)));
        }

        /// Arbitrary records of the right size decode or are refused for their kind alone, or
        /// (off-CPU) for their state.
        #[test]
        fn right_sized_records_decode_unless_kind_unknown(bytes in proptest::collection::vec(any::<u8>(), abi::EVENT_SIZE)) {
            let (kind, state) = (bytes[58], bytes[59]);
            match decode_event(&bytes, &Clock::with_offset(0)) {
                Ok(ev) => {
                    prop_assert_eq!(ev.kind.kind(), kind);
                    prop_assert_eq!(ev.offcpu_state.is_some(), kind == abi::kind::OFFCPU);
                }
                Err(DecodeError::OffcpuState(s)) => {
                    prop_assert_eq!(kind, abi::kind::OFFCPU);
                    prop_assert_eq!(s, state);
                }
                Err(e) => prop_assert_eq!(e, DecodeError::Kind(kind)),
            }
        }
    }
}
