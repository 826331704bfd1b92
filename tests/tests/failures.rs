//! Failures a user meets must be clear: bad flags and missing privileges or BTF exit 2 naming
//! what is wrong, and Ctrl-C detaches every program.

use std::process::Command;
use std::time::{Duration, Instant};

use kotel_e2e::{
    built_binary, kotel_programs_since, program_ids, skip_without_bpf, still_loaded, Kotel,
    ATTACH_TIMEOUT,
};

fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("run kotel");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flag_values_exit_2_naming_the_flag() {
    for (flag, value) in [
        ("--probes", "writev,kprobe"),
        ("--duration", "soon"),
        ("--format", "xml"),
        ("--pid", "abc"),
    ] {
        let (code, stderr) =
            run(Command::new(built_binary("kotel")).args(["capture", flag, value]));
        assert_eq!(code, 2, "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} named in: {stderr}");
    }
}

#[test]
fn a_bad_cgroup_path_exits_2_naming_the_flag() {
    let (code, stderr) = run(Command::new(built_binary("kotel")).args([
        "capture",
        "--cgroup",
        "/nonexistent/cgroup",
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--cgroup") && stderr.contains("/nonexistent/cgroup"),
        "{stderr}"
    );
}

/// kotel as a child of `capsh --drop=<caps> --`: run as root, the dropped capabilities leave
/// the bounding set, so the exec'd kotel can never hold them. Not root: kotel runs as is (it
/// then has no capabilities at all).
fn without_caps(drop: &str, args: &[&str]) -> (i32, String) {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let kotel = built_binary("kotel");
    let mut cmd = if root {
        let mut c = Command::new("capsh");
        c.arg(format!("--drop={drop}"))
            .arg(format!("--shell={}", kotel.display()))
            .arg("--");
        c
    } else {
        Command::new(&kotel)
    };
    run(cmd.args(args))
}

/// `kernel.perf_event_paranoid` set for the life of the guard, restored when it drops (also on
/// a failed assertion). The e2e tests run one at a time, so nothing else sees the change.
struct Paranoid(String);

impl Paranoid {
    const PATH: &'static str = "/proc/sys/kernel/perf_event_paranoid";

    fn set(level: &str) -> Option<Paranoid> {
        let old = std::fs::read_to_string(Self::PATH).ok()?;
        std::fs::write(Self::PATH, level).ok()?;
        Some(Paranoid(old))
    }
}

impl Drop for Paranoid {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, self.0.trim());
    }
}

/// Without CAP_BPF or CAP_PERFMON (CAP_SYS_ADMIN, which implies both, dropped too), both
/// `capture` and the agent's `run` refuse before loading anything, exit 2 and name exactly what
/// is missing.
#[test]
fn missing_capabilities_exit_2_naming_each() {
    for (drop, named, not_named) in [
        ("cap_bpf,cap_sys_admin", "CAP_BPF", "CAP_PERFMON"),
        ("cap_perfmon,cap_sys_admin", "CAP_PERFMON", "CAP_BPF"),
        (
            "cap_bpf,cap_perfmon,cap_sys_admin",
            "CAP_BPF, CAP_PERFMON",
            "nothing",
        ),
    ] {
        for args in [
            &["capture", "--duration", "1s"][..],
            &[
                "run",
                "--duration",
                "1s",
                "--telemetry",
                "none",
                "--out",
                "/tmp",
            ][..],
        ] {
            let (code, stderr) = without_caps(drop, args);
            assert_eq!(code, 2, "{drop} {args:?}: {stderr}");
            // "missing privileges: <what> (<why>); <how to fix>": the part before the advice.
            let line = stderr.lines().find(|l| l.contains("missing")).unwrap_or("");
            let first = line.split(';').next().unwrap_or("");
            assert!(first.contains(named), "{drop}: {named} named in {stderr}");
            if unsafe { libc::geteuid() } == 0 {
                assert!(
                    !first.contains(not_named),
                    "{drop}: only what is missing: {first}"
                );
            }
        }
    }
}

