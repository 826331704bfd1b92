#!/usr/bin/env bash
# Builds kotel's cargo-fuzz targets (tests/fuzz) and runs each for a bounded time, starting from
# its committed seed corpus (tests/fuzz/corpus/<target>, read only; what the fuzzer finds goes
# to a temporary directory). Prints one line per target, "1 passed (...)" or "1 failed (...)",
# with libFuzzer's executions and the crashes found, so scripts/test.sh counts them; exits 1 on
# any crash, hang, out-of-memory or failed run. A crashing input is kept in
# tests/fuzz/artifacts/<target>/ (not committed): reproduce it with
# `cargo fuzz run --fuzz-dir tests/fuzz <target> <file>` (same flags as below).
#
# Works on the stable toolchain. AddressSanitizer needs the unstable `-Zsanitizer` flag, which
# RUSTC_BOOTSTRAP=1 unlocks for these fuzz builds only.
#
# Environment: KOTEL_FUZZ_SECONDS (per target, default 20), KOTEL_FUZZ_TARGETS (default all
# four), KOTEL_FUZZ_SANITIZER (none, the default, or address: memory-error detection for about
# half the executions and a second instrumented build).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${KOTEL_FUZZ_SECONDS:-20}
targets=${KOTEL_FUZZ_TARGETS:-decode otlp_receiver render config}
sanitizer=${KOTEL_FUZZ_SANITIZER:-none}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi
# One target directory per sanitizer, so switching does not rebuild everything.
target_dir=tests/fuzz/target
if [ "$sanitizer" != none ]; then
    target_dir=tests/fuzz/target/$sanitizer
fi
flags=(--fuzz-dir tests/fuzz --sanitizer "$sanitizer" --debug-assertions --codegen-units 16
       --target-dir "$target_dir")

echo "== cargo fuzz build (sanitizer $sanitizer, debug assertions)"
cargo fuzz build "${flags[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TMPDIR=$work # the targets' fixture /proc goes there, and with it
failed=0
for t in $targets; do
    case $t in
        otlp_receiver) extra=(-dict=tests/fuzz/dict/otlp.dict -max_len=65536) ;;
        config) extra=(-dict=tests/fuzz/dict/config.dict -max_len=8192) ;;
        render) extra=(-max_len=32768) ;;
        *) extra=(-max_len=4096) ;;
    esac
    artifacts=tests/fuzz/artifacts/$t
    mkdir -p "$work/$t" "$artifacts"
    log=$work/$t.log
    status=0
    cargo fuzz run "${flags[@]}" "$t" "$work/$t" "tests/fuzz/corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" "${extra[@]}" >"$log" 2>&1 || status=$?
    execs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
    found=$(grep -cE '^(==[0-9]+==ERROR|ERROR: libFuzzer|thread .* panicked)' "$log" || true)
    if [ "$status" -eq 0 ] && [ "$found" -eq 0 ]; then
        echo "1 passed (fuzz $t: ${execs:-?} executions in ${secs} s, 0 crashes)"
    else
        failed=1
        echo "1 failed (fuzz $t: exit $status after ${execs:-?} executions; input kept in $artifacts/)"
        grep -E 'panicked|ERROR|SUMMARY|Test unit written|^Output of' "$log" | head -20 || true
        tail -n 30 "$log"
    fi
done
exit "$failed"
