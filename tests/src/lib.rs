//! Helpers for kotel's end-to-end tests: find the built binaries, decide whether real BPF can
//! run here, and run a capture around a workload.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

mod json_child;
pub use json_child::{compile_c, JsonChild};

/// A binary built next to the test executable (`target/<profile>/<name>`).
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (the README's test command does)",
        path.display()
    );
    path
}

/// Why real BPF tests cannot run here, if they cannot.
pub fn bpf_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("kernel has no BTF at /sys/kernel/btf/vmlinux".into());
    }
    None
}

/// Returns true when the caller should skip: prints one loud line. With `KOTEL_REQUIRE_BPF=1`
/// (set by CI) a missing BPF environment is a failure instead.
pub fn skip_without_bpf(test: &str) -> bool {
    let Some(why) = bpf_unavailable() else {
        eprintln!(
            "KOTEL-E2E RUNNING {test}: real BPF on kernel {}",
            kernel_release()
        );
        return false;
    };
    if std::env::var("KOTEL_REQUIRE_BPF").as_deref() == Ok("1") {
        panic!("KOTEL_REQUIRE_BPF=1 but real BPF cannot run: {why}");
    }
    eprintln!("!!!!!! KOTEL-E2E SKIPPED {test}: real BPF unavailable ({why}) !!!!!!");
    true
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// How long kotel may take to attach, or to finish what follows the attach (a bound, not a
/// measurement).
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `kotel` process whose stdout is collected.
pub struct Kotel {
    child: Child,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    /// Stdout read while kotel runs ([`read_until`](Kotel::read_until)), once asked for.
    stdout_lines: Option<mpsc::Receiver<String>>,
    stdout_seen: Vec<String>,
}

impl Kotel {
    /// Starts `kotel <args>` and waits until it reports its probes attached.
    pub fn start(args: &[&str]) -> Kotel {
        Kotel::start_until(args, "kotel.capture.attached")
    }

    /// Starts `kotel <args>` and waits for a log line containing `marker`
    /// (`kotel.run.attached` for `kotel run`).
    pub fn start_until(args: &[&str], marker: &str) -> Kotel {
        Kotel::start_with_env(args, marker, &[])
    }

    /// Like [`start_until`](Kotel::start_until), with extra environment variables.
    pub fn start_with_env(args: &[&str], marker: &str, env: &[(&str, &str)]) -> Kotel {
        let mut child = Command::new(built_binary("kotel"))
            .args(args)
            .envs(env.iter().copied())
            .env("KOTEL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kotel");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut k = Kotel {
            child,
            stderr_lines: rx,
            stderr_seen: Vec::new(),
            stdout_lines: None,
            stdout_seen: Vec::new(),
        };
        loop {
            match k.stderr_lines.recv_timeout(ATTACH_TIMEOUT) {
                Ok(line) => {
                    let attached = line.contains(marker);
                    k.stderr_seen.push(line);
                    if attached {
                        return k;
                    }
                }
                Err(_) => panic!(
                    "kotel did not attach; stderr:\n{}",
                    k.stderr_seen.join("\n")
                ),
            }
        }
    }

    /// The kotel process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads kotel's JSON stdout lines as it writes them until `done` holds for one (kotel
    /// flushes after every drain): `true` then, `false` when no line came for `within` (the
    /// caller goes on and checks what it has, the `lost` line first). What is read here is
    /// part of what [`interrupt`](Kotel::interrupt) returns.
    pub fn read_until(&mut self, within: Duration, mut done: impl FnMut(&Value) -> bool) -> bool {
        if self.stdout_lines.is_none() {
            let stdout = self.child.stdout.take().expect("stdout");
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            self.stdout_lines = Some(rx);
        }
        let rx = self.stdout_lines.as_ref().expect("reader started");
        while let Ok(line) = rx.recv_timeout(within) {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
            self.stdout_seen.push(line);
            if done(&v) {
                return true;
            }
        }
        false
    }

    /// Sends SIGINT (as Ctrl-C would), waits, and returns (exit code, stdout, stderr).
    pub fn interrupt(mut self) -> (i32, String, String) {
        // SAFETY: signals a child we own.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut stdout = String::new();
        if let Some(rx) = self.stdout_lines.take() {
            // The reader ends at EOF, once kotel has exited.
            self.stdout_seen.extend(rx.iter());
            stdout = self.stdout_seen.join("\n");
        } else if let Some(mut out) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut out, &mut stdout).expect("kotel stdout");
        }
        let status = self.child.wait().expect("wait kotel");
        // The stderr reader ends at EOF, now that kotel has exited.
        self.stderr_seen.extend(self.stderr_lines.iter());
        (
            status.code().unwrap_or(-1),
            stdout,
            self.stderr_seen.join("\n"),
        )
    }
}

