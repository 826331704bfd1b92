//! The probes a user can ask for, the tracepoints each one needs and the BPF programs that
//! implement it.

use std::fmt;
use std::str::FromStr;

/// One kind of measurement kotel can capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Probe {
    /// `writev(2)` latency and bytes.
    Writev,
    /// Send syscalls that reached `tcp_sendmsg`, with the 4-tuple.
    TcpSend,
    /// Run-queue delay: runnable until running.
    Runqueue,
    /// Off-CPU time: blocked until running again, with stacks.
    Offcpu,
}

impl Probe {
    /// Every probe, in a stable order.
    pub const ALL: [Probe; 4] = [
        Probe::Writev,
        Probe::TcpSend,
        Probe::Runqueue,
        Probe::Offcpu,
    ];

    /// The name used on the command line and in output.
    pub fn name(self) -> &'static str {
        match self {
            Probe::Writev => "writev",
            Probe::TcpSend => "tcp_send",
            Probe::Runqueue => "runqueue",
            Probe::Offcpu => "offcpu",
        }
    }

    /// The `KOTEL_KIND_*` value this probe's events carry.
    pub fn kind(self) -> u8 {
        match self {
            Probe::Writev => crate::abi::kind::WRITEV,
            Probe::TcpSend => crate::abi::kind::TCP_SEND,
            Probe::Runqueue => crate::abi::kind::RUNQUEUE,
            Probe::Offcpu => crate::abi::kind::OFFCPU,
        }
    }

    /// The probe for a `KOTEL_KIND_*` value.
    pub fn from_kind(kind: u8) -> Option<Probe> {
        Probe::ALL.into_iter().find(|p| p.kind() == kind)
    }

    /// Tracepoints (`category/name`) without which this probe cannot run.
    pub fn tracepoints(self) -> &'static [&'static str] {
        match self {
            Probe::Writev => &["raw_syscalls/sys_enter", "raw_syscalls/sys_exit"],
            Probe::TcpSend => &[
                "raw_syscalls/sys_enter",
                "raw_syscalls/sys_exit",
                "tcp/tcp_sendmsg_locked",
            ],
            Probe::Runqueue => &[
                "sched/sched_wakeup",
                "sched/sched_wakeup_new",
                "sched/sched_switch",
            ],
            Probe::Offcpu => &["sched/sched_switch"],
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Probe {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Probe::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown probe '{s}': expected one of writev, tcp_send, runqueue, offcpu")
            })
    }
}

/// A set of probes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeSet(u8);

impl ProbeSet {
    /// Every probe.
    pub fn all() -> Self {
        Probe::ALL.into_iter().collect()
    }

    /// Whether `p` is in the set.
    pub fn contains(self, p: Probe) -> bool {
        self.0 & (1 << p as u8) != 0
    }

    /// Adds `p`.
    pub fn insert(&mut self, p: Probe) {
        self.0 |= 1 << p as u8;
    }

    /// Removes `p`.
    pub fn remove(&mut self, p: Probe) {
        self.0 &= !(1 << p as u8);
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The probes in the set, in [`Probe::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Probe> {
        Probe::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Probe> for ProbeSet {
    fn from_iter<I: IntoIterator<Item = Probe>>(iter: I) -> Self {
        let mut s = ProbeSet::default();
        for p in iter {
            s.insert(p);
        }
        s
    }
}

impl fmt::Display for ProbeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.iter().map(Probe::name).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_kinds_are_distinct() {
        for p in Probe::ALL {
            assert_eq!(p.name().parse::<Probe>().unwrap(), p);
            assert_eq!(Probe::from_kind(p.kind()), Some(p));
        }
        assert!("kprobe".parse::<Probe>().unwrap_err().contains("kprobe"));
    }

    #[test]
    fn sets_hold_what_was_inserted() {
        let mut s: ProbeSet = [Probe::Writev, Probe::Offcpu].into_iter().collect();
        assert!(s.contains(Probe::Writev) && s.contains(Probe::Offcpu));
        assert!(!s.contains(Probe::TcpSend));
        s.remove(Probe::Writev);
        assert_eq!(s.to_string(), "offcpu");
        assert_eq!(ProbeSet::all().iter().count(), 4);
    }
}
