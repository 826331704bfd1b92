"""The DaemonSet, run for real: the image built from ``deploy/Dockerfile`` and the pod template
of ``deploy/kubernetes/daemonset.yaml`` run under podman with exactly the manifest's privileges
(``pod_manifest`` derives every flag from the manifest), kotel inside it tracing a workload on
the host.

* the whole pod: the agent captures the host workload exactly (spans and histogram counts, to
  a receiver on the pod's loopback), the sidecar's artifact URLs serve PNGs, ``/healthz`` and
  ``/readyz`` answer, the agent's capabilities after it dropped them are the ones docs/deploy.md
  names ("After attaching"), in every thread, and nothing is written to the read-only root;
* each privilege taken away in turn (an added capability, a mount) gives what docs/deploy.md
  promises for it.

Needs root, podman and runc, kernel BTF, and the image named by ``KOTEL_CONTAINER_IMAGE``, which
``scripts/check-container.sh`` builds and passes (it runs these tests). Real BPF: run under
``flock /tmp/kotel-bpf.lock``.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

import pod_manifest as pm
from conftest import wait_until
from kotel_checks import (
    BASE_ARGS,
    Window,
    check_export,
    check_summary_all_delivered,
    read_summary,
    resource_pid,
)
from otlp_receiver import OtlpReceiver, attributes, iter_spans
from podman_pod import Pod, current_runtime_default, enter_netns, podman_unavailable, ulimits
from test_pictures import PNG_MAGIC, exemplar_artifacts, spans_by_id

pytestmark = pytest.mark.bpf

#: The environment variable naming the image under test.
IMAGE_ENV = "KOTEL_CONTAINER_IMAGE"

#: The capabilities kotel keeps after attaching (docs/deploy.md, "After attaching"), by number.
STEADY_CAPS = {"CAP_BPF": 39, "CAP_SYS_PTRACE": 19, "CAP_DAC_READ_SEARCH": 2}

#: Capability numbers (linux/capability.h) of the ones the manifest adds.
CAP_NUMBERS = {"DAC_READ_SEARCH": 2, "SYS_PTRACE": 19, "SYSLOG": 34, "PERFMON": 38, "BPF": 39}

#: The pod's network namespace is new: only the pod's own ports are taken there.
RECEIVER_PORT = 14317
#: The agent's telemetry and the renderer's HTTP port, from the manifest's container ports.
TELEMETRY_PORT = 9464
#: The renderer's HTTP port (its --http in the manifest).
RENDER_PORT = 4321
#: The pod IP the downward API gives: the pod's network namespace has only a loopback.
POD_IP = "127.0.0.1"

#: Bounds, not measurements.
READY_TIMEOUT = 90.0
PICTURES_WAIT = 30.0
EXIT_TIMEOUT = 60.0


@pytest.fixture
def image(capsys: pytest.CaptureFixture) -> str:
    """The image under test; skips loudly (fails under ``KOTEL_REQUIRE_BPF=1``) without one."""
    why = podman_unavailable()
    if why is None and not os.environ.get(IMAGE_ENV):
        why = f"{IMAGE_ENV} is not set (scripts/check-container.sh builds the image and sets it)"
    if why is None:
        return os.environ[IMAGE_ENV]
    if os.environ.get("KOTEL_REQUIRE_BPF") == "1":
        pytest.fail(f"KOTEL_REQUIRE_BPF=1 but the container test cannot run: {why}", pytrace=False)
    with capsys.disabled():
        print(f"\n!!!!!! KOTEL-E2E SKIPPED container test: {why} !!!!!!")
    pytest.skip(why)


_PODS = itertools.count(1)


def site(image: str, tmp_path: Path, agent_args: list[str], old_seccomp: bool = False) -> pm.Site:
    """This machine's side of the pod: a pod name unique to this test process. ``RuntimeDefault``
    is the seccomp profile of current runtimes (``current_runtime_default``), or with
    ``old_seccomp`` podman's own, which is that of an older runtime (docs/deploy.md, "Seccomp")."""
    seccomp = None if old_seccomp else current_runtime_default(tmp_path / "seccomp.json")
    return pm.Site(
        image=image,
        pod_name=f"kotel-check-{os.getpid()}-{next(_PODS)}",
        node_name=os.uname().nodename,
        pod_ip=POD_IP,
        volume_root=tmp_path / "volumes",
        agent_args=agent_args,
        ulimits=ulimits(),
        runtime_default_seccomp=seccomp,
    )


@contextmanager
def running_pod(ds: dict, cm: dict, where: pm.Site):
    """The pod created (its network namespace joined by this thread), removed by name at the
    end whatever happened."""
    pod = Pod(pm.plan(ds, cm, where))
    try:
        pod.create()
        with enter_netns(pod.netns()):
            yield pod
    finally:
        pod.remove()


