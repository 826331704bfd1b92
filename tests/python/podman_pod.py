"""Running a ``pod_manifest.PodPlan`` under podman (root, runc) and looking at it from the host:
create and start, the pod's network namespace, a container's host pid, logs, exit code and
root-filesystem changes; stop and remove, always by the pod's name.

The podman settings this machine needs are passed on every call, never left to podman's
defaults: ``--runtime runc`` (crun refuses a hybrid cgroup layout), the cgroupfs manager (no
systemd), and ulimits no higher than the hard limits podman itself runs under (its defaults
exceed them, and runc cannot raise a limit without CAP_SYS_RESOURCE).

The pod gets a network namespace of its own with only a loopback interface (``--network none``):
nothing it does can leave the machine or touch a bridge address. The test joins that namespace
(``enter_netns``), so its receiver, its HTTP checks and the pod share one loopback, as the
containers of a Kubernetes pod share theirs.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import resource
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pod_manifest import PodPlan

#: podman's own global flags for this machine (see module doc).
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]

#: podman 4.3 lowers its own RLIMIT_NPROC to this (measured: /proc/<podman>/limits), and a
#: container's limit cannot exceed the runtime's.
PODMAN_NPROC = 32768

CLONE_NEWNET = 0x40000000

#: How long a podman command may take.
PODMAN_TIMEOUT = 120


#: podman's default seccomp profile (Debian's containers-common).
PODMAN_SECCOMP = Path("/usr/share/containers/seccomp.json")


#: The system calls current runtimes' default profiles allow with a capability narrower than
#: CAP_SYS_ADMIN.
CURRENT_GRANTS = {"bpf": "CAP_BPF", "perf_event_open": "CAP_PERFMON"}


def current_runtime_default(out: Path, base: Path = PODMAN_SECCOMP) -> Path:
    """Writes to ``out`` the seccomp profile ``RuntimeDefault`` means on the runtimes the
    DaemonSet targets (containerd 1.7+, Docker 20.10+): podman's default, which on Debian 12
    (containers-common 0.50) allows ``bpf`` only with CAP_SYS_ADMIN, plus ``bpf`` with CAP_BPF
    and ``perf_event_open`` with CAP_PERFMON, as those runtimes allow them. Nothing else
    changes. Returns ``out``."""
    profile = json.loads(base.read_text())
    rules = []
    for rule in profile["syscalls"]:
        granted = [n for n in rule["names"] if n in CURRENT_GRANTS]
        if rule["action"] != "SCMP_ACT_ERRNO" or not granted:
            rules.append(rule)
            continue
        # A refusal (without CAP_SYS_ADMIN): also lifted by the capability current runtimes
        # accept for the call.
        rest = [n for n in rule["names"] if n not in CURRENT_GRANTS]
        rules += [{**rule, "names": rest}] if rest else []
        for name in granted:
            excl = rule.get("excludes", {})
            caps = [*excl.get("caps", []), CURRENT_GRANTS[name]]
            rules.append({**rule, "names": [name], "excludes": {**excl, "caps": caps}})
    for name, cap in CURRENT_GRANTS.items():
        rules.append({"names": [name], "action": "SCMP_ACT_ALLOW", "includes": {"caps": [cap]}})
    out.write_text(json.dumps({**profile, "syscalls": rules}, indent=1))
    return out


def podman_unavailable() -> str | None:
    """Why podman cannot run containers here, or None when it can."""
    if os.geteuid() != 0:
        return "not root (the pod needs rootful podman: CAP_BPF in the init user namespace)"
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/check-container.sh installs it)"
    return None


def ulimits() -> list[str]:
    """``--ulimit`` values at this process's hard limits (capped as podman needs)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = PODMAN_NPROC if nproc == resource.RLIM_INFINITY else min(nproc, PODMAN_NPROC)
    nofile = 1 << 20 if nofile == resource.RLIM_INFINITY else nofile
    return [f"nofile={nofile}:{nofile}", f"nproc={nproc}:{nproc}"]


_CONF: list[str] = []


