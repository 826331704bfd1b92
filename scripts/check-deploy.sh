#!/usr/bin/env bash
# Checks deploy/: every Kubernetes manifest validates against the Kubernetes API schemas
# (kubernetes-validate, offline), checkov passes on the manifests and the Dockerfile, the
# ConfigMap's kotel.toml passes `kotel config check`, the DaemonSet's termination grace covers
# the export shutdown grace, and the Dockerfile's build stage installs exactly the apt packages
# of scripts/setup.sh. One line per check; exits non-zero if any fails.
#
# Needs python3 (3.11+) and a built target/debug/kotel (cargo build -p kotel-collector --bin kotel).
# The pinned tools go into a virtualenv under target/ (KOTEL_DEPLOY_VENV to move it).
set -uo pipefail
cd "$(dirname "$0")/.."

KUBE_VERSION="${KOTEL_KUBE_VERSION:-1.37.0}"
VENV="${KOTEL_DEPLOY_VENV:-target/deploy-venv}"
KOTEL_BIN="${KOTEL_BIN:-target/debug/kotel}"
K8S_DIR=deploy/kubernetes
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pass() { echo "check-deploy: PASS $1"; }
fail() { echo "check-deploy: FAIL $1"; failed=1; }
show() { sed 's/^/    /' "$1" | tail -n "${2:-40}"; }

