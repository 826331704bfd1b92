"""The soak with a flapping collector (real BPF): ``kotel run`` traces a rate-limited writev
workload that counts its own calls, and exports OTLP/gRPC to a counting receiver built from the
official protos (``soak_receiver``) that goes down (connection refused) for ``outage`` seconds
every ``outage_every`` seconds, then listens again on the same port.

What it checks, and reports as figures:

* every span is delivered or counted as dropped:
  ``delivered + rejected + dropped - produced == 0``, where ``delivered`` is the number of
  unique span ids at the receiver (kotel retries, so a batch can arrive twice), and
  ``produced``, ``rejected`` and ``dropped`` (by reason) come from kotel's ``summary.json``.
  summary.json is the final accounting: kotel writes it after its export queue has shut down,
  so drops at shutdown are in it (a last metrics export or a /metrics scrape could not
  include them); ``kernel_spans == spans.produced`` checks that nothing else fed the queue;
* every workload call is counted by the kernel histogram (exact), and ring-buffer losses are
  reported;
* kotel's RSS, sampled every second from ``/proc/<pid>/status``, stays under a stated bound;
  the maximum is reported;
* no panic on kotel's stderr, and a clean exit (0) on SIGTERM.

The span rate is chosen, not left to chance: every ``slow_every``-th call of a workload thread
is a 256 KiB write to a memfd, which takes tens of microseconds, above ``span_threshold``; the
1-byte writes to /dev/null stay below it unless they are preempted.

Run it as a program (root) for the full soak, or import ``run_soak`` (``test_soak.py`` runs a
60-second version in CI)::

    python3 tests/python/soak.py --duration 600 --outage-every 120 --outage 30
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from soak_receiver import SoakReceiver

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SoakConfig:
    """Parameters of one soak run."""

    duration: float = 600.0  #: seconds the workload runs
    rate: int = 200_000  #: writev calls per second, all threads together
    threads: int = 2
    outage_every: float = 120.0  #: the receiver goes down at every multiple of this
    outage: float = 30.0  #: for this long
    slow_every: int = 100  #: every N-th call of a thread is slow (a span)
    span_threshold: str = "5us"
    rss_bound_mib: float = 256.0
    #: most kotel's RSS may grow from before the first outage to its maximum, in MiB: the
    #: export queue's bound plus a stated slack; None checks nothing (the figure is reported)
    rss_growth_bound_mib: float | None = None
    #: kotel's export queue bound (``export.queue_bytes``); None keeps the default (64 MiB).
    queue_bytes: int | None = None
    #: kotel's retry budget per batch (``export.retry.max_elapsed``); None keeps the default.
    retry_max_elapsed: str | None = None
    binaries: Path = field(default_factory=lambda: REPO_ROOT / "target" / "debug")
    workdir: Path = field(default_factory=lambda: Path("/tmp/kotel-soak"))


def outage_schedule(cfg: SoakConfig, margin: float = 10.0) -> list[tuple[float, float]]:
    """(down_at, up_at) seconds after the start: at every multiple of ``outage_every``, as long
    as the receiver is up again ``margin`` seconds before the end."""
    out, k = [], 1
    while k * cfg.outage_every + cfg.outage <= cfg.duration - margin:
        out.append((k * cfg.outage_every, k * cfg.outage_every + cfg.outage))
        k += 1
    return out


class RssSampler(threading.Thread):
    """Reads VmRSS of a process every second until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples_kib: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.samples_kib.append(int(line.split()[1]))
            except OSError:
                return
            self._stop_event.wait(1.0)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def _wait_for_line(path: Path, marker: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"kotel did not log {marker}:\n{path.read_text(errors='replace')}")


