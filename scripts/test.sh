#!/usr/bin/env bash
# kotel's whole test suite: format and lint checks, the build, unit, property and layout tests,
# and the real BPF end-to-end tests (which need root and kernel BTF; they skip loudly otherwise,
# and fail instead of skipping when KOTEL_REQUIRE_BPF=1).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy -q --workspace --all-targets -- -D warnings
echo "== build"
cargo build -q --workspace --bins
echo "== unit, property and layout tests"
cargo test --workspace --exclude kotel-e2e
echo "== end-to-end tests (real BPF; one at a time, output shown)"
cargo test -p kotel-e2e -- --nocapture --test-threads=1