def http_get(port: int, path: str) -> tuple[int, bytes, str]:
    """(status, body, content type) of ``http://127.0.0.1:<port><path>``; status 0 when nothing
    answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")
    except OSError:
        return 0, b"", ""


def wait_ready(pod: Pod) -> None:
    """Waits (bounded) until the agent's ``/readyz`` answers 200; fails with the agent's logs if
    it exits first."""

    def ready() -> bool:
        if pod.state("kotel")["Status"] != "running":
            pytest.fail(f"the agent exited before it was ready:\n{pod.logs('kotel')}", pytrace=False)
        return http_get(TELEMETRY_PORT, "/readyz")[0] == 200

    wait_until(ready, READY_TIMEOUT, "the agent's /readyz answers 200")


def gallery_pngs() -> list[str]:
    """The PNG paths the sidecar's report page (``/``) links to (in its embedded data)."""
    status, body, _ = http_get(RENDER_PORT, "/")
    found = re.findall(r'artifacts(?:/|\\/)([0-9a-f]+)\.png', body.decode())
    return sorted({f"/artifacts/{m}.png" for m in found})


#: What podman itself changes in a container's root before it starts: the mount points of the
#: /etc files it bind-mounts (hosts, hostname, resolv.conf).
RUNTIME_MOUNTPOINTS = {"C /etc", "A /etc/hosts", "A /etc/hostname", "A /etc/resolv.conf"}


def root_mount_options(pid: int) -> set[str]:
    """The mount options of the root filesystem process ``pid`` sees."""
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            return set(fields[5].split(","))
    raise AssertionError(f"no root mount in /proc/{pid}/mountinfo")


