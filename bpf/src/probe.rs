//! The probes a user can ask for, in one table: each probe's name, kind, span and metric names,
//! whether it is on by default, and its hooks, as sets of (tracepoint, program) in order of
//! preference. Preflight picks the first set the running kernel has; the tracer derives what it
//! loads and attaches from the set it got. Adding a probe means one BPF file, one row here and
//! one decode arm.

use std::fmt;
use std::str::FromStr;

/// One kind of measurement kotel can capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Probe {
    /// `writev(2)` latency and bytes.
    Writev,
    /// TCP sends, whatever the system call, with the 4-tuple.
    TcpSend,
    /// Run-queue delay: runnable until running.
    Runqueue,
    /// Off-CPU time: blocked until running again, with stacks.
    Offcpu,
}

/// How a program reaches its tracepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// A BTF-typed raw tracepoint (`tp_btf`): found through the kernel's BTF
    /// (`btf_trace_<name>`), no tracefs needed.
    TpBtf,
    /// A classic tracepoint through perf: found in tracefs (`events/<category>/<name>`), which
    /// must be mounted.
    Tracefs,
}

/// One program on one tracepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    /// The tracepoint, as `category/name` (`sched/sched_switch`).
    pub tracepoint: &'static str,
    /// The BPF program's name in the skeleton.
    pub program: &'static str,
    /// How the program reaches the tracepoint, which decides where preflight looks for it.
    pub attach: Attach,
}

/// One way of implementing a probe: its hooks, in attach order (the closing hook of an
/// interval before its opening one, so no interval is opened that cannot be closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookSet {
    /// Short name, said at start ("socket tracepoints").
    pub name: &'static str,
    /// Every hook of the set; all must exist for the set to be usable.
    pub hooks: &'static [Hook],
    /// Whether every system call on the host runs through a hook of this set (a syscall
    /// tracepoint of any kind puts every task on the kernel's syscall slow path).
    pub taxes_every_syscall: bool,
}

/// Everything kotel knows about one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSpec {
    /// Which probe this row describes.
    pub probe: Probe,
    /// The name used on the command line, in config and output.
    pub name: &'static str,
    /// The `KOTEL_KIND_*` value its events and histograms carry.
    pub kind: u8,
    /// The OTLP span name of its events.
    pub span_name: &'static str,
    /// The OTLP exponential histogram of its durations.
    pub duration_metric: &'static str,
    /// The OTLP counter of its bytes, for probes that move bytes.
    pub bytes_metric: Option<&'static str>,
    /// On when the user names no probes.
    pub default_on: bool,
    /// Its hook sets, in order of preference.
    pub hook_sets: &'static [HookSet],
}

const fn tp_btf(tracepoint: &'static str, program: &'static str) -> Hook {
    Hook {
        tracepoint,
        program,
        attach: Attach::TpBtf,
    }
}

const fn tracefs(tracepoint: &'static str, program: &'static str) -> Hook {
    Hook {
        tracepoint,
        program,
        attach: Attach::Tracefs,
    }
}

/// The raw syscall pair, the fallback of writev and tcp_send (raw_syscalls.bpf.c).
const RAW_SYS_EXIT: Hook = tp_btf("raw_syscalls/sys_exit", "raw_sys_exit");
const RAW_SYS_ENTER: Hook = tp_btf("raw_syscalls/sys_enter", "raw_sys_enter");
/// One program serves both scheduler probes (sched.bpf.c).
const SCHED_SWITCH: Hook = tp_btf("sched/sched_switch", "sched_switch");
/// The end of `__schedule()`, in the switched-in task: closes the intervals of a switch-in the
/// switch tracepoint did not deliver, and takes off-CPU stacks there (sched.bpf.c).
const SCHED_EXIT: Hook = tp_btf("sched/sched_exit_tp", "sched_exit");
const SCHED_WAKEUP: Hook = tp_btf("sched/sched_wakeup", "sched_wakeup");
const SCHED_WAKEUP_NEW: Hook = tp_btf("sched/sched_wakeup_new", "sched_wakeup_new");