/// A `perf_event_paranoid` level above 2 (Debian's "no perf events without the capability")
/// with CAP_PERFMON dropped: exit 2 naming both the capability and the level. With CAP_PERFMON
/// held the level does not matter: kotel opens no perf events and its capture works.
#[test]
fn a_high_perf_event_paranoid_is_named_and_needs_cap_perfmon() {
    if skip_without_bpf("a_high_perf_event_paranoid_is_named_and_needs_cap_perfmon") {
        return;
    }
    let Some(_guard) = Paranoid::set("3") else {
        panic!("cannot set {} as root", Paranoid::PATH);
    };
    let (code, stderr) = without_caps(
        "cap_perfmon,cap_sys_admin",
        &["capture", "--duration", "1s"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("CAP_PERFMON") && stderr.contains("perf_event_paranoid is 3, too high"),
        "{stderr}"
    );
    let (code, stderr) = run(Command::new(built_binary("kotel")).args([
        "capture",
        "--duration",
        "1s",
        "--probes",
        "writev",
        "--format",
        "table",
    ]));
    assert_eq!(
        code, 0,
        "with CAP_PERFMON, paranoid 3 is no obstacle: {stderr}"
    );
}

#[test]
fn missing_btf_exits_2_with_a_clear_message() {
    if skip_without_bpf("missing_btf_exits_2_with_a_clear_message") {
        return;
    }
    let (code, stderr) =
        run(Command::new(built_binary("kotel")).args(["capture", "--btf", "/nonexistent/vmlinux"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("/nonexistent/vmlinux") && stderr.contains("BTF"),
        "{stderr}"
    );
}

#[test]
fn ctrl_c_detaches_every_program_and_still_prints_the_summary() {
    if skip_without_bpf("ctrl_c_detaches_every_program_and_still_prints_the_summary") {
        return;
    }
    // The default probes' preferred hooks (this kernel has them all) and the exit hook, from
    // the probe table.
    let mut ours: Vec<&str> = kotel_bpf::ProbeSet::defaults()
        .iter()
        .flat_map(|p| p.spec().hook_sets[0].hooks.iter().map(|h| h.program))
        .collect();
    ours.push(kotel_bpf::probe::LIFECYCLE_EXIT.program);
    ours.sort_unstable();
    ours.dedup();
    let before = program_ids();
    let kotel = Kotel::start(&["capture", "--duration", "0", "--format", "table"]);
    let loaded = kotel_programs_since(&before);
    let mut names: Vec<&str> = loaded.iter().map(|(_, n)| *n).collect();
    names.sort_unstable();
    assert_eq!(
        names, ours,
        "every program of the default probes loaded while capturing, and no other"
    );
    let (code, stdout, stderr) = kotel.interrupt();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("PID") && stdout.contains("lost events"),
        "summary printed: {stdout}"
    );
    let left = still_loaded(&loaded);
    assert!(
        left.is_empty(),
        "programs still loaded after exit: {left:?}"
    );
}

/// Once attached, kotel keeps only the capabilities its steady state needs: CAP_BPF (every map
/// read is a bpf() call), CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (reading /proc of other
/// processes). CAP_PERFMON, CAP_SYS_ADMIN and the rest are gone, from the bounding set too.
#[test]
fn capabilities_are_dropped_after_attach() {
    if skip_without_bpf("capabilities_are_dropped_after_attach") {
        return;
    }
    let kotel = Kotel::start(&["capture", "--duration", "0", "--format", "table"]);
    // The drop follows the attach line once kotel has read the kernel's symbols, which a debug
    // build on a busy machine may take seconds to do: poll for it, bounded as the attach is.
    let read = |field: &str| -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", kotel.pid())).expect("status");
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .expect("field")
            .trim()
            .to_string();
        u64::from_str_radix(&hex, 16).expect("hex")
    };
    let want: u64 = (1 << 39) | (1 << 19) | (1 << 2);
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    let mut eff = read("CapEff:");
    while eff != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        eff = read("CapEff:");
    }
    assert_eq!(eff, want, "effective capabilities {eff:#x}");
    assert_eq!(read("CapPrm:"), want, "permitted");
    assert_eq!(read("CapBnd:") & !want, 0, "bounding set");
    let (code, stdout, stderr) = kotel.interrupt();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("lost events"),
        "it still reads its maps: {stdout}"
    );
}
