//! JIT frames are named from perf maps: `node --perf-basic-prof` (Debian's nodejs) runs a hot
//! JavaScript function until V8's optimizing compiler has compiled it (`*` before its name in
//! the map V8 writes, `/tmp/perf-<pid>.map`, in executable anonymous memory); an address inside
//! that code, symbolized by kotel for that process, names the function. The ground truth is
//! V8's map; kotel only reads it through the process's symbolization. The same again for node
//! in a private pid and mount namespace with a private `/tmp` (a container, as far as perf
//! maps go): V8 writes `/tmp/perf-1.map` inside, which only `/proc/<pid>/root` reaches and
//! which names the process by its pid in its own namespace. Skips with one loud line where
//! node is missing, or where namespaces cannot be made (not root).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kotel_collector::kernel::ustack::UserSymbolizer;

const SCRIPT: &str = r#"
function kotelJsHot(n) { let s = 0; for (let i = 0; i < n; i++) s += i % 7; return s; }
let t = 0;
for (let i = 0; i < 20000; i++) t += kotelJsHot(1000);
process.stdout.write(JSON.stringify({ pid: process.pid, t }) + "\n");
process.stdin.once("data", () => process.exit(0));
"#;

/// The start of an entry of `map` (`start size name` per line) whose name holds `name`.
fn entry_of(map: &str, name: &str) -> Option<u64> {
    map.lines().find_map(|l| {
        let mut f = l.splitn(3, ' ');
        let start = u64::from_str_radix(f.next()?, 16).ok()?;
        let _size = f.next()?;
        f.next()?.contains(name).then_some(start)
    })
}

#[test]
fn a_javascript_function_is_named_from_the_perf_map() {
    let node = match Command::new("node")
        // V8 leaves an isolate log in its working directory.
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .arg("--perf-basic-prof")
        .arg("-e")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("!!!!!! KOTEL-PERF-MAP SKIPPED: node is not runnable here ({e}) !!!!!!");
            return;
        }
    };
    let mut node = node;
    let mut stdin = node.stdin.take().expect("stdin");
    let mut line = String::new();
    BufReader::new(node.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("node's line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("node's JSON");
    let pid = v["pid"].as_u64().expect("pid") as u32;
    let path = format!("/tmp/perf-{pid}.map");
    // V8 writes the map as it compiles; the function is hot by the time node printed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let start = loop {
        let map = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(s) = entry_of(&map, "*kotelJsHot") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never listed an optimized kotelJsHot"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stack = UserSymbolizer::new().symbolize(pid, &[start + 1]);
    writeln!(stdin, "exit").expect("exit");
    let _ = node.wait();
    let _ = std::fs::remove_file(&path);
    assert_eq!(stack.frames.len(), 1);
    assert!(
        stack.frames[0].to_string().contains("kotelJsHot"),
        "the JIT frame named from the perf map: {:?}",
        stack.frames
    );
}

/// The only child of process `pid` (`unshare --fork` forks the namespace's first process).
fn only_child(pid: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("the children of unshare");
    let kids: Vec<u32> = children
        .split_whitespace()
        .map(|c| c.parse().expect("a pid"))
        .collect();
    assert_eq!(kids.len(), 1, "unshare --fork has one child: {kids:?}");
    kids[0]
}

#[test]
fn a_containerized_javascript_function_is_named_from_the_map_in_its_root() {
    if let Err(why) = node_and_root() {
        eprintln!("!!!!!! KOTEL-PERF-MAP-NS SKIPPED: {why} !!!!!!");
        return;
    }
    // A private pid namespace (node is pid 1 there) and a private /tmp over the host's.
    let script = "mount -t tmpfs kotel-perf-map /tmp && exec node --perf-basic-prof -e \"$0\"";
    let mut unshare = Command::new("unshare")
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .args(["--fork", "--pid", "--mount-proc", "--mount"])
        .args(["--propagation", "private", "sh", "-c", script, SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("unshare");
    let mut stdin = unshare.stdin.take().expect("stdin");
    let mut line = String::new();
    BufReader::new(unshare.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("node's line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("node's JSON");
    assert_eq!(v["pid"], 1, "node is pid 1 in its own namespace");
    let pid = only_child(unshare.id());
    // The map as V8 wrote it, inside the process's root: the test's ground truth.
    let inside = format!("/proc/{pid}/root/tmp/perf-1.map");
    let deadline = Instant::now() + Duration::from_secs(10);
    let start = loop {
        let map = std::fs::read_to_string(&inside).unwrap_or_default();
        if let Some(s) = entry_of(&map, "*kotelJsHot") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{inside} never listed an optimized kotelJsHot"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let host_map = format!("/tmp/perf-{pid}.map");
    let host_has_none = !Path::new(&host_map).exists();
    let stack = UserSymbolizer::new().symbolize(pid, &[start + 1]);
    writeln!(stdin, "exit").expect("exit");
    let _ = unshare.wait();
    assert!(host_has_none, "the host's {host_map} does not exist");
    assert_eq!(stack.frames.len(), 1);
    let frame = stack.frames[0].to_string();
    assert!(
        frame.contains("kotelJsHot"),
        "the JIT frame named from the perf map in the process's root: {frame}"
    );
    eprintln!("KOTEL-PERF-MAP-NS frame of pid {pid} (1 inside): {frame}");
}

/// Why namespaces with node cannot be made here: node missing, or not root.
fn node_and_root() -> Result<(), String> {
    Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("node is not runnable here ({e})"))?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root: no pid and mount namespaces".to_string());
    }
    Ok(())
}
