//! Checks made before any BPF object is opened: privileges, kernel BTF, which tracepoints the
//! running kernel has, and the memlock limit.

use std::path::Path;

use libbpf_rs::btf::types::Typedef;
use libbpf_rs::Btf;

use std::path::PathBuf;

use crate::probe::{Attach, Hook, HookPlan, HookSet};
use crate::{LoadError, Probe, ProbeSet};

/// Where the running kernel publishes its BTF.
pub const SYSFS_BTF: &str = "/sys/kernel/btf/vmlinux";

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails unless the effective capability set allows loading tracing programs: CAP_BPF and
/// CAP_PERFMON, or CAP_SYS_ADMIN (which implies both). The error,
/// [`LoadError::Privileges`], names the missing capabilities and the `perf_event_paranoid`
/// level; an unreadable `/proc/self/status` counts as no capabilities.
pub fn check_privileges() -> Result<(), LoadError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = effective_caps(&status).unwrap_or(0);
    match missing_caps(effective) {
        None => Ok(()),
        Some(mut missing) => {
            if effective & (1u64 << CAP_PERFMON) == 0 {
                let level = std::fs::read_to_string(PERF_EVENT_PARANOID).ok();
                missing.push_str(&paranoid_note(level.as_deref()));
            }
            Err(LoadError::Privileges { missing })
        }
    }
}

/// The sysctl that limits perf events (and, on some kernels, tracing) for processes without
/// CAP_PERFMON.
pub const PERF_EVENT_PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

/// Why CAP_PERFMON cannot be done without, given the `perf_event_paranoid` level: kotel opens
/// no perf events, and the kernel checks CAP_PERFMON for tracing programs at every level, so no
/// level makes up for it; a level above 2 (Debian's and Android's "no perf events at all
/// without the capability") is named so an administrator sees both knobs.
pub fn paranoid_note(level: Option<&str>) -> String {
    match level.map(str::trim).and_then(|l| l.parse::<i32>().ok()) {
        Some(l) if l > 2 => format!(
            " (kernel.perf_event_paranoid is {l}, too high for anything but CAP_PERFMON or \
             CAP_SYS_ADMIN; kotel needs the capability at any level)"
        ),
        Some(l) => format!(
            " (kernel.perf_event_paranoid is {l}; tracing programs need CAP_PERFMON at any level)"
        ),
        None => String::new(),
    }
}

/// The `CapEff` bitmask (bit `n` is capability `n`) from `/proc/<pid>/status` text; `None` when
/// the line is missing or not hexadecimal.
pub fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Names of the capabilities `effective` lacks for BPF tracing, or `None` when it has them.
pub fn missing_caps(effective: u64) -> Option<String> {
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return None;
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    Some(missing.join(", "))
}

/// Fails with [`LoadError::NoBtf`], whose message says which kernel option kotel needs, when
/// `btf_path` does not exist.
pub fn check_btf(btf_path: &Path) -> Result<(), LoadError> {
    if btf_path.exists() {
        Ok(())
    } else {
        Err(LoadError::NoBtf {
            path: btf_path.to_path_buf(),
        })
    }
}

/// Where tracefs is looked for, in libbpf's order: the debugfs mount first, then tracefs.
pub const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/debug/tracing", "/sys/kernel/tracing"];

/// What the running kernel offers for tracepoints: its BTF (for `tp_btf` programs) and its
/// tracefs (for classic tracepoints).
pub struct KernelHooks {
    btf: Btf<'static>,
    tracefs: Vec<PathBuf>,
}

impl KernelHooks {
    /// Reads the kernel BTF at `btf_path`; classic tracepoints are looked up under `tracefs`
    /// (normally [`TRACEFS_ROOTS`]). Fails with [`LoadError::Libbpf`] when the BTF cannot be
    /// read or parsed.
    pub fn read(btf_path: &Path, tracefs: Vec<PathBuf>) -> Result<KernelHooks, LoadError> {
        let btf = Btf::from_path(btf_path).map_err(LoadError::libbpf("reading kernel BTF"))?;
        Ok(KernelHooks { btf, tracefs })
    }