def run_soak(cfg: SoakConfig, log=print) -> dict:
    """Runs one soak; returns its figures, with ``failures`` listing every broken invariant."""
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    bins = cfg.binaries.resolve()  # kotel runs in workdir
    out_dir = cfg.workdir / "out"
    stderr_path, stdout_path = cfg.workdir / "kotel.stderr", cfg.workdir / "kotel.stdout"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    config = cfg.workdir / "kotel.toml"
    toml = "[export]\n"
    if cfg.queue_bytes is not None:
        toml += f"queue_bytes = {cfg.queue_bytes}\n"
    if cfg.retry_max_elapsed is not None:
        toml += f'[export.retry]\nmax_elapsed = "{cfg.retry_max_elapsed}"\n'
    config.write_text(toml)
    receiver = SoakReceiver()
    receiver.up()
    loop = subprocess.Popen(
        [
            str(bins / "kotel-writev-loop"),
            "--threads", str(cfg.threads), "--rate", str(cfg.rate // cfg.threads),
            "--until-eof", "1", "--slow-every", str(cfg.slow_every),
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    kotel = None
    try:
        pid = json.loads(loop.stdout.readline())["pid"]
        with open(stderr_path, "w") as err, open(stdout_path, "w") as out:
            kotel = subprocess.Popen(
                [
                    str(bins / "kotel"), "run", "--config", str(config),
                    "--pid", str(pid), "--probes", "writev",
                    "--span-threshold", cfg.span_threshold, "--span-budget", "0", "--duration", "0",
                    "--otlp-endpoint", receiver.endpoint, "--out", str(out_dir),
                    "--receiver-grpc", "none", "--receiver-http", "none", "--telemetry", "none",
                ],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cfg.workdir,
                env={**env, "KOTEL_LOG": "info"},
            )  # fmt: skip
        _wait_for_line(stderr_path, "kotel.run.attached", kotel, 60.0)
        rss = RssSampler(kotel.pid)
        rss.start()
        schedule = outage_schedule(cfg)
        log(f"soak: {cfg.duration:.0f} s at {cfg.rate} writev/s, outages {schedule}")
        loop.stdin.write("go\n")
        loop.stdin.flush()
        start = time.monotonic()
        for down_at, up_at in schedule:
            time.sleep(max(0.0, start + down_at - time.monotonic()))
            receiver.down()
            log(f"soak: t={time.monotonic() - start:.0f}s receiver down {receiver.counts()}")
            time.sleep(max(0.0, start + up_at - time.monotonic()))
            receiver.up()
            log(f"soak: t={time.monotonic() - start:.0f}s receiver up")
        time.sleep(max(0.0, start + cfg.duration - time.monotonic()))
        loop.stdin.close()
        truth = json.loads(loop.stdout.readline())
        loop.wait(timeout=30)
        kotel.send_signal(signal.SIGTERM)
        code = kotel.wait(timeout=120)
        rss.stop()
    finally:
        for p in (loop, kotel):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        receiver.down(grace=0)

    (cfg.workdir / "rss.csv").write_text(
        "second,rss_kib\n" + "".join(f"{i},{v}\n" for i, v in enumerate(rss.samples_kib))
    )
    stderr = stderr_path.read_text(errors="replace")
    stdout = stdout_path.read_text(errors="replace")
    summary = json.loads((out_dir / "summary.json").read_text())
    counted = next(
        (
            int(f[-5])
            for f in (line.split() for line in stdout.splitlines())
            if len(f) >= 9 and f[0] == str(pid) and f[-7] == "writev"
        ),
        None,
    )
    t = summary["spans"]
    first_down = schedule[0][0] if schedule else cfg.duration
    before = rss.samples_kib[: int(first_down)]
    delivered = receiver.unique_spans()
    seconds = truth["loop_ns"] / 1e9
    fig = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "exit_code": code,
        "panics": stderr.count("panicked"),
        "workload_calls": truth["calls"],
        "workload_slow_calls": truth["slow_calls"],
        "events_per_s": round(truth["calls"] / seconds),
        "histogram_counted": counted,
        "events_received": summary["events_received"],
        "events_lost": summary["events_lost"],
        "kernel_spans": summary["kernel_spans"],
        "spans_per_s": round(summary["kernel_spans"] / seconds),
        "produced": t["produced"],
        "exported": t["exported"],
        "rejected": t["rejected"],
        "dropped": t["dropped"],
        "dropped_by_reason": {
            r: t[f"dropped_{r}"]
            for r in ("queue_full", "permanent", "retries_exhausted", "shutdown")
        },
        "delivered_unique": delivered,
        "receiver": receiver.counts(),
        "last_exported_self_metrics": receiver.last_self_metrics,
        "difference": delivered + t["rejected"] + t["dropped"] - t["produced"],
        "rss_max_mib": round(max(rss.samples_kib, default=0) / 1024, 1),
        "rss_first_mib": round((rss.samples_kib or [0])[0] / 1024, 1),
        "rss_last_mib": round((rss.samples_kib or [0])[-1] / 1024, 1),
        "rss_samples": len(rss.samples_kib),
        # The most RSS before the first outage (samples are one a second from the start), and
        # how far the maximum rose above it: what outages cost, bounded by the export queue.
        "rss_before_outage_mib": round(max(before, default=0) / 1024, 1),
        "rss_growth_mib": round(
            (max(rss.samples_kib, default=0) - max(before, default=0)) / 1024, 1
        ),
        "outages": len(schedule),
    }
    failures = []
    if code != 0:
        failures.append(f"kotel exited with {code}")
    if fig["panics"]:
        failures.append(f"{fig['panics']} panics on kotel's stderr")
    if fig["difference"] != 0:
        failures.append(f"delivered + rejected + dropped - produced = {fig['difference']}")
    if summary["kernel_spans"] != t["produced"]:
        failures.append(f"kernel spans {summary['kernel_spans']} != produced {t['produced']}")
    if counted != truth["calls"]:
        failures.append(f"histogram counted {counted} of {truth['calls']} calls")
    if fig["rss_max_mib"] > cfg.rss_bound_mib:
        failures.append(f"max RSS {fig['rss_max_mib']} MiB > bound {cfg.rss_bound_mib} MiB")
    growth_bound = cfg.rss_growth_bound_mib
    if growth_bound is not None and fig["rss_growth_mib"] > growth_bound:
        failures.append(
            f"RSS grew {fig['rss_growth_mib']} MiB across the outages > bound {growth_bound} MiB"
        )
    if fig["rss_samples"] < cfg.duration * 0.9:
        failures.append(f"only {fig['rss_samples']} RSS samples")
    if receiver.outages - 1 < len(schedule):  # the last one is the teardown
        failures.append("the receiver did not go down as scheduled")
    fig["failures"] = failures
    return fig


def main(argv: list[str] | None = None) -> int:
    d = SoakConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=d.duration)
    p.add_argument("--rate", type=int, default=d.rate)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--outage-every", type=float, default=d.outage_every)
    p.add_argument("--outage", type=float, default=d.outage)
    p.add_argument("--slow-every", type=int, default=d.slow_every)
    p.add_argument("--span-threshold", default=d.span_threshold)
    p.add_argument("--rss-bound-mib", type=float, default=d.rss_bound_mib)
    p.add_argument("--rss-growth-bound-mib", type=float, default=d.rss_growth_bound_mib)
    p.add_argument("--queue-bytes", type=int, default=d.queue_bytes)
    p.add_argument("--retry-max-elapsed", default=d.retry_max_elapsed)
    p.add_argument("--binaries", type=Path, default=d.binaries)
    p.add_argument("--workdir", type=Path, default=d.workdir)
    a = p.parse_args(argv)
    cfg = SoakConfig(**{k: getattr(a, k) for k in asdict(d)})
    fig = run_soak(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(fig, indent=2))
    print("soak: " + ("PASS" if not fig["failures"] else "FAIL: " + "; ".join(fig["failures"])))
    return 0 if not fig["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
