"""OTLP profiles, decoded with the official ``opentelemetry-proto`` package, against a C
program that measures itself (``tests/workloads/flame.c``): one thread sleeps three times in
``kotel_test_block_here``, one writes slowly into a full pipe in ``kotel_test_write_slowly``,
one sends slowly over loopback TCP in ``kotel_test_send_slowly``.

Each transport kotel speaks is checked the same way: files (``profiles.jsonl``, OTLP JSON),
OTLP/gRPC (the ProfilesService) and OTLP/HTTP (``/v1development/profiles``). The dictionary's
tables start with their zero values, every index is in range, the samples whose stacks hold a
named function add up to the time the program measured there (within 20 %), every link
points at a span kotel exported, and the sleeping thread's hostile name comes back unchanged.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Iterable

import pytest
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

import otlp_json

from conftest import LineReader, WORKLOAD_TIMEOUT, _child_env, _stop_child
from kotel_checks import read_summary
from otlp_http_receiver import PROFILES_PATH, OtlpHttpReceiver
from otlp_receiver import OtlpReceiver, iter_spans

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "workloads" / "flame.c"

#: A thread name a renderer or a JSON writer could trip on (15 bytes, the kernel's limit).
HOSTILE = '<b>"x;\\</b>&\'q'

#: kotel run arguments common to every transport: the three probes with stacks, every slow
#: event a span (no budget, no sleep threshold above the span threshold), every stack
#: symbolized, one interval for the whole run.
ARGS = [
    "--probes", "writev,tcp_send,offcpu",
    "--span-threshold", "10ms",
    "--sleep-threshold", "10ms",
    "--span-budget", "0",
    "--symbolize-budget", "0",
    "--interval", "600s",
    "--receiver-grpc", "none",
    "--receiver-http", "none",
    "--telemetry", "none",
    "--profiles", "on",
]


def within_20_percent(measured: int, truth: int) -> bool:
    return truth * 0.8 <= measured <= truth * 1.2


@pytest.fixture(scope="module")
def flame_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C workload, compiled with frame pointers and debug info."""
    out = tmp_path_factory.mktemp("flame") / "kotel-flame-c"
    subprocess.run(
        ["cc", "-O1", "-fno-omit-frame-pointer", "-g", "-pthread", "-o", str(out), str(SOURCE)],
        check=True,
        capture_output=True,
    )
    return out


