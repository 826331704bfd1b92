"""Trace linkage end to end: a real OpenTelemetry SDK application sends its spans to kotel's
OTLP receiver; kotel forwards them upstream (to the official-protos receiver) with kernel
child spans linked under them. The application knows what it did inside ``handle_request``
(writev sizes, one TCP send, a 30 ms sleep) and did the same again outside any span.
"""

from __future__ import annotations

import json
import queue
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LineReader, free_port

from otlp_receiver import any_value, attributes

pytestmark = pytest.mark.bpf

HERE = Path(__file__).resolve().parent


#: Bounded waits: for the application to send its spans, for them to come out of kotel
#: upstream, and for the application to exit once told.
APP_TIMEOUT = 60.0
ARRIVAL_TIMEOUT = 20.0


def run_app(receiver, endpoint: str, *flags: str, pidns: bool = False) -> dict:
    """Runs ``traced_app.py`` against kotel's receiver at ``endpoint`` and returns its truth,
    once every one of its spans has come out of kotel into the upstream ``receiver`` (linked)
    and the application, told so, has exited 0. Until then its workers stay up, as a server's
    do: kotel reads their thread ids, and the owner of the connection, from /proc as it links."""
    cmd = [sys.executable, str(HERE / "traced_app.py"), "--endpoint", endpoint, *flags]
    if pidns:
        cmd = ["unshare", "--pid", "--fork", "--mount-proc", *cmd]
    app = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr = LineReader(app.stdout), LineReader(app.stderr)
    try:
        try:
            line = stdout.next_line(timeout=APP_TIMEOUT)
        except queue.Empty:
            line = None
        assert line, f"traced_app.py printed no truth; stderr:\n{stderr.rest()}"
        truth = json.loads(line)
        ids = {w["span_id"] for w in truth["workers"]}
        arrived = receiver.wait_for(
            lambda: ids <= {s.span.span_id.hex() for s in receiver.spans()},
            timeout=ARRIVAL_TIMEOUT,
        )
        assert arrived, f"the application's spans did not come out of kotel: {sorted(ids)}"
        app.stdin.close()
        code = app.wait(timeout=APP_TIMEOUT)
        assert code == 0, f"traced_app.py exited {code}; stderr:\n{stderr.rest()}"
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    return truth


def linked_run(receiver, kotel_run, tmp_path, *flags: str, pidns: bool = False):
    # The application works before its first export makes it a link target: until then the
    # kernel sends only events above their thresholds, so both are 0 (the sleep is an idle one).
    port = free_port()
    kotel = kotel_run(
        ["--span-threshold", "0", "--sleep-threshold", "0", "--probes", "all", "--out", tmp_path / "out",
         "--otlp-endpoint", receiver.endpoint,
         "--receiver-grpc", f"127.0.0.1:{port}", "--receiver-http", "none", "--telemetry", "none"]
    )
    truth = run_app(receiver, f"http://127.0.0.1:{port}", *flags, pidns=pidns)
    code, _, stderr = kotel.interrupt()
    assert code == 0, stderr
    return truth, receiver.spans()


