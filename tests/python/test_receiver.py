"""Self-test of the OTLP harness, with no kotel involved: the official OpenTelemetry Python SDK
and its OTLP/gRPC exporters send to ``OtlpReceiver``, which must hold exactly what was sent;
injected failures and outages behave as the OTLP specification describes (the SDK's own retry
delivers once); the JSON encodings round-trip through the official classes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import otlp_json
from otlp_receiver import OtlpReceiver, attributes

SERVICE = "kotel-harness-selftest"
N_SPANS = 25


def _tracer_provider(receiver: OtlpReceiver) -> TracerProvider:
    """An SDK TracerProvider exporting to the receiver with the official OTLP/gRPC exporter."""
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    exporter = OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True, timeout=20)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=512))
    return provider


def _send_spans(provider: TracerProvider, n: int) -> dict[str, tuple[str, str]]:
    """Ends n spans with known names and attributes, flushes; returns name → (trace, span) ids
    as hex."""
    tracer = provider.get_tracer("kotel.selftest", "1.0")
    sent = {}
    for i in range(n):
        with tracer.start_as_current_span(f"op-{i}") as span:
            span.set_attribute("kotel.test.index", i)
            span.set_attribute("kotel.test.label", f"label-{i}")
            ctx = span.get_span_context()
            sent[f"op-{i}"] = (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert provider.force_flush(timeout_millis=30_000), "the SDK flushed in time"
    provider.shutdown()
    return sent


def _received_spans(receiver: OtlpReceiver) -> dict[str, tuple[str, str, dict]]:
    """name → (trace id hex, span id hex, attributes), failing on a name seen twice."""
    got: dict[str, tuple[str, str, dict]] = {}
    for resource, scope, span in receiver.spans():
        assert attributes(resource.attributes)["service.name"] == SERVICE
        assert scope.name == "kotel.selftest" and scope.version == "1.0"
        assert span.name not in got, f"span {span.name} delivered twice"
        got[span.name] = (span.trace_id.hex(), span.span_id.hex(), attributes(span.attributes))
    return got


def test_sdk_spans_arrive_exactly(receiver: OtlpReceiver) -> None:
    sent = _send_spans(_tracer_provider(receiver), N_SPANS)
    got = _received_spans(receiver)
    assert set(got) == set(sent)
    for name, (trace_id, span_id, attrs) in got.items():
        i = int(name.removeprefix("op-"))
        assert (trace_id, span_id) == sent[name]
        assert attrs == {"kotel.test.index": i, "kotel.test.label": f"label-{i}"}
    counters = receiver.counters()["traces"]
    assert counters["failures"] == 0 and counters["calls"] == counters["accepted"] >= 1


def test_sdk_retry_delivers_once_after_unavailable(receiver: OtlpReceiver) -> None:
    # The SDK backs off about 1 s, then 2 s (with jitter), then succeeds.
    receiver.fail_next(2)
    sent = _send_spans(_tracer_provider(receiver), N_SPANS)
    got = _received_spans(receiver)
    assert set(got) == set(sent), "every span delivered once"
    counters = receiver.counters()["traces"]
    assert counters["failures"] == 2
    assert counters["accepted"] == 1, "one batch, accepted on the third attempt"
    assert counters["calls"] == 3


def test_sdk_honours_retry_info(receiver: OtlpReceiver) -> None:
    # RESOURCE_EXHAUSTED is retryable when the server says when to retry (RetryInfo).
    receiver.fail_next(1, grpc.StatusCode.RESOURCE_EXHAUSTED, retry_delay=0.05)
    sent = _send_spans(_tracer_provider(receiver), 3)
    assert set(_received_spans(receiver)) == set(sent)
    assert receiver.counters()["traces"] == {"calls": 2, "failures": 1, "accepted": 1}


def test_permanent_error_is_not_stored(receiver: OtlpReceiver) -> None:
    receiver.fail_next(1, grpc.StatusCode.INVALID_ARGUMENT)
    _send_spans(_tracer_provider(receiver), 3)
    assert receiver.spans() == [], "a permanent error is not retried and keeps nothing"
    assert receiver.counters()["traces"] == {"calls": 1, "failures": 1, "accepted": 0}


def test_sdk_metrics_arrive(receiver: OtlpReceiver) -> None:
    exporter = OTLPMetricExporter(endpoint=receiver.endpoint, insecure=True, timeout=20)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(
        resource=Resource.create({"service.name": SERVICE}), metric_readers=[reader]
    )
    meter = provider.get_meter("kotel.selftest")
    counter = meter.create_counter("kotel.test.bytes", unit="By")
    histogram = meter.create_histogram("kotel.test.duration", unit="s")
    for v in (1, 2, 3, 4):
        counter.add(v)
        histogram.record(v / 1000)
    provider.shutdown()  # collects and exports once

    points = {m.name: (m, p) for _, _, m, p in receiver.metrics()}
    metric, point = points["kotel.test.bytes"]
    assert metric.unit == "By" and metric.sum.is_monotonic and point.as_int == 10
    metric, point = points["kotel.test.duration"]
    assert metric.unit == "s" and point.count == 4 and point.sum == pytest.approx(0.01)


def _log_request(body: str) -> logs_service_pb2.ExportLogsServiceRequest:
    request = logs_service_pb2.ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.body.string_value = body
    record.severity_number = logs_pb2.SEVERITY_NUMBER_INFO
    return request


def test_logs_and_outage_on_the_same_port(receiver: OtlpReceiver) -> None:
    port = receiver.port
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        stub.Export(_log_request("before"), timeout=5)

        receiver.stop()
        assert not receiver.running
        with pytest.raises(grpc.RpcError) as err:
            stub.Export(_log_request("during"), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

        assert receiver.start() == port, "the outage ends on the same port"
        # The client channel reconnects by itself (allow for its reconnect backoff).
        stub.Export(_log_request("after"), timeout=10, wait_for_ready=True)

    bodies = [log.body.string_value for _, _, log in receiver.logs()]
    assert bodies == ["before", "after"]
    assert receiver.counters()["logs"] == {"calls": 2, "failures": 0, "accepted": 2}


def test_wait_for(receiver: OtlpReceiver) -> None:
    assert not receiver.wait_for(lambda: receiver.spans(), timeout=0.2)
    provider = _tracer_provider(receiver)
    provider.get_tracer("kotel.selftest", "1.0").start_span("late").end()
    provider.force_flush()
    assert receiver.wait_for(lambda: len(receiver.spans()) == 1, timeout=10)
    provider.shutdown()


def _sample_trace_request() -> trace_service_pb2.ExportTraceServiceRequest:
    request = trace_service_pb2.ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="process.pid", value=common_pb2.AnyValue(int_value=4242))
    span = rs.scope_spans.add().spans.add()
    span.trace_id = bytes.fromhex("5b8efff798038103d269b633813fc60c")
    span.span_id = bytes.fromhex("eee19b7ec3c1b174")
    span.name = "writev"
    span.kind = trace_pb2.Span.SPAN_KIND_INTERNAL
    span.start_time_unix_nano = 1_700_000_000_000_000_000
    span.end_time_unix_nano = 1_700_000_000_000_012_345
    span.attributes.add(key="kotel.bytes", value=common_pb2.AnyValue(int_value=1448))
    return request


def test_message_to_dict_round_trip() -> None:
    request = _sample_trace_request()
    as_json = json.dumps(json_format.MessageToDict(request))
    back = json_format.Parse(as_json, trace_service_pb2.ExportTraceServiceRequest())
    assert back == request


def test_otlp_json_round_trip_and_hex_ids() -> None:
    request = _sample_trace_request()
    encoded = otlp_json.to_dict(request)
    span = encoded["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == "5b8efff798038103d269b633813fc60c"
    assert span["spanId"] == "eee19b7ec3c1b174"
    assert span["kind"] == 1
    back = otlp_json.parse(json.dumps(encoded), trace_service_pb2.ExportTraceServiceRequest)
    assert back == request


def test_otlp_json_decodes_a_hand_written_line() -> None:
    # As an OTLP/JSON writer would emit it: hex ids (upper case allowed), integer enums,
    # 64-bit integers as strings or numbers.
    line = (
        '{"resourceMetrics":[{"resource":{"attributes":[{"key":"process.pid",'
        '"value":{"intValue":"4242"}}]},"scopeMetrics":[{"metrics":[{"name":'
        '"kotel.writev.duration","unit":"s","exponentialHistogram":{'
        '"aggregationTemporality":2,"dataPoints":[{"count":"3","scale":3,"zeroCount":0,'
        '"positive":{"offset":-100,"bucketCounts":["1","0","2"]},"exemplars":[{'
        '"timeUnixNano":1700000000000000000,"asDouble":0.002,'
        '"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174"}]}]}}]}]}]}'
    )
    request = otlp_json.parse(line, metrics_service_pb2.ExportMetricsServiceRequest)
    metric = request.resource_metrics[0].scope_metrics[0].metrics[0]
    point = metric.exponential_histogram.data_points[0]
    assert point.count == 3 and list(point.positive.bucket_counts) == [1, 0, 2]
    assert point.exemplars[0].trace_id == bytes.fromhex("5b8efff798038103d269b633813fc60c")
    assert point.exemplars[0].span_id == bytes.fromhex("eee19b7ec3c1b174")


@pytest.mark.parametrize(
    "bad, why",
    [
        ('{"resourceSpans":[{"scopeSpans":[{"spans":[{"trace_id":""}]}]}]}', "lowerCamelCase"),
        ('{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_INTERNAL"}]}]}]}', "enum"),
        (
            '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"W47/95gDgQPSabYzgT/GDA=="}]}]}]}',
            "hex",
        ),
        ('{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"eee19b7e"}]}]}]}', "16 hex"),
    ],
    ids=["snake_case", "enum_name", "base64_id", "short_id"],
)
def test_otlp_json_rejects_what_otlp_forbids(bad: str, why: str) -> None:
    with pytest.raises(otlp_json.OtlpJsonError, match=why):
        otlp_json.parse(bad, trace_service_pb2.ExportTraceServiceRequest)


def test_cli_writes_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "received.jsonl"
    script = Path(__file__).with_name("otlp_receiver.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = json.loads(proc.stdout.readline())["port"]
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        provider.get_tracer("kotel.selftest").start_span("via-cli").end()
        assert provider.force_flush(timeout_millis=20_000)
        provider.shutdown()
        proc.terminate()
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["signal"] for line in lines] == ["traces"]
    request = json_format.ParseDict(
        lines[0]["request"], trace_service_pb2.ExportTraceServiceRequest()
    )
    assert request.resource_spans[0].scope_spans[0].spans[0].name == "via-cli"
    # The closing stderr line counts what was accepted.
    assert json.loads(proc.stderr.read().strip().splitlines()[-1])["accepted"]["traces"] == 1


def test_sequential_receivers_do_not_share_a_port() -> None:
    with OtlpReceiver() as a:
        with pytest.raises(RuntimeError, match="cannot bind"):
            OtlpReceiver(a.port).start(bind_timeout=0.3)
    # Once the first is gone, its port can be listened on again.
    b = OtlpReceiver(a.port)
    assert b.start() == a.port
    b.stop()
