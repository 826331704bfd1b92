#!/usr/bin/env bash
# The DaemonSet, run for real: builds the runtime image from deploy/Dockerfile and runs the pod
# template of deploy/kubernetes/daemonset.yaml under podman with exactly the manifest's
# privileges (tests/python/test_container.py, which derives every flag from the manifest).
#
#   bash scripts/check-container.sh          # after `cargo build --workspace --bins`
#
# The image: no registry can be pulled from here, so
#   - the runtime base, a stand-in for debian:12.12-slim, is a Debian 12 root filesystem made
#     with `debootstrap --variant=minbase` and `podman import`ed as $KOTEL_BASE_IMAGE (kept
#     between runs: delete it with `podman rmi` to make it anew);
#   - the binaries are the host's (target/debug, debug info stripped), passed to the Dockerfile
#     with --build-arg KOTEL_BINARIES=prebuilt instead of its Rust build stage.
# The default `docker build -f deploy/Dockerfile .` is unchanged by either.
#
# Needs root; installs podman, runc, catatonit (the pod's infra process) and debootstrap with
# apt when missing. Without root, or where podman cannot run containers, it says so in one loud
# line and exits 0 (exit 1 under KOTEL_REQUIRE_BPF=1, as the other real-BPF tests do).
# It loads BPF (inside the pod): on a shared machine, run it under the BPF lock
# (`flock /tmp/kotel-bpf.lock bash scripts/check-container.sh`), as scripts/test.sh is run.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE="${KOTEL_BASE_IMAGE:-localhost/kotel-base:bookworm-minbase}"
IMAGE="${KOTEL_CONTAINER_IMAGE:-localhost/kotel:check}"
TARGET="${CARGO_TARGET_DIR:-target}"
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs --events-backend file)

skip() {
  if [ "${KOTEL_REQUIRE_BPF:-}" = 1 ]; then
    echo "check-container: FAIL KOTEL_REQUIRE_BPF=1 but the container test cannot run: $1"
    exit 1
  fi
  echo "!!!!!! KOTEL-E2E SKIPPED check-container: $1 !!!!!!"
  exit 0
}

[ "$(id -u)" = 0 ] || skip "not root (rootful podman is needed to add CAP_BPF)"
[ -e /sys/kernel/btf/vmlinux ] || skip "kernel has no BTF at /sys/kernel/btf/vmlinux"
for bin in kotel kotel-render kotel-workload; do
  [ -x "$TARGET/debug/$bin" ] || { echo "check-container: FAIL $TARGET/debug/$bin not built (cargo build --workspace --bins)"; exit 1; }
done

# Tools from Debian's packages (crun is not used: it refuses hybrid cgroup layouts).
missing=()
for pair in podman:podman runc:runc catatonit:catatonit debootstrap:debootstrap; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/libexec/podman/${pair%%:*}" ] || missing+=("${pair##*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "check-container: installing ${missing[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null ||
    skip "cannot install ${missing[*]} with apt"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# podman's default ulimits exceed this machine's hard limits; the infra container needs them
# from containers.conf (tests/python/podman_pod.py passes the same values to every container).
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] && nofile=1048576
{ [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n' "$nofile" "$nofile" "$nproc" "$nproc" >"$tmp/containers.conf"
export CONTAINERS_CONF="$tmp/containers.conf"

if ! "${PODMAN[@]}" info >"$tmp/info.log" 2>&1; then
  skip "podman cannot run here: $(tail -n 1 "$tmp/info.log")"
fi

# (a) the base image, cached by tag
t0=$(date +%s)
if "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
  echo "check-container: base $BASE_IMAGE (cached)"
else
  echo "check-container: making $BASE_IMAGE with debootstrap (bookworm, minbase)"
  root="$tmp/rootfs"
  if ! debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$tmp/debootstrap.log" 2>&1; then
    echo "check-container: FAIL debootstrap"; tail -n 20 "$tmp/debootstrap.log"; exit 1
  fi
  # As debian:12-slim: no package caches, lists, documentation or translations.
  rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
  tar --numeric-owner -C "$root" -c . | "${PODMAN[@]}" import --quiet --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
fi

# (b) the image, from deploy/Dockerfile, with the host's binaries
ctx="$tmp/context"
mkdir "$ctx"
strip --strip-debug -o "$ctx/kotel" "$TARGET/debug/kotel"
strip --strip-debug -o "$ctx/kotel-render" "$TARGET/debug/kotel-render"
old=$("${PODMAN[@]}" image inspect "$IMAGE" --format '{{.Id}}' 2>/dev/null || true)
dangling() { "${PODMAN[@]}" images -q --no-trunc --filter dangling=true | sort; }
dangling >"$tmp/dangling.before"
if ! "${PODMAN[@]}" build --network host --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" \
  -f deploy/Dockerfile --build-arg KOTEL_BINARIES=prebuilt --build-arg RUNTIME_BASE="$BASE_IMAGE" \
  -t "$IMAGE" "$ctx" >"$tmp/build.log" 2>&1; then
  echo "check-container: FAIL podman build"; tail -n 30 "$tmp/build.log"; exit 1
fi
rm -rf "$ctx"
new=$("${PODMAN[@]}" image inspect "$IMAGE" --format '{{.Id}}')
# The previous build of $IMAGE, now untagged, and this build's intermediate stages: nothing
# piles up across runs (layers shared with the new image stay).
[ -z "$old" ] || [ "$old" = "$new" ] || "${PODMAN[@]}" rmi "$old" >/dev/null 2>&1 || true
dangling | comm -13 "$tmp/dangling.before" - | xargs -r "${PODMAN[@]}" rmi >/dev/null 2>&1 || true
size=$("${PODMAN[@]}" image inspect "$IMAGE" --format '{{.Size}}')
echo "check-container: PASS image $IMAGE built in $(($(date +%s) - t0)) s, $((size / 1000000)) MB"

# (c) the pod (tests/python/test_container.py)
export KOTEL_CONTAINER_IMAGE="$IMAGE"
python3 -m pytest -q -p no:cacheprovider tests/python/test_container.py
