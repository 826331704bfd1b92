#!/usr/bin/env bash
# kotel's whole test suite: format and lint checks, the build, unit, property and layout tests,
# and the real BPF end-to-end tests (which need root and kernel BTF; they skip loudly otherwise,
# and fail instead of skipping when KOTEL_REQUIRE_BPF=1).
set -euo pipefail
cd "$(dirname "$0")/.."
KOTEL_SETUP_PYTHON=1 source scripts/setup.sh
# Test-only tools, not needed to build or run kotel: capsh for the privilege tests, Debian's
# headless Chromium and its driver for the report page's browser tests (Selenium drives them),
# node for the perf-map test
# (scripts/check-container.sh installs podman, runc, catatonit and debootstrap itself).
test_pkgs=()
command -v capsh >/dev/null 2>&1 || test_pkgs+=(libcap2-bin)
command -v chromium >/dev/null 2>&1 || test_pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || test_pkgs+=(chromium-driver)
command -v node >/dev/null 2>&1 || test_pkgs+=(nodejs) # perf-map symbolization of JIT frames
if [ ${#test_pkgs[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${test_pkgs[@]}" >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== clang-format (BPF C)"
bash scripts/check-bpf-format.sh
echo "== cargo clippy"
cargo clippy -q --workspace --all-targets -- -D warnings
# The benchmark-only floor programs and the fuzz entry points sit behind features: linted too.
cargo clippy -q -p kotel-e2e --all-targets --features bench -- -D warnings
cargo clippy -q -p kotel-collector --all-targets --features fuzzing -- -D warnings
echo "== cargo doc (warnings are errors: broken and private intra-doc links)"
RUSTDOCFLAGS="-D warnings" cargo doc -q --workspace --no-deps
echo "== build"
cargo build -q --workspace --bins
echo "== deploy manifests (kubernetes-validate, checkov, config, Dockerfile packages)"
bash scripts/check-deploy.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "== unit, property, layout and doc tests"
cargo test --workspace --exclude kotel-e2e 2>&1 | tee "$log"
echo "== end-to-end tests (real BPF; one at a time, output shown)"
cargo test -p kotel-e2e -- --nocapture --test-threads=1 2>&1 | tee -a "$log"
echo "== OTLP conformance (official Python OTLP packages; real BPF)"
# test_container.py runs below, once its image is built.
python3 -m pytest -q -p no:cacheprovider tests/python --ignore=tests/python/test_container.py 2>&1 | tee -a "$log"
echo "== the DaemonSet under podman (image from deploy/Dockerfile, pod from deploy/kubernetes)"
bash scripts/check-container.sh 2>&1 | tee -a "$log"
echo "== fuzzing (cargo fuzz; each target ${KOTEL_FUZZ_SECONDS:-20} s from its seed corpus)"
bash scripts/fuzz.sh 2>&1 | tee -a "$log"
grep -h "KOTEL-E2E" "$log" | sed 's/^test [^ ]* \.\.\. //' | sort | uniq -c || true

# One closing line over every test binary; a real-BPF test that skipped counts as skipped.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     /^[0-9]+ (passed|failed|skipped)/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^skipped/) s += $i } }
     /KOTEL-E2E SKIPPED/ && !/::/ { k += 1 }
     END { printf "kotel: %d passed, %d failed, %d skipped\n", p - k, f, s + k }' "$log"
