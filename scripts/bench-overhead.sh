#!/usr/bin/env bash
# Overhead of tracing writev, measured side by side in one run: a tight loop of 1-byte writev
# calls to /dev/null (kotel-writev-loop, pinned to one CPU) timed
#   untraced | empty programs on raw_syscalls (kotel's hooks: the floor) |
#   empty programs on syscalls:sys_{enter,exit}_writev | the least timing any tracer does on
#   kotel's hooks (enter time in task storage, difference at exit) |
#   kotel capturing writev (system-wide) | bpftrace keeping the same per-pid histogram.
# Rounds are interleaved and the median of each mode is reported, with ratios.
# Usage: scripts/bench-overhead.sh [rounds] [calls]     (root; installs bpftrace if missing)
# KOTEL_BENCH_MODES picks modes; mode kotel_base runs the build at KOTEL_BASE_BIN, for an A/B.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
dpkg -s bpftrace >/dev/null 2>&1 || { apt-get install -y -qq bpftrace >/dev/null; }
rounds="${1:-5}"
calls="${2:-2000000}"
modes="${KOTEL_BENCH_MODES:-untraced floor_raw floor_syscalls floor_timed kotel bpftrace}"
# The floor programs and the benchmark loops that attach them need kotel-e2e's bench feature.
cargo build -q --release -p kotel-collector -p kotel-e2e --features kotel-e2e/bench
loop=./target/release/kotel-writev-loop
cpu=$(( $(nproc) - 1 ))
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

wait_for() { # file pattern
  for _ in $(seq 1 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

# Runs in a subshell ($(run_mode …)): a tracer it started is stopped by its pid when the
# subshell ends, however it ends; nothing else is ever signalled.
run_mode() {
  local mode=$1 bin
  tracer_pid=""
  trap '[ -n "$tracer_pid" ] && kill -INT "$tracer_pid" 2>/dev/null; true' EXIT
  case "$mode" in
    untraced) "$loop" --calls "$calls" --cpu "$cpu" ;;
    floor_raw) "$loop" --calls "$calls" --cpu "$cpu" --floor raw ;;
    floor_syscalls) "$loop" --calls "$calls" --cpu "$cpu" --floor syscalls ;;
    floor_timed) "$loop" --calls "$calls" --cpu "$cpu" --floor timed ;;
    kotel|kotel_base)
      # kotel_base: another build (KOTEL_BASE_BIN), for an A/B of a change in the same run.
      bin=./target/release/kotel
      [ "$mode" = kotel_base ] && bin=${KOTEL_BASE_BIN:?set KOTEL_BASE_BIN to the other kotel}
      "$bin" capture --probes writev --duration 0 --format table >"$tmp/kotel.out" 2>"$tmp/kotel.err" &
      tracer_pid=$!
      wait_for "$tmp/kotel.err" "kotel.capture.attached"
      "$loop" --calls "$calls" --cpu "$cpu"
      kill -INT "$tracer_pid"; wait "$tracer_pid"; tracer_pid=""
      grep -q "lost events" "$tmp/kotel.out" ;;
    bpftrace)
      bpftrace -e 'tracepoint:raw_syscalls:sys_enter /args->id == 20/ { @start[tid] = nsecs; }
                   tracepoint:raw_syscalls:sys_exit /@start[tid]/ { @ns[pid] = hist(nsecs - @start[tid]); delete(@start[tid]); }' \
        >"$tmp/bpftrace.out" 2>&1 &
      tracer_pid=$!
      wait_for "$tmp/bpftrace.out" "Attaching"
      sleep 0.5
      "$loop" --calls "$calls" --cpu "$cpu"
      kill -INT "$tracer_pid"; wait "$tracer_pid" || true; tracer_pid="" ;;
  esac
}

for r in $(seq 1 "$rounds"); do
  for m in $modes; do
    ns=$(run_mode "$m" | sed -n 's/.*"ns_per_call":\([0-9.]*\).*/\1/p')
    [ -n "$ns" ] || { echo "mode $m produced no measurement" >&2; exit 1; }
    echo "$m $ns" >> "$tmp/results"
    echo "round $r: $m ${ns} ns/call" >&2
  done
done

python3 - "$tmp/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m, ns = line.split()
    rows.setdefault(m, []).append(float(ns))
med = {m: statistics.median(v) for m, v in rows.items()}
base = med.get("untraced")
floor = med.get("floor_raw")
print(f"{'mode':<16}{'ns/call':>9}{'added':>9}{'added / floor':>15}")
for m, v in med.items():
    added = v - base if base is not None else float('nan')
    ratio = added / (floor - base) if floor and base is not None and floor > base else float('nan')
    print(f"{m:<16}{v:>9.1f}{added:>9.1f}{ratio:>15.2f}")
PY
