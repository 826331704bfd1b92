//! Off-CPU intervals say how the thread waited, checked against `kotel-waits`, whose threads
//! each wait in one known way: `fsync` of a large write to a disk-backed file and
//! `posix_spawn` (vfork + exec) block uninterruptibly, `nanosleep` sleeps interruptibly, a
//! spinner never blocks. Every off-CPU event carries its thread's state; the histograms count
//! every wait in the series of its state; and an idle sleep is reported only from the sleep
//! threshold on (`kotel config default` says what that is by default), while a blocked wait
//! is reported from the span threshold.

use std::path::PathBuf;
use std::time::Duration;

use kotel_bpf::buckets::{ns_to_seconds, reference_index};
use kotel_bpf::OVERFLOW_PID;
use kotel_e2e::{built_binary, capture_jsonl, skip_without_bpf, JsonlCapture, Workload};
use serde_json::Value;

/// `statfs` magic of tmpfs: an fsync there never waits for a disk.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const MS: u64 = 1_000_000;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

/// A scratch directory beside the built binaries: on the disk the worktree is on (never
/// tmpfs, which the workload's truth checks).
fn scratch_dir() -> PathBuf {
    let dir = built_binary("kotel-waits")
        .parent()
        .expect("target/<profile>")
        .join("kotel-waits-scratch");
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

/// `kotel capture --probes offcpu --pid <kotel-waits> <extra>` around one run of the workload:
/// (truth, capture). Checks that the capture lost nothing and traced the workload alone.
fn capture(extra: &[&str]) -> (Value, JsonlCapture) {
    let dir = scratch_dir();
    let workload = Workload::start_with_args("kotel-waits", &[dir.as_os_str()]);
    let wpid = workload.pid;
    let pid = wpid.to_string();
    let mut args = vec!["--pid", &pid, "--probes", "offcpu"];
    args.extend_from_slice(extra);
    let (truth, c) = capture_jsonl(&args, || workload.run());
    assert_ne!(
        truth["fsync"]["fs_magic"].as_i64(),
        Some(TMPFS_MAGIC),
        "{} is on tmpfs: the fsync would never wait for a disk",
        dir.display()
    );
    assert_eq!(u(&c.lost["count"]), 0, "lost: {}", c.lost);
    assert_eq!(u(&c.lost["histogram_map_full"]), 0, "lost: {}", c.lost);
    let mine = [u64::from(wpid), u64::from(OVERFLOW_PID)];
    for h in &c.histograms {
        assert!(mine.contains(&u(&h["pid"])), "only the workload: {h}");
    }
    (truth, c)
}

/// Off-CPU events of thread `tid`.
fn offcpu_of<'a>(c: &'a JsonlCapture, tid: &Value) -> Vec<&'a Value> {
    c.events
        .iter()
        .filter(|e| e["kind"] == "offcpu" && e["tid"] == *tid)
        .collect()
}

fn states(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["state"].as_str().unwrap_or("<none>").to_string())
        .collect()
}

/// The off-CPU histogram lines of one state (the workload's own and the overflow's), added
/// up: (count, sum_ns, bucket index → count).
fn histogram(c: &JsonlCapture, state: &str) -> (u64, u64, Vec<(i32, u64)>) {
    let (mut count, mut sum) = (0, 0);
    let mut buckets = std::collections::BTreeMap::new();
    for h in c
        .histograms
        .iter()
        .filter(|h| h["kind"] == "offcpu" && h["state"] == state)
    {
        count += u(&h["count"]);
        sum += u(&h["sum_ns"]);
        let offset = h["offset"].as_i64().expect("offset") as i32;
        for (i, n) in h["bucket_counts"]
            .as_array()
            .expect("buckets")
            .iter()
            .enumerate()
        {
            *buckets.entry(offset + i as i32).or_insert(0) += u(n);
        }
    }
    (count, sum, buckets.into_iter().collect())
}

