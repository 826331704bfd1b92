//! Cardinality storm: 10 000 short-lived processes, each making a known number of `writev`
//! calls, start and exit while `kotel run` exports to OTLP JSON files, with 256 kernel
//! histogram slots and a cardinality limit of 64. Checked against the workload's own count:
//! every export keeps at most 64 `kotel.writev.duration` streams plus the
//! `otel.metric.overflow=true` series, and the streams' final counts plus the overflow add up
//! to exactly the calls made (slots are recycled at exit, so nearly every process gets one; an
//! event that finds none is counted in the kernel's overflow histogram); the process
//! cache and the live kernel histograms return to their baseline, and the agent's RSS
//! returns near it. The running time is bounded by the number of processes, not by a clock.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kotel_e2e::{built_binary, cgroup2_root, skip_without_bpf, Kotel};
use serde_json::Value;

const PROCS: u64 = 10_000;
const WRITES_PER_PROC: u64 = 3;
const SLOTS: u32 = 256;
const LIMIT: usize = 64;
/// How far above its baseline the agent's RSS may stay once the storm is over.
const RSS_AFTER_SLACK_KIB: u64 = 16 * 1024;
/// How far above its baseline the agent's RSS may go during the storm.
const RSS_PEAK_SLACK_KIB: u64 = 96 * 1024;
/// The longest wait for the exports to settle after the storm (a bound, not a measurement).
const SETTLE_LIMIT: Duration = Duration::from_secs(90);

/// A cgroup removed again when dropped (once empty).
struct TempCgroup(PathBuf);

impl Drop for TempCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Complete export requests written so far (a line still being written is left for later).
fn exports(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|l| serde_json::from_str(l).expect("an OTLP JSON export request"))
        .collect()
}

fn int(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().expect("an integer string"),
        v => v.as_u64().expect("an integer"),
    }
}

/// Every metric of a request with its resource's `process.pid`.
fn metrics(req: &Value) -> Vec<(Option<u64>, &Value)> {
    let mut out = Vec::new();
    for rm in req["resourceMetrics"].as_array().into_iter().flatten() {
        let pid = rm["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "process.pid")
            .map(|a| int(&a["value"]["intValue"]));
        for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
            for m in sm["metrics"].as_array().into_iter().flatten() {
                out.push((pid, m));
            }
        }
    }
    out
}

/// The agent's own gauge or counter `name` in one request.
fn agent_value(req: &Value, name: &str) -> Option<u64> {
    metrics(req).into_iter().find_map(|(_, m)| {
        if m["name"] != name {
            return None;
        }
        let data = m.get("gauge").or_else(|| m.get("sum"))?;
        Some(int(&data["dataPoints"][0]["asInt"]))
    })
}

