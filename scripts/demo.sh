#!/usr/bin/env bash
# kotel's main job on its embedded defaults: capture every probe system-wide for a few seconds
# while a small known workload runs, print the per-process summary, and leave the JSON lines
# in kotel-out/capture.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --workspace --bins -q
mkdir -p kotel-out
duration="${KOTEL_DEMO_DURATION:-5s}"

# Something to see: the end-to-end workload (writev, TCP over loopback, sleeps, two spinners).
( sleep 1; echo go | ./target/release/kotel-workload >/dev/null ) &
./target/release/kotel capture --duration "$duration" --format jsonl > kotel-out/capture.jsonl
wait
echo "wrote kotel-out/capture.jsonl ($(wc -l < kotel-out/capture.jsonl) lines); summary of a second capture:"
./target/release/kotel capture --duration 2s --format table
