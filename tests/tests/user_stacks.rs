//! Off-CPU events carry symbolized user stacks, checked against programs whose code the test
//! knows: a C program the test compiles (`cc -O1 -fno-omit-frame-pointer -g`) that sleeps in
//! `kotel_test_block_here` (its own function name and source line appear), the same program
//! stripped (`module+0xoff [buildid …]`, the offset inside that function, the build-id the
//! binary carries), the same program started from a tmpfs mounted in a private mount namespace
//! the host cannot see (found through `/proc/<pid>/root`), the same again deleted while it
//! runs (found through `/proc/<pid>/exe`), and a Rust program (demangled names). Under `kotel run`, the C program's off-CPU spans carry the same frames and
//! `code.function.name`/`code.file.path`/`code.line.number` of its own function, and
//! `kotel.stacks.user.symbolized` counts their stacks.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kotel_e2e::{
    built_binary, json_lines, otlp_int, scratch_dir, skip_without_bpf, span_attr, JsonChild, Kotel,
    ATTACH_TIMEOUT,
};
use serde_json::Value;

const MS: u64 = 1_000_000;

/// The C workload: prints `{"pid":…}`, waits for a line, then a thread of its own (`sleeper`)
/// sleeps three times 30 ms in `kotel_test_block_here` (through `kotel_test_sleep_once`, which
/// calls libc's nanosleep); it prints `{"tid":<that thread>,"sleeps":3}` and waits for another
/// line before it exits. `CALL_LINE` marks the line of the call whose return
/// address the stack holds.
const C_SOURCE: &str = r#"#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

static volatile int sleeps_done;

__attribute__((noinline)) int kotel_test_sleep_once(long ms)
{
	struct timespec ts = { 0, ms * 1000000L };
	int r = nanosleep(&ts, NULL);
	sleeps_done++;
	return r;
}

__attribute__((noinline)) void kotel_test_block_here(void)
{
	for (int i = 0; i < 3; i++) {
		if (kotel_test_sleep_once(30) != 0) { /* CALL_LINE */
			perror("nanosleep");
			_exit(1);
		}
	}
}

static void *sleeper(void *tid)
{
	kotel_test_block_here();
	*(long *)tid = syscall(SYS_gettid);
	return NULL;
}

int main(void)
{
	char line[16];
	pthread_t thread;
	long tid = 0;
	printf("{\"pid\":%d}\n", getpid());
	fflush(stdout);
	if (!fgets(line, sizeof line, stdin))
		return 1;
	/* A thread of its own: its only waits are the sleeps. */
	if (pthread_create(&thread, NULL, sleeper, &tid) || pthread_join(thread, NULL))
		return 1;
	printf("{\"tid\":%ld,\"sleeps\":%d}\n", tid, sleeps_done);
	fflush(stdout);
	/* Alive until told: its stacks are symbolized while its maps exist. */
	if (!fgets(line, sizeof line, stdin))
		return 1;
	return 0;
}
"#;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Compiles the C workload into `dir`: (source path, binary path).
fn compile(dir: &Path) -> (PathBuf, PathBuf) {
    let src = dir.join("kotel_ustack.c");
    std::fs::write(&src, C_SOURCE).expect("write the C source");
    let bin = dir.join("kotel-ustack-c");
    run(Command::new("cc")
        .args(["-O1", "-fno-omit-frame-pointer", "-g", "-pthread", "-o"])
        .arg(&bin)
        .arg(&src));
    (src, bin)
}

/// The 1-based line of the source that holds `marker`.
fn line_of(marker: &str) -> u32 {
    let i = C_SOURCE
        .lines()
        .position(|l| l.contains(marker))
        .expect("marker in the source");
    i as u32 + 1
}

/// The build-id `readelf -n` reads from `bin`, in hex.
fn build_id(bin: &Path) -> String {
    let notes = run(Command::new("readelf").arg("-n").arg(bin));
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("the compiler gave the binary a build-id")
        .trim()
        .to_string()
}

/// The file offsets `[start, end)` of function `name` in `bin`: its address and size from
/// `nm -S`, moved into the file by the loadable segment that holds it (`readelf -lW`).
fn file_range(bin: &Path, name: &str) -> (u64, u64) {
    let syms = run(Command::new("nm").arg("-S").arg(bin));
    let (addr, size) = syms
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[3] == name).then(|| {
                (
                    u64::from_str_radix(f[0], 16).expect("address"),
                    u64::from_str_radix(f[1], 16).expect("size"),
                )
            })
        })
        .unwrap_or_else(|| panic!("{name} in nm's output:\n{syms}"));
    let segments = run(Command::new("readelf").arg("-lW").arg(bin));
    for l in segments.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() != Some(&"LOAD") {
            continue;
        }
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex");
        let (offset, vaddr, filesz) = (hex(f[1]), hex(f[2]), hex(f[4]));
        if (vaddr..vaddr + filesz).contains(&addr) {
            let start = addr - vaddr + offset;
            return (start, start + size);
        }
    }
    panic!("no LOAD segment holds {name} at {addr:#x}:\n{segments}");
}

