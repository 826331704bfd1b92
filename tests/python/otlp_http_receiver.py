"""A real OTLP/HTTP (protobuf) receiver, plaintext or over TLS, for kotel's HTTP exporter tests.

Python's ``http.server``, behind an ``ssl.SSLContext`` when given a certificate (mutual TLS when
a client CA is given: ``CERT_REQUIRED``), serving ``POST /v1/traces``, ``/v1/metrics``,
``/v1/logs`` and ``/v1development/profiles`` as the OTLP specification says: protobuf bodies
(gzip or not) decoded with the official ``opentelemetry-proto`` messages, answered with an empty
protobuf response. Bodies that do not decode get 400. What is accepted is kept, decoded, for the
test to read. ``profiles=False`` answers 404 on the profiles path, as a receiver without
profiles does; every POST is counted by path (``posts``), refused or not.
"""

from __future__ import annotations

import gzip
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otlp_receiver import ProfileRecord, iter_metric_points, iter_profiles, iter_spans

#: Where OTLP/HTTP profiles go: still a development signal, and the path says so.
PROFILES_PATH = "/v1development/profiles"

#: Request and response messages per URL path.
_SERVICES = {
    "/v1/traces": (
        "traces",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        "metrics",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (
        "logs",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
    PROFILES_PATH: (
        "profiles",
        profiles_service_pb2.ExportProfilesServiceRequest,
        profiles_service_pb2.ExportProfilesServiceResponse,
    ),
}

#: Largest body read, as the OpenTelemetry Collector's default.
MAX_BODY = 4 << 20


class OtlpHttpReceiver:
    """OTLP/HTTP on 127.0.0.1, over TLS when ``cert`` and ``key`` are given (plaintext
    otherwise); ``endpoint`` is the base URL kotel is given."""

    def __init__(
        self,
        cert: str | None = None,
        key: str | None = None,
        client_ca: str | None = None,
        *,
        profiles: bool = True,
    ) -> None:
        context = None
        if cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            if client_ca is not None:
                context.load_verify_locations(client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        self._tls = context is not None
        self._lock = threading.Lock()
        self._requests: dict[str, list[Any]] = {name: [] for name, _, _ in _SERVICES.values()}
        self._posts: dict[str, int] = {}
        self._headers: dict[str, str] = {}
        self.handshake_failures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                with receiver._lock:
                    receiver._posts[self.path] = receiver._posts.get(self.path, 0) + 1
                service = _SERVICES.get(self.path)
                if self.path == PROFILES_PATH and not profiles:
                    service = None
                if service is None:
                    self._reply(404, b"")
                    return
                signal, request_type, response_type = service
                length = int(self.headers.get("Content-Length", "0"))
                if length > MAX_BODY:
                    self._reply(413, b"")
                    return
                body = self.rfile.read(length)
                try:
                    if self.headers.get("Content-Encoding", "").lower() == "gzip":
                        body = gzip.decompress(body)
                    request = request_type.FromString(body)
                except Exception:  # noqa: BLE001 (any decode failure is the client's)
                    self._reply(400, b"")
                    return
                with receiver._lock:
                    receiver._requests[signal].append(request)
                    receiver._headers = {k.lower(): v for k, v in self.headers.items()}
                self._reply(200, response_type().SerializeToString())

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                # Failed handshakes land here (the handshake runs on the handler's thread).
                with receiver._lock:
                    receiver.handshake_failures += 1

        class TlsServer(Server):
            def get_request(self) -> Any:
                sock, addr = self.socket.accept()
                return context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                ), addr

            def finish_request(self, request: Any, client_address: Any) -> None:
                request.do_handshake()
                super().finish_request(request, client_address)

        self._server = (TlsServer if context else Server)(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def requests(self, signal: str) -> list[Any]:
        """The accepted request messages of one signal, in arrival order."""
        with self._lock:
            return list(self._requests[signal])

    def accepted(self) -> int:
        """Requests accepted, of every signal."""
        with self._lock:
            return sum(len(v) for v in self._requests.values())

    def posts(self, path: str) -> int:
        """POSTs to ``path`` so far, answered or refused."""
        with self._lock:
            return self._posts.get(path, 0)

    def last_headers(self) -> dict[str, str]:
        """The headers (lower-case names) of the latest accepted request."""
        with self._lock:
            return dict(self._headers)

    def spans(self) -> list[Any]:
        return iter_spans(self.requests("traces"))

    def metrics(self) -> list[Any]:
        return iter_metric_points(self.requests("metrics"))

    def profiles(self) -> list[ProfileRecord]:
        return iter_profiles(self.requests("profiles"))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


#: The name the TLS tests know it by.
OtlpHttpsReceiver = OtlpHttpReceiver
