//! JIT frames are named from perf maps: `node --perf-basic-prof` (Debian's nodejs) runs a hot
//! JavaScript function until V8's optimizing compiler has compiled it (`*` before its name in
//! the map V8 writes, `/tmp/perf-<pid>.map`, in executable anonymous memory); an address inside
//! that code, symbolized by kotel for that process, names the function. The ground truth is
//! V8's map; kotel only reads it through the process's symbolization. Skips with one loud line
//! where node is missing.

use std::io::{BufRead, BufReader, Write};
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
