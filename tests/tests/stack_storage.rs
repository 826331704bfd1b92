//! The stack map does not fill up over a long run. A C program the test compiles makes 2048
//! `writev` calls, each from its own user stack: round `v` calls down through eleven frames,
//! `kotel_test_bit1` where bit `d` of `v` is set and `kotel_test_bit0` where not, and writes
//! `v + 1` bytes. `kotel capture` holds 512 stacks per generation, a quarter of the distinct
//! stacks; the test lets the program go 16 rounds at a time, each batch once kotel has printed
//! the last. One map that is never emptied holds at most 512 of them (so at least 1536 would
//! find no room); by generation, a stack is lost only to a hash collision among the few of its
//! own generation. Checked against the program's truth:
//! - every event that carries a user stack carries its own: the frames spell the round that the
//!   byte count names (never another event's stack);
//! - every event without a user stack is counted as not stored;
//! - fewer than a quarter of the stacks are lost.

use std::time::Duration;

use kotel_e2e::{compile_c, json_lines, scratch_dir, skip_without_bpf, JsonChild, Kotel};
use serde_json::Value;

const SOURCE: &str = include_str!("../workloads/distinct_stacks.c");
/// The program's constants: bits per round, rounds per batch.
const BITS: u32 = 11;
const BATCH: u64 = 16;
const ROUNDS: u64 = 1 << BITS;
/// Stacks per generation: a quarter of the rounds.
const STORAGE: u64 = ROUNDS / 4;
/// The longest wait for a batch's events to be printed (a bound, not a measurement).
const BATCH_LIMIT: Duration = Duration::from_secs(30);

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

/// The bits a user stack spells, innermost frame first; `None` when a frame is missing.
fn spelled(frames: &[Value]) -> Option<u64> {
    let bits: Vec<u64> = frames
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|f| {
            if f.starts_with("kotel_test_bit1") {
                Some(1)
            } else if f.starts_with("kotel_test_bit0") {
                Some(0)
            } else {
                None
            }
        })
        .collect();
    // The innermost frame is the last bit, the outermost bit 0.
    (bits.len() == BITS as usize).then(|| {
        bits.iter()
            .enumerate()
            .map(|(j, b)| b << (BITS as usize - 1 - j))
            .sum()
    })
}

#[test]
fn stacks_by_generation_never_fill_the_map_nor_name_another_events_stack() {
    if skip_without_bpf("stacks_by_generation_never_fill_the_map_nor_name_another_events_stack") {
        return;
    }
    let dir = scratch_dir("kotel-stack-storage");
    // Every frame kept, none a tail call.
    let bin = compile_c(
        &dir,
        "distinct_stacks.c",
        "kotel-distinct-stacks",
        SOURCE,
        &["-O0", "-fno-omit-frame-pointer", "-g"],
    );
    let mut program = JsonChild::spawn(&bin, &[]);
    let hello = program.read_json();
    let (pid, fd) = (u(&hello["pid"]), u(&hello["fd"]));
    let storage = STORAGE.to_string();
    let mut kotel = Kotel::start(&[
        "capture",
        "--format",
        "jsonl",
        "--duration",
        "0",
        "--pid",
        &pid.to_string(),
        "--probes",
        "writev",
        // Every writev is an event with its stacks.
        "--min-latency",
        "0",
        "--stack-storage-size",
        &storage,
        // Every stack symbolized, however loaded the machine.
        "--symbolize-budget",
        "0",
    ]);

    // Batch by batch: the next starts once every round so far has been printed.
    let mut printed = 0u64;
    let ours = |v: &Value| v["type"] == "event" && v["pid"] == pid && v["fd"] == fd;
    while printed < ROUNDS {
        program.say("go");
        let done = u(&program.read_json()["rounds"]);
        assert_eq!(done, (printed + BATCH).min(ROUNDS), "the program's count");
        let all_in = kotel.read_until(BATCH_LIMIT, |v| {
            if ours(v) {
                printed += 1;
            }
            printed >= done
        });
        assert!(all_in, "kotel printed {printed} of the first {done} rounds");
    }
    assert!(program.wait().success());
    let (code, out, stderr) = kotel.interrupt();
    assert_eq!(code, 0, "{stderr}");

    let lines = json_lines(&out);
    let events: Vec<&Value> = lines.iter().filter(|v| ours(v)).collect();
    let lost = lines
        .iter()
        .find(|v| v["type"] == "lost")
        .expect("a lost line");
    let not_stored = u(&lost["stacks_not_stored"]);
    let mut rounds_seen = vec![false; ROUNDS as usize];
    let mut with_stack = 0u64;
    for e in &events {
        let v = u(&e["bytes"]) - 1;
        assert!(
            v < ROUNDS && !rounds_seen[v as usize],
            "round {v} once: {e}"
        );
        rounds_seen[v as usize] = true;
        if let Some(frames) = e["user_stack"].as_array() {
            assert_eq!(
                spelled(frames),
                Some(v),
                "the writev of round {v} carries its own stack: {frames:?}"
            );
            with_stack += 1;
        }
    }
    let without = ROUNDS - with_stack;
    eprintln!(
        "KOTEL-STACK-STORAGE rounds {ROUNDS}, {STORAGE} stacks per generation: {with_stack} \
         with their own user stack, {without} without; stacks not stored {not_stored}"
    );
    assert_eq!(events.len() as u64, ROUNDS, "every round an event");
    assert!(
        without <= not_stored,
        "every event without its stack is counted: {without} without, {not_stored} counted"
    );
    assert!(
        not_stored < ROUNDS / 4,
        "the map does not fill up: {not_stored} of {ROUNDS} stacks not stored; one map never \
         emptied would lose at least {}",
        ROUNDS - STORAGE
    );
    let _ = std::fs::remove_dir_all(&dir);
}