/// The off-CPU events of thread `tid` of 25 ms and more (its sleeps: the thread does nothing
/// else that waits).
fn long_waits<'a>(events: impl IntoIterator<Item = &'a Value>, tid: &Value) -> Vec<&'a Value> {
    events
        .into_iter()
        .filter(|e| e["type"] == "event" && e["kind"] == "offcpu" && e["tid"] == *tid)
        .filter(|e| u(&e["duration_ns"]) >= 25 * MS)
        .collect()
}

/// Runs `program args` (it prints `{"pid":…}`, sleeps after a line on stdin, prints its
/// truth and exits after another line) under `kotel capture --probes offcpu --pid`: (truth,
/// the user stacks of its three sleeps). The program is let go only once kotel has printed
/// those three events: a process's stacks are symbolized while it still has its maps.
fn capture(program: &Path, args: &[&OsStr]) -> (Value, Vec<Vec<String>>) {
    capture_after(program, args, |_| {})
}

/// [`capture`], calling `started` with the program's pid once it has printed it (it is
/// running, waiting for its line), before kotel starts.
fn capture_after(
    program: &Path,
    args: &[&OsStr],
    started: impl FnOnce(u32),
) -> (Value, Vec<Vec<String>>) {
    let mut workload = JsonChild::spawn(program, args);
    let pid = u(&workload.read_json()["pid"]);
    started(pid as u32);
    let pid = pid.to_string();
    let mut kotel = Kotel::start(&[
        "capture",
        "--format",
        "jsonl",
        "--duration",
        "0",
        "--pid",
        &pid,
        "--probes",
        "offcpu",
        "--min-latency",
        "0",
        "--sleep-threshold",
        "0",
        // Every stack symbolized, however loaded the machine.
        "--symbolize-budget",
        "0",
    ]);
    workload.say("go");
    let truth = workload.read_json();
    // Should an event be lost, the wait ends after 10 s without output, and the lost line
    // says why below.
    let mut seen = 0;
    let all_seen = kotel.read_until(Duration::from_secs(10), |v| {
        seen += long_waits([v], &truth["tid"]).len();
        seen == 3
    });
    workload.say("exit");
    let status = workload.wait();
    assert!(status.success(), "workload: {status}");
    let (code, out, stderr) = kotel.interrupt();
    assert_eq!(code, 0, "kotel exit code; stderr:\n{stderr}");
    let lines = json_lines(&out);
    let lost = lines
        .iter()
        .find(|l| l["type"] == "lost")
        .expect("a lost line");
    assert_eq!(u(&lost["count"]), 0, "lost: {lost}");
    let stacks: Vec<Vec<String>> = long_waits(&lines, &truth["tid"])
        .iter()
        .map(|e| {
            e["user_stack"]
                .as_array()
                .unwrap_or_else(|| panic!("a user stack: {e}"))
                .iter()
                .map(|f| f.as_str().expect("frames are strings").to_string())
                .collect()
        })
        .collect();
    assert_eq!(stacks.len(), 3, "one long wait per sleep: {stacks:?}");
    assert!(all_seen, "seen while the workload ran");
    for frames in &stacks {
        for f in frames {
            assert!(
                !f.starts_with("0x") || f.ends_with(" [unknown]"),
                "never a bare address: {frames:?}"
            );
        }
    }
    (truth, stacks)
}

/// The frame the C program's stack must show for `kotel_test_block_here`, with its file and
/// the line of the call it waits in.
fn block_frame(src: &Path) -> String {
    format!(
        "kotel_test_block_here ({}:{})",
        src.display(),
        line_of("CALL_LINE")
    )
}

#[test]
fn a_c_program_with_frame_pointers_names_its_function_and_line() {
    if skip_without_bpf("a_c_program_with_frame_pointers_names_its_function_and_line") {
        return;
    }
    let dir = scratch_dir("kotel-ustack-c");
    let (src, bin) = compile(&dir);
    let (truth, stacks) = capture(&bin, &[]);
    assert_eq!(u(&truth["sleeps"]), 3);
    let want = block_frame(&src);
    for frames in &stacks {
        assert!(
            frames[0].contains("nanosleep"),
            "innermost: libc's nanosleep: {frames:?}"
        );
        let at = frames
            .iter()
            .position(|f| *f == want)
            .unwrap_or_else(|| panic!("{want} in {frames:?}"));
        assert!(
            frames[at + 1].starts_with("sleeper ("),
            "the thread's function calls it: {frames:?}"
        );
    }
    eprintln!(
        "KOTEL-E2E C user stack ({} frames): {:?}",
        stacks[0].len(),
        stacks[0]
    );
}

