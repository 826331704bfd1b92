"""Files mode rotation end to end (real BPF): a workload that knows what it did runs under
``kotel run`` writing OTLP/JSON lines through a small ``--rotate-bytes``.

* With backups enough to keep every file, the backups and the active file, read in the order
  they were written, hold exactly what the workload did: the same checks as the unrotated files
  in ``test_conformance.py``, nothing counted lost. Every line is whole OTLP/JSON and every file
  stays within the size unless it holds one larger line. The same run keeps one picture
  (``--max-pictures 1``) and no picture history (``--picture-store-bytes 0``): the folder
  holds exactly one picture, ``index.html`` lists only it, and every deletion is counted.
* With ``--rotate-backups 1``, at most two files per signal remain, the newest, each line
  whole; what was deleted is counted, and nothing is counted lost.

Needs root and kernel BTF, and ``cargo build --workspace --bins`` beforehand.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import otlp_json
from conftest import wait_until
from kotel_checks import Window, check_export, check_summary_all_delivered, kotel_args, read_summary
from otlp_receiver import attributes, iter_metric_points

pytestmark = pytest.mark.bpf

#: The rotation size of these runs: a few spans per file, and a metrics request (one per
#: second, with the agent's own metrics) larger than it, so both paths are taken.
ROTATE_BYTES = 8192

#: The longest wait for the metrics file's rotations (a bound, not a measurement: one rotation
#: a second is expected).
ROTATION_WAIT = 30.0

SIGNALS = {"traces": ExportTraceServiceRequest, "metrics": ExportMetricsServiceRequest}

#: `<signal>-<UTC time to the millisecond>[-<n>].jsonl`, as the OpenTelemetry Collector's file
#: exporter (lumberjack) names backups; `-n` tells apart two rotations in one millisecond.
BACKUP = re.compile(r"^(?P<signal>[a-z]+)-(?P<time>\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3})(?:-(?P<n>\d+))?\.jsonl$")

PICTURE = re.compile(r"^(?P<stem>heatmap-\d+-[a-z_]+|offcpu-flame)\.(svg|png)$")


def files_in_order(out: Path, signal: str) -> list[Path]:
    """The signal's backups, oldest first, then its active file."""
    backups = []
    for p in out.iterdir():
        m = BACKUP.match(p.name)
        if m and m["signal"] == signal:
            backups.append(((m["time"], int(m["n"] or 0)), p))
    return [p for _, p in sorted(backups)] + [out / f"{signal}.jsonl"]


def read_whole_lines(files: list[Path], message_class) -> list:
    """Every line of every file, each decoded as one whole OTLP/JSON request; each file within
    the rotation size unless it holds a single line."""
    requests = []
    for path in files:
        data = path.read_bytes()
        assert data.endswith(b"\n"), f"{path.name} ends in the middle of a line"
        lines = data.decode().splitlines()
        assert len(data) <= ROTATE_BYTES or len(lines) == 1, (
            f"{path.name}: {len(data)} bytes in {len(lines)} lines, over {ROTATE_BYTES}"
        )
        for n, line in enumerate(lines, 1):
            try:
                requests.append(otlp_json.parse(line, message_class))
            except Exception as e:  # the line and file, for whoever reads the failure
                raise AssertionError(f"{path.name}:{n} is not a whole OTLP/JSON request: {e}")
    return requests


def metrics_backups(out: Path) -> set[str]:
    """The names of the metrics backups in the folder now."""
    return {p.name for p in files_in_order(out, "metrics")[:-1]}


def run_workload(
    workload, kotel_run, out: Path, rotations: int, *extra: str
) -> tuple[int, dict, Window]:
    """Runs the workload under ``kotel run`` and interrupts kotel once the workload is done and
    the metrics file was seen rotated ``rotations`` times (a metrics request, once a second, is
    larger than the size, so each one after the first rotates the file)."""
    w = workload()
    start = time.time_ns()
    # Without kotel's own OTLP receiver (not under test here) spans go out each interval instead
    # of waiting link.hold for an application span, so the traces file rotates during the run.
    kotel = kotel_run(kotel_args(w.pid, out, None, "--rotate-bytes", str(ROTATE_BYTES),
                                 "--receiver-grpc", "none", "--receiver-http", "none", *extra))
    truth = w.run()
    seen: set[str] = set()

    def rotated_enough() -> bool:
        seen.update(metrics_backups(out))
        return len(seen) >= rotations

    wait_until(rotated_enough, ROTATION_WAIT, f"{rotations} rotations of metrics.jsonl")
    code, _stdout, stderr = kotel.interrupt()
    end = time.time_ns()
    assert code == 0, f"kotel exit code {code}; stderr:\n{stderr}"
    return w.pid, truth, Window(start, end)


