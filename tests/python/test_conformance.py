"""OTLP conformance of ``kotel run`` (real BPF): a workload that knows what it did runs under
kotel, and what kotel sends is decoded by the official OpenTelemetry protobuf definitions and
compared with that truth — once over OTLP/gRPC into a real receiver, once through the OTLP/JSON
lines files. Both go through the same assertions (``kotel_checks.check_export``).

Needs root and kernel BTF, and ``cargo build --workspace --bins`` beforehand.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import otlp_json
from kotel_checks import Window, check_export, check_summary_all_delivered, kotel_args, read_summary

pytestmark = pytest.mark.bpf


def _run(workload, kotel_run, out_dir: Path, endpoint: str | None) -> tuple[int, dict, Window]:
    """Runs the workload under ``kotel run`` and interrupts kotel once the workload is done.
    Returns (workload pid, its truth, the wall-clock window of the run)."""
    w = workload()
    start = time.time_ns()
    kotel = kotel_run(kotel_args(w.pid, out_dir, endpoint))
    truth = w.run()
    code, _stdout, stderr = kotel.interrupt()
    end = time.time_ns()
    assert code == 0, f"kotel exit code {code}; stderr:\n{stderr}"
    return w.pid, truth, Window(start, end)


def test_grpc_export_matches_the_workload(receiver, workload, kotel_run, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    pid, truth, window = _run(workload, kotel_run, out_dir, receiver.endpoint)

    # kotel flushed before exiting: everything it sent is in the receiver now.
    spans, points = check_export(
        pid, truth, receiver.requests("traces"), receiver.requests("metrics"), window
    )
    check_summary_all_delivered(read_summary(out_dir), len(spans), len(points))
    assert receiver.total("failures") == 0


def test_json_files_match_the_workload(workload, kotel_run, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    pid, truth, window = _run(workload, kotel_run, out_dir, endpoint=None)

    # One ExportTraceServiceRequest / ExportMetricsServiceRequest per line, in OTLP/JSON
    # (hex ids, integer enums, lowerCamelCase), decoded into the official classes.
    traces = otlp_json.read_jsonl(out_dir / "traces.jsonl", ExportTraceServiceRequest)
    metrics = otlp_json.read_jsonl(out_dir / "metrics.jsonl", ExportMetricsServiceRequest)
    spans, points = check_export(pid, truth, traces, metrics, window)
    check_summary_all_delivered(read_summary(out_dir), len(spans), len(points))