def _containers_conf() -> str:
    """A containers.conf whose default ulimits are ``ulimits()``: ``podman pod create`` has no
    --ulimit flag, and the pod's infra container would not start with podman's defaults."""
    if not _CONF:
        fd, path = tempfile.mkstemp(prefix="kotel-containers-", suffix=".conf")
        with os.fdopen(fd, "w") as f:
            f.write(f"[containers]\ndefault_ulimits = {json.dumps(ulimits())}\n")
        atexit.register(os.unlink, path)
        _CONF.append(path)
    return _CONF[0]


def run_podman(args: list[str], timeout: float = PODMAN_TIMEOUT) -> subprocess.CompletedProcess:
    """``podman <args>`` with this machine's flags and settings (see module doc)."""
    env = {**os.environ, "CONTAINERS_CONF": _containers_conf()}
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def podman(*args: str, check: bool = True, timeout: float = PODMAN_TIMEOUT) -> str:
    """Runs ``podman <args>`` with this machine's flags; returns stdout. Raises with podman's
    stderr when ``check`` and it fails."""
    r = run_podman(list(args), timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


class Pod:
    """A pod made from a plan: ``create()`` makes the pod and its infra container (and so its
    network namespace); ``start()`` creates and starts the manifest's containers."""

    def __init__(self, plan: PodPlan) -> None:
        self.plan = plan
        self.name = plan.pod_create[plan.pod_create.index("--name") + 1]

    def create(self) -> None:
        """The host directories and ConfigMap files, the pod, and its running infra container."""
        for d, mode in self.plan.directories.items():
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, mode)
        for f, text in self.plan.files.items():
            f.write_text(text)
        podman(*self.plan.pod_create)
        podman("pod", "start", self.name)

    def start(self, only: list[str] | None = None) -> None:
        """Creates and starts the manifest's containers (or those named in ``only``)."""
        for name, args in self.plan.containers.items():
            if only is None or name in only:
                podman(*args)
                podman("start", self.plan.container_name(name))

    def netns(self) -> str:
        """The path of the pod's network namespace (through its infra container)."""
        infra = podman("pod", "inspect", self.name, "--format", "{{.InfraContainerID}}").strip()
        return f"/proc/{self.host_pid(infra)}/ns/net"

    def host_pid(self, container: str) -> int:
        """The host pid of a container's first process (0 when it is not running)."""
        name = self.plan.container_name(container) if container in self.plan.containers else container
        return int(podman("inspect", name, "--format", "{{.State.Pid}}").strip())

    def state(self, container: str) -> dict:
        """podman's ``State`` of a manifest container (Status, ExitCode, ...)."""
        out = podman("inspect", self.plan.container_name(container), "--format", "{{json .State}}")
        return json.loads(out)

    def logs(self, container: str) -> str:
        """A manifest container's output so far (stdout and stderr)."""
        r = run_podman(["logs", self.plan.container_name(container)])
        return r.stdout + r.stderr

    def wait(self, container: str, timeout: float) -> int:
        """Waits (bounded) for a manifest container to exit; returns its exit code."""
        out = podman("wait", self.plan.container_name(container), timeout=timeout)
        return int(out.strip().splitlines()[-1])

    def root_changes(self, container: str) -> list[str]:
        """``podman diff``: what changed in a container's root filesystem (image layers)."""
        return podman("diff", self.plan.container_name(container)).split("\n")[:-1]

    def stop(self) -> None:
        """Stops every container of the pod (SIGTERM, then the manifest's grace)."""
        podman("pod", "stop", self.name)

    def remove(self) -> None:
        """Removes the pod and everything in it, by the pod's name, and its host directories."""
        podman("pod", "rm", "--force", "--ignore", self.name, check=False)
        for d in self.plan.directories:
            shutil.rmtree(d, ignore_errors=True)


@contextmanager
def enter_netns(path: str):
    """Moves this thread (and what it starts from now on: threads, sockets, children) into the
    network namespace at ``path``; moves it back on exit."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as home, open(path) as target:
        if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({path})")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns(back home)")


if __name__ == "__main__":
    import sys

    # python3 tests/python/podman_pod.py seccomp-profile OUT.json: the profile docs/deploy.md
    # ("Podman on one host") gives podman on Debian 12.
    if sys.argv[1:2] != ["seccomp-profile"] or len(sys.argv) != 3:
        sys.exit("usage: podman_pod.py seccomp-profile OUT.json")
    print(current_runtime_default(Path(sys.argv[2])))