#[test]
fn a_stripped_binary_gives_module_offset_and_build_id() {
    if skip_without_bpf("a_stripped_binary_gives_module_offset_and_build_id") {
        return;
    }
    let dir = scratch_dir("kotel-ustack-stripped");
    let (_, bin) = compile(&dir);
    let (start, end) = file_range(&bin, "kotel_test_block_here");
    let stripped = dir.join("kotel-ustack-c-stripped");
    std::fs::copy(&bin, &stripped).expect("copy the binary");
    run(Command::new("strip").arg(&stripped));
    let id = build_id(&stripped);
    let prefix = "kotel-ustack-c-stripped+0x";
    let suffix = format!(" [buildid {id}]");
    let (_, stacks) = capture(&stripped, &[]);
    for frames in &stacks {
        assert!(
            frames.iter().all(|f| !f.contains("kotel_test_block_here")),
            "stripped: no name: {frames:?}"
        );
        let offsets: Vec<u64> = frames
            .iter()
            .filter_map(|f| f.strip_prefix(prefix)?.strip_suffix(suffix.as_str()))
            .map(|off| u64::from_str_radix(off, 16).expect("hex offset"))
            .collect();
        assert!(
            offsets.iter().any(|o| (start..end).contains(o)),
            "a frame {prefix}… inside kotel_test_block_here's [{start:#x}, {end:#x}) with \
             {suffix:?}: {frames:?}"
        );
    }
    eprintln!("KOTEL-E2E stripped user stack: {:?}", stacks[0]);
}

/// A program run from a tmpfs mounted in a private mount namespace: copied there and started
/// from there by `unshare`, while the host's folder of that name stays empty.
struct Hidden {
    unshare: PathBuf,
    script: String,
    /// The program's path inside that namespace (empty on the host).
    inside: PathBuf,
}

impl Hidden {
    fn new(name: &str, bin: &Path) -> Self {
        let folder = scratch_dir(name);
        let inside = folder.join("kotel-ustack-c");
        let script = format!(
            "mount -t tmpfs kotel-ustack {h} && cp {b} {p} && exec {p}",
            h = folder.display(),
            b = bin.display(),
            p = inside.display()
        );
        Hidden {
            unshare: PathBuf::from("/usr/bin/unshare"),
            script,
            inside,
        }
    }

    /// `unshare`'s arguments.
    fn args(&self) -> Vec<&OsStr> {
        [
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            self.script.as_str(),
        ]
        .into_iter()
        .map(OsStr::new)
        .collect()
    }
}

#[test]
fn a_binary_the_host_cannot_see_resolves_through_its_root() {
    if skip_without_bpf("a_binary_the_host_cannot_see_resolves_through_its_root") {
        return;
    }
    let dir = scratch_dir("kotel-ustack-ns");
    let (src, bin) = compile(&dir);
    let hidden = Hidden::new("kotel-ustack-ns-hidden", &bin);
    let (_, stacks) = capture(&hidden.unshare, &hidden.args());
    assert!(!hidden.inside.exists(), "the host does not see the binary");
    let want = block_frame(&src);
    for frames in &stacks {
        assert!(frames.contains(&want), "{want} in {frames:?}");
    }
}

#[test]
fn a_binary_deleted_while_it_runs_resolves_through_its_exe() {
    if skip_without_bpf("a_binary_deleted_while_it_runs_resolves_through_its_exe") {
        return;
    }
    let dir = scratch_dir("kotel-ustack-deleted");
    let (src, bin) = compile(&dir);
    // As above, in a private mount namespace the host cannot see; then, once the program
    // runs, its binary is unlinked there (through the process's root): neither the host nor
    // the process's own namespace has a path to it, only `/proc/<pid>/exe` does.
    let hidden = Hidden::new("kotel-ustack-deleted-hidden", &bin);
    let inside = hidden.inside.clone();
    let (_, stacks) = capture_after(&hidden.unshare, &hidden.args(), |pid| {
        let rel = inside.strip_prefix("/").expect("an absolute path");
        let through_root = Path::new(&format!("/proc/{pid}/root")).join(rel);
        std::fs::remove_file(&through_root)
            .unwrap_or_else(|e| panic!("unlink {}: {e}", through_root.display()));
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
        assert!(
            maps.contains(&format!("{} (deleted)", inside.display())),
            "the kernel calls the running binary deleted:\n{maps}"
        );
    });
    assert!(!inside.exists(), "the host does not see the binary");
    let want = block_frame(&src);
    for frames in &stacks {
        assert!(frames.contains(&want), "{want} in {frames:?}");
    }
    eprintln!("KOTEL-E2E deleted binary's user stack: {:?}", stacks[0]);
}