def check_worker(worker: dict, spans, truth: dict, how: str, source: str, pidns: bool = False) -> None:
    app = [s for s in spans if s.span.span_id.hex() == worker["span_id"]]
    assert len(app) == 1, "the application span arrived once"
    app = app[0].span
    assert app.name == "handle_request" and app.trace_id.hex() == worker["trace_id"], "unchanged"
    kids = [s.span for s in spans if s.span.parent_span_id.hex() == worker["span_id"]]
    assert kids, "kernel child spans under handle_request"
    for k in kids:
        a = attributes(k.attributes)
        assert k.trace_id.hex() == worker["trace_id"]
        assert a["kotel.link.match"] == how and a["kotel.link.pid_source"] == source, a
    def mine(k) -> bool:
        # Child spans carry the kernel's (host) thread id; inside a PID namespace the
        # application knows another one, and the thread match itself is what ties them.
        return pidns or attributes(k.attributes)["thread.id"] == worker["tid"]

    def by(name):
        return [k for k in kids if k.name == name and mine(k)]

    writevs = by("writev")
    assert sorted(attributes(k.attributes)["kotel.bytes"] for k in writevs) == sorted(worker["inside"]["writev_bytes"])
    sends = [k for k in by("tcp_sendmsg") if attributes(k.attributes).get("network.local.port") == int(worker["inside"]["tcp_local"].rsplit(":", 1)[1])]
    assert [attributes(k.attributes)["kotel.bytes"] for k in sends] == [truth["tcp_size"]]
    sleeps = [k for k in by("sched.offcpu") if k.end_time_unix_nano - k.start_time_unix_nano >= truth["sleep_s"] * 1e9]
    assert sleeps, "the 30 ms sleep is an off-CPU child"
    summary = attributes(app.attributes)
    assert summary["kotel.offcpu.duration"] >= truth["sleep_s"], summary
    assert summary["kotel.kernel.events"] >= len(kids)
    # The same work outside the span is under no span: no writev child carries its sizes
    # at a time after handle_request ended.
    late = [s for s in spans if s.span.parent_span_id and s.span.name == "writev"
            and s.span.start_time_unix_nano > app.end_time_unix_nano]
    assert not late, "work outside any span is not linked"


@pytest.mark.parametrize("with_pid", [True, False], ids=["resource-pid", "connection"])
def test_kernel_spans_are_linked_under_the_application_span(receiver, kotel_run, tmp_path, with_pid):
    flags = ["--with-pid"] if with_pid else []
    truth, spans = linked_run(receiver, kotel_run, tmp_path, *flags, "--thread-id")
    check_worker(truth["workers"][0], spans, truth, "thread", "resource" if with_pid else "connection")


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) missing")
def test_an_application_in_its_own_pid_namespace_is_found(receiver, kotel_run, tmp_path):
    truth, spans = linked_run(receiver, kotel_run, tmp_path, "--with-pid", "--thread-id", pidns=True)
    assert truth["pid"] < 10, "the application sees a pid of its own namespace"
    check_worker(truth["workers"][0], spans, truth, "thread", "resource", pidns=True)


def test_two_threads_get_only_their_own_events(receiver, kotel_run, tmp_path):
    truth, spans = linked_run(receiver, kotel_run, tmp_path, "--with-pid", "--threads", "2", "--thread-id")
    tids = {w["tid"] for w in truth["workers"]}
    assert len(tids) == 2
    for w in truth["workers"]:
        check_worker(w, spans, truth, "thread", "resource")
        kids = [s.span for s in spans if s.span.parent_span_id.hex() == w["span_id"]]
        assert {attributes(k.attributes)["thread.id"] for k in kids} == {w["tid"]}, "only its own thread"


def test_bad_input_is_refused_and_kotel_keeps_serving(receiver, kotel_run, tmp_path):
    """Malformed and oversize requests to kotel's own OTLP/HTTP receiver get 400 and 413; a
    real application's spans still get through and linked afterwards."""
    import urllib.error
    import urllib.request

    grpc_port, http_port = free_port(), free_port()
    kotel = kotel_run(
        ["--span-threshold", "0", "--sleep-threshold", "0", "--probes", "all", "--out", tmp_path / "out",
         "--otlp-endpoint", receiver.endpoint,
         "--receiver-grpc", f"127.0.0.1:{grpc_port}", "--receiver-http", f"127.0.0.1:{http_port}",
         "--telemetry", "none"]
    )

    def post(body: bytes, ctype: str) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/traces", data=body,
                                     headers={"Content-Type": ctype}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    assert post(b"\xff\x00garbage", "application/x-protobuf") == 400
    assert post(b"{not json", "application/json") == 400
    # Oversize: the receiver answers 413 from the Content-Length alone, before the body.
    with socket.create_connection(("127.0.0.1", http_port), timeout=10) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  b"Content-Length: %d\r\n\r\n" % (64 << 20))
        status = s.recv(64).split(b" ")[1]
    assert status == b"413"
    truth = run_app(receiver, f"http://127.0.0.1:{grpc_port}", "--with-pid", "--thread-id")
    w = truth["workers"][0]
    code, _, stderr = kotel.interrupt()
    assert code == 0, stderr
    check_worker(w, receiver.spans(), truth, "thread", "resource")
