//! Slow calls carry the caller's stacks, and every probe with stacks draws a flame graph of
//! the interval, checked against a C program the test compiles with frame pointers: one thread
//! sleeps three times in `kotel_test_block_here`, another writes 64 KiB with `writev` into a
//! full pipe in `kotel_test_write_slowly` while a third thread starts draining it late. The
//! program times each itself. Each reaches its syscall through a helper: libc's wrappers keep
//! no frame pointer, so a stack taken in the kernel skips their caller's frame (the helper's
//! here, which is why the named function still shows). Under `kotel run --probes writev,offcpu`, the writev span and the
//! sleeps' off-CPU spans name those functions in `kotel.stack.user`, and `writev-flame.svg` and
//! `offcpu-flame.svg` weigh them within 20 % of the program's own times. A fourth thread sends
//! 1 MiB over a loopback TCP connection with 4 KiB buffers, drained late, in
//! `kotel_test_send_slowly`: the same for its `tcp_sendmsg` span and `tcp_send-flame.svg`.

use std::path::{Path, PathBuf};

use kotel_e2e::{
    compile_c, json_lines, otlp_int, scratch_dir, skip_without_bpf, span_attr, JsonChild, Kotel,
};
use serde_json::Value;

/// The C workload, shared with the OTLP profile tests.
const C_SOURCE: &str = include_str!("../workloads/flame.c");

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

/// Compiles the C workload into `dir` with frame pointers and debug info.
fn compile(dir: &Path) -> PathBuf {
    compile_c(
        dir,
        "kotel_flame.c",
        "kotel-flame-c",
        C_SOURCE,
        &["-O1", "-fno-omit-frame-pointer", "-g", "-pthread"],
    )
}

/// The spans of an OTLP JSON export file of `kotel run --out`.
fn spans(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for req in json_lines(&text) {
        for rs in req["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    out
}

/// The user frames of a span, innermost first.
fn user_frames(span: &Value) -> Vec<String> {
    span_attr(span, "kotel.stack.user")
        .and_then(|v| v["arrayValue"]["values"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| v["stringValue"].as_str().map(str::to_string))
        .collect()
}

/// The spans named `name` of thread `tid`.
fn of_thread<'a>(all: &'a [Value], name: &str, tid: u64) -> Vec<&'a Value> {
    all.iter()
        .filter(|s| s["name"] == name)
        .filter(|s| span_attr(s, "thread.id").map(|v| otlp_int(&v["intValue"])) == Some(tid))
        .collect()
}

/// The weight (ns) a flame graph SVG gives `function`: the sum over its boxes, read from
/// their `<title>function (1,234 ns, 5.6%)</title>` tooltips.
fn flame_weight(svg: &str, function: &str) -> u64 {
    let open = format!("<title>{function} (");
    svg.match_indices(&open)
        .map(|(i, m)| {
            let rest = &svg[i + m.len()..];
            let digits: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ',')
                .filter(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().expect("a weight in the tooltip")
        })
        .sum()
}

fn within_20_percent(measured: u64, truth: u64) -> bool {
    measured * 10 >= truth * 8 && measured * 10 <= truth * 12
}

#[test]
fn slow_calls_and_waits_name_the_program_in_spans_and_flame_graphs() {
    if skip_without_bpf("slow_calls_and_waits_name_the_program_in_spans_and_flame_graphs") {
        return;
    }
    let dir = scratch_dir("kotel-flame-run");
    let bin = compile(&dir);
    let out = dir.join("out");
    let mut program = JsonChild::spawn(&bin, &[]);
    let pid = u(&program.read_json()["pid"]).to_string();
    let out_s = out.display().to_string();
    let kotel = Kotel::start_until(
        &[
            "run",
            "--pid",
            &pid,
            "--probes",
            "writev,tcp_send,offcpu",
            "--span-threshold",
            "10ms",
            "--sleep-threshold",
            "10ms",
            "--span-budget",
            "0",
            // Every stack symbolized, however loaded the machine (no per-drain time budget).
            "--symbolize-budget",
            "0",
            // One interval: the flame graphs cover the whole run.
            "--interval",
            "600s",
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
    program.say("go");
    let truth = program.read_json();
    // kotel drains, symbolizes and draws once more when interrupted: the program is still
    // alive then, with its maps.
    let (code, _, stderr) = kotel.interrupt();
    assert_eq!(code, 0, "kotel exit code; stderr:\n{stderr}");
    program.say("exit");
    assert!(program.wait().success());
    assert_eq!(
        u(&truth["written"]),
        65536,
        "the writev wrote everything: {truth}"
    );
    assert_eq!(
        u(&truth["sent"]),
        1 << 20,
        "the send sent everything: {truth}"
    );

    let all = spans(&out.join("traces.jsonl"));
    let writes = of_thread(&all, "writev", u(&truth["writer"]));
    assert_eq!(writes.len(), 1, "the one slow writev: {writes:?}");
    let frames = user_frames(writes[0]);
    assert!(
        frames
            .iter()
            .any(|f| f.starts_with("kotel_test_write_slowly (")),
        "the writer's function in the writev's stack: {frames:?}"
    );
    assert!(
        span_attr(writes[0], "kotel.stack.kernel").is_some(),
        "and a kernel stack: {}",
        writes[0]
    );
    let sends = of_thread(&all, "tcp_sendmsg", u(&truth["sender"]));
    assert_eq!(sends.len(), 1, "the one slow send: {sends:?}");
    let frames = user_frames(sends[0]);
    assert!(
        frames
            .iter()
            .any(|f| f.starts_with("kotel_test_send_slowly (")),
        "the sender's function in the send's stack: {frames:?}"
    );
    let sleeps = of_thread(&all, "sched.offcpu", u(&truth["sleeper"]));
    assert_eq!(sleeps.len(), 3, "one span per sleep: {sleeps:?}");
    for s in &sleeps {
        let frames = user_frames(s);
        assert!(
            frames
                .iter()
                .any(|f| f.starts_with("kotel_test_block_here (")),
            "the sleeper's function in the wait's stack: {frames:?}"
        );
    }

    let svg = |name: &str| {
        std::fs::read_to_string(out.join(name))
            .unwrap_or_else(|e| panic!("{name} in {}: {e}", out.display()))
    };
    let writev_flame = svg("writev-flame.svg");
    let offcpu_flame = svg("offcpu-flame.svg");
    let send_flame = svg("tcp_send-flame.svg");
    let (sent_in, t) = (
        u(&truth["send_ns"]),
        flame_weight(&send_flame, "kotel_test_send_slowly"),
    );
    assert!(
        within_20_percent(t, sent_in),
        "tcp_send flame: kotel_test_send_slowly weighs {t} ns, the program measured {sent_in} ns"
    );
    let (wrote, slept) = (u(&truth["write_ns"]), u(&truth["slept_ns"]));
    let w = flame_weight(&writev_flame, "kotel_test_write_slowly");
    assert!(
        within_20_percent(w, wrote),
        "writev flame: kotel_test_write_slowly weighs {w} ns, the program measured {wrote} ns"
    );
    let s = flame_weight(&offcpu_flame, "kotel_test_block_here");
    assert!(
        within_20_percent(s, slept),
        "off-CPU flame: kotel_test_block_here weighs {s} ns, the program measured {slept} ns"
    );
    assert_eq!(
        flame_weight(&writev_flame, "kotel_test_block_here"),
        0,
        "the sleeps are not writes"
    );
    for title in [&writev_flame, &offcpu_flame, &send_flame] {
        assert!(title.contains("latency by stack"), "a titled picture");
    }
}
