"""A real OTLP/gRPC receiver for kotel's conformance tests.

It serves the four official OTLP collector services (traces, metrics, logs, and profiles from
the ``v1development`` package) from the ``opentelemetry-proto`` package on 127.0.0.1, so
whatever reaches it has been decoded by the official protobuf definitions. Every accepted
request is kept as the decoded official message together with its arrival time.
``profiles=False`` leaves the profiles service out, as most receivers still do: its calls are
answered ``UNIMPLEMENTED`` (what grpcio says for a method it does not serve) and counted as
calls and failures of ``profiles``, so a test can see how often a client tried.

Failure injection follows the OTLP/gRPC specification:

* ``fail_next(k, code)`` answers the next ``k`` export calls (of any signal) with a gRPC error
  and does not keep their data, as a collector that is overloaded or restarting would.
  ``retry_delay`` adds a ``google.rpc.RetryInfo`` to the error's trailing metadata, the way a
  server tells a client how long to back off (required for RESOURCE_EXHAUSTED to be retryable).
* ``tls=ServerTls(cert, key, client_ca)`` serves over TLS with grpcio's SSL credentials (mutual
  TLS when ``client_ca`` is given: a client certificate signed by it is required); the
  endpoint then says ``https://``.
* ``stop()`` and ``start()`` simulate an outage: a gRPC server cannot be restarted, so ``start()``
  builds a new one on the port chosen the first time. ``SO_REUSEPORT`` is turned off so the
  listener owns its port alone and a failed bind is an error, never a silently shared socket.

Run as a program it is a small stand-alone receiver::

    python3 otlp_receiver.py --port 4317 --out received.jsonl

It prints ``{"port": N}`` on stdout once listening, then writes one JSON line per accepted
request, ``{"signal": "traces"|"metrics"|"logs"|"profiles", "request": {...}}``, until SIGINT
or SIGTERM (``--no-profiles`` serves no profiles service).
``request`` is ``google.protobuf.json_format.MessageToDict`` of the official message (so byte
fields such as trace ids are base64, as in the protobuf JSON mapping; see ``otlp_json`` for the
OTLP/JSON encoding with hex ids).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2,
    profiles_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

#: The signals an OTLP receiver serves, in the names used throughout these tests.
SIGNALS = ("traces", "metrics", "logs", "profiles")

#: Largest request accepted, as the OpenTelemetry Collector's default (4 MiB) would.
DEFAULT_MAX_RECEIVE_BYTES = 4 << 20


# --------------------------------------------------------------------------------------------
# Walking decoded requests
# --------------------------------------------------------------------------------------------


class SpanRecord(NamedTuple):
    """One span with the resource and instrumentation scope it was sent under."""

    resource: Any  # opentelemetry.proto.resource.v1.Resource
    scope: Any  # opentelemetry.proto.common.v1.InstrumentationScope
    span: Any  # opentelemetry.proto.trace.v1.Span


class PointRecord(NamedTuple):
    """One metric data point with its resource, scope and metric (name, unit, kind)."""

    resource: Any
    scope: Any
    metric: Any  # opentelemetry.proto.metrics.v1.Metric
    point: Any  # NumberDataPoint, HistogramDataPoint, ExponentialHistogramDataPoint, ...


class LogRecord(NamedTuple):
    """One log record with its resource and scope."""

    resource: Any
    scope: Any
    log: Any  # opentelemetry.proto.logs.v1.LogRecord


def iter_spans(requests: Iterable[Any]) -> list[SpanRecord]:
    """Every span in the given ExportTraceServiceRequests, in order."""
    return [
        SpanRecord(rs.resource, ss.scope, span)
        for req in requests
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


def metric_points(metric: Any) -> list[Any]:
    """The data points of one Metric, whichever kind it is (gauge, sum, histogram, ...)."""
    kind = metric.WhichOneof("data")
    return [] if kind is None else list(getattr(metric, kind).data_points)


def iter_metric_points(requests: Iterable[Any]) -> list[PointRecord]:
    """Every metric data point in the given ExportMetricsServiceRequests, in order."""
    return [
        PointRecord(rm.resource, sm.scope, metric, point)
        for req in requests
        for rm in req.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric_points(metric)
    ]


def iter_logs(requests: Iterable[Any]) -> list[LogRecord]:
    """Every log record in the given ExportLogsServiceRequests, in order."""
    return [
        LogRecord(rl.resource, sl.scope, log)
        for req in requests
        for rl in req.resource_logs
        for sl in rl.scope_logs
        for log in sl.log_records
    ]


class ProfileRecord(NamedTuple):
    """One profile with its resource and scope, and the dictionary of the request it came in
    (every index in the profile points into it)."""

    resource: Any
    scope: Any
    profile: Any  # opentelemetry.proto.profiles.v1development.Profile
    dictionary: Any  # opentelemetry.proto.profiles.v1development.ProfilesDictionary


def iter_profiles(requests: Iterable[Any]) -> list[ProfileRecord]:
    """Every profile in the given ExportProfilesServiceRequests, in order."""
    return [
        ProfileRecord(rp.resource, sp.scope, profile, req.dictionary)
        for req in requests
        for rp in req.resource_profiles
        for sp in rp.scope_profiles
        for profile in sp.profiles
    ]


def sample_type(record: ProfileRecord) -> tuple[str, str]:
    """The (type, unit) of a profile's sample values, e.g. ("off_cpu", "nanoseconds")."""
    strings = record.dictionary.string_table
    st = record.profile.sample_type
    return strings[st.type_strindex], strings[st.unit_strindex]


