"""``kotel run``'s OTLP/gRPC export under failure (real BPF), as the OTLP specification asks
of a client: retryable errors and an outage are retried until the data is delivered exactly
once; a bounded queue (``--queue-bytes``) drops what does not fit and counts every drop in
``summary.json``.

Each test is bounded: kotel attaches in seconds, the workload runs about a second, outages last
at most ten, and kotel must exit within ``conftest.EXIT_TIMEOUT`` of SIGINT.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kotel_checks import (
    assert_no_duplicate_spans,
    kotel_args,
    read_summary,
    spans_of,
)
from otlp_receiver import OtlpReceiver, attributes

pytestmark = pytest.mark.bpf

#: How long a test waits for kotel's retries to deliver while it still runs. Not a failure
#: when it passes: kotel also flushes on SIGINT, and the assertions are made after it exits.
DELIVERY_WAIT = 15.0

#: The outage of the outage tests, from stopping the receiver to starting it again.
OUTAGE = 10.0

#: Retry waits capped at one second (the default cap is 30 s, so after a 10 s outage the next
#: attempt could come 30 s later): the outage test can then expect delivery while kotel runs.
QUICK_RETRIES = '[export.retry]\ninitial_interval = "200ms"\nmax_interval = "1s"\n'

#: Every retry wait drawn from [0, 1 h]: after the first failed attempt a batch is, all but
#: surely, still waiting when the test sends SIGINT.
HOUR_LONG_RETRIES = (
    '[export.retry]\ninitial_interval = "1h"\nmax_interval = "1h"\nmax_elapsed = "3h"\n'
)

#: A queue far smaller than what the workload produces while the receiver is down (280 writev
#: and TCP spans alone carry 280 random 16-byte trace ids, over 4 KiB even compressed).
SMALL_QUEUE_BYTES = 4096


def _assert_writevs_once(receiver: OtlpReceiver, pid: int, truth: dict) -> None:
    """Every writev span of the workload arrived, and no span arrived twice."""
    spans = receiver.spans()
    assert_no_duplicate_spans(spans)
    writevs = spans_of(spans, pid, "writev")
    assert len(writevs) == truth["writev"]["calls"], (
        f"{len(writevs)} writev spans arrived for {truth['writev']['calls']} calls"
    )
    got = sum(attributes(s.span.attributes)["kotel.bytes"] for s in writevs)
    assert got == truth["writev"]["bytes"]


def _writevs_arrived(receiver: OtlpReceiver, pid: int, truth: dict):
    return lambda: len(spans_of(receiver.spans(), pid, "writev")) >= truth["writev"]["calls"]


def test_retries_after_unavailable(receiver, workload, kotel_run, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    w = workload()
    kotel = kotel_run(kotel_args(w.pid, out_dir, receiver.endpoint))
    receiver.fail_next(3)  # UNAVAILABLE: retryable
    truth = w.run()
    receiver.wait_for(_writevs_arrived(receiver, w.pid, truth), timeout=DELIVERY_WAIT)
    code, _, stderr = kotel.interrupt()
    assert code == 0, f"kotel exit code {code}; stderr:\n{stderr}"

    _assert_writevs_once(receiver, w.pid, truth)
    assert receiver.total("failures") >= 3, receiver.counters()
    summary = read_summary(out_dir)
    assert summary["spans"]["dropped"] == 0, summary


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kotel.toml"
    path.write_text(text)
    return path


def test_outage_on_the_same_port(receiver, workload, kotel_run, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    w = workload()
    config = _config(tmp_path, QUICK_RETRIES)
    kotel = kotel_run(kotel_args(w.pid, out_dir, receiver.endpoint, "--config", str(config)))
    down_at = time.monotonic()
    receiver.stop()
    truth = w.run()
    time.sleep(max(0.0, down_at + OUTAGE - time.monotonic()))
    receiver.start()  # same port
    recovered = receiver.wait_for(_writevs_arrived(receiver, w.pid, truth), timeout=DELIVERY_WAIT)
    code, _, stderr = kotel.interrupt()
    assert code == 0, f"kotel exit code {code}; stderr:\n{stderr}"
    assert recovered, (
        f"retries capped at 1 s delivered nothing within {DELIVERY_WAIT} s of the receiver's "
        f"return; stderr:\n{stderr}"
    )

    _assert_writevs_once(receiver, w.pid, truth)
    summary = read_summary(out_dir)
    assert summary["spans"]["dropped"] == 0, summary


def test_sigint_during_a_long_backoff_delivers_at_once(
    receiver, workload, kotel_run, tmp_path: Path
) -> None:
    """The collector is back but kotel's next retry is up to an hour away when SIGINT comes (a
    rollout right after an outage): the flush tries again at once instead of waiting it out
    past the grace period."""
    out_dir = tmp_path / "out"
    w = workload()
    config = _config(tmp_path, HOUR_LONG_RETRIES)
    kotel = kotel_run(kotel_args(w.pid, out_dir, receiver.endpoint, "--config", str(config)))
    receiver.stop()
    truth = w.run()
    # An export failed and its batch now waits out a backoff of up to an hour, holding up the
    # queue behind it (batches go out in order).
    kotel.wait_for_log("kotel.export.retry")
    receiver.start()  # same port
    code, _, stderr = kotel.interrupt()
    assert code == 0, f"kotel exit code {code}; stderr:\n{stderr}"

    _assert_writevs_once(receiver, w.pid, truth)
    summary = read_summary(out_dir)
    assert summary["spans"]["dropped"] == 0, summary


def test_bounded_queue_counts_what_it_drops(receiver, workload, kotel_run, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    w = workload()
    kotel = kotel_run(
        kotel_args(w.pid, out_dir, receiver.endpoint, "--queue-bytes", str(SMALL_QUEUE_BYTES))
    )
    # Down for the whole workload run and until the queue has overflowed.
    receiver.stop()
    w.run()
    kotel.wait_for_log("kotel.export.dropped", "queue_full")
    # Back before kotel exits, so what the queue kept can arrive (at most once).
    receiver.start()
    code, _, stderr = kotel.interrupt()
    assert code == 0, f"kotel exit code {code}; stderr:\n{stderr}"

    spans = receiver.spans()
    assert_no_duplicate_spans(spans)
    s = read_summary(out_dir)["spans"]
    arrived = len(spans)
    assert s["dropped"] > 0, f"a {SMALL_QUEUE_BYTES}-byte queue overflowed: {s}"
    assert s["dropped"] == s["produced"] - arrived, f"{s}; {arrived} spans arrived"
    assert s["exported"] == arrived and s["rejected"] == 0, f"{s}; {arrived} spans arrived"
