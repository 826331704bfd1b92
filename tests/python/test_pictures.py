"""Pictures end to end: latency heatmaps and the off-CPU flame graph that `kotel run` renders,
in-process and through the `kotel-render` sidecar, and the links to them on exemplars and
spans. A workload that renames itself to a hostile name checks the escaping."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import built_binary, free_port, wait_until
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_json import parse, read_jsonl
from otlp_receiver import attributes

pytestmark = pytest.mark.bpf

HOSTILE = "</text><script>alert(1)</script>"

#: The longest wait for an interval's pictures (a bound, not a measurement: kotel's interval
#: is one second here).
PICTURES_WAIT = 30.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def no_script(svg: bytes) -> None:
    """Well-formed XML with no script element and no event-handler attribute."""
    root = ET.fromstring(svg)
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1].lower()
        assert tag != "script", "a script element"
        assert not any(k.lower().startswith("on") for k in el.attrib), f"event handler on {tag}"


def exemplar_artifacts(metric_requests) -> list[tuple[dict, object]]:
    out = []
    for req in metric_requests:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.WhichOneof("data") != "exponential_histogram":
                        continue
                    for dp in m.exponential_histogram.data_points:
                        for ex in dp.exemplars:
                            a = attributes(ex.filtered_attributes)
                            if "kotel.artifact.url" in a:
                                out.append((a, ex))
    return out


def exported_so_far(path: Path, message_class):
    """The complete lines of an OTLP/JSON lines file kotel is still writing, decoded."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    complete = text[: text.rfind("\n") + 1]
    return [parse(line, message_class) for line in complete.splitlines() if line.strip()]


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def spans_by_id(trace_requests) -> dict[bytes, object]:
    return {s.span_id: s for req in trace_requests for rs in req.resource_spans
            for ss in rs.scope_spans for s in ss.spans}


def test_in_process_pictures_escape_hostile_names(workload, kotel_run, tmp_path, monkeypatch):
    monkeypatch.setenv("KOTEL_WORKLOAD_NAME", HOSTILE)
    out = tmp_path / "out"
    w = workload()
    # The workload's off-CPU waits are idle sleeps: --sleep-threshold 1ms makes them spans, so
    # that the off-CPU flame graph (drawn from spans) has them.
    kotel = kotel_run(["--pid", w.pid, "--span-threshold", "1ms", "--sleep-threshold", "1ms",
                       "--interval", "1s", "--out", out,
                       "--receiver-grpc", "none", "--receiver-http", "none", "--telemetry", "none"])
    w.run()
    # An interval with the workload's events has ended: its pictures are made and linked from
    # the exemplars kotel exported.
    wait_until(
        lambda: exemplar_artifacts(exported_so_far(out / "metrics.jsonl", ExportMetricsServiceRequest))
        and list(out.glob(f"heatmap-{w.pid}-*.svg"))
        and (out / "offcpu-flame.svg").is_file(),
        PICTURES_WAIT,
        "the workload's pictures, linked from exported exemplars",
    )
    code, _, stderr = kotel.interrupt()
    assert code == 0, stderr
    heatmaps = sorted(out.glob(f"heatmap-{w.pid}-*.svg"))
    assert heatmaps, f"no heatmap for the workload: {sorted(p.name for p in out.iterdir())}"
    for svg in heatmaps + [out / "offcpu-flame.svg"]:
        no_script(svg.read_bytes())
        png = svg.with_suffix(".png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 1000
    text = heatmaps[0].read_text()
    assert "&lt;/text&gt;&lt;script&gt;" in text, "the hostile name is shown, escaped"
    # The report page holds the name as JSON data only (tests/python/test_report.py loads it
    # in a browser): its own two script elements, the name's markup escaped.
    index = (out / "index.html").read_text()
    assert index.lower().count("<script") == 2
    assert "\\u003c/text\\u003e\\u003cscript\\u003e" in index
    # Each exemplar that names a picture names a file that exists, and the exemplar's span
    # (the interval's slowest) carries the same picture.
    metrics = read_jsonl(out / "metrics.jsonl", ExportMetricsServiceRequest)
    traces = spans_by_id(read_jsonl(out / "traces.jsonl", ExportTraceServiceRequest))
    found = exemplar_artifacts(metrics)
    assert found, "exemplars carry artifact links"
    for a, ex in found:
        assert a["kotel.artifact.url"].startswith("file://")
        assert Path(a["kotel.artifact.url"][len("file://"):]).is_file()
        span = traces.get(ex.span_id)
        assert span is not None, "the exemplar's span was exported"
        sa = attributes(span.attributes)
        assert (sa["kotel.artifact.url"], sa["kotel.artifact.id"]) == (a["kotel.artifact.url"], a["kotel.artifact.id"])


def test_sidecar_pictures_are_served_over_http(workload, receiver, kotel_run, tmp_path):
    grpc_port, http_port = free_port(), free_port()
    render = subprocess.Popen(
        [str(built_binary("kotel-render")), "--grpc", f"127.0.0.1:{grpc_port}", "--http", f"127.0.0.1:{http_port}",
         "--store", str(tmp_path / "store")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(lambda: listening(http_port), 30.0, "kotel-render listening")
        w = workload()
        kotel = kotel_run(["--pid", w.pid, "--span-threshold", "1ms", "--interval", "1s", "--out", tmp_path / "out",
                           "--otlp-endpoint", receiver.endpoint, "--renderer", f"http://127.0.0.1:{grpc_port}",
                           "--receiver-grpc", "none", "--receiver-http", "none", "--telemetry", "none"])
        w.run()
        # An interval with the workload's events has ended: its pictures are made and linked
        # from the exemplars kotel exported.
        pictured = receiver.wait_for(
            lambda: exemplar_artifacts(receiver.requests("metrics")), timeout=PICTURES_WAIT
        )
        assert pictured, f"no exemplar linked a picture within {PICTURES_WAIT} s"
        code, _, stderr = kotel.interrupt()
        assert code == 0, stderr
        found = exemplar_artifacts(receiver.requests("metrics"))
        assert found, "exemplars carry artifact links"
        spans = spans_by_id(receiver.requests("traces"))
        for a, ex in found:
            with urllib.request.urlopen(a["kotel.artifact.url"], timeout=10) as r:
                body = r.read()
                ctype = r.headers["Content-Type"]
            assert ctype == a["kotel.artifact.media_type"]
            if ctype == "image/png":
                assert body.startswith(PNG_MAGIC)
            else:
                no_script(body)
            sa = attributes(spans[ex.span_id].attributes)
            assert sa["kotel.artifact.id"] == a["kotel.artifact.id"], "the slowest span carries the same artifact"
    finally:
        render.terminate()
        render.wait(timeout=10)