def heatmap_stems(metric_requests) -> set[str]:
    """The pictures the exemplars named (`.../heatmap-<pid>-<kind>.png` → its stem)."""
    stems = set()
    for p in iter_metric_points(metric_requests):
        for ex in getattr(p.point, "exemplars", []):
            url = attributes(ex.filtered_attributes).get("kotel.artifact.url")
            if url:
                stems.add(Path(url).stem)
    return stems


def test_rotated_files_hold_exactly_what_the_workload_did(workload, kotel_run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    pid, truth, window = run_workload(
        workload, kotel_run, out, 2,
        "--rotate-backups", "100000", "--max-pictures", "1", "--picture-store-bytes", "0",
    )
    summary = read_summary(out)
    got = {}
    for signal, cls in SIGNALS.items():
        files = files_in_order(out, signal)
        assert len(files) > 1, f"{signal}: no rotation at {ROTATE_BYTES} bytes: {files}"
        got[signal] = read_whole_lines(files, cls)
    assert summary["spans"]["files_rotated"] == len(files_in_order(out, "traces")) - 1, summary
    assert summary["metric_points"]["files_rotated"] == len(files_in_order(out, "metrics")) - 1
    assert summary["spans"]["files_removed"] == summary["metric_points"]["files_removed"] == 0

    # Read in the order they were written, the files say exactly what the workload did.
    spans, points = check_export(pid, truth, got["traces"], got["metrics"], window)
    check_summary_all_delivered(summary, len(spans), len(points))

    # Pictures: the exemplars named at least two; one is kept, the report links it alone, and
    # every other was deleted (an SVG and a PNG each), counted.
    named = heatmap_stems(got["metrics"])
    assert len(named) >= 2, f"the workload's run drew fewer than two heatmaps: {named}"
    on_disk = sorted(p.name for p in out.iterdir() if PICTURE.match(p.name))
    assert len(on_disk) == 2 and on_disk[0].rsplit(".", 1)[0] == on_disk[1].rsplit(".", 1)[0], on_disk
    kept = on_disk[0].rsplit(".", 1)[0]
    index = (out / "index.html").read_text()
    block = re.search(r'<script type="application/json" id="kotel-data">(.*?)</script>', index, re.S)
    data = json.loads(block.group(1))
    linked = [f for h in data["heatmaps"] for f in h["pictures"]]
    linked += data["flame"]["pictures"] if data["flame"] else []
    assert linked == [f"{kept}.svg", f"{kept}.png"], linked
    removed = summary["artifacts_removed_max_pictures"]
    assert removed % 2 == 0 and removed >= 2 * (len(named | {kept}) - 1), (removed, named, kept)
    # No picture history kept: every version stored was deleted, and counted.
    assert not [p for p in (out / "artifacts").iterdir() if not p.name.startswith(".")]
    assert summary["artifacts_made"] > 0
    assert summary["artifacts_removed_store"] == 2 * summary["artifacts_made"], summary


def test_backups_beyond_the_count_are_deleted(workload, kotel_run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_workload(workload, kotel_run, out, 3, "--rotate-backups", "1")
    summary = read_summary(out)
    for signal, section in (("traces", "spans"), ("metrics", "metric_points")):
        s = summary[section]
        files = files_in_order(out, signal)
        assert len(files) <= 2, f"{signal}: {[p.name for p in files]}"
        # Fresh folder: every rotation made a backup, and all but the one kept were deleted.
        assert s["files_rotated"] >= 2, f"{signal}: too few rotations to test the count: {s}"
        assert s["files_removed"] == s["files_rotated"] - 1, f"{signal}: {s}"
        assert len(files) == 2
        requests = read_whole_lines(files, SIGNALS[signal])
        assert requests
        # Deleting files is not losing exports: everything produced was written.
        assert s["dropped"] == 0 and s["produced"] == s["exported"], f"{signal}: {s}"
    # The files kept, read oldest first, go forward: the agent's own cumulative count of events
    # (one point per request) never goes back in time or value across them.
    received = [
        (p.point.time_unix_nano, p.point.as_int)
        for p in iter_metric_points(
            read_whole_lines(files_in_order(out, "metrics"), ExportMetricsServiceRequest)
        )
        if p.metric.name == "kotel.events.received"
    ]
    assert len(received) >= 2, received
    assert all(a[0] < b[0] and a[1] <= b[1] for a, b in zip(received, received[1:])), received
    assert summary["events_lost"] == 0, summary
