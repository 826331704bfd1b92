"""``kotel run`` exporting over TLS and mutual TLS to real receivers: grpcio's SSL server with
the official OTLP services, and an OTLP/HTTP server behind Python's ``ssl``. Certificates are
made on the spot (``tls_certs.make_pki``); nothing is checked in.

* Round trips (gRPC TLS from the config file, gRPC mTLS from the standard environment
  variables, OTLP/HTTP mTLS): what arrives passes the same conformance checks as plaintext
  export, and the request headers arrived while their value never shows in kotel's output.
* Rejections (a receiver kotel must not trust, expired certificates either side, a client
  certificate the receiver does not trust, none at all): nothing is delivered, every span is
  counted as dropped, kotel's log names the cause, and a TCP tap between kotel and the receiver
  shows every connection began with a TLS handshake: nothing ever went out in plaintext.
* Startup: an unreadable or mismatched certificate or key stops kotel with exit 2 naming the
  setting, before any BPF program loads, and never shows the key.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tls_certs
from conftest import built_binary, free_port, prometheus_value, scrape, wait_until
from kotel_checks import Window, check_export, check_summary_all_delivered, kotel_args, read_summary
from otlp_http_receiver import OtlpHttpsReceiver
from otlp_receiver import OtlpReceiver, ServerTls
from tcp_tap import TcpTap

#: A header value that must reach the receiver and never kotel's output.
SECRET = "kotel-test-s3cret-7d1f"

#: Short enough that a rejected run ends quickly; kotel keeps retrying until then.
SHUTDOWN_GRACE = "1s"

#: The longest wait for kotel's exports to be delivered, or to fail in TLS (a bound, not a
#: measurement: spans are flushed every 100 ms and metrics every second).
EXPORT_WAIT = 30.0


@pytest.fixture
def pki(tmp_path: Path) -> tls_certs.Pki:
    return tls_certs.make_pki(tmp_path / "pki")


@pytest.fixture
def taps() -> Iterator[list[TcpTap]]:
    opened: list[TcpTap] = []
    yield opened
    for t in opened:
        t.close()


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _config(
    path: Path,
    endpoint: str | None,
    *,
    protocol: str = "grpc",
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    insecure: bool | None = None,
) -> Path:
    """Writes a kotel config file with an [export] section and returns its path."""
    lines = [
        "[export]",
        f"protocol = {_toml_str(protocol)}",
        f'shutdown_grace = "{SHUTDOWN_GRACE}"',
    ]
    if endpoint is not None:
        lines.append(f"endpoint = {_toml_str(endpoint)}")
    if headers:
        pairs = ", ".join(f"{_toml_str(k)} = {_toml_str(v)}" for k, v in headers.items())
        lines.append(f"headers = {{ {pairs} }}")
    lines.append("[export.tls]")
    for field, value in (("ca_file", ca), ("cert_file", cert), ("key_file", key)):
        if value is not None:
            lines.append(f"{field} = {_toml_str(value)}")
    if insecure is not None:
        lines.append(f"insecure = {'true' if insecure else 'false'}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _delivered(prom: str) -> bool:
    """Both spans and metric points have been exported (accepted by the receiver)."""
    return all(
        (prometheus_value(prom, "kotel_export_exported_items_total", f'signal="{signal}"') or 0)
        > 0
        for signal in ("traces", "metrics")
    )


def _tls_failed(prom: str) -> bool:
    """An export attempt has failed in TLS."""
    return (prometheus_value(prom, "kotel_export_tls_failures_total") or 0) > 0


def _run(
    workload,
    kotel_run,
    out_dir: Path,
    config: Path,
    env: dict[str, str] | None = None,
    *,
    until: Callable[[str], bool] = _delivered,
):
    """Runs the workload under ``kotel run --config config`` until kotel's ``/metrics`` text
    satisfies ``until`` (exports delivered, by default); returns (pid, truth, stdout, stderr,
    window) once kotel has exited 0. That ``/metrics`` text is left in
    ``out_dir / "metrics.prom"``."""
    w = workload()
    start = time.time_ns()
    port = free_port()
    # Without kotel's own OTLP receiver (not under test here) spans leave at once instead of
    # waiting link.hold for an application span, and every interval's exemplar with them.
    args = kotel_args(
        w.pid, out_dir, None, "--config", str(config), "--telemetry", f"127.0.0.1:{port}",
        "--receiver-grpc", "none", "--receiver-http", "none",
    )
    kotel = kotel_run(args, env)
    truth = w.run()

    def satisfied() -> str | None:
        text = scrape(port)
        return text if until(text) else None

    prom = wait_until(satisfied, EXPORT_WAIT, f"kotel's /metrics to satisfy {until.__name__}")
    (out_dir / "metrics.prom").write_text(prom)
    code, stdout, stderr = kotel.interrupt()
    window = Window(start, time.time_ns())
    assert code == 0, f"kotel exit code {code}; stderr:\n{stderr}"
    return w.pid, truth, stdout, stderr, window


def _tls_failures(out_dir: Path) -> int:
    """``kotel_export_tls_failures_total`` from the /metrics text ``_run`` saved."""
    prom = (out_dir / "metrics.prom").read_text()
    found = re.search(r"^kotel_export_tls_failures_total (\d+)$", prom, re.MULTILINE)
    assert found, prom
    return int(found.group(1))


def _tap(taps: list[TcpTap], port: int) -> TcpTap:
    tap = TcpTap(port)
    taps.append(tap)
    return tap


# --------------------------------------------------------------------------------------------
# Round trips (real BPF)
# --------------------------------------------------------------------------------------------


@pytest.mark.bpf
def test_grpc_tls_round_trip(pki, taps, workload, kotel_run, tmp_path: Path) -> None:
    with OtlpReceiver(tls=ServerTls(pki.server.cert, pki.server.key)) as receiver:
        tap = _tap(taps, receiver.port)
        config = _config(tmp_path / "k.toml", f"https://127.0.0.1:{tap.port}", ca=pki.ca)
        pid, truth, _, _, window = _run(workload, kotel_run, tmp_path / "out", config)
        spans, points = check_export(
            pid, truth, receiver.requests("traces"), receiver.requests("metrics"), window
        )
    check_summary_all_delivered(read_summary(tmp_path / "out"), len(spans), len(points))
    assert tap.all_tls(), tap.first_bytes()
    assert _tls_failures(tmp_path / "out") == 0


@pytest.mark.bpf
@pytest.mark.parametrize(
    "endpoint,insecure",
    [("https://127.0.0.1:{port}", True), ("127.0.0.1:{port}", False)],
    ids=["https-with-insecure", "bare-host-port"],
)
def test_grpc_scheme_decides(
    pki, taps, workload, kotel_run, tmp_path: Path, endpoint: str, insecure: bool
) -> None:
    """As the OTLP exporter specification says: ``insecure`` does not turn an ``https://``
    endpoint into plaintext (kotel warns that it is ignored), and a gRPC endpoint without a
    scheme is TLS unless ``insecure``."""
    with OtlpReceiver(tls=ServerTls(pki.server.cert, pki.server.key)) as receiver:
        tap = _tap(taps, receiver.port)
        config = _config(
            tmp_path / "k.toml", endpoint.format(port=tap.port), ca=pki.ca, insecure=insecure
        )
        pid, truth, _, stderr, window = _run(workload, kotel_run, tmp_path / "out", config)
        spans, points = check_export(
            pid, truth, receiver.requests("traces"), receiver.requests("metrics"), window
        )
    check_summary_all_delivered(read_summary(tmp_path / "out"), len(spans), len(points))
    assert tap.all_tls(), tap.first_bytes()
    assert ("kotel.export.insecure_ignored" in stderr) == insecure, stderr


@pytest.mark.bpf
def test_bare_host_port_with_insecure_is_plaintext_and_the_tap_sees_it(
    taps, workload, kotel_run, tmp_path: Path
) -> None:
    """The plaintext counterpart: the tap recognises plaintext HTTP/2 (so its "all TLS"
    verdicts elsewhere can fail), and ``insecure`` is what a bare host:port needs for it."""
    with OtlpReceiver() as receiver:
        tap = _tap(taps, receiver.port)
        config = _config(tmp_path / "k.toml", f"127.0.0.1:{tap.port}", insecure=True)
        pid, truth, _, _, window = _run(workload, kotel_run, tmp_path / "out", config)
        spans, points = check_export(
            pid, truth, receiver.requests("traces"), receiver.requests("metrics"), window
        )
    check_summary_all_delivered(read_summary(tmp_path / "out"), len(spans), len(points))
    first = tap.first_bytes()
    assert first and all(b.startswith(b"PRI * HTTP/2.0") for b in first), first
    assert not tap.all_tls()


@pytest.mark.bpf
def test_grpc_mtls_round_trip_from_the_environment(
    pki, taps, workload, kotel_run, tmp_path: Path
) -> None:
    server = ServerTls(pki.server.cert, pki.server.key, client_ca=pki.ca)
    with OtlpReceiver(tls=server) as receiver:
        tap = _tap(taps, receiver.port)
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://127.0.0.1:{tap.port}",
            "OTEL_EXPORTER_OTLP_CERTIFICATE": pki.ca,
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": pki.client.cert,
            "OTEL_EXPORTER_OTLP_CLIENT_KEY": pki.client.key,
            "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{SECRET}",
            # Every log of kotel and its libraries (hyper, h2, tonic): still no secret.
            "KOTEL_LOG": "trace",
        }
        config = _config(tmp_path / "k.toml", None)
        pid, truth, stdout, stderr, window = _run(
            workload, kotel_run, tmp_path / "out", config, env
        )
        spans, points = check_export(
            pid, truth, receiver.requests("traces"), receiver.requests("metrics"), window
        )
        assert receiver.last_metadata().get("authorization") == f"Bearer {SECRET}"
    check_summary_all_delivered(read_summary(tmp_path / "out"), len(spans), len(points))
    assert tap.all_tls(), tap.first_bytes()
    assert _tls_failures(tmp_path / "out") == 0
    assert "TRACE" in stderr, "trace logging was not on"
    assert SECRET not in stdout + stderr
    assert not any(line in stderr for line in _key_body(pki.client.key))


@pytest.mark.bpf
def test_http_mtls_round_trip(pki, taps, workload, kotel_run, tmp_path: Path) -> None:
    receiver = OtlpHttpsReceiver(pki.server.cert, pki.server.key, client_ca=pki.ca)
    try:
        tap = _tap(taps, receiver.port)
        config = _config(
            tmp_path / "k.toml",
            f"https://127.0.0.1:{tap.port}",
            protocol="http/protobuf",
            ca=pki.ca,
            cert=pki.client.cert,
            key=pki.client.key,
            headers={"x-api-key": SECRET},
        )
        pid, truth, stdout, stderr, window = _run(workload, kotel_run, tmp_path / "out", config)
        spans, points = check_export(
            pid, truth, receiver.requests("traces"), receiver.requests("metrics"), window
        )
        assert receiver.last_headers().get("x-api-key") == SECRET
        assert receiver.handshake_failures == 0
    finally:
        receiver.close()
    check_summary_all_delivered(read_summary(tmp_path / "out"), len(spans), len(points))
    assert tap.all_tls(), tap.first_bytes()
    assert _tls_failures(tmp_path / "out") == 0
    assert SECRET not in stdout + stderr


# --------------------------------------------------------------------------------------------
# Rejections (real BPF): nothing delivered, nothing in plaintext, the cause named
# --------------------------------------------------------------------------------------------

#: (case, server certificate, client CA the server requires or None, kotel's CA, kotel's
#: client certificate or None, what kotel's log must say).
GRPC_REJECTIONS = [
    ("untrusted-server", "wrong_server", None, "ca", None, "unknown issuer"),
    ("kotel-trusts-wrong-ca", "server", None, "wrong_ca", None, "unknown issuer"),
    ("expired-server", "server_expired", None, "ca", None, "certificate expired"),
    ("wrong-ca-client", "server", "ca", "ca", "wrong_client", "client certificate"),
    ("no-client-cert", "server", "ca", "ca", None, "client certificate"),
]


def _assert_rejected(out_dir: Path, stderr: str, tap: TcpTap, cause: str) -> None:
    spans = read_summary(out_dir)["spans"]
    assert spans["produced"] > 0, spans
    assert spans["exported"] == 0 and spans["dropped"] == spans["produced"], spans
    assert cause in stderr, f"kotel's log does not say {cause!r}:\n{stderr}"
    assert "TLS" in stderr, stderr
    assert tap.all_tls(), f"a connection did not start with TLS: {tap.first_bytes()}"
    assert _tls_failures(out_dir) > 0


@pytest.mark.bpf
@pytest.mark.parametrize(
    "server_cert,client_ca,kotel_ca,kotel_client,cause",
    [c[1:] for c in GRPC_REJECTIONS],
    ids=[c[0] for c in GRPC_REJECTIONS],
)
def test_grpc_rejections(
    pki,
    taps,
    workload,
    kotel_run,
    tmp_path: Path,
    server_cert,
    client_ca,
    kotel_ca,
    kotel_client,
    cause,
) -> None:
    pair = getattr(pki, server_cert)
    server = ServerTls(
        pair.cert, pair.key, client_ca=getattr(pki, client_ca) if client_ca else None
    )
    client = getattr(pki, kotel_client) if kotel_client else None
    with OtlpReceiver(tls=server) as receiver:
        tap = _tap(taps, receiver.port)
        config = _config(
            tmp_path / "k.toml",
            f"https://127.0.0.1:{tap.port}",
            ca=getattr(pki, kotel_ca),
            cert=client.cert if client else None,
            key=client.key if client else None,
        )
        _, _, _, stderr, _ = _run(
            workload, kotel_run, tmp_path / "out", config, until=_tls_failed
        )
        assert receiver.total("calls") == 0, receiver.counters()
    _assert_rejected(tmp_path / "out", stderr, tap, cause)


HTTP_REJECTIONS = [
    ("untrusted-server", "wrong_server", "client", "unknown issuer"),
    ("wrong-ca-client", "server", "wrong_client", "refused kotel's client certificate"),
]


@pytest.mark.bpf
@pytest.mark.parametrize(
    "server_cert,kotel_client,cause",
    [c[1:] for c in HTTP_REJECTIONS],
    ids=[c[0] for c in HTTP_REJECTIONS],
)
def test_http_rejections(
    pki, taps, workload, kotel_run, tmp_path: Path, server_cert, kotel_client, cause
) -> None:
    pair = getattr(pki, server_cert)
    client = getattr(pki, kotel_client)
    receiver = OtlpHttpsReceiver(pair.cert, pair.key, client_ca=pki.ca)
    try:
        tap = _tap(taps, receiver.port)
        config = _config(
            tmp_path / "k.toml",
            f"https://127.0.0.1:{tap.port}",
            protocol="http/protobuf",
            ca=pki.ca,
            cert=client.cert,
            key=client.key,
        )
        _, _, _, stderr, _ = _run(
            workload, kotel_run, tmp_path / "out", config, until=_tls_failed
        )
        assert receiver.accepted() == 0
    finally:
        receiver.close()
    _assert_rejected(tmp_path / "out", stderr, tap, cause)


def test_expired_client_certificate_stops_kotel_before_sending(pki, taps, tmp_path: Path) -> None:
    """kotel reads its client certificate's validity itself: an expired one is refused at
    startup (exit 2, naming the setting and the date), so nothing is ever sent with it."""
    server = ServerTls(pki.server.cert, pki.server.key, client_ca=pki.ca)
    with OtlpReceiver(tls=server) as receiver:
        tap = _tap(taps, receiver.port)
        for protocol in ("grpc", "http/protobuf"):
            config = _config(
                tmp_path / "k.toml",
                f"https://127.0.0.1:{tap.port}",
                protocol=protocol,
                ca=pki.ca,
                cert=pki.client_expired.cert,
                key=pki.client_expired.key,
            )
            done = _kotel(["run", "--config", str(config), "--duration", "1s"], cwd=tmp_path)
            assert done.returncode == 2, done.stderr
            assert "export.tls.cert_file" in done.stderr, done.stderr
            assert "client certificate expired at" in done.stderr, done.stderr
        assert receiver.total("calls") == 0
    assert tap.first_bytes() == []


# --------------------------------------------------------------------------------------------
# Startup checks and secrets in printed configuration (no BPF: kotel stops before loading)
# --------------------------------------------------------------------------------------------


def _kotel(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [str(built_binary("kotel")), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=cwd,
    )


def _key_body(path: str) -> list[str]:
    """The base64 lines of a PEM key: what must never be printed."""
    return [line for line in Path(path).read_text().splitlines() if not line.startswith("-----")]


def test_bad_tls_files_stop_kotel_with_exit_2(pki, tmp_path: Path) -> None:
    cases = [
        (
            _config(tmp_path / "a.toml", "https://127.0.0.1:1", ca=str(tmp_path / "missing.pem")),
            {},
            ["export.tls.ca_file", "missing.pem"],
        ),
        (
            _config(
                tmp_path / "b.toml",
                "https://127.0.0.1:1",
                ca=pki.ca,
                cert=pki.client.cert,
                key=pki.wrong_client.key,
            ),
            {},
            ["export.tls.key_file", "does not belong"],
        ),
        (
            _config(tmp_path / "c.toml", "https://127.0.0.1:1", ca=pki.client.key),
            {},
            ["export.tls.ca_file", "no PEM certificate"],
        ),
        (
            _config(tmp_path / "d.toml", "https://127.0.0.1:1", ca=pki.ca),
            {
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": pki.client.cert,
                "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(tmp_path / "nokey.pem"),
            },
            ["OTEL_EXPORTER_OTLP_CLIENT_KEY", "nokey.pem"],
        ),
    ]
    secrets = _key_body(pki.client.key) + _key_body(pki.wrong_client.key)
    for config, env, expected in cases:
        done = _kotel(["run", "--config", str(config), "--duration", "1s"], env, cwd=tmp_path)
        assert done.returncode == 2, f"{config.name}: exit {done.returncode}\n{done.stderr}"
        for word in expected:
            assert word in done.stderr, f"{config.name}: {word!r} missing:\n{done.stderr}"
        assert "kotel.run.attached" not in done.stderr, "it failed only after loading BPF"
        assert not any(s in done.stderr + done.stdout for s in secrets), done.stderr


def test_config_output_and_errors_never_show_secrets(pki, tmp_path: Path) -> None:
    good = _config(
        tmp_path / "good.toml",
        "https://collector.example:4317",
        ca=pki.ca,
        cert=pki.client.cert,
        key=pki.client.key,
        headers={"authorization": f"Bearer {SECRET}"},
    )
    shown = _kotel(["config", "check", str(good)])
    assert shown.returncode == 0, shown.stderr
    assert "authorization" in shown.stdout and pki.client.key in shown.stdout, shown.stdout
    assert SECRET not in shown.stdout + shown.stderr, shown.stdout
    assert not any(s in shown.stdout for s in _key_body(pki.client.key))

    # A type error on the line that holds the header: the message gives line and key only.
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[export]\nheaders = {{ authorization = "Bearer {SECRET}", retries = 3 }}\n')
    failed = _kotel(["config", "check", str(bad)])
    assert failed.returncode == 2 and "line 2" in failed.stderr, failed.stderr
    assert SECRET not in failed.stdout + failed.stderr, failed.stderr

    # A malformed OTEL_EXPORTER_OTLP_HEADERS entry is named by position, its value never shown.
    run = _kotel(
        ["run", "--duration", "1s"],
        {"OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%2{SECRET}"},
        cwd=tmp_path,
    )
    assert run.returncode == 2, run.stderr
    assert "OTEL_EXPORTER_OTLP_HEADERS" in run.stderr and SECRET not in run.stderr, run.stderr
