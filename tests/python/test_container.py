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
from podman_pod import Pod, enter_netns, podman_unavailable, ulimits
from test_pictures import PNG_MAGIC, exemplar_artifacts, spans_by_id

pytestmark = pytest.mark.bpf

#: The environment variable naming the image under test.
IMAGE_ENV = "KOTEL_CONTAINER_IMAGE"

#: The capabilities kotel keeps after attaching (docs/deploy.md, "After attaching"), by number.
STEADY_CAPS = {"CAP_BPF": 39, "CAP_SYS_PTRACE": 19, "CAP_DAC_READ_SEARCH": 2}

#: The pod's network namespace is new: only the pod's own ports are taken there.
RECEIVER_PORT = 14317
#: The agent's telemetry and the renderer's HTTP port, from the manifest's container ports.
TELEMETRY_PORT = 9464
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


def site(image: str, tmp_path: Path, agent_args: list[str]) -> pm.Site:
    """This machine's side of the pod: a pod name unique to this test process."""
    return pm.Site(
        image=image,
        pod_name=f"kotel-check-{os.getpid()}-{next(_PODS)}",
        node_name=os.uname().nodename,
        pod_ip=POD_IP,
        volume_root=tmp_path / "volumes",
        agent_args=agent_args,
        ulimits=ulimits(),
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
    where = site(image, tmp_path, ["--pid", str(w.pid), *BASE_ARGS, "--otlp-endpoint", endpoint])
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

            # After attaching, every thread holds exactly the steady-state capabilities, in
            # every set (docs/deploy.md, "After attaching").
            agent = pod.host_pid("kotel")
            steady = sum(1 << n for n in STEADY_CAPS.values())
            for tid, caps in capability_sets(agent).items():
                want = {"CapInh": 0, "CapPrm": steady, "CapEff": steady, "CapBnd": steady,
                        "CapAmb": 0}
                assert caps == want, f"agent thread {tid}: {caps} (hex {steady:#x} expected)"
            for tid, caps in capability_sets(pod.host_pid("kotel-render")).items():
                assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == 0, f"renderer {tid}: {caps}"

            truth = w.run()
            pictured = receiver.wait_for(
                lambda: exemplar_artifacts(receiver.requests("metrics")), timeout=PICTURES_WAIT
            )
            assert pictured, f"no exemplar linked a picture within {PICTURES_WAIT} s"
            pngs = 0
            for a, _ in pictured:
                url = a["kotel.artifact.url"]
                assert url.startswith(f"http://{POD_IP}:4321/"), f"the sidecar's public URL: {url}"
                status, body, ctype = http_get(4321, url[len(f"http://{POD_IP}:4321"):])
                assert status == 200 and ctype == a["kotel.artifact.media_type"], (url, status, ctype)
                if ctype == "image/png":
                    assert body.startswith(PNG_MAGIC), url
                    pngs += 1
            assert pngs, f"no PNG among the sidecar's artifacts: {[a for a, _ in pictured]}"

            code = stop_and_wait(pod)
            end = time.time_ns()
            assert code == 0, f"agent exit code {code}:\n{pod.logs('kotel')}"
        finally:
            receiver.stop(grace=None)

        spans, points = check_export(
            w.pid, truth, receiver.requests("traces"), receiver.requests("metrics"),
            Window(start, end), host_name=where.pod_name,
        )
        check_summary_all_delivered(read_summary(where.volume_root / "out"), len(spans), len(points))
        traces = spans_by_id(receiver.requests("traces"))
        for a, ex in exemplar_artifacts(receiver.requests("metrics")):
            assert attributes(traces[ex.span_id].attributes)["kotel.artifact.id"] == a["kotel.artifact.id"]
        for c in ("kotel", "kotel-render"):
            assert pod.root_changes(c) == [], f"{c} wrote to its read-only root"


# --------------------------------------------------------------------------------------------
# Each privilege taken away
# --------------------------------------------------------------------------------------------

#: What kotel says at start without each capability it cannot start without
#: (docs/deploy.md, "Capabilities" and "Troubleshooting").
FATAL_CAPABILITIES = {
    "BPF": "missing privileges: CAP_BPF",
    "PERFMON": "missing privileges: CAP_PERFMON",
}

#: What kotel says at start without each mount it cannot start without.
FATAL_MOUNTS = {
    "config": "cannot read config file /etc/kotel/kotel.toml",
    "out": "creating /var/lib/kotel/out: Read-only file system",
}


def agent_exit(ds: dict, image: str, tmp_path: Path) -> tuple[int, str]:
    """Runs the pod made from ``ds`` until the agent exits (bounded); (exit code, its logs)."""
    ds_cm = pm.load_manifests()[1]
    with running_pod(ds, ds_cm, site(image, tmp_path, [])) as pod:
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


@pytest.mark.parametrize("volume", sorted(FATAL_MOUNTS))
def test_without_a_mount_it_cannot_start_without_kotel_says_which(image, tmp_path, volume) -> None:
    ds = pm.load_manifests()[0]
    assert volume in pm.agent_mounts(ds), f"the manifest no longer mounts {volume}"
    code, logs = agent_exit(pm.without_mount(ds, volume), image, tmp_path)
    assert code == 2, f"exit code {code}:\n{logs}"
    assert FATAL_MOUNTS[volume] in logs, logs


def test_every_added_capability_and_mount_is_checked() -> None:
    """A capability or mount added to the manifest must get its check here."""
    ds = pm.load_manifests()[0]
    assert set(pm.added_capabilities(ds)) == set(FATAL_CAPABILITIES) | set(DEGRADING_CAPABILITIES)
    assert set(pm.agent_mounts(ds)) == set(FATAL_MOUNTS) | set(UNNEEDED_MOUNTS)


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
