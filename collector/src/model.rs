//! Owned domain types for what the kernel measured; raw ABI structs never get past `decode`.

use std::fmt;
use std::net::SocketAddr;

use kotel_bpf::Probe;

/// A thread name as the kernel keeps it: up to 15 bytes, no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm {
    bytes: [u8; 16],
    len: u8,
}

impl Comm {
    /// From the kernel's NUL-padded `comm` bytes.
    pub fn from_kernel(raw: &[u8]) -> Self {
        let mut bytes = [0u8; 16];
        let len = raw
            .iter()
            .take(15)
            .position(|&b| b == 0)
            .unwrap_or(raw.len().min(15));
        bytes[..len].copy_from_slice(&raw[..len]);
        Comm {
            bytes,
            len: len as u8,
        }
    }

    /// The name, with invalid UTF-8 replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.bytes[..usize::from(self.len)]).into_owned()
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

/// How a thread waited while it was off-CPU, from its task state when it switched out (the
/// kernel's `enum kotel_offcpu_state`; `bpf/src/bpf/kotel.h` says which task state goes where).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OffcpuState {
    /// An idle wait: interruptible sleep (an idle `epoll_wait`, a pool thread waiting for
    /// work, `nanosleep`), and `TASK_IDLE`, stopped, traced, parked and frozen tasks.
    Interruptible,
    /// Blocked on a resource: uninterruptible sleep (disk I/O, kernel locks, `vfork`).
    Uninterruptible,
}

impl OffcpuState {
    /// The name kotel writes: the value of `kotel.offcpu.state` and of `state` in JSON lines.
    pub fn name(self) -> &'static str {
        match self {
            OffcpuState::Interruptible => "interruptible",
            OffcpuState::Uninterruptible => "uninterruptible",
        }
    }
}

impl fmt::Display for OffcpuState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One interval the kernel timed at or above the span threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEvent {
    /// Which probe measured it.
    pub kind: Probe,
    /// Process (thread group) id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub comm: Comm,
    /// CPU where the interval ended.
    pub cpu: u32,
    /// Start, in Unix nanoseconds.
    pub start_unix_nano: u64,
    /// Length in nanoseconds.
    pub duration_ns: u64,
    /// Bytes written or sent, for writev and tcp_send calls that succeeded.
    pub bytes: Option<u64>,
    /// errno of a writev or send that failed.
    pub errno: Option<i32>,
    /// File descriptor, for writev and tcp_send.
    pub fd: Option<i32>,
    /// iovec count, for writev.
    pub iovcnt: Option<u32>,
    /// Local address of a TCP send.
    pub local: Option<SocketAddr>,
    /// Peer address of a TCP send.
    pub peer: Option<SocketAddr>,
    /// Kernel stack id: of an off-CPU interval, or of a slow call at its end.
    pub kernel_stack_id: Option<i32>,
    /// User stack id: of an off-CPU interval, or of a slow call at its end.
    pub user_stack_id: Option<i32>,
    /// How the thread waited, for off-CPU events.
    pub offcpu_state: Option<OffcpuState>,
}

/// An OTLP base-2 exponential histogram of one process's durations for one probe (for off-CPU
/// time: for one [`OffcpuState`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Which probe.
    pub kind: Probe,
    /// The process.
    pub pid: u32,
    /// Off-CPU time is counted per state, in two histograms; `None` for the other probes.
    pub offcpu_state: Option<OffcpuState>,
    /// Number of events.
    pub count: u64,
    /// Sum of durations in nanoseconds.
    pub sum_ns: u64,
    /// Largest duration in nanoseconds.
    pub max_ns: u64,
    /// Events of exactly zero length.
    pub zero_count: u64,
    /// Sum of bytes (writev, tcp_send).
    pub bytes: u64,
    /// Values too large for the bucket table, counted in its last bucket.
    pub clamped: u64,
    /// OTLP scale.
    pub scale: i32,
    /// OTLP index of `bucket_counts[0]`.
    pub offset: i32,
    /// Positive bucket counts from `offset` on, trimmed of empty buckets at both ends.
    pub bucket_counts: Vec<u64>,
}

impl Histogram {
    /// What tells its series apart: process, probe and, for off-CPU time, state. Also the
    /// order in which summaries list histograms.
    pub fn series(&self) -> (u32, Probe, Option<OffcpuState>) {
        (self.pid, self.kind, self.offcpu_state)
    }
}

#[cfg(test)]
impl KernelEvent {
    /// For tests: an event of `kind` by thread `tid` of `pid`, without sizes, sockets or
    /// stacks.
    pub(crate) fn sample(kind: Probe, pid: u32, tid: u32, start: u64, duration_ns: u64) -> Self {
        KernelEvent {
            kind,
            pid,
            tid,
            comm: Comm::default(),
            cpu: 0,
            start_unix_nano: start,
            duration_ns,
            bytes: None,
            errno: None,
            fd: None,
            iovcnt: None,
            local: None,
            peer: None,
            kernel_stack_id: None,
            user_stack_id: None,
            offcpu_state: None,
        }
    }
}

#[cfg(test)]
impl Histogram {
    /// For tests: the histogram of `values` (ns) at `scale`, each put in its bucket through the
    /// kernel's table, built directly (not through `expo::merge`, which tests compare with it).
    pub(crate) fn of(kind: Probe, pid: u32, scale: i32, values: &[u64]) -> Histogram {
        let table = kotel_bpf::buckets::BucketTable::new(scale).expect("a supported scale");
        let indexes: Vec<i32> = values
            .iter()
            .filter(|&&v| v > 0)
            .map(|&v| table.index_of(v))
            .collect();
        let (offset, bucket_counts) = match (indexes.iter().min(), indexes.iter().max()) {
            (Some(&lo), Some(&hi)) => {
                let mut counts = vec![0u64; (hi - lo + 1) as usize];
                for i in &indexes {
                    counts[(i - lo) as usize] += 1;
                }
                (lo, counts)
            }
            _ => (0, Vec::new()),
        };
        Histogram {
            kind,
            pid,
            offcpu_state: None,
            count: values.len() as u64,
            sum_ns: values.iter().sum(),
            max_ns: values.iter().copied().max().unwrap_or(0),
            zero_count: values.iter().filter(|&&v| v == 0).count() as u64,
            bytes: 0,
            clamped: 0,
            scale,
            offset,
            bucket_counts,
        }
    }
}
