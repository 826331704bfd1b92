#!/usr/bin/env python3
"""Agent-level benchmarks of `kotel run`, measured against real peers on loopback.

1. Latency: a paced writev workload (1 000 calls/s for 10 s) runs under `kotel run
   --span-threshold 0` exporting OTLP/gRPC to the official-protos receiver in
   tests/python/otlp_receiver.py. For every workload span, latency = the receiver's arrival
   time minus the span's end time; p50/p99/max are reported, with kotel's default flush.
2. Cost at 100 000 events/s: two threads issue writev at 50 000/s each for 10 s. kotel runs
   (a) with --span-threshold 0, every event a span written to OTLP JSON lines, with its OTLP
   receiver on (so every event also waits in the link buffer), (b) the same without the
   receiver, and (c) with the default 1 ms threshold, every event counted only in the kernel
   histograms.
   kotel's RSS (VmRSS) is sampled every 0.2 s and its CPU time read from /proc at the end.

3. A/B (`ab [rounds]`): the cost of (2a without the receiver), every event a span, for the
   build at KOTEL_BASE_BIN and this build, rounds interleaved; medians and their ratio.

Run as root after `cargo build --release --workspace --bins --features kotel-e2e/bench`:
    python3 scripts/bench_agent.py
    KOTEL_BASE_BIN=/path/to/other/kotel python3 scripts/bench_agent.py ab 5
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))

from otlp_receiver import OtlpReceiver  # noqa: E402

KOTEL = ROOT / "target" / "release" / "kotel"
LOOP = ROOT / "target" / "release" / "kotel-writev-loop"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def start_kotel(args: list[str], binary: Path = KOTEL) -> subprocess.Popen:
    proc = subprocess.Popen(
        [str(binary), "run", "--telemetry", "none", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    for line in proc.stderr:
        if "kotel.run.attached" in line:
            threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()
            return proc
        if time.time() > deadline:
            break
    proc.kill()
    raise SystemExit("kotel did not attach")


def stop_kotel(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def every_span(binary: Path = KOTEL) -> list[str]:
    """Flags that export every span, for binaries that have a per-process span budget (a base
    binary from before it has none and exports every span anyway)."""
    help_text = subprocess.run([str(binary), "run", "--help"], capture_output=True, text=True).stdout
    return ["--span-budget", "0"] if "--span-budget" in help_text else []


def latency() -> dict:
    with OtlpReceiver() as rx, tempfile.TemporaryDirectory() as out:
        kotel = start_kotel(
            ["--probes", "writev", "--span-threshold", "0", "--interval", "5s", "--out", out,
             "--otlp-endpoint", rx.endpoint, "--receiver-grpc", "none", "--receiver-http", "none",
             *every_span()]
        )
        run = subprocess.run(
            [str(LOOP), "--calls", "10000", "--rate", "1000"], capture_output=True, text=True, check=True
        )
        pid = json.loads(run.stdout)["pid"]
        time.sleep(1.0)
        stop_kotel(kotel)
        lat_ms = []
        for rec in rx.received("traces"):
            for rs in rec.request.resource_spans:
                attrs = {kv.key: kv.value.int_value for kv in rs.resource.attributes}
                if attrs.get("process.pid") != pid:
                    continue
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        lat_ms.append((rec.arrived_ns - span.end_time_unix_nano) / 1e6)
    return {
        "spans": len(lat_ms),
        "p50_ms": round(statistics.median(lat_ms), 1),
        "p99_ms": round(percentile(lat_ms, 0.99), 1),
        "max_ms": round(max(lat_ms), 1),
    }


def cost(threshold: str, receiver: bool, binary: Path = KOTEL) -> dict:
    with tempfile.TemporaryDirectory() as out:
        extra = [] if receiver else ["--receiver-grpc", "none", "--receiver-http", "none"]
        kotel = start_kotel(
            ["--probes", "writev", "--span-threshold", threshold, "--interval", "1s", "--out", out, *extra,
             *every_span(binary)],
            binary,
        )
        cpu0, t0 = cpu_seconds(kotel.pid), time.time()
        samples: list[float] = []
        loop = subprocess.Popen(
            [str(LOOP), "--threads", "2", "--calls", "500000", "--rate", "50000"],
            stdout=subprocess.PIPE, text=True,
        )
        while loop.poll() is None:
            samples.append(rss_mib(kotel.pid))
            time.sleep(0.2)
        made = json.loads(loop.stdout.read())
        cpu1, t1 = cpu_seconds(kotel.pid), time.time()
        stop_kotel(kotel)
        summary = json.loads((Path(out) / "summary.json").read_text())
    return {
        "threshold": threshold,
        "receiver_and_link_buffer": receiver,
        "events_per_s": round(made["calls_per_s"]),
        "rss_max_mib": round(max(samples), 1),
        "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
        "spans_exported": summary["spans"]["exported"],
        "spans_dropped": summary["spans"]["dropped"],
        "events_lost": summary["events_lost"],
    }


def ab(rounds: int) -> dict:
    """Pipeline cost of the build at KOTEL_BASE_BIN and of this one, rounds interleaved."""
    base = Path(os.environ.get("KOTEL_BASE_BIN") or sys.exit("set KOTEL_BASE_BIN to the other kotel"))
    runs: dict[str, list[dict]] = {"base": [], "this": []}
    for _ in range(rounds):
        for name, binary in (("base", base), ("this", KOTEL)):
            runs[name].append(cost("0", False, binary))
    cpu = {n: statistics.median(r["cpu_percent_of_one_core"] for r in rs) for n, rs in runs.items()}
    rss = {n: statistics.median(r["rss_max_mib"] for r in rs) for n, rs in runs.items()}
    return {
        "rounds": rounds,
        "events_per_s": round(statistics.median(r["events_per_s"] for rs in runs.values() for r in rs)),
        "cpu_percent_of_one_core": cpu,
        "cpu_this_over_base": round(cpu["this"] / cpu["base"], 3),
        "rss_max_mib": rss,
        "spans_exported": {n: [r["spans_exported"] for r in rs] for n, rs in runs.items()},
        "events_lost": {n: sum(r["events_lost"] for r in rs) for n, rs in runs.items()},
    }


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root (BPF)")
    if len(sys.argv) > 1 and sys.argv[1] == "ab":
        print(json.dumps(ab(int(sys.argv[2]) if len(sys.argv) > 2 else 5), indent=2))
        return
    result = {"latency": latency(), "cost": [cost("0", True), cost("0", False), cost("1ms", True)]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