/// The default sleep threshold, from `kotel config default` (`None`: off).
fn default_sleep_threshold() -> Option<Duration> {
    let out = std::process::Command::new(built_binary("kotel"))
        .args(["config", "default"])
        .output()
        .expect("kotel config default");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("sleep_threshold = "))
        .expect("the default config names sleep_threshold")
        .trim_matches('"');
    if value == "off" {
        return None;
    }
    let (n, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit()).unwrap_or(0));
    let n: u64 = n.parse().expect("a number");
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        other => panic!("unexpected unit {other:?} in sleep_threshold = {value:?}"),
    })
}

/// With every interval reported, each thread's waits have the state of the way it waited,
/// and each state's histogram holds exactly that state's events.
#[test]
fn every_wait_has_the_state_of_how_its_thread_waited() {
    if skip_without_bpf("every_wait_has_the_state_of_how_its_thread_waited") {
        return;
    }
    let (truth, c) = capture(&["--min-latency", "0", "--sleep-threshold", "0"]);

    let fsync = offcpu_of(&c, &truth["fsync"]["tid"]);
    assert!(!fsync.is_empty(), "the fsync blocked");
    assert!(
        fsync.iter().all(|e| e["state"] == "uninterruptible"),
        "fsync waits: {:?}",
        states(&fsync)
    );
    let spawn = offcpu_of(&c, &truth["spawn"]["tid"]);
    assert!(!spawn.is_empty(), "vfork waited for an exec");
    assert!(
        spawn.iter().all(|e| e["state"] == "uninterruptible"),
        "vfork waits: {:?}",
        states(&spawn)
    );
    let sleeper = offcpu_of(&c, &truth["sleeper"]["tid"]);
    assert!(
        sleeper.iter().all(|e| e["state"] == "interruptible"),
        "sleeper waits: {:?}",
        states(&sleeper)
    );
    let sleeps: Vec<&&Value> = sleeper
        .iter()
        .filter(|e| u(&e["duration_ns"]) >= 10 * MS)
        .collect();
    let truth_sleeps = truth["sleeper"]["sleeps"].as_array().expect("sleeps");
    assert_eq!(sleeps.len(), truth_sleeps.len(), "one wait per sleep");
    for (e, s) in sleeps.iter().zip(truth_sleeps) {
        let d = u(&e["duration_ns"]);
        assert!(
            (u(&s["requested_ns"])..=u(&s["elapsed_ns"])).contains(&d),
            "off-CPU {d} ns for the sleep {s}"
        );
    }
    let spinner = offcpu_of(&c, &truth["spinner"]["tid"]);
    assert!(spinner.is_empty(), "the spinner never blocked: {spinner:?}");

    // Every off-CPU event and histogram line has a state; each state's histogram counts
    // exactly that state's events.
    let offcpu: Vec<&Value> = c.events.iter().filter(|e| e["kind"] == "offcpu").collect();
    for state in ["interruptible", "uninterruptible"] {
        let events: Vec<&&Value> = offcpu.iter().filter(|e| e["state"] == state).collect();
        let (count, sum, _) = histogram(&c, state);
        assert_eq!(count, events.len() as u64, "{state} histogram count");
        assert_eq!(
            sum,
            events.iter().map(|e| u(&e["duration_ns"])).sum::<u64>(),
            "{state} histogram sum"
        );
    }
    let stateless = offcpu
        .iter()
        .filter(|e| {
            !["interruptible", "uninterruptible"].contains(&e["state"].as_str().unwrap_or(""))
        })
        .count();
    assert_eq!(stateless, 0, "every off-CPU event has a state");
    let lines = c.histograms.iter().filter(|h| h["kind"] == "offcpu");
    assert!(
        lines.clone().all(|h| h["state"].is_string()),
        "histogram states"
    );
    eprintln!(
        "KOTEL-E2E off-CPU states: fsync {} waits, vfork {} waits (uninterruptible); sleeper {} \
         waits (interruptible); spinner none; histograms {} + {} = {} events",
        fsync.len(),
        spawn.len(),
        sleeper.len(),
        histogram(&c, "interruptible").0,
        histogram(&c, "uninterruptible").0,
        offcpu.len()
    );
}