impl Drop for Kotel {
    /// A test that panics must not leave a capture running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workload binary, started and waiting for "go".
pub struct Workload {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
    /// Its process id.
    pub pid: u32,
}

impl Workload {
    /// Starts `kotel-workload`; returns once it printed its pid.
    pub fn start() -> Workload {
        Workload::start_named("kotel-workload")
    }

    /// Starts the workload binary `name` (one that prints `{"pid":…}`, waits for a line on
    /// stdin and then prints its truth); returns once it printed its pid.
    pub fn start_named(name: &str) -> Workload {
        Workload::start_with_args(name, &[])
    }

    /// Like [`start_named`](Workload::start_named), with arguments for the workload.
    pub fn start_with_args(name: &str, args: &[&std::ffi::OsStr]) -> Workload {
        let mut child = Command::new(built_binary(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn workload");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("workload pid line");
        let v: Value = serde_json::from_str(&line).expect("pid json");
        let pid = v["pid"].as_u64().expect("pid") as u32;
        Workload { child, stdout, pid }
    }

    /// Lets it run and returns the truth it reports.
    pub fn run(mut self) -> Value {
        writeln!(self.child.stdin.take().expect("stdin"), "go").expect("go");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("truth line");
        let status = self.child.wait().expect("wait workload");
        assert!(status.success(), "workload failed: {status}");
        serde_json::from_str(&line).expect("truth json")
    }
}

/// Where cgroup v2 is mounted, from /proc/mounts.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
    })
}

/// A directory of its own beside the built binaries, emptied: for a test's compiled workload
/// and `kotel run --out`.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = built_binary("kotel")
        .parent()
        .expect("target/<profile>")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

/// An integer of OTLP JSON: a number, or a string holding one (64-bit values).
pub fn otlp_int(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().expect("an integer string"),
        v => v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}")),
    }
}

/// The attribute `key` of an OTLP JSON span (its `AnyValue`).
pub fn span_attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

/// Parses JSON lines, panicking with the line on error.
pub fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// What `kotel capture --format jsonl` printed, split by line type.
#[derive(Debug, Clone)]
pub struct JsonlCapture {
    /// The `event` lines.
    pub events: Vec<Value>,
    /// The closing `histogram` lines.
    pub histograms: Vec<Value>,
    /// The closing `lost` line.
    pub lost: Value,
}

/// Runs `kotel capture --format jsonl --duration 0 <args>` while `during` runs, then
/// interrupts it and checks it exited 0. kotel detaches and drains the ring buffer once more
/// after the interrupt, before it prints anything, so every event `during` caused is in.
pub fn capture_jsonl<T>(args: &[&str], during: impl FnOnce() -> T) -> (T, JsonlCapture) {
    let mut all = vec!["capture", "--format", "jsonl", "--duration", "0"];
    all.extend_from_slice(args);
    let kotel = Kotel::start(&all);
    let out = during();
    let (code, stdout, stderr) = kotel.interrupt();
    assert_eq!(code, 0, "kotel exit code; stderr:\n{stderr}");
    let lines = json_lines(&stdout);
    let of = |t: &str| -> Vec<Value> { lines.iter().filter(|l| l["type"] == t).cloned().collect() };
    let lost = of("lost").pop().expect("a lost line");
    let captured = JsonlCapture {
        events: of("event"),
        histograms: of("histogram"),
        lost,
    };
    (out, captured)
}

/// The `writev` rows of `kotel capture --format table`'s summary, as (pid, count). Rows end in
/// PROBE STATE COUNT P50 P99 MAX BYTES and are read from the right, since a process name may
/// contain spaces.
pub fn writev_counts(table: &str) -> Vec<(String, u64)> {
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = f.len();
            (n >= 9 && f[n - 7] == "writev")
                .then(|| Some((f[0].to_string(), f[n - 5].parse().ok()?)))?
        })
        .collect()
}

