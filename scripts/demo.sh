#!/usr/bin/env bash
# kotel's main job on its embedded defaults: run the agent system-wide for a few seconds while a
# small known workload runs, and leave OTLP JSON lines (traces.jsonl, metrics.jsonl,
# profiles.jsonl), pictures and summary.json in kotel-out/, with a per-process summary on the
# terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --workspace --bins -q
duration="${KOTEL_DEMO_DURATION:-5s}"

# Something to see: the end-to-end workload (writev, TCP over loopback, sleeps, two spinners),
# and writes that wait for the disk (dd with O_DSYNC): off-CPU time blocked in the kernel, whose
# stacks also go out as OTLP profiles.
mkdir -p kotel-out
( sleep 1; echo go | ./target/release/kotel-workload >/dev/null ) &
( sleep 1; dd if=/dev/zero of=kotel-out/.demo-sync-writes bs=4M count=8 oflag=dsync status=none
  rm -f kotel-out/.demo-sync-writes ) &
./target/release/kotel run --duration "$duration" --interval 1s --out kotel-out --telemetry none
wait