#[test]
fn a_rust_program_gets_demangled_names() {
    if skip_without_bpf("a_rust_program_gets_demangled_names") {
        return;
    }
    let (truth, stacks) = capture(&built_binary("kotel-ustack-rust"), &[]);
    let function = truth["function"].as_str().expect("function");
    for frames in &stacks {
        let name = frames[0].split(" (").next().unwrap_or_default();
        let name = name.rsplit_once("::h").map_or(name, |(n, hash)| {
            if hash.chars().all(|c| c.is_ascii_hexdigit()) {
                n
            } else {
                name
            }
        });
        assert_eq!(name, function, "innermost frame: {frames:?}");
    }
    eprintln!("KOTEL-E2E Rust user stack: {:?}", stacks[0]);
}

/// Complete OTLP JSON lines of `path` (an export file of `kotel run --out`).
fn exports(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    json_lines(complete)
}

/// `kotel.stacks.user.symbolized`, summed over outcomes, in the newest export of `metrics`.
fn user_stacks_counted(metrics: &Path) -> u64 {
    let Some(last) = exports(metrics).pop() else {
        return 0;
    };
    let mut total = 0;
    for rm in last["resourceMetrics"].as_array().into_iter().flatten() {
        for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
            for m in sm["metrics"].as_array().into_iter().flatten() {
                if m["name"] == "kotel.stacks.user.symbolized" {
                    for dp in m["sum"]["dataPoints"].as_array().into_iter().flatten() {
                        total += otlp_int(&dp["asInt"]);
                    }
                }
            }
        }
    }
    total
}

#[test]
fn spans_carry_the_frames_and_the_code_attributes() {
    if skip_without_bpf("spans_carry_the_frames_and_the_code_attributes") {
        return;
    }
    let dir = scratch_dir("kotel-ustack-run");
    let (src, bin) = compile(&dir);
    let out = dir.join("out");
    let mut workload = JsonChild::spawn(&bin, &[]);
    let pid = u(&workload.read_json()["pid"]).to_string();
    let out_s = out.display().to_string();
    let kotel = Kotel::start_until(
        &[
            "run",
            "--pid",
            &pid,
            "--probes",
            "offcpu",
            "--span-threshold",
            "10ms",
            "--sleep-threshold",
            "0",
            "--span-budget",
            "0",
            "--symbolize-budget",
            "0",
            "--interval",
            "1s",
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
    workload.say("go");
    let truth = workload.read_json();
    // The workload stays alive until kotel has symbolized its three sleeps' stacks (only
    // this process is traced: every stack counted is one of its waits).
    let metrics = out.join("metrics.jsonl");
    let waiting = std::time::Instant::now();
    while user_stacks_counted(&metrics) < 3 {
        assert!(
            waiting.elapsed() < ATTACH_TIMEOUT,
            "kotel.stacks.user.symbolized never reached 3 in {}",
            metrics.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    workload.say("exit");
    assert!(workload.wait().success());
    let (code, _, stderr) = kotel.interrupt();
    assert_eq!(code, 0, "kotel exit code; stderr:\n{stderr}");

    let mut sleeps = Vec::new();
    for req in exports(&out.join("traces.jsonl")) {
        for rs in req["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    let tid = span_attr(span, "thread.id").map(|v| otlp_int(&v["intValue"]));
                    if span["name"] == "sched.offcpu" && tid == Some(u(&truth["tid"])) {
                        sleeps.push(span.clone());
                    }
                }
            }
        }
    }
    assert_eq!(sleeps.len(), 3, "one span per sleep: {sleeps:?}");
    let want = block_frame(&src);
    for span in &sleeps {
        let frames: Vec<&str> = span_attr(span, "kotel.stack.user")
            .and_then(|v| v["arrayValue"]["values"].as_array())
            .expect("kotel.stack.user")
            .iter()
            .filter_map(|v| v["stringValue"].as_str())
            .collect();
        assert!(frames.contains(&want.as_str()), "{want} in {frames:?}");
        assert_eq!(
            span_attr(span, "code.function.name").map(|v| &v["stringValue"]),
            Some(&Value::from("kotel_test_block_here")),
            "the program's own innermost function: {span}"
        );
        assert_eq!(
            span_attr(span, "code.file.path").map(|v| &v["stringValue"]),
            Some(&Value::from(src.display().to_string())),
        );
        assert_eq!(
            span_attr(span, "code.line.number").map(|v| otlp_int(&v["intValue"])),
            Some(u64::from(line_of("CALL_LINE")))
        );
    }
}
