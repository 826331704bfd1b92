"""``kotel run`` shutdown (real BPF), as a DaemonSet pod meets it: SIGTERM flushes what is
queued within the grace period and detaches every program; a second SIGTERM exits at once.

"Nothing of kotel's is left" is checked with bpftool: the programs kotel attached, the links
that attach them and the maps those programs use, all recorded by id while kotel runs, are gone
from ``bpftool prog/link/map list`` once it has exited.

Each test is bounded: kotel attaches in seconds, the workload runs about a second, and kotel
must exit within ``conftest.EXIT_TIMEOUT`` of the (second) signal.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import EXIT_TIMEOUT, free_port, prometheus_value, scrape, wait_until
from kotel_checks import read_summary, resource_pid, spans_of

pytestmark = pytest.mark.bpf

#: kotel's program names (bpftool shows the BTF name, or the kernel's 15-character cut): every
#: program of the probe table in bpf/src/probe.rs, whose unit test ties it to the BPF object.
PROGRAMS = {
    "writev_enter",
    "writev_exit",
    "tcp_send_begin",
    "tcp_send_end",
    "raw_sys_enter",
    "raw_sys_exit",
    "tcp_sendmsg_mark",
    "sched_wakeup",
    "sched_wakeup_new",
    "sched_switch",
    "sched_exit",
    "sched_process_exec",
    "sched_process_exit",
}

#: Far longer than any test waits: a flush that finishes proves it did not need the deadline,
#: and an exit well before it proves the second signal did not wait for it.
LONG = "600s"


def _bpftool(kind: str) -> list[dict]:
    out = subprocess.run(
        ["bpftool", kind, "show", "--json"], capture_output=True, text=True, timeout=30, check=True
    )
    return json.loads(out.stdout or "[]")


def _ours(name: str) -> bool:
    return any(name == p or (len(name) == 15 and p.startswith(name)) for p in PROGRAMS)


class BpfObjects:
    """The ids of kotel's programs, links and maps, read with bpftool while kotel runs."""

    def __init__(self, before: dict[str, set[int]]) -> None:
        progs = [p for p in _bpftool("prog") if p["id"] not in before["prog"] and _ours(p["name"])]
        self.progs = {p["id"] for p in progs}
        self.maps = {m for p in progs for m in p.get("map_ids", [])}
        self.links = {
            link["id"]
            for link in _bpftool("link")
            if link.get("prog_id") in self.progs and link["id"] not in before["link"]
        }

    @staticmethod
    def snapshot() -> dict[str, set[int]]:
        return {kind: {o["id"] for o in _bpftool(kind)} for kind in ("prog", "link", "map")}

    def remaining(self) -> dict[str, set[int]]:
        """What is still loaded, waiting a bounded while for the kernel's deferred frees."""
        left: dict[str, set[int]] = {}
        for _ in range(100):
            now = self.snapshot()
            left = {
                "prog": self.progs & now["prog"],
                "link": self.links & now["link"],
                "map": self.maps & now["map"],
            }
            if not any(left.values()):
                break
            time.sleep(0.1)
        return {k: v for k, v in left.items() if v}


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "kotel.toml"
    path.write_text(body)
    return path


def _args(
    pid: int, out_dir: Path, endpoint: str, config: Path, telemetry: str = "none"
) -> list[str]:
    return [
        "--pid", str(pid), "--span-threshold", "0", "--span-budget", "0", "--duration", "0",
        "--probes", "writev", "--interval", LONG, "--receiver-grpc", "none",
        "--receiver-http", "none", "--telemetry", telemetry,
        "--out", str(out_dir), "--otlp-endpoint", endpoint, "--config", str(config),
    ]  # fmt: skip


def _terminate(kotel) -> tuple[int, str]:
    kotel.proc.send_signal(signal.SIGTERM)
    try:
        code = kotel.proc.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        kotel.close()
        pytest.fail(f"kotel did not exit within {EXIT_TIMEOUT} s of SIGTERM", pytrace=False)
    return code, kotel._stderr.rest()


def test_sigterm_flushes_the_queue_and_detaches_everything(
    receiver, workload, kotel_run, tmp_path: Path
) -> None:
    """Spans wait in a batch that would only leave after a minute and the only metric export
    is the final one: everything the receiver gets, it gets because SIGTERM flushed it."""
    out_dir = tmp_path / "out"
    config = _config(tmp_path, f'[export]\nspan_flush = "{LONG}"\nshutdown_grace = "{LONG}"\n')
    before = BpfObjects.snapshot()
    w = workload()
    port = free_port()
    kotel = kotel_run(_args(w.pid, out_dir, receiver.endpoint, config, f"127.0.0.1:{port}"))
    objects = BpfObjects(before)
    assert len(objects.progs) >= 3 and objects.maps and objects.links, vars(objects)

    truth = w.run()
    # Every writev has become a span (drained and built: kotel's own count says so), and the
    # batch holds them all.
    calls = truth["writev"]["calls"]
    wait_until(
        lambda: (prometheus_value(scrape(port), "kotel_spans_produced_total") or 0) >= calls,
        30.0,
        f"kotel to build a span of each of the {calls} writev calls",
    )
    assert not spans_of(receiver.spans(), w.pid, "writev"), "nothing left before SIGTERM"

    code, stderr = _terminate(kotel)
    assert code == 0, stderr
    assert "kotel.run.flushing" in stderr, stderr
    writevs = spans_of(receiver.spans(), w.pid, "writev")
    assert len(writevs) == truth["writev"]["calls"], f"{len(writevs)} spans, truth {truth}"
    counts = [
        p.point.count
        for p in receiver.metrics()
        if resource_pid(p.resource) == w.pid and p.metric.name == "kotel.writev.duration"
    ]
    assert counts == [truth["writev"]["calls"]], f"the final metrics export: {counts}"
    summary = read_summary(out_dir)
    for section in ("spans", "metric_points"):
        s = summary[section]
        assert s["produced"] == s["exported"] > 0 and s["dropped"] == 0, summary
    assert objects.remaining() == {}, "kotel's BPF objects outlived it"


def test_a_second_sigterm_exits_at_once(workload, kotel_run, tmp_path: Path) -> None:
    """With the collector unreachable, the first SIGTERM's flush would retry for ten minutes;
    the second one ends kotel at once, and the kernel still detaches everything."""
    out_dir = tmp_path / "out"
    config = _config(
        tmp_path,
        f'[export]\nshutdown_grace = "{LONG}"\n[export.retry]\nmax_elapsed = "{LONG}"\n',
    )
    nobody = f"http://127.0.0.1:{free_port()}"  # a port nothing listens on
    before = BpfObjects.snapshot()
    w = workload()
    kotel = kotel_run(_args(w.pid, out_dir, nobody, config))
    objects = BpfObjects(before)
    w.run()

    kotel.proc.send_signal(signal.SIGTERM)
    kotel.wait_for_log("kotel.run.flushing", timeout=30.0)
    time.sleep(0.5)
    assert kotel.proc.poll() is None, "still flushing towards the unreachable collector"
    code, stderr = _terminate(kotel)
    assert code == 128 + signal.SIGTERM, stderr
    assert "second signal" in stderr, stderr
    assert objects.remaining() == {}, "kotel's BPF objects outlived it"
