#!/usr/bin/env bash
# Ring-buffer throughput: two threads issue writev calls at a given total rate while kotel
# captures with --min-latency 0, so every call becomes a ring-buffer event. Reports, per rate,
# the events the workload made (its own count), what kotel received, what it counted as lost,
# and whether received + lost equals made.
# Usage: scripts/bench-ringbuf.sh [seconds] [total rates...]   (root)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
seconds="${1:-3}"; shift || true
rates=("${@:-500000 1000000 2000000 0}")
rates=(${rates[@]})
cargo build -q --release -p kotel-collector -p kotel-e2e
tmp=$(mktemp -d)
kpid=""
# Only the kotel this script started is stopped, by its pid.
trap '[ -n "$kpid" ] && kill -INT "$kpid" 2>/dev/null; rm -rf "$tmp"' EXIT

printf "%-12s %12s %12s %12s %10s %8s\n" "rate/s" "made" "received" "lost" "achieved/s" "exact"
for rate in "${rates[@]}"; do
  per_thread=$(( rate / 2 ))
  if [ "$rate" -eq 0 ]; then calls=$(( 2000000 * seconds )); else calls=$(( per_thread * seconds )); fi
  ./target/release/kotel capture --probes writev --min-latency 0 --duration 0 --format table \
    --ring-buffer-bytes "${KOTEL_RING_BYTES:-8388608}" >"$tmp/out" 2>"$tmp/err" &
  kpid=$!
  for _ in $(seq 1 300); do grep -q kotel.capture.attached "$tmp/err" && break; sleep 0.1; done
  res=$(./target/release/kotel-writev-loop --threads 2 --calls "$calls" --rate "$per_thread")
  sleep 0.3
  kill -INT "$kpid"; wait "$kpid"; kpid=""
  wpid=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' <<<"$res")
  made=$(sed -n 's/.*"calls":\([0-9]*\).*/\1/p' <<<"$res")
  achieved=$(sed -n 's/.*"calls_per_s":\([0-9]*\).*/\1/p' <<<"$res")
  # Histogram count for the workload (every call, counted in the kernel) minus the warm-up.
  counted=$(awk -v p="$wpid" '$1 == p && $3 == "writev" { print $4 }' "$tmp/out")
  lost=$(sed -n 's/^lost events \([0-9]*\).*/\1/p' "$tmp/out")
  received=$(sed -n 's/.*slow_events=\([0-9]*\).*/\1/p' "$tmp/err" | tail -1)
  # The loop's 10 000-call warm-up is traced too; kotel's own writes are not.
  warmup=10000
  exact=no
  [ "$(( counted - warmup ))" -eq "$made" ] && [ "$(( received + lost ))" -ge "$counted" ] && exact=yes
  printf "%-12s %12s %12s %12s %10s %8s\n" "${rate/#0/max}" "$made" "$(( received ))" "$lost" "$achieved" "$exact"
done
