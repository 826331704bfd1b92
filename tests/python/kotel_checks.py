"""What kotel's OTLP output must say about a ``kotel-workload`` run, checked on the official
OpenTelemetry protobuf messages, wherever they came from (the gRPC receiver or the OTLP/JSON
lines files). Shared by ``test_conformance.py`` and ``test_export_retry.py``.

The contract these checks encode (``kotel run``):

* one Resource per observed process: ``process.pid`` (int), ``process.executable.name``,
  ``service.name``, ``host.name``;
* INTERNAL spans named ``writev``, ``tcp_sendmsg``, ``sched.runqueue``, ``sched.offcpu`` with
  ``thread.id`` (int), ``thread.name``, ``kotel.cpu`` (int); ``kotel.bytes`` (int) on writev and
  tcp_sendmsg; ``network.transport`` = "tcp", ``network.peer.address``/``port``,
  ``network.local.address``/``port`` on tcp_sendmsg; ``kotel.offcpu.state``
  (``interruptible`` or ``uninterruptible``) on sched.offcpu; 16-byte trace ids, 8-byte span
  ids, Unix nanosecond times;
* cumulative exponential histograms in seconds (``kotel.writev.duration``,
  ``kotel.tcp.send.duration``, ``kotel.sched.runqueue.delay``, ``kotel.sched.offcpu.duration``),
  one data point per process resource (off-CPU: per process resource and
  ``kotel.offcpu.state``), whose exemplars name exported spans (off-CPU: of the point's state);
  monotonic cumulative sums in bytes (``kotel.writev.bytes``, ``kotel.tcp.send.bytes``).
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from otlp_receiver import PointRecord, SpanRecord, attributes, iter_metric_points, iter_spans

#: The flags every test run uses: every event becomes a span (idle sleeps too:
#: ``--sleep-threshold 0``), metrics every second, run until SIGINT.
#: ``--probes all``: the workload's writev calls are part of the truth checked, and the writev
#: probe is not on by default.
#: Every event a span (sleeps too), and every span exported (no per-process budget): the checks
#: count them.
BASE_ARGS = [
    "--span-threshold", "0", "--sleep-threshold", "0", "--span-budget", "0", "--interval", "1s",
    "--duration", "0", "--probes", "all",
]

#: The executable the workload runs as (also its service.name: it sets no OTEL_SERVICE_NAME).
WORKLOAD_EXE = "kotel-workload"

SPAN_NAMES = {"writev", "tcp_sendmsg", "sched.runqueue", "sched.offcpu"}

#: Each latency histogram and the span its exemplars point at.
DURATION_METRICS = {
    "kotel.writev.duration": "writev",
    "kotel.tcp.send.duration": "tcp_sendmsg",
    "kotel.sched.runqueue.delay": "sched.runqueue",
    "kotel.sched.offcpu.duration": "sched.offcpu",
}

BYTES_METRICS = ("kotel.writev.bytes", "kotel.tcp.send.bytes")

#: The off-CPU attribute of sched.offcpu spans and of the off-CPU histogram's data points.
OFFCPU_STATE = "kotel.offcpu.state"
OFFCPU_STATES = {"interruptible", "uninterruptible"}
OFFCPU_METRIC = "kotel.sched.offcpu.duration"

CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE


def kotel_args(pid: int, out_dir: Path, endpoint: str | None = None, *extra: str) -> list[str]:
    """``kotel run`` arguments for one workload: OTLP/gRPC to ``endpoint`` when given, else
    OTLP/JSON lines files; ``summary.json`` always lands in ``out_dir``."""
    args = ["--pid", str(pid), *BASE_ARGS, "--out", str(out_dir)]
    if endpoint is not None:
        args += ["--otlp-endpoint", endpoint]
    return args + list(extra)


@dataclass(frozen=True)
class Window:
    """Wall-clock bounds of a run: time.time_ns() before kotel started and after it exited."""

    start_ns: int
    end_ns: int

    def contains(self, t: int) -> bool:
        return self.start_ns <= t <= self.end_ns


# --------------------------------------------------------------------------------------------
# Small accessors
# --------------------------------------------------------------------------------------------


def resource_pid(resource: Any) -> int | None:
    """The ``process.pid`` attribute of a Resource, if any."""
    return attributes(resource.attributes).get("process.pid")


def spans_of(spans: Iterable[SpanRecord], pid: int, name: str | None = None) -> list[SpanRecord]:
    """The spans of one process (by resource ``process.pid``), optionally of one name."""
    return [
        s
        for s in spans
        if resource_pid(s.resource) == pid and (name is None or s.span.name == name)
    ]


def assert_no_duplicate_spans(spans: Iterable[SpanRecord]) -> None:
    """No span arrived twice: span ids are unique."""
    counts = Counter(s.span.span_id for s in spans)
    twice = {sid.hex(): n for sid, n in counts.items() if n > 1}
    assert not twice, f"spans delivered more than once (span id → times): {twice}"


def read_summary(out_dir: Path) -> dict:
    """``<out_dir>/summary.json``, with the keys the contract names."""
    path = out_dir / "summary.json"
    assert path.is_file(), f"kotel wrote no {path}"
    summary = json.loads(path.read_text())
    for section in ("spans", "metric_points"):
        assert set(summary[section]) >= {"produced", "exported", "rejected", "dropped"}, summary
        assert all(type(v) is int and v >= 0 for v in summary[section].values()), summary
    assert type(summary["events_lost"]) is int, summary
    return summary


def _is_int(v: Any) -> bool:
    return type(v) is int  # not bool


def _addr_port(text: str) -> tuple[str, int]:
    """'127.0.0.1:80' or '[::1]:80' (the workload's format) → (normalized address, port)."""
    host, _, port = text.rpartition(":")
    return str(ipaddress.ip_address(host.strip("[]"))), int(port)


def _normalized_addr(value: Any, what: str) -> str:
    assert isinstance(value, str), f"{what} is a string, got {value!r}"
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise AssertionError(
            f"{what} is a plain IP address (no brackets or port): {value!r}"
        ) from None


def _point_value(point: Any) -> int | float:
    return getattr(point, point.WhichOneof("value"))


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------


def check_export(
    pid: int,
    truth: dict,
    trace_requests: list[Any],
    metric_requests: list[Any],
    window: Window,
    host_name: str | None = None,
) -> tuple[list[SpanRecord], list[PointRecord]]:
    """Asserts that kotel's ExportTraceServiceRequests and ExportMetricsServiceRequests describe
    the workload ``pid`` exactly as its ``truth`` says. Returns every span and data point.
    ``host_name`` is the ``host.name`` kotel reports (the node's name in a pod, else its
    hostname), this machine's by default."""
    spans = iter_spans(trace_requests)
    points = iter_metric_points(metric_requests)
    assert spans, "kotel exported no spans"
    assert points, "kotel exported no metric data points"
    _check_resources(pid, spans, points, host_name or os.uname().nodename)
    _check_spans(spans, window)
    _check_writev(pid, truth, spans)
    _check_tcp(pid, truth, spans)
    _check_sched(pid, truth, spans)
    _check_metrics(pid, truth, spans, points, window)
    return spans, points


def _check_resources(
    pid: int, spans: list[SpanRecord], points: list[PointRecord], host_name: str
) -> None:
    # Every span comes from an observed process; metrics may also come from a resource that is
    # not a process (kotel's own), but where process.pid is set it is an int.
    for r in [s.resource for s in spans] + [
        p.resource for p in points if any(kv.key == "process.pid" for kv in p.resource.attributes)
    ]:
        attrs = attributes(r.attributes)
        assert _is_int(attrs.get("process.pid")), f"process.pid is an int attribute: {attrs}"
    # --pid filters in the kernel: every span is the workload's.
    pids = {resource_pid(s.resource) for s in spans}
    assert pids == {pid}, f"spans from processes other than the workload {pid}: {pids}"
    # One Resource per process: every copy of the workload's resource says the same.
    mine = [s.resource for s in spans] + [
        p.resource for p in points if resource_pid(p.resource) == pid
    ]
    distinct = {tuple(sorted(attributes(r.attributes).items())) for r in mine}
    assert len(distinct) == 1, f"the workload's resource differs between exports: {distinct}"
    attrs = attributes(mine[0].attributes)
    assert attrs.get("process.executable.name") == WORKLOAD_EXE, attrs
    assert attrs.get("service.name") == WORKLOAD_EXE, f"service.name falls back to the exe: {attrs}"
    assert attrs.get("host.name") == host_name, attrs


def _check_spans(spans: list[SpanRecord], window: Window) -> None:
    assert_no_duplicate_spans(spans)
    trace_ids = set()
    for _, _, span in spans:
        what = f"span {span.name} {span.span_id.hex()}"
        assert span.name in SPAN_NAMES, f"unexpected span name {span.name!r}"
        assert span.kind == trace_pb2.Span.SPAN_KIND_INTERNAL, f"{what} is INTERNAL"
        assert len(span.trace_id) == 16 and any(span.trace_id), f"{what}: trace id"
        assert len(span.span_id) == 8 and any(span.span_id), f"{what}: span id"
        trace_ids.add(span.trace_id)
        assert window.contains(span.start_time_unix_nano), (
            f"{what} starts at {span.start_time_unix_nano}, outside the run {window}"
        )
        assert window.contains(span.end_time_unix_nano), (
            f"{what} ends at {span.end_time_unix_nano}, outside the run {window}"
        )
        assert span.start_time_unix_nano <= span.end_time_unix_nano, f"{what} ends before it starts"
        a = attributes(span.attributes)
        assert _is_int(a.get("thread.id")), f"{what}: thread.id int: {a}"
        assert isinstance(a.get("thread.name"), str) and a["thread.name"], f"{what}: {a}"
        assert _is_int(a.get("kotel.cpu")), f"{what}: kotel.cpu int: {a}"
        if span.name in ("writev", "tcp_sendmsg"):
            assert _is_int(a.get("kotel.bytes")) and a["kotel.bytes"] >= 0, f"{what}: {a}"
        if span.name == "sched.offcpu":
            assert a.get(OFFCPU_STATE) in OFFCPU_STATES, f"{what}: {OFFCPU_STATE}: {a}"
        else:
            assert OFFCPU_STATE not in a, f"{what}: only off-CPU spans have a state: {a}"
        if span.name == "tcp_sendmsg":
            assert a.get("network.transport") == "tcp", f"{what}: {a}"
            for side in ("peer", "local"):
                _normalized_addr(a.get(f"network.{side}.address"), f"{what} {side} address")
                assert _is_int(a.get(f"network.{side}.port")), f"{what}: {side} port: {a}"
    if len(spans) > 1:
        assert len(trace_ids) > 1, "trace ids are random, not one constant"


def _check_writev(pid: int, truth: dict, spans: list[SpanRecord]) -> None:
    wv = truth["writev"]
    writevs = spans_of(spans, pid, "writev")
    assert len(writevs) == wv["calls"], f"{len(writevs)} writev spans for {wv['calls']} calls"
    got = sum(attributes(s.span.attributes)["kotel.bytes"] for s in writevs)
    assert got == wv["bytes"], f"writev bytes: spans say {got}, the workload wrote {wv['bytes']}"
    tids = {attributes(s.span.attributes)["thread.id"] for s in writevs}
    assert tids == {wv["tid"]}, f"writev thread ids {tids}, the workload's is {wv['tid']}"


def _check_tcp(pid: int, truth: dict, spans: list[SpanRecord]) -> None:
    by_local: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for s in spans_of(spans, pid, "tcp_sendmsg"):
        a = attributes(s.span.attributes)
        key = (_normalized_addr(a["network.local.address"], "local"), a["network.local.port"])
        by_local[key].append(a)
    conns = [c for c in truth["tcp"] if c is not None]
    assert conns, "truth check: at least the IPv4 connection ran"
    for conn in conns:
        local = _addr_port(conn["local"])
        sends = by_local.pop(local, [])
        assert len(sends) == conn["calls"], f"{len(sends)} tcp_sendmsg spans on {local}: {conn}"
        got = sum(a["kotel.bytes"] for a in sends)
        assert got == conn["bytes"], f"bytes sent from {local}: spans say {got}: {conn}"
        peers = {
            (_normalized_addr(a["network.peer.address"], "peer"), a["network.peer.port"])
            for a in sends
        }
        assert peers == {_addr_port(conn["peer"])}, f"peers of {local}: {peers}: {conn}"
        assert {a["thread.id"] for a in sends} == {conn["tid"]}, f"sending thread of {local}"
    assert not by_local, f"tcp_sendmsg spans on connections the workload did not make: {by_local}"


def _check_sched(pid: int, truth: dict, spans: list[SpanRecord]) -> None:
    """Light: the scheduler spans exist on the threads that must have them (their durations
    are the Rust real-BPF tests' business)."""
    sleeper = truth["sleeper"]["tid"]
    longest_sleep = max(s["requested_ns"] for s in truth["sleeper"]["sleeps"])
    offcpu = [
        s.span
        for s in spans_of(spans, pid, "sched.offcpu")
        if attributes(s.span.attributes)["thread.id"] == sleeper
    ]
    slept = [s for s in offcpu if s.end_time_unix_nano - s.start_time_unix_nano >= longest_sleep]
    assert slept, f"the sleeper thread {sleeper} has an off-CPU span as long as its longest sleep"
    states = {attributes(s.attributes)[OFFCPU_STATE] for s in slept}
    assert states == {"interruptible"}, f"a nanosleep is an interruptible wait: {states}"
    runqueue_tids = {
        attributes(s.span.attributes)["thread.id"] for s in spans_of(spans, pid, "sched.runqueue")
    }
    for t in truth["spinners"]["threads"]:
        assert t["tid"] in runqueue_tids, f"spinner {t['tid']} waited for its CPU"


def _series(pid: int, points: list[PointRecord], name: str) -> dict[str | None, list[PointRecord]]:
    """The data points of one metric for the workload's resource, per ``kotel.offcpu.state``
    (``None`` for the metrics without one), each in order of time (export order among equal
    times); checks one data point per resource (and state) per export."""
    mine = [p for p in points if resource_pid(p.resource) == pid and p.metric.name == name]
    assert mine, f"no {name} data point for the workload"
    for metric in {id(p.metric): p.metric for p in mine}.values():
        states = [attributes(dp.attributes).get(OFFCPU_STATE) for dp in _points_of(metric)]
        assert len(states) == len(set(states)), (
            f"{name}: one data point per process resource (and state) per export, got {states}"
        )
        allowed = OFFCPU_STATES if name == OFFCPU_METRIC else {None}
        assert set(states) <= allowed, f"{name}: data point states {states}"
    by_state: dict[str | None, list[PointRecord]] = defaultdict(list)
    for p in mine:
        by_state[attributes(p.point.attributes).get(OFFCPU_STATE)].append(p)
    # sorted() is stable
    return {s: sorted(ps, key=lambda p: p.point.time_unix_nano) for s, ps in by_state.items()}


def _points_of(metric: Any) -> list[Any]:
    return list(getattr(metric, metric.WhichOneof("data")).data_points)


def _check_cumulative(name: str, series: list[PointRecord], value) -> None:
    """Cumulative temporality: one start time, values that never decrease."""
    starts = {p.point.start_time_unix_nano for p in series}
    assert len(starts) == 1, f"{name}: a cumulative series keeps its start time: {starts}"
    values = [value(p.point) for p in series]
    assert values == sorted(values), f"{name}: cumulative values never decrease: {values}"


def _check_metrics(
    pid: int, truth: dict, spans: list[SpanRecord], points: list[PointRecord], window: Window
) -> None:
    exported = {(s.span.trace_id, s.span.span_id): s for s in spans}
    tcp = [c for c in truth["tcp"] if c is not None]
    expect_count = {
        "kotel.writev.duration": truth["writev"]["calls"],
        "kotel.tcp.send.duration": sum(c["calls"] for c in tcp),
    }
    for name, span_name in DURATION_METRICS.items():
        per_state = _series(pid, points, name)
        for state, series in per_state.items():
            _check_duration_series(pid, name, span_name, state, series, exported, window)
        if name in expect_count:
            last = per_state[None][-1].point
            assert last.count == expect_count[name], (
                f"{name}: the last cumulative count is {last.count}, the workload made "
                f"{expect_count[name]}"
            )

    expect_bytes = {
        "kotel.writev.bytes": truth["writev"]["bytes"],
        "kotel.tcp.send.bytes": sum(c["bytes"] for c in tcp),
    }
    for name in BYTES_METRICS:
        series = _series(pid, points, name)[None]
        for p in series:
            assert p.metric.unit == "By", f"{name} unit {p.metric.unit!r}"
            assert p.metric.WhichOneof("data") == "sum", f"{name} is a sum"
            assert p.metric.sum.is_monotonic, f"{name} is monotonic"
            assert p.metric.sum.aggregation_temporality == CUMULATIVE, f"{name} is cumulative"
        _check_cumulative(name, series, _point_value)
        last = _point_value(series[-1].point)
        assert last == expect_bytes[name], f"{name}: last value {last}, truth {expect_bytes[name]}"


def _check_duration_series(
    pid: int,
    name: str,
    span_name: str,
    state: str | None,
    series: list[PointRecord],
    exported: dict,
    window: Window,
) -> None:
    """One duration histogram series (off-CPU: of one state): exponential, cumulative, every
    event in a bucket, times inside the run, exemplars naming exported spans."""
    label = name if state is None else f"{name}{{{OFFCPU_STATE}={state}}}"
    for p in series:
        assert p.metric.unit == "s", f"{label} unit {p.metric.unit!r}"
        assert p.metric.WhichOneof("data") == "exponential_histogram", f"{label} kind"
        assert p.metric.exponential_histogram.aggregation_temporality == CUMULATIVE, label
        pt = p.point
        buckets = sum(pt.positive.bucket_counts) + sum(pt.negative.bucket_counts)
        assert pt.zero_count + buckets == pt.count, f"{label}: buckets hold every event"
        assert window.contains(pt.time_unix_nano), f"{label} point time outside the run"
    _check_cumulative(label, series, lambda pt: pt.count)

    # Exemplars: every one names a span kotel exported, of the matching kind, process and
    # (off-CPU) state; every interval that saw new events carries at least one.
    previous = 0
    for p in series:
        for ex in p.point.exemplars:
            key = (ex.trace_id, ex.span_id)
            assert key in exported, (
                f"{label} exemplar trace {ex.trace_id.hex()} span {ex.span_id.hex()} "
                "names no exported span"
            )
            span = exported[key].span
            assert span.name == span_name, f"{label} exemplar → {span_name}"
            assert resource_pid(exported[key].resource) == pid, f"{label} exemplar process"
            assert attributes(span.attributes).get(OFFCPU_STATE) == state, (
                f"{label} exemplar → a span of the same state"
            )
        if p.point.count > previous:
            assert p.point.exemplars, f"{label}: a point with new events carries an exemplar"
        previous = p.point.count


def check_summary_all_delivered(summary: dict, n_spans: int, n_points: int) -> None:
    """Nothing was lost: everything produced was exported, and what was exported arrived."""
    for section, arrived in (("spans", n_spans), ("metric_points", n_points)):
        s = summary[section]
        assert s["rejected"] == 0 and s["dropped"] == 0, f"{section}: {s}"
        assert s["produced"] == s["exported"] == arrived, f"{section}: {s}, {arrived} arrived"
    assert summary["events_lost"] == 0, summary
