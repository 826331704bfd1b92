#!/usr/bin/env bash
# The full soak with a flapping collector: kotel run traces 200 000 writev/s (about 2 000
# spans/s) for 10 minutes while its OTLP/gRPC receiver (official protos) goes down for 30 s
# every 2 minutes. Prints the figures as JSON and a PASS/FAIL line; see tests/python/soak.py.
# Usage: scripts/soak.sh [--release] [soak.py options, e.g. --duration 600]   (root)
set -euo pipefail
cd "$(dirname "$0")/.."
KOTEL_SETUP_PYTHON=1 source scripts/setup.sh
profile=debug
if [ "${1:-}" = "--release" ]; then profile=release; shift; cargo build -q --release -p kotel-collector -p kotel-e2e --bins
else cargo build -q -p kotel-collector -p kotel-e2e --bins; fi
exec python3 tests/python/soak.py --binaries "target/$profile" \
  --duration 600 --outage-every 120 --outage 30 --workdir "${KOTEL_SOAK_DIR:-/tmp/kotel-soak}" "$@"
