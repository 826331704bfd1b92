#!/usr/bin/env bash
# kotel's main job on its embedded defaults: run the agent system-wide for a few seconds while a
# small known workload runs, and leave OTLP JSON lines (traces.jsonl, metrics.jsonl) and
# summary.json in kotel-out/, with a per-process summary on the terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --workspace --bins -q
duration="${KOTEL_DEMO_DURATION:-5s}"

# Something to see: the end-to-end workload (writev, TCP over loopback, sleeps, two spinners).
( sleep 1; echo go | ./target/release/kotel-workload >/dev/null ) &
./target/release/kotel run --duration "$duration" --interval 1s --out kotel-out --telemetry none
wait