/// Every probe, in [`Probe`] order.
pub const PROBES: [ProbeSpec; 4] = [
    ProbeSpec {
        probe: Probe::Writev,
        name: "writev",
        kind: crate::abi::kind::WRITEV,
        span_name: "writev",
        duration_metric: "kotel.writev.duration",
        bytes_metric: Some("kotel.writev.bytes"),
        // Its syscall tracepoints tax every other system call on the host.
        default_on: false,
        hook_sets: &[
            HookSet {
                name: "syscall tracepoints",
                hooks: &[
                    tracefs("syscalls/sys_exit_writev", "writev_exit"),
                    tracefs("syscalls/sys_enter_writev", "writev_enter"),
                ],
                taxes_every_syscall: true,
            },
            HookSet {
                name: "raw_syscalls",
                hooks: &[RAW_SYS_EXIT, RAW_SYS_ENTER],
                taxes_every_syscall: true,
            },
        ],
    },
    ProbeSpec {
        probe: Probe::TcpSend,
        name: "tcp_send",
        kind: crate::abi::kind::TCP_SEND,
        span_name: "tcp_sendmsg",
        duration_metric: "kotel.tcp.send.duration",
        bytes_metric: Some("kotel.tcp.send.bytes"),
        default_on: true,
        hook_sets: &[
            HookSet {
                name: "socket tracepoints",
                hooks: &[
                    tp_btf("sock/sock_send_length", "tcp_send_end"),
                    tp_btf("tcp/tcp_sendmsg_locked", "tcp_send_begin"),
                ],
                taxes_every_syscall: false,
            },
            HookSet {
                name: "raw_syscalls",
                hooks: &[
                    RAW_SYS_EXIT,
                    RAW_SYS_ENTER,
                    tp_btf("tcp/tcp_sendmsg_locked", "tcp_sendmsg_mark"),
                ],
                taxes_every_syscall: true,
            },
        ],
    },
    ProbeSpec {
        probe: Probe::Runqueue,
        name: "runqueue",
        kind: crate::abi::kind::RUNQUEUE,
        span_name: "sched.runqueue",
        duration_metric: "kotel.sched.runqueue.delay",
        bytes_metric: None,
        default_on: true,
        hook_sets: &[
            HookSet {
                name: SCHED_WITH_EXIT,
                hooks: &[SCHED_EXIT, SCHED_SWITCH, SCHED_WAKEUP, SCHED_WAKEUP_NEW],
                taxes_every_syscall: false,
            },
            HookSet {
                name: "scheduler tracepoints",
                hooks: &[SCHED_SWITCH, SCHED_WAKEUP, SCHED_WAKEUP_NEW],
                taxes_every_syscall: false,
            },
        ],
    },
    ProbeSpec {
        probe: Probe::Offcpu,
        name: "offcpu",
        kind: crate::abi::kind::OFFCPU,
        span_name: "sched.offcpu",
        duration_metric: "kotel.sched.offcpu.duration",
        bytes_metric: None,
        default_on: true,
        hook_sets: &[
            HookSet {
                name: SCHED_WITH_EXIT,
                hooks: &[SCHED_EXIT, SCHED_SWITCH],
                taxes_every_syscall: false,
            },
            HookSet {
                // Stacks, when on, at every blocked switch-out.
                name: "scheduler tracepoints",
                hooks: &[SCHED_SWITCH],
                taxes_every_syscall: false,
            },
        ],
    },
];

/// The scheduler hook set with `sched_exit_tp`, in the switched-in task, beside the switch: it
/// closes the intervals of a switch-in the switch tracepoint never delivered, and off-CPU stacks
/// are taken there, only for the intervals that go to userspace. Without it (kernels before
/// 6.16), off-CPU stacks are taken at every blocked switch-out, and an interval whose switch-in
/// was not delivered is lost and counted.
pub const SCHED_WITH_EXIT: &str = "scheduler tracepoints + sched_exit_tp";

/// Hooks of kotel itself rather than of a probe: a process's exec (sent only when userspace
/// asks for lifecycle records) and exit (always: it retires the process's histogram slots).
pub const LIFECYCLE_EXEC: Hook = tp_btf("sched/sched_process_exec", "sched_process_exec");
/// See [`LIFECYCLE_EXEC`].
pub const LIFECYCLE_EXIT: Hook = tp_btf("sched/sched_process_exit", "sched_process_exit");

/// Every program the table names (each once): every hook set's, and kotel's lifecycle hooks.
pub fn table_programs() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    let hooks = PROBES
        .iter()
        .flat_map(|spec| spec.hook_sets.iter())
        .flat_map(|set| set.hooks.iter())
        .chain([&LIFECYCLE_EXEC, &LIFECYCLE_EXIT]);
    for h in hooks {
        if !out.contains(&h.program) {
            out.push(h.program);
        }
    }
    out
}

