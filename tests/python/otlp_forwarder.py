"""An OTLP forwarder for kotel's linking tests, as a Collector agent on the node would be: it
receives applications' spans (the official-protos receiver of ``otlp_receiver.py``) and
re-sends each request, unchanged, to kotel over its own gRPC connection. So kotel sees the
forwarder, not the application, at the far end of the connection.

It also does kernel work of its own that kotel must never sum onto the applications' spans: on
every *poke* (a TCP connection to its poke port, one byte in) it writes ``MARKER_SIZES`` with
one ``writev`` to /dev/null and sleeps ``MARKER_SLEEP_S`` before answering one byte. An
application that pokes it from inside a span makes that work overlap the span for certain.

    python3 otlp_forwarder.py --to http://127.0.0.1:PORT [--hold]

Protocol (one JSON line each, on stdout):

* once listening: ``{"endpoint": "http://127.0.0.1:N", "poke": "127.0.0.1:M", "pid": P}``;
* with ``--hold`` requests are kept instead of relayed, until a ``release`` line on stdin:
  they are relayed then, and it prints ``{"released": requests, "spans": spans}``;
* at end of stdin (or a ``stop`` line): ``{"relayed": n, "errors": [...], "tasks": [its
  thread ids], "pokes": [{"tid", "bytes", "start_ns", "end_ns"}, ...]}``, and it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from otlp_receiver import OtlpReceiver, Received

#: What one poke writes with one writev (4321 bytes: no traced_app.py size adds up to it).
MARKER_SIZES = [4000, 321]
#: How long one poke sleeps before answering.
MARKER_SLEEP_S = 0.005
#: How long one relay to kotel may take.
RELAY_TIMEOUT_S = 10.0


class Forwarder:
    """Relays trace requests to ``target`` (host:port), now or once released."""

    def __init__(self, target: str, hold: bool) -> None:
        self._stub = trace_service_pb2_grpc.TraceServiceStub(grpc.insecure_channel(target))
        self._hold = hold
        self._lock = threading.Lock()
        self._held: list = []
        self.relayed = 0
        self.errors: list[str] = []

    def on_request(self, received: Received) -> None:
        if received.signal != "traces":
            return
        if self._hold:
            with self._lock:
                self._held.append(received.request)
        else:
            self._relay(received.request)

    def _relay(self, request) -> None:
        try:
            self._stub.Export(request, timeout=RELAY_TIMEOUT_S)
            self.relayed += 1
        except grpc.RpcError as e:
            self.errors.append(f"{e.code()}: {e.details()}")

    def release(self) -> dict:
        with self._lock:
            held, self._held = self._held, []
        for request in held:
            self._relay(request)
        spans = sum(len(ss.spans) for r in held for rs in r.resource_spans for ss in rs.scope_spans)
        return {"released": len(held), "spans": spans}


def serve_pokes(pokes: list[dict]) -> str:
    """Answers pokes on a loopback port (returned as host:port), recording each one's marker."""
    srv = socket.create_server(("127.0.0.1", 0))
    fd = os.open("/dev/null", os.O_WRONLY)

    def loop() -> None:
        while True:
            conn, _ = srv.accept()
            with conn:
                if not conn.recv(1):
                    continue
                start = time.time_ns()
                written = os.writev(fd, [b"m" * n for n in MARKER_SIZES])
                end = time.time_ns()
                time.sleep(MARKER_SLEEP_S)
                pokes.append({"tid": threading.get_native_id(), "bytes": written,
                              "start_ns": start, "end_ns": end})
                conn.sendall(b"k")

    threading.Thread(target=loop, daemon=True).start()
    host, port = srv.getsockname()
    return f"{host}:{port}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--to", required=True, help="kotel's OTLP/gRPC endpoint, http://host:port")
    ap.add_argument("--hold", action="store_true", help="relay only on a 'release' line")
    args = ap.parse_args()

    forwarder = Forwarder(args.to.removeprefix("http://"), args.hold)
    receiver = OtlpReceiver(store=False, on_request=forwarder.on_request)
    receiver.start()
    pokes: list[dict] = []
    poke = serve_pokes(pokes)
    print(json.dumps({"endpoint": receiver.endpoint, "poke": poke, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        if line.strip() == "release":
            print(json.dumps(forwarder.release()), flush=True)
        elif line.strip() == "stop":
            break
    tasks = sorted(int(t) for t in os.listdir(f"/proc/{os.getpid()}/task"))
    receiver.stop(grace=1.0)
    print(json.dumps({"relayed": forwarder.relayed, "errors": forwarder.errors, "tasks": tasks,
                      "pokes": pokes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