    /// Whether the kernel has `hook`'s tracepoint, reachable the way the hook attaches.
    pub fn has(&self, hook: &Hook) -> bool {
        let (category, name) = hook
            .tracepoint
            .split_once('/')
            .unwrap_or(("", hook.tracepoint));
        match hook.attach {
            Attach::TpBtf => self
                .btf
                .type_by_name::<Typedef<'_>>(&format!("btf_trace_{name}"))
                .is_some(),
            Attach::Tracefs => self.tracefs.iter().any(|root| {
                root.join("events")
                    .join(category)
                    .join(name)
                    .join("id")
                    .exists()
            }),
        }
    }

    /// The tracepoints of `set` the kernel lacks.
    pub fn missing(&self, set: &HookSet) -> Vec<&'static str> {
        set.hooks
            .iter()
            .filter(|h| !self.has(h))
            .map(|h| h.tracepoint)
            .collect()
    }

    /// Whether a tracefs with tracepoint events is mounted at one of the roots.
    fn tracefs_mounted(&self) -> bool {
        self.tracefs.iter().any(|root| root.join("events").is_dir())
    }

    /// Why the tracepoints of `sets` cannot attach, as one phrase: those the kernel lacks, and
    /// those that attach through tracefs when no tracefs is mounted (the kernel may well have
    /// them).
    pub fn why_missing(&self, sets: &[&HookSet]) -> String {
        let unmounted = !self.tracefs_mounted();
        let (mut absent, mut unreachable): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
        for hook in sets
            .iter()
            .flat_map(|s| s.hooks.iter())
            .filter(|h| !self.has(h))
        {
            let list = if unmounted && hook.attach == Attach::Tracefs {
                &mut unreachable
            } else {
                &mut absent
            };
            if !list.contains(&hook.tracepoint) {
                list.push(hook.tracepoint);
            }
        }
        let mut parts = Vec::new();
        if !absent.is_empty() {
            parts.push(format!("kernel has no tracepoint {}", absent.join(", ")));
        }
        if !unreachable.is_empty() {
            parts.push(format!(
                "tracefs is not mounted, so tracepoint {} cannot attach (mount it: mount -t \
                 tracefs nodev /sys/kernel/tracing)",
                unreachable.join(", ")
            ));
        }
        parts.join("; ")
    }
}

/// The hooks each probe of `wanted` runs on: the first of its hook sets whose tracepoints the
/// kernel has all of. Returns the plan, the probes that have no usable set (each with a
/// sentence naming what is missing), and one line for each probe that got a fallback.
pub fn plan_hooks(kernel: &KernelHooks, wanted: ProbeSet) -> (HookPlan, LeftOut, Vec<String>) {
    let mut plan = HookPlan::default();
    let mut left_out = Vec::new();
    let mut fallbacks = Vec::new();
    for probe in wanted.iter() {
        let sets = probe.spec().hook_sets;
        match sets.iter().position(|set| kernel.missing(set).is_empty()) {
            Some(i) => {
                plan.choose(probe, &sets[i]);
                if i > 0 {
                    fallbacks.push(format!(
                        "probe {probe} runs on {} (fallback): {}",
                        sets[i].name,
                        kernel.why_missing(&[&sets[0]])
                    ));
                }
            }
            None => {
                let all: Vec<&HookSet> = sets.iter().collect();
                left_out.push((
                    probe,
                    format!("probe {probe} left out: {}", kernel.why_missing(&all)),
                ));
            }
        }
    }
    (plan, left_out, fallbacks)
}

/// Wanted probes that are not running, each with why.
pub type LeftOut = Vec<(Probe, String)>;

