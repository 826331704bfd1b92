"""Self-test of the conformance assertions (``kotel_checks``) without kotel: hand-built OTLP
output that follows the ``kotel run`` contract must pass ``check_export`` — sent over gRPC
into the receiver and through OTLP/JSON lines — and each kind of mistake must be caught.
This is what keeps the real-BPF conformance tests honest while kotel cannot run them yet.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

import otlp_json
from kotel_checks import CUMULATIVE, Window, check_export
from otlp_receiver import OtlpReceiver

PID = 4242
T0 = 1_700_000_000_000_000_000  # the run's window starts here
MS = 1_000_000

TRUTH = {
    "writev": {"tid": 11, "calls": 3, "bytes": 100 + 200 + 300},
    "tcp": [
        {
            "tid": 12,
            "calls": 2,
            "bytes": 1500,
            "local": "127.0.0.1:40000",
            "peer": "127.0.0.1:5000",
        },
        {"tid": 12, "calls": 1, "bytes": 700, "local": "[::1]:40001", "peer": "[::1]:5001"},
    ],
    "sleeper": {"tid": 13, "sleeps": [{"requested_ns": 20 * MS, "elapsed_ns": 21 * MS}]},
    "spinners": {"cpu": 0, "threads": [{"tid": 14}, {"tid": 15}]},
}
WINDOW = Window(T0, T0 + 10_000 * MS)


def _attr(key: str, value) -> common_pb2.KeyValue:
    if isinstance(value, str):
        v = common_pb2.AnyValue(string_value=value)
    else:
        v = common_pb2.AnyValue(int_value=value)
    return common_pb2.KeyValue(key=key, value=v)


def _set_resource(resource) -> None:
    for k, v in {
        "process.pid": PID,
        "process.executable.name": "kotel-workload",
        "service.name": "kotel-workload",
        "host.name": os.uname().nodename,
    }.items():
        resource.attributes.append(_attr(k, v))


def _events() -> list[tuple[str, int, int, dict]]:
    """(span name, start offset ms, duration ns, extra attributes) as kotel would see them."""
    ev = []
    for i, b in enumerate((100, 200, 300)):
        ev.append(("writev", 10 + i, 2_000 + i, {"thread.id": 11, "kotel.bytes": b}))
    tcp = [
        (1000, "127.0.0.1", 40000, "127.0.0.1", 5000),
        (500, "127.0.0.1", 40000, "127.0.0.1", 5000),
        (700, "::1", 40001, "::1", 5001),
    ]
    for i, (b, la, lp, pa, pp) in enumerate(tcp):
        ev.append(
            (
                "tcp_sendmsg",
                20 + i,
                9_000,
                {
                    "thread.id": 12,
                    "kotel.bytes": b,
                    "network.transport": "tcp",
                    "network.local.address": la,
                    "network.local.port": lp,
                    "network.peer.address": pa,
                    "network.peer.port": pp,
                },
            )
        )
    ev.append(
        ("sched.offcpu", 30, 20 * MS + 50_000, {"thread.id": 13, "kotel.offcpu.state": "interruptible"})
    )
    ev.append(("sched.runqueue", 60, 3 * MS, {"thread.id": 14}))
    ev.append(("sched.runqueue", 64, 3 * MS, {"thread.id": 15}))
    return ev


def _build() -> tuple[list, list]:
    """(trace requests, metric requests): one trace export, two cumulative metric exports."""
    trace_req = trace_service_pb2.ExportTraceServiceRequest()
    rs = trace_req.resource_spans.add()
    _set_resource(rs.resource)
    ss = rs.scope_spans.add()
    ss.scope.name = "kotel"
    slowest: dict[str, trace_pb2.Span] = {}
    for name, at_ms, dur, extra in _events():
        span = ss.spans.add(
            trace_id=secrets.token_bytes(16),
            span_id=secrets.token_bytes(8),
            name=name,
            kind=trace_pb2.Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=T0 + at_ms * MS,
            end_time_unix_nano=T0 + at_ms * MS + dur,
        )
        attrs = {"thread.name": "kotel-workload", "kotel.cpu": 1, **extra}
        span.attributes.extend(_attr(k, v) for k, v in attrs.items())
        if name not in slowest or dur > _dur(slowest[name]):
            slowest[name] = span

    metric_reqs = []
    series = [
        ("kotel.writev.duration", "writev", 3),
        ("kotel.tcp.send.duration", "tcp_sendmsg", 3),
        ("kotel.sched.runqueue.delay", "sched.runqueue", 2),
        ("kotel.sched.offcpu.duration", "sched.offcpu", 1),
    ]
    for interval, at_ms in ((1, 1000), (2, 2000)):
        req = metrics_service_pb2.ExportMetricsServiceRequest()
        rm = req.resource_metrics.add()
        _set_resource(rm.resource)
        sm = rm.scope_metrics.add()
        for name, span_name, count in series:
            m = sm.metrics.add(name=name, unit="s")
            m.exponential_histogram.aggregation_temporality = CUMULATIVE
            p = m.exponential_histogram.data_points.add(
                start_time_unix_nano=T0, time_unix_nano=T0 + at_ms * MS, count=count, scale=3
            )
            if span_name == "sched.offcpu":
                p.attributes.append(_attr("kotel.offcpu.state", "interruptible"))
            p.positive.offset = -100
            p.positive.bucket_counts.extend([count])
            if interval == 1:  # all events fell in the first interval
                s = slowest[span_name]
                p.exemplars.add(
                    time_unix_nano=s.end_time_unix_nano,
                    as_double=_dur(s) / 1e9,
                    trace_id=s.trace_id,
                    span_id=s.span_id,
                )
        for name, value in (("kotel.writev.bytes", 600), ("kotel.tcp.send.bytes", 2200)):
            m = sm.metrics.add(name=name, unit="By")
            m.sum.aggregation_temporality = CUMULATIVE
            m.sum.is_monotonic = True
            m.sum.data_points.add(
                start_time_unix_nano=T0, time_unix_nano=T0 + at_ms * MS, as_int=value
            )
        metric_reqs.append(req)
    return [trace_req], metric_reqs


def _dur(span) -> int:
    return span.end_time_unix_nano - span.start_time_unix_nano


def test_conforming_output_passes_over_grpc() -> None:
    traces, metrics = _build()
    with OtlpReceiver() as receiver, grpc.insecure_channel(f"127.0.0.1:{receiver.port}") as ch:
        for req in traces:
            trace_service_pb2_grpc.TraceServiceStub(ch).Export(req, timeout=5)
        for req in metrics:
            metrics_service_pb2_grpc.MetricsServiceStub(ch).Export(req, timeout=5)
        spans, points = check_export(
            PID, TRUTH, receiver.requests("traces"), receiver.requests("metrics"), WINDOW
        )
    assert len(spans) == 9 and len(points) == 12


def test_conforming_output_passes_as_otlp_json_lines(tmp_path: Path) -> None:
    traces, metrics = _build()
    for name, reqs in (("traces.jsonl", traces), ("metrics.jsonl", metrics)):
        (tmp_path / name).write_text("".join(json.dumps(otlp_json.to_dict(r)) + "\n" for r in reqs))
    check_export(
        PID,
        TRUTH,
        otlp_json.read_jsonl(
            tmp_path / "traces.jsonl", trace_service_pb2.ExportTraceServiceRequest
        ),
        otlp_json.read_jsonl(
            tmp_path / "metrics.jsonl", metrics_service_pb2.ExportMetricsServiceRequest
        ),
        WINDOW,
    )


def _spans(traces):
    return traces[0].resource_spans[0].scope_spans[0].spans


def _metric(metrics, i: int, name: str):
    ms = metrics[i].resource_metrics[0].scope_metrics[0].metrics
    return next(m for m in ms if m.name == name)


def _set_int_attr(span, key: str, value: int) -> None:
    next(kv for kv in span.attributes if kv.key == key).value.int_value = value


def _dup_span(t, m):
    _spans(t).append(copy.deepcopy(_spans(t)[0]))


def _wrong_bytes(t, m):
    _set_int_attr(_spans(t)[0], "kotel.bytes", 101)


def _missing_writev(t, m):
    del _spans(t)[0]


def _pid_as_string(t, m):
    res = t[0].resource_spans[0].resource
    next(kv for kv in res.attributes if kv.key == "process.pid").value.string_value = str(PID)


def _span_after_exit(t, m):
    _spans(t)[0].end_time_unix_nano = WINDOW.end_ns + 1


def _dangling_exemplar(t, m):
    _metric(m, 0, "kotel.writev.duration").exponential_histogram.data_points[0].exemplars[
        0
    ].span_id = b"\x01" * 8


def _wrong_last_count(t, m):
    for i in (0, 1):
        p = _metric(m, i, "kotel.writev.duration").exponential_histogram.data_points[0]
        p.count, p.positive.bucket_counts[0] = 4, 4


def _delta_temporality(t, m):
    _metric(
        m, 1, "kotel.writev.bytes"
    ).sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA


def _tcp_local_port(t, m):
    tcp = next(s for s in _spans(t) if s.name == "tcp_sendmsg")
    _set_int_attr(tcp, "network.local.port", 1)


def _client_kind(t, m):
    _spans(t)[0].kind = trace_pb2.Span.SPAN_KIND_CLIENT


def _offcpu_without_state(t, m):
    offcpu = next(s for s in _spans(t) if s.name == "sched.offcpu")
    del offcpu.attributes[:]
    offcpu.attributes.extend(
        [_attr("thread.id", 13), _attr("thread.name", "kotel-workload"), _attr("kotel.cpu", 1)]
    )


def _exemplar_of_the_other_state(t, m):
    for i in (0, 1):
        p = _metric(m, i, "kotel.sched.offcpu.duration").exponential_histogram.data_points[0]
        p.attributes[0].value.string_value = "uninterruptible"


def _two_points_of_one_state(t, m):
    dps = _metric(m, 1, "kotel.sched.offcpu.duration").exponential_histogram.data_points
    dps.append(copy.deepcopy(dps[0]))


@pytest.mark.parametrize(
    "mistake, message",
    [
        pytest.param(f, message, id=f.__name__.strip("_"))
        for f, message in [
            (_dup_span, "more than once"),
            (_wrong_bytes, "writev bytes"),
            (_missing_writev, "2 writev spans for 3 calls"),
            (_pid_as_string, "process.pid is an int"),
            (_span_after_exit, "outside the run"),
            (_dangling_exemplar, "names no exported span"),
            (_wrong_last_count, "last cumulative count is 4"),
            (_delta_temporality, "is cumulative"),
            (_tcp_local_port, "tcp_sendmsg spans on"),
            (_client_kind, "is INTERNAL"),
            (_offcpu_without_state, "kotel.offcpu.state"),
            (_exemplar_of_the_other_state, "exemplar → a span of the same state"),
            (_two_points_of_one_state, "one data point per process resource"),
        ]
    ],
)
def test_mistakes_are_caught(mistake, message: str) -> None:
    traces, metrics = _build()
    mistake(traces, metrics)
    with pytest.raises(AssertionError, match=message):
        check_export(PID, TRUTH, traces, metrics, WINDOW)