impl Probe {
    /// Every probe, in a stable order.
    pub const ALL: [Probe; 4] = [
        Probe::Writev,
        Probe::TcpSend,
        Probe::Runqueue,
        Probe::Offcpu,
    ];

    /// This probe's row of [`PROBES`].
    pub fn spec(self) -> &'static ProbeSpec {
        &PROBES[self as usize]
    }

    /// The name used on the command line and in output.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The `KOTEL_KIND_*` value this probe's events carry.
    pub fn kind(self) -> u8 {
        self.spec().kind
    }

    /// The probe for a `KOTEL_KIND_*` value.
    pub fn from_kind(kind: u8) -> Option<Probe> {
        Probe::ALL.into_iter().find(|p| p.kind() == kind)
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
                format!(
                    "unknown probe '{s}': expected one of writev, tcp_send, runqueue, offcpu \
                     (or all)"
                )
            })
    }
}

/// Parses probe names, where `all` stands for every probe; duplicates are dropped, the order
/// kept, surrounding spaces ignored. An unknown name is an error whose message lists the valid
/// ones.
pub fn parse_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Vec<Probe>, String> {
    let mut out: Vec<Probe> = Vec::new();
    for name in names {
        let name = name.trim();
        let found: Vec<Probe> = if name == "all" {
            Probe::ALL.to_vec()
        } else {
            vec![name.parse()?]
        };
        for p in found {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// The default probes' names, comma-separated, as the command line takes them.
pub const DEFAULT_PROBES: &str = "tcp_send,runqueue,offcpu";

/// A set of probes, as a bit mask: `Copy`, and iterated in [`Probe::ALL`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeSet(u8);

impl ProbeSet {
    /// Every probe.
    pub fn all() -> Self {
        Probe::ALL.into_iter().collect()
    }

    /// The probes on when none are named: those whose hooks tax no other system call.
    pub fn defaults() -> Self {
        PROBES
            .iter()
            .filter(|s| s.default_on)
            .map(|s| s.probe)
            .collect()
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

/// Which hook set each running probe got, as preflight chose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookPlan {
    chosen: Vec<(Probe, &'static HookSet)>,
}

impl HookPlan {
    /// Records that `probe` runs on `set`.
    pub fn choose(&mut self, probe: Probe, set: &'static HookSet) {
        self.chosen.retain(|(p, _)| *p != probe);
        self.chosen.push((probe, set));
        self.chosen.sort_by_key(|(p, _)| *p);
    }

    /// A copy of this plan with only the probes in `keep`.
    pub fn only(&self, keep: ProbeSet) -> HookPlan {
        HookPlan {
            chosen: self
                .chosen
                .iter()
                .copied()
                .filter(|(p, _)| keep.contains(*p))
                .collect(),
        }
    }

    /// The probes in the plan.
    pub fn probes(&self) -> ProbeSet {
        self.chosen.iter().map(|(p, _)| *p).collect()
    }

    /// The hook set `probe` got, if it is in the plan.
    pub fn set_of(&self, probe: Probe) -> Option<&'static HookSet> {
        self.chosen
            .iter()
            .find_map(|(p, s)| (*p == probe).then_some(*s))
    }

    /// Whether `probe` runs on the set named `name`.
    pub fn uses(&self, probe: Probe, name: &str) -> bool {
        self.set_of(probe).is_some_and(|s| s.name == name)
    }

    /// Every (probe, hook set) in probe order.
    pub fn iter(&self) -> impl Iterator<Item = (Probe, &'static HookSet)> + '_ {
        self.chosen.iter().copied()
    }

    /// The hooks to attach, each once, in attach order: probe by probe from the last, each
    /// set in its own order (closing hooks first). A hook shared by two probes (the scheduler
    /// switch, the raw syscall pair) comes where the later probe puts it, so off-CPU's
    /// `sched_exit_tp` is attached before the switch that hands it work. Detach in reverse.
    pub fn hooks(&self) -> Vec<Hook> {
        let mut out: Vec<Hook> = Vec::new();
        for (_, set) in self.chosen.iter().rev() {
            for h in set.hooks {
                if !out.iter().any(|o| o.program == h.program) {
                    out.push(*h);
                }
            }
        }
        out
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
            assert_eq!(p.spec().probe, p, "PROBES is in Probe order");
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

    #[test]
    fn all_expands_and_the_default_list_is_the_table_s() {
        assert_eq!(parse_names(["all"]).unwrap(), Probe::ALL.to_vec());
        assert_eq!(
            parse_names(["offcpu", "all"]).unwrap()[0],
            Probe::Offcpu,
            "order kept, duplicates dropped"
        );
        assert_eq!(parse_names(["offcpu", "all"]).unwrap().len(), 4);
        let defaults: ProbeSet = parse_names(DEFAULT_PROBES.split(','))
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(defaults, ProbeSet::defaults());
        assert!(parse_names(["all", "kprobe"]).is_err());
    }

    #[test]
    fn no_default_probe_taxes_every_syscall() {
        let defaults = ProbeSet::defaults();
        assert!(!defaults.is_empty());
        for p in defaults.iter() {
            assert!(
                !p.spec().hook_sets[0].taxes_every_syscall,
                "default probe {p} would tax every system call on its preferred hooks"
            );
        }
    }

    /// Every program in the BPF object is named by the table (a probe's hook or kotel's
    /// lifecycle hooks), every program the table names is in the object, and each program sits
    /// on one tracepoint and serves exactly one probe, but for the two hooks shared on purpose:
    /// the scheduler switch (run queue and off-CPU) and the raw syscall pair (the fallback of
    /// writev and tcp_send).
    #[test]
    fn the_table_names_every_program_of_the_object() {
        use libbpf_rs::skel::{OpenSkel, SkelBuilder};
        let mut storage = std::mem::MaybeUninit::uninit();
        let open = crate::skel::KotelSkelBuilder::default()
            .open(&mut storage)
            .expect("open the BPF object (no privileges needed)");
        let mut in_object: Vec<String> = open
            .open_object()
            .progs()
            .map(|p| p.name().to_string_lossy().into_owned())
            .collect();
        in_object.sort();

        let mut owners: std::collections::BTreeMap<&str, (Vec<&str>, &str)> = Default::default();
        for spec in PROBES {
            for set in spec.hook_sets {
                for h in set.hooks {
                    let e = owners
                        .entry(h.program)
                        .or_insert((Vec::new(), h.tracepoint));
                    assert_eq!(e.1, h.tracepoint, "{} sits on one tracepoint", h.program);
                    if !e.0.contains(&spec.name) {
                        e.0.push(spec.name);
                    }
                }
            }
        }
        for h in [LIFECYCLE_EXEC, LIFECYCLE_EXIT] {
            assert!(owners
                .insert(h.program, (vec!["lifecycle"], h.tracepoint))
                .is_none());
        }
        let in_table: Vec<String> = owners.keys().map(|k| k.to_string()).collect();
        assert_eq!(in_object, in_table, "the object's programs vs the table's");
        let mut listed = table_programs();
        listed.sort_unstable();
        assert_eq!(in_object, listed, "table_programs lists them all");
        for (program, (probes, _)) in &owners {
            let shared = matches!(
                *program,
                "sched_switch" | "sched_exit" | "raw_sys_enter" | "raw_sys_exit"
            );
            assert_eq!(
                probes.len(),
                if shared { 2 } else { 1 },
                "{program} serves {probes:?}"
            );
        }
    }

    #[test]
    fn a_plan_attaches_a_shared_hook_once_and_closing_hooks_first() {
        let mut plan = HookPlan::default();
        plan.choose(Probe::Offcpu, &Probe::Offcpu.spec().hook_sets[0]);
        plan.choose(Probe::Runqueue, &Probe::Runqueue.spec().hook_sets[0]);
        plan.choose(Probe::Writev, &Probe::Writev.spec().hook_sets[1]);
        plan.choose(Probe::TcpSend, &Probe::TcpSend.spec().hook_sets[1]);
        let programs: Vec<_> = plan.hooks().iter().map(|h| h.program).collect();
        assert_eq!(
            programs,
            [
                "sched_exit",
                "sched_switch",
                "sched_wakeup",
                "sched_wakeup_new",
                "raw_sys_exit",
                "raw_sys_enter",
                "tcp_sendmsg_mark",
            ]
        );
        assert!(plan.uses(Probe::Writev, "raw_syscalls"));
        assert_eq!(
            plan.only([Probe::Offcpu].into_iter().collect())
                .hooks()
                .len(),
            2
        );
    }
}
