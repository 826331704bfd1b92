"""The span budget (issue 17): a process that blocks more often than its budget allows keeps
its slowest spans of the interval, and the rest are counted as skipped, not exported.

The workload is a Python process that sleeps a known series of lengths on its main thread once
kotel is attached to it alone (``--pid``). Its sleeps are its only waits long enough for a span
(the shortest is ten times the span threshold), so they are exactly what kotel must choose
from: the ``BUDGET`` longest come out as spans, each inside the window the workload measured
around that sleep; ``kernel_spans_skipped_budget`` counts the others. A second run without a
budget exports every sleep, so the first run's choice is the budget's, not the probes'.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LineReader
from kotel_checks import read_summary, resource_pid
from otlp_json import read_jsonl
from otlp_receiver import attributes
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

pytestmark = pytest.mark.bpf

#: The sleeps, in milliseconds, in an order that is neither ascending nor descending.
SLEEPS_MS = [40, 120, 10, 200, 70, 160, 30, 90, 180, 20, 140, 60, 100, 50, 80, 130, 170, 110, 150, 190]
BUDGET = 5
#: Bounded waits for the workload's lines.
LINE_TIMEOUT = 60.0

SLEEPER = f"""
import json, os, sys, threading, time
print(json.dumps({{"pid": os.getpid()}}), flush=True)
sys.stdin.readline()
windows = []
for ms in {SLEEPS_MS!r}:
    start = time.time_ns()
    time.sleep(ms / 1000)
    windows.append([ms, start, time.time_ns()])
print(json.dumps({{"tid": threading.get_native_id(), "sleeps": windows}}), flush=True)
sys.stdin.readline()
"""


def sleep_run(kotel_run, tmp_path: Path, name: str, *flags: str) -> tuple[dict, list, dict]:
    """The sleeper under ``kotel run --pid`` with ``flags``; kotel stops while it still waits,
    so that nothing after its sleeps counts. Returns (truth, its off-CPU spans, summary)."""
    app = subprocess.Popen([sys.executable, "-c", SLEEPER], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = tmp_path / name
    try:
        lines = LineReader(app.stdout)
        pid = json.loads(lines.next_line(timeout=LINE_TIMEOUT))["pid"]
        kotel = kotel_run(
            ["--pid", pid, "--probes", "offcpu", "--span-threshold", "1ms",
             "--sleep-threshold", "1ms", "--interval", "600s", "--out", out,
             "--receiver-grpc", "none", "--receiver-http", "none", "--telemetry", "none", *flags]
        )
        app.stdin.write("go\n")
        app.stdin.flush()
        truth = json.loads(lines.next_line(timeout=LINE_TIMEOUT))
        code, _, stderr = kotel.interrupt()
        assert code == 0, stderr
        app.stdin.close()
        assert app.wait(timeout=LINE_TIMEOUT) == 0
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    spans = [
        span
        for req in read_jsonl(out / "traces.jsonl", ExportTraceServiceRequest)
        for rs in req.resource_spans
        if resource_pid(rs.resource) == pid
        for ss in rs.scope_spans
        for span in ss.spans
        if span.name == "sched.offcpu"
    ]
    return truth, spans, read_summary(out)


def sleep_of(span, truth: dict) -> int:
    """The requested length (ms) of the sleep whose measured window holds ``span``."""
    assert attributes(span.attributes)["thread.id"] == truth["tid"]
    inside = [ms for ms, start, end in truth["sleeps"]
              if start <= span.start_time_unix_nano and span.end_time_unix_nano <= end]
    assert len(inside) == 1, f"span {span.start_time_unix_nano}..{span.end_time_unix_nano} in {inside}"
    return inside[0]


def test_a_process_over_its_budget_keeps_its_slowest_spans_and_counts_the_rest(
    kotel_run, tmp_path
):
    truth, spans, summary = sleep_run(kotel_run, tmp_path, "unlimited", "--span-budget", "0")
    assert sorted(sleep_of(s, truth) for s in spans) == sorted(SLEEPS_MS), "every sleep, once"
    assert summary["kernel_spans_skipped"] == 0, summary

    truth, spans, summary = sleep_run(kotel_run, tmp_path, "budget", "--span-budget", str(BUDGET))
    kept = sorted(sleep_of(s, truth) for s in spans)
    assert kept == sorted(SLEEPS_MS)[-BUDGET:], "the slowest of the interval are kept"
    assert summary["kernel_spans"] == len(SLEEPS_MS), summary
    assert summary["kernel_spans_skipped_budget"] == len(SLEEPS_MS) - BUDGET, summary
    assert summary["kernel_spans_skipped"] == len(SLEEPS_MS) - BUDGET, summary
    assert summary["spans"]["exported"] == BUDGET, summary
