"""A counting OTLP/gRPC receiver for the soak: the official-protos ``OtlpReceiver`` with nothing
stored, only counted, so it can run for many minutes at thousands of spans per second.

* Spans are counted by **unique span id** (kept as Python ints in a set: about 70 bytes per
  span), because kotel retries and a batch whose response was lost arrives twice; the raw
  number of spans received, duplicates included, and their encoded (uncompressed protobuf)
  request bytes are counted too.
* Metric exports are counted, and kotel's own self metrics in the latest one are kept.
* ``down()`` really stops listening (new connections are refused; calls in flight get a short
  grace so their responses reach kotel), ``up()`` listens again on the same port.
"""

from __future__ import annotations

import threading

from otlp_receiver import OtlpReceiver, Received, attributes, iter_metric_points


class SoakReceiver:
    """Counts what arrives; thread-safe."""

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self._ids: set[int] = set()
        self.spans_received = 0
        self.span_request_bytes = 0
        self.metric_exports = 0
        self.outages = 0
        self.last_self_metrics: dict[str, int] = {}
        self._rx = OtlpReceiver(port, store=False, on_request=self._on_request)

    @property
    def endpoint(self) -> str:
        """The OTLP endpoint URL, e.g. ``http://127.0.0.1:4317``."""
        return self._rx.endpoint

    def up(self) -> int:
        """Starts listening (the same port after the first time); returns the port."""
        return self._rx.start()

    def down(self, grace: float = 1.0) -> None:
        """Stops listening: connections are refused until ``up()``."""
        self._rx.stop(grace=grace)
        with self._lock:
            self.outages += 1

    @property
    def listening(self) -> bool:
        return self._rx.running

    def _on_request(self, r: Received) -> None:
        # Called by OtlpReceiver under its own lock, one request at a time.
        if r.signal == "traces":
            n, ids = 0, []
            for rs in r.request.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        ids.append(int.from_bytes(span.span_id, "big"))
                        n += 1
            size = r.request.ByteSize()
            with self._lock:
                self.spans_received += n
                self.span_request_bytes += size
                self._ids.update(ids)
        elif r.signal == "metrics":
            mine = {}
            for p in iter_metric_points([r.request]):
                if p.metric.name.startswith(("kotel.events.", "kotel.export.", "kotel.spans.")):
                    attrs = attributes(p.point.attributes)
                    key = p.metric.name + "".join(f",{k}={v}" for k, v in sorted(attrs.items()))
                    mine[key] = p.point.as_int
            with self._lock:
                self.metric_exports += 1
                if mine:
                    self.last_self_metrics = mine

    def unique_spans(self) -> int:
        """Distinct span ids received."""
        with self._lock:
            return len(self._ids)

    def counts(self) -> dict:
        """A snapshot of every counter."""
        with self._lock:
            return {
                "unique_spans": len(self._ids),
                "spans_received": self.spans_received,
                "duplicate_spans": self.spans_received - len(self._ids),
                "encoded_bytes_per_span": round(
                    self.span_request_bytes / max(self.spans_received, 1), 1
                ),
                "metric_exports": self.metric_exports,
                "outages": self.outages,
            }