/// Raises RLIMIT_MEMLOCK to infinity, for kernels that still charge BPF memory to it. Best
/// effort: kernels from 5.11 on account BPF memory to the cgroup instead.
pub fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct; failure is reported through the return.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a child process, as root: once `CAP_SETPCAP` is gone, the bounding set cannot shrink,
    /// and what stays there is reported, while the effective set is still narrowed.
    #[test]
    fn what_the_bounding_set_keeps_is_reported() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("KOTEL-SKIP what_the_bounding_set_keeps_is_reported: needs root");
            return;
        }
        const CAP_SETPCAP: u32 = 8;
        // Everything but CAP_SETPCAP, built before fork: the child does not allocate.
        let mut all_but_setpcap = [0u32; 63];
        for (i, c) in (0..64u32).filter(|&c| c != CAP_SETPCAP).enumerate() {
            all_but_setpcap[i] = c;
        }
        let steady = STEADY_STATE_CAPS.iter().fold(0u64, |m, c| m | (1 << c));
        // SAFETY: the child makes system calls only and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = match (
                drop_capabilities(&all_but_setpcap),
                drop_capabilities(&STEADY_STATE_CAPS),
            ) {
                (Ok(first), Ok(second)) => {
                    let ok = first.effective & (1 << CAP_SETPCAP) == 0
                        && second.effective & !steady == 0
                        && second.effective != 0
                        && second.bounding_kept != 0
                        && second.bounding_kept & steady == 0
                        && second.bounding_kept & (1 << CAP_SETPCAP) == 0;
                    i32::from(!ok)
                }
                _ => 2,
            };
            // SAFETY: leaves the forked child at once.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "1: wrong sets after the drops, 2: a drop failed"
        );
    }

    #[test]
    fn capabilities_are_parsed_and_named() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(missing_caps(0x1ff_ffff_ffff), None);
        assert_eq!(missing_caps(0), Some("CAP_BPF, CAP_PERFMON".to_string()));
        assert_eq!(missing_caps(1 << CAP_BPF), Some("CAP_PERFMON".to_string()));
        assert_eq!(missing_caps((1 << CAP_BPF) | (1 << CAP_PERFMON)), None);
        assert_eq!(missing_caps(1 << CAP_SYS_ADMIN), None);
        assert_eq!(effective_caps("nothing here"), None);
    }

    #[test]
    fn the_paranoid_level_is_named_and_a_high_one_called_too_high() {
        assert!(paranoid_note(Some("3\n")).contains("perf_event_paranoid is 3, too high"));
        let normal = paranoid_note(Some("2"));
        assert!(normal.contains("perf_event_paranoid is 2") && !normal.contains("too high"));
        assert_eq!(paranoid_note(Some("junk")), "");
        assert_eq!(paranoid_note(None), "");
    }

    #[test]
    fn missing_btf_is_named() {
        let err = check_btf(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"));
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"));
    }
}

/// Capabilities the agent keeps once its programs are attached: CAP_BPF for every map
/// operation (the bpf() syscall checks it on each call), CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH
/// to read other processes' `/proc/<pid>/environ`, `exe` and `fd` (service names, linking by
/// connection). Everything else — CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYSLOG, … — is only needed
/// to load and attach, or to read kallsyms once at start.
pub const STEADY_STATE_CAPS: [u32; 3] = [CAP_BPF, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH];

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The capability sets after [`drop_capabilities`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsAfterDrop {
    /// The effective (and permitted) set: what was kept of what the process had.
    pub effective: u64,
    /// Capabilities not kept that stay in the bounding set: the kernel refuses to drop them
    /// without `CAP_SETPCAP`. The process cannot use them (they left its effective and
    /// permitted sets); only a program it executed with file capabilities could.
    pub bounding_kept: u64,
}

/// Drops every capability but `keep` from this process (all threads share nothing here: call
/// it before starting other threads that matter, or accept they keep theirs): the bounding set
/// (where `CAP_SETPCAP` allows; what stays is reported), the ambient set, inheritable,
/// permitted and effective.
pub fn drop_capabilities(keep: &[u32]) -> std::io::Result<CapsAfterDrop> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData structs for version 3, which we own.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let wanted: u64 = keep.iter().fold(0, |m, c| m | (1u64 << c));
    for cap in 0..64u32 {
        if wanted & (1u64 << cap) == 0 {
            // SAFETY: prctl with integer arguments; EINVAL past the last capability is fine.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let permitted = (u64::from(data[1].permitted) << 32 | u64::from(data[0].permitted)) & wanted;
    let set = [
        CapData {
            effective: permitted as u32,
            permitted: permitted as u32,
            inheritable: 0,
        },
        CapData {
            effective: (permitted >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads two CapData structs for version 3.
    if unsafe { libc::syscall(libc::SYS_capset, &header, set.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(CapsAfterDrop {
        effective: permitted,
        bounding_kept: bounding_set() & !wanted,
    })
}

/// The bounding set, read back one capability at a time (`EINVAL` past the last one).
fn bounding_set() -> u64 {
    (0..64u32)
        .filter(|&cap| {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) == 1 }
        })
        .fold(0, |m, cap| m | (1u64 << cap))
}
