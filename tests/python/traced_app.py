"""A real application instrumented with the official OpenTelemetry SDK, for kotel's linking tests.

Inside a span ``handle_request`` each worker thread does three things it can account for
exactly: ``writev`` of known sizes to /dev/null, one TCP send of a known size to a local
server, and a 30 ms sleep. Outside any span it then does the same again. Spans go over OTLP/gRPC
to the endpoint given (kotel's receiver). Once they are sent it prints one JSON line of truth:
its pid (as it sees it), each worker's native thread id, the sizes, and the ids of its spans.
Like a server's, its workers then stay up until a line (or the end) on stdin tells it to exit:
kotel reads their thread ids, and the owner of the connection, from /proc while it links the
spans, so a test lets it go once the spans have come out of kotel linked.

    python3 traced_app.py --endpoint http://127.0.0.1:PORT [--with-pid] [--threads N]
                          [--thread-id] [--poke HOST:PORT]  < a line once the spans have arrived

``--with-pid`` puts ``process.pid`` on the resource (the SDK's default resource has none);
``--thread-id`` sets ``thread.id`` on each span to the worker's native thread id.
``--poke HOST:PORT``: inside its span, after the work, each worker connects there, sends one
byte and waits for one back (``otlp_forwarder.py`` does kernel work of its own meanwhile, so
that work overlaps the span).

TLS (``https://`` endpoint): ``--ca FILE`` is the CA the exporter trusts, ``--client-cert``
and ``--client-key`` a client certificate for mutual TLS (grpcio's SSL credentials);
``--token T`` sends ``authorization: Bearer T``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import threading
import time
from pathlib import Path

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

WRITEV_SIZES = [[100, 200], [300], [1000, 24, 76]]
TCP_SIZE = 5000
SLEEP_S = 0.030


def work(peer: tuple[str, int]) -> dict:
    """The three accountable things; returns what was done."""
    fd = os.open("/dev/null", os.O_WRONLY)
    written = []
    for sizes in WRITEV_SIZES:
        written.append(os.writev(fd, [b"x" * n for n in sizes]))
    os.close(fd)
    with socket.create_connection(peer) as s:
        local = s.getsockname()
        sent = s.send(b"y" * TCP_SIZE)
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
    time.sleep(SLEEP_S)
    # A preemption on the way into the sleep shortens its blocked part: said, for the checks.
    preempted = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw != before
    return {"writev_bytes": written, "tcp_sent": sent, "tcp_local": f"{local[0]}:{local[1]}",
            "sleep_preempted": preempted}


def poke(address: str) -> None:
    """One byte to ``address`` and one back: the other side works meanwhile."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"p")
        if s.recv(1) != b"k":
            raise RuntimeError(f"no answer from the poke at {address}")


def sink_server() -> tuple[socket.socket, tuple[str, int]]:
    srv = socket.create_server(("127.0.0.1", 0))

    def drain() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                while conn.recv(65536):
                    pass

    threading.Thread(target=drain, daemon=True).start()
    return srv, srv.getsockname()


def exporter(args: argparse.Namespace) -> OTLPSpanExporter:
    """Plaintext for an http:// endpoint; TLS (and mTLS with a client certificate) for https://."""
    headers = {"authorization": f"Bearer {args.token}"} if args.token else None
    if not args.endpoint.startswith("https://"):
        return OTLPSpanExporter(endpoint=args.endpoint, insecure=True, headers=headers)

    def read(p: str | None) -> bytes | None:
        return Path(p).read_bytes() if p else None

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca),
        private_key=read(args.client_key),
        certificate_chain=read(args.client_cert),
    )
    return OTLPSpanExporter(endpoint=args.endpoint, credentials=credentials, headers=headers)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--with-pid", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--thread-id", action="store_true")
    ap.add_argument("--poke")
    ap.add_argument("--ca")
    ap.add_argument("--client-cert")
    ap.add_argument("--client-key")
    ap.add_argument("--token")
    args = ap.parse_args()

    attrs = {"service.name": "traced-app"}
    if args.with_pid:
        attrs["process.pid"] = os.getpid()
    provider = TracerProvider(resource=Resource(attrs) if args.with_pid else Resource.create(attrs))
    provider.add_span_processor(BatchSpanProcessor(exporter(args)))
    tracer = provider.get_tracer("traced-app")
    srv, peer = sink_server()
    barrier = threading.Barrier(args.threads)
    finished = threading.Barrier(args.threads + 1)
    flushed = threading.Event()
    results: list[dict] = [{} for _ in range(args.threads)]

    def worker(i: int) -> None:
        tid = threading.get_native_id()
        barrier.wait()
        with tracer.start_as_current_span("handle_request") as span:
            if args.thread_id:
                span.set_attribute("thread.id", tid)
            start = time.time_ns()
            inside = work(peer)
            if args.poke:
                poke(args.poke)
            end = time.time_ns()
            ctx = span.get_span_context()
        time.sleep(0.05)
        outside = work(peer)
        results[i] = {
            "tid": tid,
            "trace_id": f"{ctx.trace_id:032x}",
            "span_id": f"{ctx.span_id:016x}",
            "inside": inside,
            "inside_window_ns": [start, end],
            "outside": outside,
        }
        # Like a server's worker, the thread lives on after its request: kotel resolves
        # thread ids while their spans are exported.
        finished.wait()
        flushed.wait()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
    for t in threads:
        t.start()
    finished.wait()
    # No pause for the kernel side: kotel links a request only after draining the ring buffer,
    # which by then holds every event that happened before the request was sent.
    provider.force_flush()
    print(json.dumps({"pid": os.getpid(), "workers": results, "sleep_s": SLEEP_S, "tcp_size": TCP_SIZE}), flush=True)
    sys.stdin.readline()  # the test's word that the spans came out linked
    flushed.set()
    for t in threads:
        t.join()
    provider.shutdown()
    srv.close()


if __name__ == "__main__":
    main()