def sample_functions(dictionary: Any, sample: Any) -> list[str]:
    """The function names of a sample's stack, leaf first; a location with inlined frames
    gives each of its lines, innermost first, as the profiles format orders them. Indices are
    used as they are: an out-of-range one raises IndexError."""
    strings = dictionary.string_table
    stack = dictionary.stack_table[sample.stack_index]
    names = []
    for location_index in stack.location_indices:
        location = dictionary.location_table[location_index]
        for line in location.lines:
            names.append(strings[dictionary.function_table[line.function_index].name_strindex])
    return names


def sample_link(dictionary: Any, sample: Any) -> tuple[bytes, bytes] | None:
    """The (trace_id, span_id) a sample is linked to, or None (link index 0, the empty link)."""
    if sample.link_index == 0:
        return None
    link = dictionary.link_table[sample.link_index]
    return bytes(link.trace_id), bytes(link.span_id)


def any_value(value: Any) -> Any:
    """An OTLP AnyValue as a plain Python value (str, bool, int, float, bytes, list, dict)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(key_values: Iterable[Any]) -> dict[str, Any]:
    """OTLP attributes (repeated KeyValue) as a dict. Duplicate keys break the OTLP data model
    and raise ValueError."""
    out: dict[str, Any] = {}
    for kv in key_values:
        if kv.key in out:
            raise ValueError(f"duplicate attribute key {kv.key!r}")
        out[kv.key] = any_value(kv.value)
    return out


# --------------------------------------------------------------------------------------------
# The receiver
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One accepted export request."""

    signal: str  # "traces", "metrics", "logs" or "profiles"
    arrived_ns: int  # time.time_ns() when the receiver accepted it
    request: Any  # the official Export*ServiceRequest message


@dataclass
class _Failure:
    """What the next failing calls answer with."""

    remaining: int
    code: grpc.StatusCode
    retry_delay: float | None


@dataclass(frozen=True)
class ServerTls:
    """TLS for the receiver: PEM file paths of its certificate and key, and for mutual TLS the
    CA that client certificates must be signed by."""

    cert: str
    key: str
    client_ca: str | None = None

    def credentials(self) -> grpc.ServerCredentials:
        def read(path: str) -> bytes:
            with open(path, "rb") as f:
                return f.read()

        return grpc.ssl_server_credentials(
            [(read(self.key), read(self.cert))],
            root_certificates=read(self.client_ca) if self.client_ca else None,
            require_client_auth=self.client_ca is not None,
        )