def capability_sets(pid: int) -> dict[str, dict[str, int]]:
    """Per thread of ``pid``, its capability sets (CapInh, CapPrm, ...) from /proc."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text()
        out[task.name] = {
            k: int(v, 16)
            for k, _, v in (line.partition(":\t") for line in status.splitlines())
            if k.startswith("Cap")
        }
    return out


def stop_and_wait(pod: Pod) -> int:
    """Stops the pod (SIGTERM, then the manifest's grace) and returns the agent's exit code."""
    pod.stop()
    return pod.wait("kotel", EXIT_TIMEOUT)


# --------------------------------------------------------------------------------------------
# The whole pod
# --------------------------------------------------------------------------------------------


def test_the_daemonset_pod_traces_a_host_workload_exactly(image, workload, tmp_path, capsys) -> None:
    ds, cm = pm.load_manifests()
    w = workload()
    endpoint = f"http://127.0.0.1:{RECEIVER_PORT}"
    # The agent's own OTLP receiver off: while it runs, kernel spans wait up to link.hold for
    # application spans, and a metrics export in that time has points with new events but no
    # exemplar (known; kotel run on the host does the same with a pause before SIGINT).
    args = ["--pid", str(w.pid), *BASE_ARGS, "--otlp-endpoint", endpoint,
            "--receiver-grpc", "none", "--receiver-http", "none"]
    where = site(image, tmp_path, args)
    with running_pod(ds, cm, where) as pod:
        receiver = OtlpReceiver(RECEIVER_PORT)
        receiver.start()
        try:
            start = time.time_ns()
            t0 = time.monotonic()
            pod.start()
            wait_ready(pod)
            with capsys.disabled():
                print(f"\nKOTEL-CONTAINER start-up: /readyz answered {time.monotonic() - t0:.1f} s "
                      "after `podman create` of the pod's containers")
            assert http_get(TELEMETRY_PORT, "/healthz")[0] == 200

            # After attaching, every thread holds exactly the steady-state capabilities
            # (docs/deploy.md, "After attaching"). The bounding set keeps what the manifest
            # added: dropping from it needs CAP_SETPCAP, which the pod does not have, and with
            # no_new_privs (allowPrivilegeEscalation: false) nothing regains it through exec.
            agent = pod.host_pid("kotel")
            steady = sum(1 << n for n in STEADY_CAPS.values())
            added = sum(1 << CAP_NUMBERS[c] for c in pm.added_capabilities(ds))
            want = {"CapInh": 0, "CapPrm": steady, "CapEff": steady, "CapBnd": added, "CapAmb": 0}
            for tid, caps in capability_sets(agent).items():
                assert caps == want, f"agent thread {tid}: {caps}, expected {want}"
            assert "NoNewPrivs:\t1" in Path(f"/proc/{agent}/status").read_text()
            for c in ("kotel", "kotel-render"):
                assert root_mount_options(pod.host_pid(c)) & {"ro", "rw"} == {"ro"}, c
            for tid, caps in capability_sets(pod.host_pid("kotel-render")).items():
                assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == 0, f"renderer {tid}: {caps}"

            truth = w.run()
            # The agent drew the interval's pictures through the sidecar, which serves them.
            pngs = wait_until(lambda: gallery_pngs(), PICTURES_WAIT, "a PNG in the sidecar's gallery")
            for path in pngs:
                status, body, ctype = http_get(RENDER_PORT, path)
                assert (status, ctype) == (200, "image/png") and body.startswith(PNG_MAGIC), path
            # Exemplars link the pictures, by the sidecar's public URL, which serves them.
            linked = receiver.wait_for(
                lambda: exemplar_artifacts(receiver.requests("metrics")), timeout=PICTURES_WAIT
            )
            assert linked, f"no exemplar linked a picture within {PICTURES_WAIT} s"
            for a, _ in linked:
                url = a["kotel.artifact.url"]
                assert url.startswith(f"http://{POD_IP}:{RENDER_PORT}/"), f"the sidecar's URL: {url}"
                status, body, ctype = http_get(RENDER_PORT, url[len(f"http://{POD_IP}:{RENDER_PORT}"):])
                assert status == 200 and ctype == a["kotel.artifact.media_type"], (url, status, ctype)
                assert ctype != "image/png" or body.startswith(PNG_MAGIC), url

            code = stop_and_wait(pod)
            end = time.time_ns()
            assert code == 0, f"agent exit code {code}:\n{pod.logs('kotel')}"
        finally:
            receiver.stop(grace=None)

        spans, points = check_export(
            w.pid, truth, receiver.requests("traces"), receiver.requests("metrics"),
            Window(start, end), host_name=where.node_name,
        )
        check_summary_all_delivered(read_summary(where.volume_root / "out"), len(spans), len(points))
        traces = spans_by_id(receiver.requests("traces"))
        for a, ex in linked:
            assert attributes(traces[ex.span_id].attributes)["kotel.artifact.id"] == a["kotel.artifact.id"]
        for c in ("kotel", "kotel-render"):
            changes = set(pod.root_changes(c)) - RUNTIME_MOUNTPOINTS
            assert not changes, f"{c} wrote to its read-only root: {changes}"


# --------------------------------------------------------------------------------------------
# Each privilege taken away
# --------------------------------------------------------------------------------------------

#: What kotel says at start without each capability it cannot start without
#: (docs/deploy.md, "Capabilities" and "Troubleshooting").
FATAL_CAPABILITIES = {
    "BPF": "missing privileges: CAP_BPF",
    "PERFMON": "missing privileges: CAP_PERFMON",
}

def cgroup2_root() -> str:
    """Where this host mounts cgroup v2 (a directory ``capture.cgroup`` accepts)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return fields[1]
    return "/sys/fs/cgroup"


#: Each mount of the agent taken away: (agent arguments that use it, the agent's exit code,
#: what it says; docs/deploy.md, "Capabilities" (host mounts) and "Troubleshooting"). The
#: agent is stopped once ready when it does start.
MOUNTS = {
    "config": ([], 2, "cannot read config file /etc/kotel/kotel.toml"),
    "out": ([], 1, "writing /var/lib/kotel/out/summary.json: Read-only file system"),
    "tracing": (["--probes", "all"], 0,
                "kotel.probe.fallback: probe writev runs on raw_syscalls (fallback)"),
    "cgroup": (["--cgroup", cgroup2_root()], 2, f"{cgroup2_root()}: No such file or directory"),
}


def agent_exit(ds: dict, image: str, tmp_path: Path, old_seccomp: bool = False) -> tuple[int, str]:
    """Runs the pod made from ``ds`` until the agent exits (bounded); (exit code, its logs)."""
    cm = pm.load_manifests()[1]
    with running_pod(ds, cm, site(image, tmp_path, [], old_seccomp)) as pod:
        pod.start(only=["kotel"])
        code = pod.wait("kotel", EXIT_TIMEOUT)
        return code, pod.logs("kotel")


@pytest.mark.parametrize("cap", sorted(FATAL_CAPABILITIES))
def test_without_a_capability_it_cannot_start_without_kotel_says_which(image, tmp_path, cap) -> None:
    ds = pm.load_manifests()[0]
    assert cap in pm.added_capabilities(ds), f"the manifest no longer adds {cap}"
    code, logs = agent_exit(pm.without_capability(ds, cap), image, tmp_path)
    assert code == 2, f"exit code {code}:\n{logs}"
    assert FATAL_CAPABILITIES[cap] in logs, logs


@pytest.mark.parametrize("volume", sorted(MOUNTS))
def test_without_a_mount_kotel_says_what_is_missing(image, tmp_path, volume) -> None:
    ds, cm = pm.load_manifests()
    assert volume in pm.agent_mounts(ds), f"the manifest no longer mounts {volume}"
    args, want_code, message = MOUNTS[volume]
    with running_pod(pm.without_mount(ds, volume), cm, site(image, tmp_path, args)) as pod:
        pod.start()

        def exited_or_ready() -> bool:
            return pod.state("kotel")["Status"] != "running" or (
                http_get(TELEMETRY_PORT, "/readyz")[0] == 200
            )

        wait_until(exited_or_ready, READY_TIMEOUT, "the agent exits or is ready")
        code = stop_and_wait(pod)
        logs = pod.logs("kotel")
    assert (code, message in logs) == (want_code, True), f"exit code {code}:\n{logs}"
def test_under_an_older_runtimes_seccomp_default_loading_fails_as_docs_say(image, tmp_path) -> None:
    """Debian 12's podman is such a runtime: its default profile allows bpf only with
    CAP_SYS_ADMIN (docs/deploy.md, "Seccomp")."""
    code, logs = agent_exit(pm.load_manifests()[0], image, tmp_path, old_seccomp=True)
    assert code != 0, logs
    assert "kotel: error: loading the BPF programs failed: Operation not permitted" in logs, logs


def test_every_added_capability_and_mount_is_checked() -> None:
    """A capability or mount added to the manifest must get its check here."""
    ds = pm.load_manifests()[0]
    assert set(pm.added_capabilities(ds)) == set(FATAL_CAPABILITIES) | set(DEGRADING_CAPABILITIES)
    assert set(pm.agent_mounts(ds)) == set(MOUNTS)


#: A process of another user (nobody), with a service name in its environment.
OTHER_UID = 65534
SERVICE = "kotel-other-user"

#: Its resource and stacks with the manifest's privileges: (process.executable.name,
#: service.name, kernel frames symbolized). /bin/sh is dash; its comm is "sh".
FULL = ("dash", SERVICE, True)

#: The capabilities kotel runs without, and what it then reports (docs/deploy.md,
#: "Capabilities"): without SYS_PTRACE /proc/<pid>/exe and environ of other users are closed
#: (the executable falls back to comm, the service name to the executable); without
#: DAC_READ_SEARCH environ (mode 0400) is; without SYSLOG /proc/kallsyms shows no addresses.
DEGRADING_CAPABILITIES = {
    "SYS_PTRACE": ("sh", "sh", True),
    "DAC_READ_SEARCH": ("dash", "dash", True),
    "SYSLOG": ("dash", SERVICE, False),
}


@pytest.mark.parametrize("cap", ["none", *sorted(DEGRADING_CAPABILITIES)])
def test_without_a_capability_kotel_runs_with_what_docs_say_is_lost(image, tmp_path, cap) -> None:
    ds, cm = pm.load_manifests()
    if cap != "none":
        assert cap in pm.added_capabilities(ds), f"the manifest no longer adds {cap}"
        ds = pm.without_capability(ds, cap)
    proc = subprocess.Popen(
        ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups",
         "env", "-i", f"OTEL_SERVICE_NAME={SERVICE}", "/bin/sh", "-c", "while :; do sleep 0.05; done"],
        cwd="/",
    )
    endpoint = f"http://127.0.0.1:{RECEIVER_PORT}"
    args = ["--pid", str(proc.pid), "--span-threshold", "0", "--sleep-threshold", "0",
            "--span-budget", "0", "--interval", "1s", "--otlp-endpoint", endpoint]
    try:
        with running_pod(ds, cm, site(image, tmp_path, args)) as pod:
            receiver = OtlpReceiver(RECEIVER_PORT)
            receiver.start()
            try:
                pod.start()
                wait_ready(pod)

                def stacked() -> list:
                    return [s for s in iter_spans(receiver.requests("traces"))
                            if resource_pid(s.resource) == proc.pid
                            and "kotel.stack.kernel" in attributes(s.span.attributes)]

                spans = receiver.wait_for(stacked, timeout=PICTURES_WAIT)
                assert spans, f"no span of the other user's process within {PICTURES_WAIT} s"
                code = stop_and_wait(pod)
                assert code == 0, f"agent exit code {code}:\n{pod.logs('kotel')}"
            finally:
                receiver.stop(grace=None)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    res = attributes(spans[0].resource.attributes)
    frames = [f for s in spans for f in attributes(s.span.attributes)["kotel.stack.kernel"]]
    symbolized = any(not f.startswith("0x") for f in frames)
    got = (res.get("process.executable.name"), res.get("service.name"), symbolized)
    want = FULL if cap == "none" else DEGRADING_CAPABILITIES[cap]
    assert got == want, f"without {cap}: {got}, expected {want}; frames {frames[:8]}"
