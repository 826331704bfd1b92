#!/usr/bin/env bash
# Checks that kotel's BPF C (bpf/src/bpf/*.c, *.h) is formatted as .clang-format says, with
# Debian 12's clang-format (14): prints each misformatted line and exits non-zero if any. The
# generated bpf/src/bpf/vmlinux.h is left out. Installs the Debian clang-format package, as root,
# when it is missing. To fix the files: the same clang-format with -i instead of --dry-run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg -s clang-format >/dev/null 2>&1; then
  echo "check-bpf-format: installing clang-format"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends clang-format >/dev/null
fi

# The package's own binary, not whatever clang-format comes first on PATH: another version
# formats differently, and the check must answer the same as on a fresh Debian 12.
clang_format=/usr/bin/clang-format
version=$("$clang_format" --version)
case "$version" in
  *"clang-format version 14."*) ;;
  *)
    echo "check-bpf-format: .clang-format is checked with clang-format 14 (Debian 12's), found: $version" >&2
    exit 1
    ;;
esac

files=()
for f in bpf/src/bpf/*.c bpf/src/bpf/*.h; do
  [ "$f" = bpf/src/bpf/vmlinux.h ] || files+=("$f")
done
"$clang_format" --style=file --dry-run -Werror "${files[@]}"
echo "check-bpf-format: ${#files[@]} files formatted as .clang-format says"