class FlameProgram:
    """The running C workload: its pid, then its own measurements."""

    def __init__(self, binary: Path) -> None:
        self.proc = subprocess.Popen(
            [str(binary), HOSTILE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
        self._out = LineReader(self.proc.stdout)
        self.pid = json.loads(self._line())["pid"]

    def _line(self) -> str:
        line = self._out.next_line(timeout=WORKLOAD_TIMEOUT)
        assert line is not None, "the workload exited early"
        return line

    def run(self) -> dict:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def finish(self) -> None:
        self.proc.stdin.write("exit\n")
        self.proc.stdin.close()
        assert self.proc.wait(timeout=WORKLOAD_TIMEOUT) == 0

    def close(self) -> None:
        _stop_child(self.proc)


def run_once(
    binary: Path, kotel_run, tmp_path: Path, extra: list[str]
) -> tuple[dict, int, Path]:
    """Runs the workload under ``kotel run``; returns its truth, its pid and kotel's output
    folder."""
    program = FlameProgram(binary)
    out = tmp_path / "out"
    try:
        kotel = kotel_run(["--pid", str(program.pid), *ARGS, "--out", str(out), *extra])
        truth = program.run()
        # kotel drains, symbolizes and exports once more when interrupted, while the program
        # still lives with its maps.
        code, _, stderr = kotel.interrupt()
        assert code == 0, stderr
        program.finish()
    finally:
        program.close()
    assert truth["written"] == 65536 and truth["sent"] == 1 << 20, truth
    return truth, program.pid, out


def decode_files(out: Path, name: str, message: Any) -> list[Any]:
    """Every line of an OTLP JSON file, checked as OTLP/JSON and decoded by the official
    classes (``otlp_json``: hex ids, integer enums, camelCase names)."""
    path = out / name
    assert path.exists(), f"{name} in {out}: {sorted(p.name for p in out.iterdir())}"
    return otlp_json.read_jsonl(path, message)


def check_tables(req: Any) -> None:
    """The dictionary's zero values come first and every index is in range."""
    d = req.dictionary
    assert d.string_table[0] == "", "string_table[0] is the empty string"
    for name in ("mapping", "location", "function", "link", "attribute", "stack"):
        table = getattr(d, f"{name}_table")
        assert len(table) >= 1 and table[0].ByteSize() == 0, f"{name}_table[0] is the zero value"

    def in_range(i: int, table: Any, what: str) -> None:
        assert 0 <= i < len(table), f"{what} index {i} out of range ({len(table)})"

    strings = d.string_table
    for m in d.mapping_table:
        in_range(m.filename_strindex, strings, "mapping filename")
        for a in m.attribute_indices:
            in_range(a, d.attribute_table, "mapping attribute")
    for loc in d.location_table:
        in_range(loc.mapping_index, d.mapping_table, "location mapping")
        for line in loc.lines:
            in_range(line.function_index, d.function_table, "line function")
        for a in loc.attribute_indices:
            in_range(a, d.attribute_table, "location attribute")
    for f in d.function_table:
        for i in (f.name_strindex, f.system_name_strindex, f.filename_strindex):
            in_range(i, strings, "function string")
    for a in d.attribute_table:
        in_range(a.key_strindex, strings, "attribute key")
        in_range(a.unit_strindex, strings, "attribute unit")
    for s in d.stack_table:
        for i in s.location_indices:
            in_range(i, d.location_table, "stack location")
    for rp in req.resource_profiles:
        for sp in rp.scope_profiles:
            for p in sp.profiles:
                in_range(p.sample_type.type_strindex, strings, "sample type")
                in_range(p.sample_type.unit_strindex, strings, "sample unit")
                for s in p.samples:
                    in_range(s.stack_index, d.stack_table, "sample stack")
                    in_range(s.link_index, d.link_table, "sample link")
                    for a in s.attribute_indices:
                        in_range(a, d.attribute_table, "sample attribute")
                    assert len(s.values) == len(s.timestamps_unix_nano) >= 1, s
                    for t in s.timestamps_unix_nano:
                        assert p.time_unix_nano <= t < p.time_unix_nano + p.duration_nano


def functions_of(req: Any, stack_index: int) -> set[str]:
    """The function names a sample's stack holds."""
    d = req.dictionary
    names = set()
    for li in d.stack_table[stack_index].location_indices:
        for line in d.location_table[li].lines:
            names.add(d.string_table[d.function_table[line.function_index].name_strindex])
    return names


def samples(requests: Iterable[Any], pid: int) -> list[tuple[Any, str, Any]]:
    """(request, sample type, sample) for every sample of process ``pid``."""
    out = []
    for req in requests:
        strings = req.dictionary.string_table
        for rp in req.resource_profiles:
            attrs = {a.key: a.value for a in rp.resource.attributes}
            if attrs.get("process.pid") is None or attrs["process.pid"].int_value != pid:
                continue
            for sp in rp.scope_profiles:
                for p in sp.profiles:
                    kind = strings[p.sample_type.type_strindex]
                    assert strings[p.sample_type.unit_strindex] == "nanoseconds"
                    out.extend((req, kind, s) for s in p.samples)
    return out


def sample_attrs(req: Any, sample: Any) -> dict[str, Any]:
    d = req.dictionary
    out = {}
    for i in sample.attribute_indices:
        a = d.attribute_table[i]
        out[d.string_table[a.key_strindex]] = getattr(a.value, a.value.WhichOneof("value"))
    return out


def check_profiles(requests: list[Any], truth: dict, pid: int, spans: list[Any]) -> None:
    """Tables, the program's own times per function, links and the hostile thread name."""
    assert requests, "kotel exported profiles"
    for req in requests:
        check_tables(req)
    got = samples(requests, pid)
    weight: dict[tuple[str, str], int] = {}
    for req, kind, s in got:
        for f in functions_of(req, s.stack_index):
            weight[(kind, f)] = weight.get((kind, f), 0) + sum(s.values)
    for kind, function, measured in [
        ("off_cpu", "kotel_test_block_here", truth["slept_ns"]),
        ("writev", "kotel_test_write_slowly", truth["write_ns"]),
        ("tcp_send", "kotel_test_send_slowly", truth["send_ns"]),
    ]:
        w = weight.get((kind, function), 0)
        assert within_20_percent(w, measured), (
            f"{kind}: {function} weighs {w} ns in the profiles, the program measured "
            f"{measured} ns; weights: {weight}"
        )
    # The sleeps: three events of the sleeping thread, its name as the program set it.
    sleeps = [
        (req, s)
        for req, kind, s in got
        if kind == "off_cpu" and "kotel_test_block_here" in functions_of(req, s.stack_index)
    ]
    assert sum(len(s.values) for _, s in sleeps) == 3, "one value per sleep"
    for req, s in sleeps:
        attrs = sample_attrs(req, s)
        assert attrs["thread.id"] == truth["sleeper"], attrs
        assert attrs["thread.name"] == HOSTILE, attrs
        assert attrs["kotel.offcpu.state"] == "interruptible", attrs
    # Every link names a span kotel exported; with no budget, every slow event became one.
    exported = {(bytes(s.trace_id), bytes(s.span_id)) for s in spans}
    for req, _, s in got:
        assert s.link_index > 0, "every event became a span, so every sample links to one"
        link = req.dictionary.link_table[s.link_index]
        assert (bytes(link.trace_id), bytes(link.span_id)) in exported, "a link to a real span"


def file_spans(out: Path) -> list[Any]:
    reqs = decode_files(out, "traces.jsonl", trace_service_pb2.ExportTraceServiceRequest)
    return [span for req in reqs for rs in req.resource_spans for ss in rs.scope_spans
            for span in ss.spans]


def test_profiles_in_files_decode_and_add_up(flame_binary, kotel_run, tmp_path):
    truth, pid, out = run_once(flame_binary, kotel_run, tmp_path, [])
    requests = decode_files(
        out, "profiles.jsonl", profiles_service_pb2.ExportProfilesServiceRequest
    )
    check_profiles(requests, truth, pid, file_spans(out))


def test_profiles_over_grpc_decode_add_up_and_link_to_spans(
    flame_binary, kotel_run, tmp_path, receiver
):
    truth, pid, _ = run_once(
        flame_binary, kotel_run, tmp_path, ["--otlp-endpoint", receiver.endpoint]
    )
    requests = receiver.requests("profiles")
    spans = [r.span for r in iter_spans(receiver.requests("traces"))]
    check_profiles(requests, truth, pid, spans)


def test_profiles_over_http_decode_add_up_and_link_to_spans(flame_binary, kotel_run, tmp_path):
    http = OtlpHttpReceiver()
    try:
        truth, pid, _ = run_once(
            flame_binary, kotel_run, tmp_path,
            ["--otlp-endpoint", http.endpoint, "--otlp-protocol", "http/protobuf"],
        )
        requests = http.requests("profiles")
        spans = [r.span for r in iter_spans(http.requests("traces"))]
    finally:
        http.close()
    check_profiles(requests, truth, pid, spans)


@pytest.mark.parametrize("transport", ["grpc", "http/protobuf"])
def test_a_receiver_without_profiles_gets_the_rest_and_profiles_are_counted_unsupported(
    flame_binary, kotel_run, tmp_path, transport
):
    """The receiver refuses profiles (gRPC UNIMPLEMENTED, HTTP 404): kotel warns once, stops
    sending them, counts every profile under ``unsupported``, and traces and metrics flow."""
    if transport == "grpc":
        receiver = OtlpReceiver(profiles=False)
        receiver.start()
        endpoint = receiver.endpoint
    else:
        receiver = OtlpHttpReceiver(profiles=False)
        endpoint = receiver.endpoint
    program = FlameProgram(flame_binary)
    out = tmp_path / "out"
    try:
        # One-second intervals: the refusal comes while kotel runs.
        args = [a if a != "600s" else "1s" for a in ARGS]
        kotel = kotel_run(
            ["--pid", str(program.pid), *args, "--out", str(out), "--otlp-endpoint", endpoint,
             "--otlp-protocol", transport]
        )
        program.run()
        kotel.wait_for_log("kotel.export.profiles_unsupported")
        code, _, stderr = kotel.interrupt()
        assert code == 0, stderr
        program.finish()
        spans = receiver.spans()
        metrics = receiver.metrics()
        tries = (receiver.counters()["profiles"]["calls"] if transport == "grpc"
                 else receiver.posts(PROFILES_PATH))
    finally:
        program.close()
        if transport == "grpc":
            receiver.stop(grace=None)
        else:
            receiver.close()
    assert stderr.count("kotel.export.profiles_unsupported") == 1, "warned once"
    assert tries == 1, f"sent once, never again: {tries}"
    summary = read_summary(out)
    p = summary["profiles"]
    assert p["exported"] == 0 and p["produced"] >= 1, p
    assert p["dropped_unsupported"] == p["produced"], f"every profile counted unsupported: {p}"
    assert spans and metrics, "traces and metrics still reach the receiver"
    assert summary["spans"]["exported"] == summary["spans"]["produced"], summary["spans"]