class OtlpReceiver:
    """An OTLP/gRPC receiver on 127.0.0.1 that keeps what it accepts.

    All methods are thread-safe: the gRPC server's worker threads store requests while a test
    reads them. Use it as a context manager, or call ``start()`` and ``stop()``.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        store: bool = True,
        on_request: Callable[[Received], None] | None = None,
        max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES,
        max_workers: int = 8,
        tls: ServerTls | None = None,
        profiles: bool = True,
    ) -> None:
        """``port`` 0 lets the kernel choose at the first ``start()``; later starts reuse it.
        ``store=False`` keeps nothing in memory (only counters); ``on_request`` is called, under
        the receiver's lock and so one at a time, with every accepted request.
        ``profiles=False`` serves no profiles service (its calls get ``UNIMPLEMENTED``)."""
        self._port = port
        self._profiles = profiles
        self._store = store
        self._on_request = on_request
        self._max_receive_bytes = max_receive_bytes
        self._max_workers = max_workers
        self._tls = tls
        self._metadata: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._received: list[Received] = []
        self._failure: _Failure | None = None
        self._calls = dict.fromkeys(SIGNALS, 0)
        self._failures = dict.fromkeys(SIGNALS, 0)
        self._accepted = dict.fromkeys(SIGNALS, 0)
        self._server: grpc.Server | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (0 until the first start)."""
        return self._port

    @property
    def endpoint(self) -> str:
        """The OTLP endpoint URL a client is given, e.g. ``http://127.0.0.1:4317`` (``https://``
        with TLS)."""
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        """Whether a server is currently listening."""
        return self._server is not None

    def start(self, bind_timeout: float = 5.0) -> int:
        """Starts listening and returns the port. After ``stop()`` it listens again on the same
        port, retrying the bind for up to ``bind_timeout`` seconds."""
        if self._server is not None:
            raise RuntimeError("OTLP receiver already running")
        deadline = time.monotonic() + bind_timeout
        while True:
            server = self._new_server()
            try:
                address = f"127.0.0.1:{self._port}"
                if self._tls is None:
                    port = server.add_insecure_port(address)
                else:
                    port = server.add_secure_port(address, self._tls.credentials())
            except RuntimeError as e:  # recent grpcio raises on a failed bind
                port, error = 0, e
            else:
                error = None
            if port:
                break
            server.stop(None)
            if self._port == 0 or time.monotonic() >= deadline:
                raise RuntimeError(f"cannot bind 127.0.0.1:{self._port}: {error or 'port busy'}")
            time.sleep(0.1)
        server.start()
        self._port = port
        self._server = server
        return port

    def stop(self, grace: float | None = 1.0) -> None:
        """Stops listening. Calls in flight get ``grace`` seconds to finish (their responses
        reach the client, so a stored request is never also reported to the client as failed);
        new connections are refused until ``start()``."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait()

    def __enter__(self) -> OtlpReceiver:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=None)

    def _new_server(self) -> grpc.Server:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers),
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", self._max_receive_bytes),
            ],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsService(self), server)
        if self._profiles:
            profiles_service_pb2_grpc.add_ProfilesServiceServicer_to_server(
                _ProfilesService(self), server
            )
        else:
            server.add_generic_rpc_handlers((_unimplemented_profiles(self),))
        return server

    # -- failure injection --------------------------------------------------------------------

    def fail_next(
        self,
        k: int,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        *,
        retry_delay: float | None = None,
    ) -> None:
        """The next ``k`` export calls, of any signal, fail with ``code`` and their data is not
        kept. With ``retry_delay`` (seconds) the error carries a ``google.rpc.RetryInfo`` asking
        the client to wait that long before retrying."""
        if k < 0:
            raise ValueError("k must be >= 0")
        with self._lock:
            self._failure = _Failure(k, code, retry_delay) if k else None

    # -- the servicers call this --------------------------------------------------------------

    def _export(self, signal_name: str, request: Any, context: grpc.ServicerContext) -> None:
        """Counts the call, then either fails it (aborting the RPC) or keeps the request."""
        arrived = time.time_ns()
        metadata = [(k, v) for k, v in context.invocation_metadata() if isinstance(v, str)]
        with self._lock:
            self._metadata = metadata
            self._calls[signal_name] += 1
            failure = self._failure
            if failure is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failure = None
                self._failures[signal_name] += 1
            else:
                self._accepted[signal_name] += 1
                received = Received(signal_name, arrived, request)
                if self._store:
                    self._received.append(received)
                if self._on_request is not None:
                    self._on_request(received)
            self._changed.notify_all()
        if failure is not None:
            if failure.retry_delay is not None:
                context.set_trailing_metadata(
                    [("google.rpc.retryinfo-bin", _retry_info(failure.retry_delay))]
                )
            context.abort(failure.code, f"injected failure ({failure.code.name})")

    def _refuse(self, signal_name: str, context: grpc.ServicerContext) -> None:
        """Counts a call of a service this receiver does not serve and answers UNIMPLEMENTED."""
        with self._lock:
            self._calls[signal_name] += 1
            self._failures[signal_name] += 1
            self._changed.notify_all()
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")

    # -- reading what arrived -----------------------------------------------------------------

    def received(self, signal_name: str | None = None) -> list[Received]:
        """Accepted requests (of one signal, or all) in arrival order."""
        with self._lock:
            return [r for r in self._received if signal_name in (None, r.signal)]

    def requests(self, signal_name: str) -> list[Any]:
        """The accepted official request messages of one signal, in arrival order."""
        return [r.request for r in self.received(signal_name)]

    def spans(self) -> list[SpanRecord]:
        """(resource, scope, span) for every span of every accepted trace request."""
        return iter_spans(self.requests("traces"))

    def metrics(self) -> list[PointRecord]:
        """(resource, scope, metric, point) for every data point of every accepted metrics
        request."""
        return iter_metric_points(self.requests("metrics"))

    def logs(self) -> list[LogRecord]:
        """(resource, scope, log_record) for every accepted log record."""
        return iter_logs(self.requests("logs"))

    def profiles(self) -> list[ProfileRecord]:
        """(resource, scope, profile, dictionary) for every accepted profile."""
        return iter_profiles(self.requests("profiles"))

    def counters(self) -> dict[str, dict[str, int]]:
        """Per signal: ``calls`` (every export call), ``failures`` (injected failures) and
        ``accepted`` (calls whose data was kept)."""
        with self._lock:
            return {
                s: {
                    "calls": self._calls[s],
                    "failures": self._failures[s],
                    "accepted": self._accepted[s],
                }
                for s in SIGNALS
            }

    def last_metadata(self) -> dict[str, str]:
        """The gRPC metadata (text entries) of the latest export call."""
        with self._lock:
            return dict(self._metadata)

    def total(self, counter: str) -> int:
        """One counter (``calls``, ``failures`` or ``accepted``) summed over the signals."""
        return sum(c[counter] for c in self.counters().values())

    def clear(self) -> None:
        """Forgets every stored request (counters are kept)."""
        with self._lock:
            self._received.clear()

    def wait_for(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """Waits until ``predicate()`` is truthy, re-checking whenever a request arrives (and at
        least every 100 ms). Returns its last value: falsy means the timeout passed."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = sum(self._calls.values())
            value = predicate()  # outside the lock: it may call spans() and friends
            remaining = deadline - time.monotonic()
            if value or remaining <= 0:
                return value
            with self._changed:
                if sum(self._calls.values()) == seen:
                    self._changed.wait(min(remaining, 0.1))


