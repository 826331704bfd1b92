#!/usr/bin/env python3
"""Cardinality storm, measured: `kotel run` (OTLP JSON files, 1 s metrics interval, limited to
a fresh cgroup v2 directory) watches `kotel-storm` start N short-lived processes, each making a
known number of 1-byte writev calls. Reports what the exports say against the workload's
truth: writev calls counted (capped streams + overflow) and dropped, streams per export,
histogram slots recycled, the process cache and kotel's RSS (VmRSS, sampled every 50 ms)
before, at the peak and after.

The same check, with assertions, is tests/tests/storm.rs. Run as root after
`cargo build --workspace --bins`:
    python3 scripts/bench_storm.py [--kotel PATH] [--procs 10000] [--slots 256]
                                   [--limit 64] [--probes writev|all] [--no-render]
`--kotel` may point at another build (e.g. one from before slot recycling) to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cgroup2_root() -> Path:
    for line in Path("/proc/mounts").read_text().splitlines():
        f = line.split()
        if len(f) > 2 and f[2] == "cgroup2":
            return Path(f[1])
    raise SystemExit("no cgroup v2 mount")


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def exports(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except OSError:
        return []
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def metrics(req: dict):
    for rm in req.get("resourceMetrics", []):
        pid = next(
            (int(a["value"]["intValue"]) for a in rm["resource"]["attributes"]
             if a["key"] == "process.pid"),
            None,
        )
        for sm in rm.get("scopeMetrics", []):
            for m in sm.get("metrics", []):
                yield pid, m


def agent_value(req: dict, name: str) -> int | None:
    for _, m in metrics(req):
        if m["name"] == name:
            data = m.get("gauge") or m.get("sum")
            return int(data["dataPoints"][0]["asInt"])
    return None


def streams(reqs: list[dict]) -> dict:
    last: dict[int, int] = {}
    overflow = 0
    max_per_export = 0
    for req in reqs:
        own = 0
        for pid, m in metrics(req):
            if m["name"] != "kotel.writev.duration":
                continue
            for dp in m["exponentialHistogram"]["dataPoints"]:
                is_overflow = any(
                    a["key"] == "otel.metric.overflow" for a in dp.get("attributes", [])
                )
                if is_overflow:
                    overflow = int(dp["count"])
                else:
                    own += 1
                    last[pid] = int(dp["count"])
        max_per_export = max(max_per_export, own)
    return {
        "max_per_export": max_per_export,
        "distinct": len(last),
        "overflow": overflow,
        "total": sum(last.values()) + overflow,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kotel", default=str(ROOT / "target" / "debug" / "kotel"))
    ap.add_argument("--storm", default=str(ROOT / "target" / "debug" / "kotel-storm"))
    ap.add_argument("--procs", type=int, default=10_000)
    ap.add_argument("--writes", type=int, default=3)
    ap.add_argument("--slots", type=int, default=256)
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--probes", default="writev")
    ap.add_argument("--no-render", action="store_true", help="[render] enabled = false")
    args = ap.parse_args()

    cg = cgroup2_root() / f"kotel-bench-storm-{os.getpid()}"
    cg.mkdir()
    work = Path(tempfile.mkdtemp(prefix="kotel-storm-"))
    probes = (
        '["writev", "tcp_send", "runqueue", "offcpu"]' if args.probes == "all"
        else json.dumps(args.probes.split(","))
    )
    (work / "kotel.toml").write_text(
        f'[capture]\ncgroup = "{cg}"\nprobes = {probes}\nmax_histograms = {args.slots}\n\n'
        f'[metrics]\ninterval = "1s"\ncardinality_limit = {args.limit}\n'
        + ("\n[render]\nenabled = false\n" if args.no_render else "")
    )
    kotel = subprocess.Popen(
        [args.kotel, "run", "--config", str(work / "kotel.toml"), "--out", str(work),
         "--receiver-grpc", "none", "--receiver-http", "none", "--telemetry", "none"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        metrics_file = work / "metrics.jsonl"
        while len(exports(metrics_file)) < 3:
            time.sleep(0.1)
        before = exports(metrics_file)[-1]
        cache_before = agent_value(before, "kotel.process_cache.size")
        rss_before = rss_kib(kotel.pid)
        peak = [rss_before]
        sampling = True

        def sample() -> None:
            while sampling:
                peak[0] = max(peak[0], rss_kib(kotel.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        storm = subprocess.Popen(
            [args.storm, "--procs", str(args.procs), "--writes", str(args.writes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        pid = json.loads(storm.stdout.readline())["pid"]
        (cg / "cgroup.procs").write_text(str(pid))
        started = time.monotonic()
        storm.stdin.write("go\n")
        storm.stdin.flush()
        truth = json.loads(storm.stdout.readline())
        storm.wait()
        storm_secs = time.monotonic() - started
        # Let every final count be exported and the caches be swept.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reqs = exports(metrics_file)
            if streams(reqs)["total"] >= truth["writev_calls"] and (
                agent_value(reqs[-1], "kotel.process_cache.size") or 0
            ) <= (cache_before or 0):
                break
            time.sleep(0.2)
        n = len(exports(metrics_file))
        while len(exports(metrics_file)) < n + 2:
            time.sleep(0.1)
        sampling = False
        sampler.join()
        rss_after = rss_kib(kotel.pid)
    finally:
        kotel.send_signal(signal.SIGINT)
        kotel.wait(timeout=60)
        cg.rmdir()
    reqs = exports(metrics_file)
    shutil.rmtree(work, ignore_errors=True)
    s = streams(reqs)
    last = reqs[-1]
    caches = [v for r in reqs if (v := agent_value(r, "kotel.process_cache.size")) is not None]
    dropped = agent_value(last, "kotel.histograms.dropped")
    print(json.dumps({
        "kotel": args.kotel,
        "procs": args.procs,
        "storm_seconds": round(storm_secs, 1),
        "slots": args.slots,
        "probes": args.probes,
        "render": not args.no_render,
        "limit": args.limit,
        "writev_calls": truth["writev_calls"],
        "counted": s["total"],
        "counted_minus_truth": s["total"] - truth["writev_calls"],
        "overflow": s["overflow"],
        "streams_per_export_max": s["max_per_export"],
        "distinct_processes_with_a_stream": s["distinct"],
        "histogram_events_dropped": dropped,
        "histogram_events_after_exit": agent_value(last, "kotel.histograms.after_exit"),
        "histograms_recycled": agent_value(last, "kotel.histograms.recycled"),
        "process_cache_before_peak_after": [cache_before, max(caches, default=None),
                                            agent_value(last, "kotel.process_cache.size")],
        "rss_kib_before_peak_after": [rss_before, max(peak[0], rss_after), rss_after],
    }, indent=1))


if __name__ == "__main__":
    main()