/// `kotel.writev.duration` points of one request: (pid, overflow, count).
fn writev_points(req: &Value) -> Vec<(Option<u64>, bool, u64)> {
    let mut out = Vec::new();
    for (pid, m) in metrics(req) {
        if m["name"] != "kotel.writev.duration" {
            continue;
        }
        for dp in m["exponentialHistogram"]["dataPoints"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let overflow = dp["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["key"] == "otel.metric.overflow" && a["value"]["boolValue"] == true);
            out.push((pid, overflow, int(&dp["count"])));
        }
    }
    out
}

/// What the exports say so far about `kotel.writev.duration`.
#[derive(Debug, Default)]
struct Streams {
    /// Most non-overflow streams in one request.
    max_per_export: usize,
    /// Distinct processes that had a stream of their own.
    distinct: usize,
    /// The overflow series' last (cumulative) count.
    overflow: u64,
    /// Last count of every process's stream plus the overflow: the total counted.
    total: u64,
}

fn streams(reqs: &[Value]) -> Streams {
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    let mut s = Streams::default();
    for req in reqs {
        let points = writev_points(req);
        s.max_per_export = s.max_per_export.max(points.iter().filter(|p| !p.1).count());
        for (pid, overflow, count) in points {
            if overflow {
                s.overflow = count;
            } else if let Some(pid) = pid {
                last.insert(pid, count);
            }
        }
    }
    s.distinct = last.len();
    s.total = last.values().sum::<u64>() + s.overflow;
    s
}

#[test]
fn a_storm_of_short_lived_processes_stays_bounded_and_loses_no_count() {
    if skip_without_bpf("a_storm_of_short_lived_processes_stays_bounded_and_loses_no_count") {
        return;
    }
    let Some(root) = cgroup2_root() else {
        eprintln!("!!!!!! KOTEL-E2E SKIPPED storm: no cgroup v2 mount here !!!!!!");
        return;
    };
    let cg = TempCgroup(root.join(format!("kotel-storm-{}", std::process::id())));
    std::fs::create_dir(&cg.0).expect("create a cgroup");
    let out = std::env::temp_dir().join(format!("kotel-storm-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("output directory");
    let config = out.join("kotel.toml");
    std::fs::write(
        &config,
        format!(
            "[capture]\ncgroup = {:?}\nprobes = [\"writev\"]\nmax_histograms = {SLOTS}\n\n\
             [metrics]\ninterval = \"1s\"\ncardinality_limit = {LIMIT}\n",
            cg.0.display().to_string()
        ),
    )
    .expect("write the config");
    let out_s = out.display().to_string();
    let config_s = config.display().to_string();
    let kotel = Kotel::start_until(
        &[
            "run",
            "--config",
            &config_s,
            "--out",
            &out_s,
            "--receiver-grpc",
            "none",
            "--receiver-http",
            "none",
            "--telemetry",
            "none",
        ],
        "kotel.run.attached",
    );
    let metrics_file = out.join("metrics.jsonl");
    while exports(&metrics_file).len() < 3 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let baseline = exports(&metrics_file);
    let last = baseline.last().expect("an export");
    let cache_before = agent_value(last, "kotel.process_cache.size").expect("cache size gauge");
    let live_before = agent_value(last, "kotel.histograms.live").expect("live histograms");
    let rss_before = rss_kib(kotel.pid());

    // RSS sampled every 50 ms from here until the exports have settled.
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, pid) = (Arc::clone(&peak), Arc::clone(&sampling), kotel.pid());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let mut storm = Command::new(built_binary("kotel-storm"))
        .args([
            "--procs",
            &PROCS.to_string(),
            "--writes",
            &WRITES_PER_PROC.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the storm");
    let mut lines = BufReader::new(storm.stdout.take().expect("stdout")).lines();
    let hello: Value =
        serde_json::from_str(&lines.next().expect("pid line").expect("read")).expect("pid json");
    std::fs::write(cg.0.join("cgroup.procs"), hello["pid"].to_string())
        .expect("move the storm into the filtered cgroup");
    let storm_started = Instant::now();
    writeln!(storm.stdin.take().expect("stdin"), "go").expect("go");
    let truth: Value = serde_json::from_str(&lines.next().expect("truth line").expect("read"))
        .expect("truth json");
    assert!(storm.wait().expect("wait storm").success());
    let storm_secs = storm_started.elapsed().as_secs_f64();
    assert_eq!(
        int(&truth["succeeded"]),
        PROCS,
        "every process ran: {truth}"
    );
    let made = int(&truth["writev_calls"]);
    assert_eq!(made, PROCS * WRITES_PER_PROC);

    // Wait (boundedly) until every final count is exported and the caches are back down.
    let settle = Instant::now();
    let (reqs, settled) = loop {
        let reqs = exports(&metrics_file);
        let last = reqs.last().expect("an export");
        let done = streams(&reqs).total >= made
            && agent_value(last, "kotel.histograms.live") <= Some(live_before)
            && agent_value(last, "kotel.process_cache.size") <= Some(cache_before);
        if done || settle.elapsed() > SETTLE_LIMIT {
            break (reqs, done);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Two more exports, so the RSS after is measured with the storm well behind.
    let n = reqs.len();
    while exports(&metrics_file).len() < n + 2 {
        std::thread::sleep(Duration::from_millis(100));
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let rss_after = rss_kib(kotel.pid());
    let rss_peak = peak.load(Ordering::Relaxed).max(rss_after);
    let (code, _stdout, stderr) = kotel.interrupt();
    assert_eq!(code, 0, "{stderr}");

    let reqs = exports(&metrics_file);
    let s = streams(&reqs);
    let last = reqs.last().expect("an export");
    let value = |name| agent_value(last, name).unwrap_or_else(|| panic!("{name} exported"));
    let peak_cache = reqs
        .iter()
        .filter_map(|r| agent_value(r, "kotel.process_cache.size"))
        .max()
        .unwrap_or(0);
    let peak_live = reqs
        .iter()
        .filter_map(|r| agent_value(r, "kotel.histograms.live"))
        .max()
        .unwrap_or(0);
    eprintln!(
        "KOTEL-STORM processes {PROCS} in {storm_secs:.1}s, writev calls {made}, counted {} \
         (own streams {} + overflow {}); streams per export max {} (limit {LIMIT}), distinct \
         processes with a stream {}; overflowed series {}; histogram slots {SLOTS}: live \
         before/peak/after {live_before}/{peak_live}/{}, recycled {}, dropped full {}, after \
         exit {}; process cache before/peak/after {cache_before}/{peak_cache}/{}; RSS KiB \
         before/peak/after {rss_before}/{rss_peak}/{rss_after}",
        s.total,
        s.total - s.overflow,
        s.overflow,
        s.max_per_export,
        s.distinct,
        value("kotel.metric.overflow.series"),
        value("kotel.histograms.live"),
        value("kotel.histograms.recycled"),
        value("kotel.histograms.dropped"),
        value("kotel.histograms.after_exit"),
        value("kotel.process_cache.size"),
    );

    assert!(
        settled,
        "the exports did not settle within {SETTLE_LIMIT:?}"
    );
    // A process finds no slot when the storm outruns the agent's recycling (the free list is
    // empty until the next drain); all its calls then land in the overflow histogram. How
    // many do depends on how the two cores are shared (0.4–1.1% of the calls in runs here),
    // so the bound is far from that: without recycling only the first 256 processes found one
    // (29 232 of 30 000 calls went to the overflow), and recycling once per metrics interval
    // instead of every drain would leave most without.
    let slotless = value("kotel.histograms.dropped") / WRITES_PER_PROC;
    assert!(
        slotless * 5 <= PROCS,
        "slots were recycled as processes exited: {slotless} of {PROCS} processes found none"
    );
    assert_eq!(s.total, made, "every writev counted exactly once");
    assert!(s.max_per_export <= LIMIT, "streams capped at the limit");
    assert!(s.overflow > 0, "the rest went to the overflow series");
    // Every process that got a slot had it recycled. One that never got a slot dropped all
    // its calls, so at most `slotless` processes had none.
    assert!(
        value("kotel.histograms.recycled") + slotless >= PROCS,
        "every storm process that found a slot had it recycled"
    );
    assert!(value("kotel.histograms.live") <= live_before);
    assert!(value("kotel.process_cache.size") <= cache_before);
    assert!(
        rss_after <= rss_before + RSS_AFTER_SLACK_KIB,
        "RSS back near its baseline: {rss_before} KiB before, {rss_after} KiB after"
    );
    assert!(
        rss_peak <= rss_before + RSS_PEAK_SLACK_KIB,
        "RSS bounded during the storm: {rss_before} KiB before, {rss_peak} KiB at the peak"
    );
    let _ = std::fs::remove_dir_all(&out);
}