/// What `kotel capture --format jsonl` saw of the TCP sends of `kotel-send-paths`, with the
/// workload's truth: its paths (one connection each), kotel's `tcp_send` events and its
/// `tcp_send` histogram line (if any), and kotel's stderr. `extra` adds capture flags.
pub struct SendCapture {
    /// The workload's report: `paths`, one object per send path.
    pub truth: Value,
    /// kotel's `tcp_send` events.
    pub events: Vec<Value>,
    /// kotel's `runqueue` events, when that probe was asked for.
    pub runqueue: Vec<Value>,
    /// kotel's `tcp_send` histogram line.
    pub histogram: Option<Value>,
    /// kotel's stderr.
    pub stderr: String,
    /// The table names of kotel's programs that were loaded while it captured (all of them
    /// gone again once it exited: checked).
    pub programs: Vec<&'static str>,
}

impl SendCapture {
    /// Runs `kotel-send-paths` under `kotel capture --probes tcp_send --min-latency 0`.
    pub fn run(extra: &[&str]) -> SendCapture {
        SendCapture::run_probes("tcp_send", extra)
    }

    /// Runs `kotel-send-paths` under `kotel capture --probes <probes> --min-latency 0`.
    pub fn run_probes(probes: &str, extra: &[&str]) -> SendCapture {
        let workload = Workload::start_named("kotel-send-paths");
        let pid = workload.pid.to_string();
        let mut args = vec![
            "capture",
            "--pid",
            &pid,
            "--probes",
            probes,
            "--min-latency",
            "0",
            "--format",
            "jsonl",
            "--duration",
            "0",
        ];
        args.extend_from_slice(extra);
        let before = program_ids();
        let kotel = Kotel::start(&args);
        let loaded = kotel_programs_since(&before);
        // The workload has exited, so every send of it is in the ring buffer: kotel drains that
        // once more after the interrupt, before it prints anything.
        let truth = workload.run();
        let (code, stdout, stderr) = kotel.interrupt();
        assert_eq!(code, 0, "kotel exit code; stderr:\n{stderr}");
        let left = still_loaded(&loaded);
        assert!(
            left.is_empty(),
            "programs still loaded after exit: {left:?}"
        );
        let lines = json_lines(&stdout);
        let lost = lines
            .iter()
            .find(|l| l["type"] == "lost")
            .expect("a lost line");
        assert_eq!(lost["count"], 0, "nothing lost: {lost}");
        let of_kind = |kind: &str| -> Vec<Value> {
            lines
                .iter()
                .filter(|l| l["type"] == "event" && l["kind"] == kind)
                .cloned()
                .collect()
        };
        let (events, runqueue) = (of_kind("tcp_send"), of_kind("runqueue"));
        let histogram = lines
            .iter()
            .find(|l| l["type"] == "histogram" && l["kind"] == "tcp_send")
            .cloned();
        SendCapture {
            truth,
            events,
            runqueue,
            histogram,
            stderr,
            programs: loaded.into_iter().map(|(_, name)| name).collect(),
        }
    }

    /// The truth of one path.
    pub fn path(&self, name: &str) -> Option<&Value> {
        self.truth["paths"]
            .as_array()
            .expect("paths")
            .iter()
            .find(|p| p["path"] == name)
    }

    /// kotel's events on the connection of `path`.
    pub fn events_of(&self, path: &Value) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["local"] == path["local"])
            .collect()
    }
}

/// (id, name) of every loaded BPF program, from bpftool.
pub fn loaded_programs() -> Vec<(u64, String)> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("bpftool");
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The ids of every loaded BPF program.
pub fn program_ids() -> std::collections::HashSet<u64> {
    loaded_programs().into_iter().map(|(id, _)| id).collect()
}

/// kotel's programs (named in its probe table) loaded since `before`, as (id, table name).
/// bpftool shows the BTF name, or the kernel's 15-character cut without BTF.
pub fn kotel_programs_since(before: &std::collections::HashSet<u64>) -> Vec<(u64, &'static str)> {
    let table = kotel_bpf::probe::table_programs();
    loaded_programs()
        .into_iter()
        .filter(|(id, _)| !before.contains(id))
        .filter_map(|(id, name)| {
            table
                .iter()
                .find(|t| **t == name || (name.len() == 15 && t.starts_with(&name)))
                .map(|t| (id, *t))
        })
        .collect()
}

/// Waits a bounded while (the kernel frees programs after an RCU grace period) for the
/// programs `ids` to be gone; returns those still loaded.
pub fn still_loaded(ids: &[(u64, &'static str)]) -> Vec<(u64, &'static str)> {
    let mut remaining = ids.to_vec();
    for _ in 0..100 {
        let now = program_ids();
        remaining.retain(|(id, _)| now.contains(id));
        if remaining.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    remaining
}
