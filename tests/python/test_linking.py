"""Trace linkage end to end: a real OpenTelemetry SDK application sends its spans to kotel's
OTLP receiver; kotel forwards them upstream (to the official-protos receiver) with kernel
child spans linked under them. The application knows what it did inside ``handle_request``
(writev sizes, one TCP send, a 30 ms sleep) and did the same again outside any span.

With a forwarder between them (``otlp_forwarder.py``, as a Collector agent on the node would
be) kotel sees the forwarder at the far end of the connection, while the resource names the
application: the spans are linked to the application's process, or, once it has exited, to
nothing (``kotel.link.unresolved = gone``), and never get the forwarder's own kernel work.
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

from kotel_checks import DURATION_METRICS, read_summary, resource_pid
from otlp_receiver import any_value, attributes

pytestmark = pytest.mark.bpf

HERE = Path(__file__).resolve().parent


#: Bounded waits: for the application to send its spans, for them to come out of kotel
#: upstream, and for the application to exit once told.
APP_TIMEOUT = 60.0
ARRIVAL_TIMEOUT = 20.0


def run_app(receiver, endpoint: str, *flags: str, pidns: bool = False, before_exit=None) -> dict:
    """Runs ``traced_app.py`` against kotel's receiver at ``endpoint`` and returns its truth,
    once every one of its spans has come out of kotel into the upstream ``receiver`` (linked)
    and the application, told so, has exited 0. Until then its workers stay up, as a server's
    do: kotel reads their thread ids, and the owner of the connection, from /proc as it links.
    ``before_exit()``, when given, runs after the spans came out and before the application is
    told to exit."""
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
        if before_exit is not None:
            before_exit()
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
    # The whole sleep is one blocked interval unless the thread was preempted on its way into
    # it (the application counts its involuntary switches around the sleep): then the blocked
    # part is shorter by the preemption's length.
    least = truth["sleep_s"] * 1e9 * (0.5 if worker["inside"].get("sleep_preempted") else 1.0)
    sleeps = [k for k in by("sched.offcpu") if k.end_time_unix_nano - k.start_time_unix_nano >= least]
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


# --------------------------------------------------------------------------------------------
# A forwarder between the application and kotel (issue 17): the resource names the process,
# the connection names the forwarder; the forwarder's own kernel work overlaps the span.
# --------------------------------------------------------------------------------------------

#: The summary attributes kotel puts on an application span it linked.
SUMMARY_KEYS = {
    "kotel.offcpu.duration", "kotel.runqueue.delay", "kotel.writev.duration",
    "kotel.tcp.send.duration", "kotel.kernel.events", "kotel.link.match", "kotel.link.pid_source",
}


class Forwarder:
    """``otlp_forwarder.py`` relaying to kotel's receiver at ``to`` (see its docstring)."""

    def __init__(self, to: str, hold: bool = False) -> None:
        cmd = [sys.executable, str(HERE / "otlp_forwarder.py"), "--to", to]
        self.proc = subprocess.Popen(
            cmd + (["--hold"] if hold else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self._stdout, self._stderr = LineReader(self.proc.stdout), LineReader(self.proc.stderr)
        hello = self._line("its endpoint")
        self.endpoint, self.poke, self.pid = hello["endpoint"], hello["poke"], hello["pid"]

    def _line(self, what: str) -> dict:
        try:
            line = self._stdout.next_line(timeout=APP_TIMEOUT)
        except queue.Empty:
            line = None
        assert line, f"otlp_forwarder.py printed no {what}; stderr:\n{self._stderr.rest()}"
        return json.loads(line)

    def release(self) -> dict:
        """Relays what it held; returns ``{"released": requests, "spans": spans}``."""
        self.proc.stdin.write("release\n")
        self.proc.stdin.flush()
        return self._line("release count")

    def stop(self) -> dict:
        """Its closing account: relayed, errors, tasks (thread ids), pokes."""
        self.proc.stdin.close()
        end = self._line("closing account")
        code = self.proc.wait(timeout=APP_TIMEOUT)
        assert code == 0, f"otlp_forwarder.py exited {code}; stderr:\n{self._stderr.rest()}"
        assert not end["errors"], end["errors"]
        return end

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def forwarder():
    """Starts ``Forwarder(to, hold)``; kills it at teardown if a test left it running."""
    started: list[Forwarder] = []

    def start(to: str, hold: bool = False) -> Forwarder:
        f = Forwarder(to, hold)
        started.append(f)
        return f

    yield start
    for f in started:
        f.close()


def forwarding_kotel(kotel_run, tmp_path, receiver) -> tuple:
    """kotel with its OTLP/gRPC receiver on a free port; returns (kotel, endpoint)."""
    port = free_port()
    kotel = kotel_run(
        ["--span-threshold", "0", "--probes", "all", "--out", tmp_path / "out",
         "--otlp-endpoint", receiver.endpoint,
         "--receiver-grpc", f"127.0.0.1:{port}", "--receiver-http", "none", "--telemetry", "none"]
    )
    return kotel, f"http://127.0.0.1:{port}"


def check_linked_to_app(worker: dict, spans, truth: dict):
    """The application span arrived once, linked by the resource's pid to the application's
    process: its writev and TCP send are children, with their known sizes. Returns it."""
    app = [s.span for s in spans if s.span.span_id.hex() == worker["span_id"]]
    assert len(app) == 1, "the application span arrived once"
    app = app[0]
    assert app.name == "handle_request" and app.trace_id.hex() == worker["trace_id"], "unchanged"
    a = attributes(app.attributes)
    assert a["kotel.link.pid_source"] == "resource" and a["kotel.link.match"] == "process", a
    assert "kotel.link.unresolved" not in a, a
    kids = [s.span for s in spans if s.span.parent_span_id == app.span_id]
    for k in kids:
        ka = attributes(k.attributes)
        assert ka["kotel.link.pid_source"] == "resource" and ka["kotel.link.match"] == "process", ka
    assert a["kotel.kernel.events"] >= len(kids) > 0, a

    def worker_kids(name):
        return [attributes(k.attributes) for k in kids
                if k.name == name and attributes(k.attributes)["thread.id"] == worker["tid"]]

    writev = sorted(k["kotel.bytes"] for k in worker_kids("writev"))
    assert writev == sorted(worker["inside"]["writev_bytes"]), writev
    port = int(worker["inside"]["tcp_local"].rsplit(":", 1)[1])
    sends = [k["kotel.bytes"] for k in worker_kids("tcp_sendmsg") if k.get("network.local.port") == port]
    assert sends == [truth["tcp_size"]], sends
    assert a["kotel.writev.duration"] > 0 and a["kotel.tcp.send.duration"] > 0, a
    return app


def check_not_summed(app_span, spans, fwd_pid: int, fwd_end: dict) -> None:
    """The forwarder's poke work overlapped ``app_span``, kotel saw it (a writev span of the
    forwarder's own), and none of the forwarder's events is a child of the span."""
    pokes = fwd_end["pokes"]
    assert len(pokes) == 1, pokes
    marker = pokes[0]
    inside = (app_span.start_time_unix_nano <= marker["start_ns"]
              <= marker["end_ns"] <= app_span.end_time_unix_nano)
    assert inside, ("the forwarder's writev happened inside the application's span", marker)
    own = [s for s in spans
           if attributes(s.resource.attributes).get("process.pid") == fwd_pid
           and s.span.name == "writev" and not s.span.parent_span_id
           and attributes(s.span.attributes).get("kotel.bytes") == marker["bytes"]]
    assert own, "kotel saw the forwarder's writev (a span of its own process)"
    tids = set(fwd_end["tasks"]) | {marker["tid"]}
    kids = [s.span for s in spans if s.span.parent_span_id == app_span.span_id]
    theirs = [k for k in kids if attributes(k.attributes).get("thread.id") in tids]
    assert not theirs, f"the forwarder's events are not the application's: {theirs}"
    marked = [k for k in kids if k.name == "writev"
              and attributes(k.attributes).get("kotel.bytes") == marker["bytes"]]
    assert not marked, "the forwarder's writev is no child of the application's span"


def test_a_forwarder_relaying_a_live_process_spans_links_them_to_that_process(
        receiver, kotel_run, tmp_path, forwarder):
    """The application exports to a forwarder, which relays to kotel: kotel links the spans to
    the process the resource names (the application), never to the connection's owner."""
    kotel, endpoint = forwarding_kotel(kotel_run, tmp_path, receiver)
    fwd = forwarder(endpoint)
    truth = run_app(receiver, fwd.endpoint, "--with-pid", "--poke", fwd.poke)
    fwd_end = fwd.stop()
    assert fwd_end["relayed"] >= 1
    code, _, stderr = kotel.interrupt()
    assert code == 0, stderr
    spans = receiver.spans()
    worker = truth["workers"][0]
    app = check_linked_to_app(worker, spans, truth)
    check_not_summed(app, spans, fwd.pid, fwd_end)
    summary = read_summary(tmp_path / "out")
    assert summary["link_unresolved"] == 0, summary


def test_spans_of_a_process_that_exited_before_they_arrived_are_left_unlinked(
        receiver, kotel_run, tmp_path, forwarder):
    """The forwarder holds the application's spans until the application has exited and been
    reaped: the pid on their resource names nothing, so kotel links them to nothing (not to
    the forwarder that sent them), marks them ``kotel.link.unresolved = gone`` and counts
    them."""
    kotel, endpoint = forwarding_kotel(kotel_run, tmp_path, receiver)
    fwd = forwarder(endpoint, hold=True)
    cmd = [sys.executable, str(HERE / "traced_app.py"), "--endpoint", fwd.endpoint,
           "--with-pid", "--poke", fwd.poke]
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
        truth = json.loads(line)  # printed once its spans were flushed to the forwarder
        app.stdin.close()
        code = app.wait(timeout=APP_TIMEOUT)  # waitpid: the process is gone
        assert code == 0, f"traced_app.py exited {code}; stderr:\n{stderr.rest()}"
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert not Path(f"/proc/{app.pid}").exists()
    ids = {w["span_id"] for w in truth["workers"]}
    released = fwd.release()
    assert released["spans"] == len(ids), released
    arrived = receiver.wait_for(
        lambda: ids <= {s.span.span_id.hex() for s in receiver.spans()}, timeout=ARRIVAL_TIMEOUT
    )
    assert arrived, f"the application's spans did not come out of kotel: {sorted(ids)}"
    fwd_end = fwd.stop()
    code, _, kotel_stderr = kotel.interrupt()
    assert code == 0, kotel_stderr
    spans = receiver.spans()
    worker = truth["workers"][0]
    mine = [s for s in spans if s.span.span_id.hex() == worker["span_id"]]
    assert len(mine) == 1, "the application span arrived once"
    resource, app_span = attributes(mine[0].resource.attributes), mine[0].span
    assert app_span.name == "handle_request" and app_span.trace_id.hex() == worker["trace_id"]
    assert resource["process.pid"] == truth["pid"] == app.pid, "the resource is unchanged"
    a = attributes(app_span.attributes)
    assert a["kotel.link.unresolved"] == "gone", a
    assert not SUMMARY_KEYS & a.keys(), f"no summary on an unlinked span: {a}"
    assert [k for k in a if k.startswith("kotel.")] == ["kotel.link.unresolved"], a
    kids = [s.span for s in spans if s.span.parent_span_id == app_span.span_id]
    assert not kids, f"no kernel children under an unlinked span: {kids}"
    check_not_summed(app_span, spans, fwd.pid, fwd_end)
    summary = read_summary(tmp_path / "out")
    assert summary["link_unresolved_gone"] == len(ids) == summary["link_unresolved"], summary


# --------------------------------------------------------------------------------------------
# Each kernel event exported once, whole (issue 17).
# --------------------------------------------------------------------------------------------


def test_every_kernel_event_of_the_application_reaches_upstream_exactly_once(
    receiver, kotel_run, tmp_path
):
    """Every event is a span here (both thresholds 0, no budget), so per probe the spans of the
    application's process, children and spans of their own together, number exactly what its
    histogram counted: none is exported twice (once standalone, once as a child) and none is
    lost. The children carry their stacks. kotel stops while the application still runs, so
    that its histograms are its own to the end."""
    port = free_port()
    out = tmp_path / "out"
    kotel = kotel_run(
        ["--span-threshold", "0", "--sleep-threshold", "0", "--span-budget", "0",
         "--probes", "all", "--out", out, "--otlp-endpoint", receiver.endpoint,
         "--receiver-grpc", f"127.0.0.1:{port}", "--receiver-http", "none", "--telemetry", "none",
         "--profiles", "on"]
    )
    stopped = {}

    def stop_kotel() -> None:
        stopped["result"] = kotel.interrupt()

    truth = run_app(
        receiver, f"http://127.0.0.1:{port}", "--with-pid", "--thread-id", "--threads", "2",
        before_exit=stop_kotel,
    )
    code, _, stderr = stopped["result"]
    assert code == 0, stderr
    summary = read_summary(out)
    assert summary["events_lost"] == 0 and summary["histogram_events_dropped"] == 0, summary
    pid = truth["pid"]
    kernel_names = set(DURATION_METRICS.values())
    mine = [s.span for s in receiver.spans()
            if resource_pid(s.resource) == pid and s.span.name in kernel_names]
    assert mine, "the application's kernel spans"

    ids = [k.span_id for k in mine]
    assert len(ids) == len(set(ids)), "no span id twice"
    events = [(k.name, attributes(k.attributes)["thread.id"], k.start_time_unix_nano,
               k.end_time_unix_nano) for k in mine]
    twice = {e for e in events if events.count(e) > 1}
    assert not twice, f"exported twice: {sorted(twice)[:5]}"

    app_spans = {w["span_id"] for w in truth["workers"]}
    kids = [k for k in mine if k.parent_span_id.hex() in app_spans]
    assert {attributes(k.attributes)["thread.id"] for k in kids} == {w["tid"] for w in truth["workers"]}
    # A child keeps its stacks; the only off-CPU children without a kernel stack are those whose
    # stack the kernel could not store, which kotel counts.
    stackless = [k for k in kids if k.name == "sched.offcpu"
                 and not attributes(k.attributes).get("kotel.stack.kernel")]
    assert len(stackless) <= summary["stacks_dropped"], (
        f"{len(stackless)} off-CPU children without their kernel stack, "
        f"{summary['stacks_dropped']} stacks counted as not stored"
    )
    standalone = [k for k in mine if not k.parent_span_id]
    assert len(kids) + len(standalone) == len(mine), "a kernel span is a child or stands alone"

    # The last cumulative point of each series of the process: the histograms' counts.
    last: dict[tuple, int] = {}
    for p in receiver.metrics():
        if resource_pid(p.resource) == pid and p.metric.name in DURATION_METRICS:
            key = (p.metric.name, tuple(sorted((kv.key, str(kv.value)) for kv in p.point.attributes)))
            last[key] = p.point.count
    for metric, span_name in DURATION_METRICS.items():
        counted = sum(n for (m, _), n in last.items() if m == metric)
        spans = sum(1 for k in mine if k.name == span_name)
        assert spans == counted, f"{span_name}: {spans} spans, the histogram counted {counted}"

    # Profiles: each event with stacks is one value of one sample, linked to its span (every
    # event is a span here); a child's link points into the application's trace.
    by_id = {(bytes(k.trace_id), bytes(k.span_id)): k for k in mine}
    linked = []
    for rec in receiver.profiles():
        if resource_pid(rec.resource) != pid:
            continue
        for sample in rec.profile.samples:
            link = rec.dictionary.link_table[sample.link_index]
            span = by_id.get((bytes(link.trace_id), bytes(link.span_id)))
            assert span is not None, "a sample links to one of the application's spans"
            assert list(sample.values) == [span.end_time_unix_nano - span.start_time_unix_nano]
            linked.append(span)
    with_stacks = [k for k in mine if {"kotel.stack.kernel", "kotel.stack.user"}
                   & set(attributes(k.attributes))]
    assert with_stacks, "events with stacks"
    assert sorted(bytes(k.span_id) for k in linked) == sorted(
        bytes(k.span_id) for k in with_stacks
    ), "one sample value per span with stacks, none twice"
    assert any(k.parent_span_id.hex() in app_spans for k in linked), (
        "children's samples link into the application's trace"
    )
