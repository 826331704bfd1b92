#!/usr/bin/env bash
# Installs what building and running kotel needs on Debian, as root: clang for the BPF
# programs, libelf and zlib for libbpf, bpftool, protoc for kotel-proto, and tracefs mounted.
# Idempotent and quiet when everything is already there.
set -euo pipefail

need=()
for pkg in clang llvm libelf-dev zlib1g-dev pkg-config make bpftool util-linux protobuf-compiler; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    [ -x "$d/cargo" ] && export PATH="$d:$PATH"
  done
fi
command -v cargo >/dev/null 2>&1 || {
  echo "setup: cargo not found: kotel needs a Rust toolchain (1.82 or newer) on PATH" >&2
  exit 1
}

# Python side of the OTLP conformance tests: the official OpenTelemetry packages.
if [ "${KOTEL_SETUP_PYTHON:-0}" = 1 ]; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    -r "$(dirname "${BASH_SOURCE[0]}")/../tests/python/requirements.txt"
fi

# kotel itself uses tp_btf and needs no tracefs, but bpftrace and perf do.
if [ -d /sys/kernel/tracing ] && ! mountpoint -q /sys/kernel/tracing; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