/// Under the default thresholds a blocked wait of a millisecond or more is reported, an idle
/// sleep below the sleep threshold is not, and the histograms still count the sleeps.
#[test]
fn under_the_defaults_idle_sleeps_are_counted_not_reported() {
    if skip_without_bpf("under_the_defaults_idle_sleeps_are_counted_not_reported") {
        return;
    }
    let longest = Duration::from_millis(50);
    assert!(
        default_sleep_threshold().is_none_or(|t| t > longest),
        "the default sleep threshold is above the workload's longest sleep"
    );
    let (truth, c) = capture(&[]);

    let fsync = offcpu_of(&c, &truth["fsync"]["tid"]);
    assert!(
        !fsync.is_empty(),
        "the fsync blocked for a millisecond or more (it took {} ms)",
        u(&truth["fsync"]["fsync_ns"]) / MS
    );
    for e in fsync.iter().chain(&offcpu_of(&c, &truth["spawn"]["tid"])) {
        assert_eq!(e["state"], "uninterruptible", "{e}");
        assert!(u(&e["duration_ns"]) >= MS, "at the span threshold: {e}");
    }
    let sleeper = offcpu_of(&c, &truth["sleeper"]["tid"]);
    assert!(sleeper.is_empty(), "no sleep is reported: {sleeper:?}");
    assert!(offcpu_of(&c, &truth["spinner"]["tid"]).is_empty());
    let reported_sleeps = c
        .events
        .iter()
        .filter(|e| e["kind"] == "offcpu" && e["state"] == "interruptible")
        .count();
    assert_eq!(
        reported_sleeps, 0,
        "no idle sleep of the workload is that long"
    );

    // The three sleeps are counted: each in a bucket of at least its requested length.
    let (count, sum, buckets) = histogram(&c, "interruptible");
    let from_20ms = reference_index(ns_to_seconds(20 * MS), 3);
    let long = buckets
        .iter()
        .filter(|(i, _)| *i >= from_20ms)
        .map(|(_, n)| n)
        .sum::<u64>();
    assert!(long >= 3, "the three sleeps are counted: {buckets:?}");
    assert!(sum >= 105 * MS, "{sum} ns of idle waits");
    let (blocked, _, _) = histogram(&c, "uninterruptible");
    assert!(
        blocked >= fsync.len() as u64,
        "every reported blocked wait is counted"
    );
    eprintln!(
        "KOTEL-E2E defaults: {} blocked waits of the fsync reported; no sleep reported, {count} \
         idle waits counted ({long} of 20 ms or more), {blocked} blocked",
        fsync.len()
    );
}

/// A sleep threshold of 30 ms reports the 35 and 50 ms sleeps, as interruptible, and not the
/// 20 ms one.
#[test]
fn sleeps_from_the_sleep_threshold_on_are_reported() {
    if skip_without_bpf("sleeps_from_the_sleep_threshold_on_are_reported") {
        return;
    }
    let (truth, c) = capture(&["--sleep-threshold", "30ms"]);
    let sleeper = offcpu_of(&c, &truth["sleeper"]["tid"]);
    assert_eq!(
        states(&sleeper),
        ["interruptible", "interruptible"],
        "the 35 and 50 ms sleeps"
    );
    let sleeps = truth["sleeper"]["sleeps"].as_array().expect("sleeps");
    for (e, s) in sleeper.iter().zip(&sleeps[1..]) {
        let d = u(&e["duration_ns"]);
        assert!(
            (u(&s["requested_ns"])..=u(&s["elapsed_ns"])).contains(&d),
            "off-CPU {d} ns for the sleep {s}"
        );
    }
    assert!(
        c.events
            .iter()
            .filter(|e| e["state"] == "interruptible")
            .all(|e| u(&e["duration_ns"]) >= 30 * MS),
        "no shorter sleep of any thread"
    );
    let fsync = offcpu_of(&c, &truth["fsync"]["tid"]);
    assert!(!fsync.is_empty(), "blocked waits still from 1 ms on");
}