# (a) pinned tools
if { [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"; } >"$tmp/pip.log" 2>&1 &&
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r deploy/requirements.txt >>"$tmp/pip.log" 2>&1; then
  pass "tools: $(tr '\n' ' ' <deploy/requirements.txt)"
else
  fail "tools: pip install -r deploy/requirements.txt"
  show "$tmp/pip.log"
  exit 1
fi
PY="$VENV/bin/python"

# (b) kustomization lists every manifest, and every manifest validates
if "$PY" - "$K8S_DIR" >"$tmp/kust.log" 2>&1 <<'PYEOF'
import pathlib, sys, yaml
d = pathlib.Path(sys.argv[1])
listed = set(yaml.safe_load((d / "kustomization.yaml").read_text())["resources"])
present = {p.name for p in d.glob("*.yaml")} - {"kustomization.yaml"}
if listed != present:
    sys.exit(f"not in kustomization.yaml: {sorted(present - listed)}; listed but missing: {sorted(listed - present)}")
print(" ".join(sorted(listed)))
PYEOF
then
  pass "kustomization.yaml lists every manifest ($(cat "$tmp/kust.log"))"
else
  fail "kustomization.yaml resources"
  show "$tmp/kust.log"
fi
manifests=()
for f in "$K8S_DIR"/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
if "$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBE_VERSION" "${manifests[@]}" >"$tmp/kv.log" 2>&1 &&
  ! grep -qE '^(ERROR|WARN)' "$tmp/kv.log"; then
  pass "kubernetes-validate --strict against Kubernetes $KUBE_VERSION (${#manifests[@]} files)"
else
  fail "kubernetes-validate --strict against Kubernetes $KUBE_VERSION"
  show "$tmp/kv.log"
fi

# (c) checkov; skips carry their reasons in the manifests (checkov.io/skipN annotations) and
# in the Dockerfile (#checkov:skip comments).
if "$VENV/bin/checkov" -d deploy --framework kubernetes dockerfile --compact --quiet \
  --skip-download --output cli >"$tmp/checkov.log" 2>&1; then
  pass "checkov (kubernetes, dockerfile): $(grep -h 'Passed checks' "$tmp/checkov.log" | tr '\n' ' ' | tr -s ' ')"
else
  fail "checkov (kubernetes, dockerfile)"
  show "$tmp/checkov.log" 80
fi

# (d) the ConfigMap's kotel.toml is a config kotel accepts
if "$PY" - "$K8S_DIR/configmap.yaml" "$tmp/kotel.toml" >"$tmp/cm.log" 2>&1 <<'PYEOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "ConfigMap"]
open(sys.argv[2], "w").write(docs[0]["data"]["kotel.toml"])
PYEOF
then
  if [ ! -x "$KOTEL_BIN" ]; then
    fail "kotel config check: $KOTEL_BIN not built (cargo build -p kotel-collector --bin kotel)"
  elif "$KOTEL_BIN" config check "$tmp/kotel.toml" >"$tmp/check.log" 2>&1; then
    pass "kotel config check on the ConfigMap's kotel.toml"
  else
    fail "kotel config check on the ConfigMap's kotel.toml"
    show "$tmp/check.log"
  fi
else
  fail "reading kotel.toml from $K8S_DIR/configmap.yaml"
  show "$tmp/cm.log"
fi

# (e) terminationGracePeriodSeconds covers export.shutdown_grace with 5s of margin at least
if "$PY" - "$K8S_DIR/daemonset.yaml" "$tmp/kotel.toml" >"$tmp/grace.log" 2>&1 <<'PYEOF'
import re, sys, tomllib, yaml
ds = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "DaemonSet")
pod = ds["spec"]["template"]["spec"]
tgps = pod["terminationGracePeriodSeconds"]
grace = tomllib.load(open(sys.argv[2], "rb")).get("export", {}).get("shutdown_grace", "5s")
m = re.fullmatch(r"(\d+)(ms|s|m)", grace)
if not m:
    sys.exit(f"cannot read export.shutdown_grace {grace!r}")
secs = int(m[1]) * {"ms": 0.001, "s": 1, "m": 60}[m[2]]
if tgps < secs + 5:
    sys.exit(f"terminationGracePeriodSeconds {tgps} < export.shutdown_grace {grace} + 5s margin")
print(f"terminationGracePeriodSeconds {tgps} >= export.shutdown_grace {grace} + 5s")
PYEOF
then
  pass "$(cat "$tmp/grace.log")"
else
  fail "termination grace"
  show "$tmp/grace.log"
fi

# (f) the Dockerfile's build stage installs the apt packages of scripts/setup.sh, no more, no
# less. protobuf-compiler (the renderer's protoc) is allowed in the Dockerfile only until
# scripts/setup.sh lists it too.
if "$PY" - scripts/setup.sh deploy/Dockerfile >"$tmp/apt.log" 2>&1 <<'PYEOF'
import re, sys
setup = open(sys.argv[1]).read()
m = re.search(r"^for pkg in ([^;]+); do", setup, re.M)
if not m:
    sys.exit("scripts/setup.sh: no `for pkg in ...; do` package list")
want = set(m[1].split())
text = open(sys.argv[2]).read().replace("\\\n", " ")
stages = re.split(r"^FROM\s", text, flags=re.M)[1:]
build = next((s for s in stages if re.match(r"\S+\s+AS\s+build\b", s, re.I)), None)
if build is None:
    sys.exit("deploy/Dockerfile: no stage named `build`")
got = set()
for cmd in re.findall(r"apt-get install ([^&\n]+)", build):
    got |= {w for w in cmd.split() if not w.startswith("-")}
extra_ok = {"protobuf-compiler"} - want
missing, extra = want - got, got - want - extra_ok
if missing or extra:
    sys.exit(f"missing from the Dockerfile: {sorted(missing)}; not in setup.sh: {sorted(extra)}")
print(" ".join(sorted(want)) + (f" (+ {' '.join(sorted(extra_ok & got))} until setup.sh lists it)" if extra_ok & got else ""))
PYEOF
then
  pass "Dockerfile build stage installs setup.sh's apt packages: $(cat "$tmp/apt.log")"
else
  fail "apt package drift between scripts/setup.sh and deploy/Dockerfile"
  show "$tmp/apt.log"
fi

if [ "$failed" = 0 ]; then
  echo "check-deploy: all checks passed"
else
  echo "check-deploy: some checks FAILED"
fi
exit "$failed"