def _retry_info(delay: float) -> bytes:
    """A serialized google.rpc.RetryInfo asking the client to wait ``delay`` seconds."""
    # Imported here: googleapis-common-protos is only needed when a delay is injected.
    from google.rpc import error_details_pb2

    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromNanoseconds(int(delay * 1e9))
    return info.SerializeToString()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """opentelemetry.proto.collector.trace.v1.TraceService."""

    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request, context):  # noqa: N802 (the gRPC method name)
        self._receiver._export("traces", request, context)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    """opentelemetry.proto.collector.metrics.v1.MetricsService."""

    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request, context):  # noqa: N802
        self._receiver._export("metrics", request, context)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    """opentelemetry.proto.collector.logs.v1.LogsService."""

    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request, context):  # noqa: N802
        self._receiver._export("logs", request, context)
        return logs_service_pb2.ExportLogsServiceResponse()


class _ProfilesService(profiles_service_pb2_grpc.ProfilesServiceServicer):
    """opentelemetry.proto.collector.profiles.v1development.ProfilesService."""

    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request, context):  # noqa: N802
        self._receiver._export("profiles", request, context)
        return profiles_service_pb2.ExportProfilesServiceResponse()


def _unimplemented_profiles(receiver: OtlpReceiver) -> grpc.GenericRpcHandler:
    """The profiles Export method answering UNIMPLEMENTED, counted (``profiles=False``)."""
    handler = grpc.unary_unary_rpc_method_handler(
        lambda _request, context: receiver._refuse("profiles", context),
        request_deserializer=profiles_service_pb2.ExportProfilesServiceRequest.FromString,
        response_serializer=profiles_service_pb2.ExportProfilesServiceResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.profiles.v1development.ProfilesService",
        {"Export": handler},
    )


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Receives OTLP until SIGINT/SIGTERM, writing each request as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4317, help="TCP port on 127.0.0.1 (0: any)")
    parser.add_argument("--out", required=True, help="JSON lines file to write")
    parser.add_argument(
        "--no-profiles", action="store_true", help="serve no profiles service (UNIMPLEMENTED)"
    )
    args = parser.parse_args(argv)

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())

    with open(args.out, "w", encoding="utf-8") as out:

        def write(received: Received) -> None:
            line = {
                "signal": received.signal,
                "request": json_format.MessageToDict(received.request),
            }
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
            out.flush()

        receiver = OtlpReceiver(
            args.port, store=False, on_request=write, profiles=not args.no_profiles
        )
        port = receiver.start()
        print(json.dumps({"port": port}), flush=True)
        try:
            while not done.wait(0.5):
                pass
        finally:
            receiver.stop(grace=1.0)
    counts = receiver.counters()
    print(json.dumps({"accepted": {s: counts[s]["accepted"] for s in SIGNALS}}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
