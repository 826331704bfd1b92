"""kotel's OTLP receiver over TLS, mutual TLS and with a bearer token, against real clients:
the official OpenTelemetry SDK (grpcio's SSL credentials) and plain ``ssl``/``http.client``.
Certificates are made on the spot by ``tls_certs.py``.

A real application's spans still arrive and get kernel child spans linked under them (the
peer is found through the TLS connection). Each kind of bad client is refused, counted in
kotel's ``/metrics`` (``kotel_receiver_rejected_total``), and the token never shows in what
kotel prints.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import tls_certs
from conftest import built_binary, free_port
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.trace.v1 import trace_pb2
from otlp_receiver import attributes
from test_linking import check_worker, run_app

TOKEN = "kotel-test-T0ken-7f3a9c"


def _config(tmp_path: Path, pki: tls_certs.Pki, mtls: bool, token: bool) -> Path:
    lines = ["[receiver]"]
    if token:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        lines.append(f'bearer_token_file = "{token_file}"')
    lines += ["[receiver.tls]", f'cert_file = "{pki.server.cert}"', f'key_file = "{pki.server.key}"']
    if mtls:
        lines.append(f'client_ca_file = "{pki.ca}"')
    path = tmp_path / "kotel.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _kotel(kotel_run, receiver, tmp_path, config: Path, grpc_port: int, http: str, telemetry: str):
    return kotel_run(
        ["--config", config, "--span-threshold", "0", "--sleep-threshold", "0", "--probes", "all", "--out", tmp_path / "out",
         "--otlp-endpoint", receiver.endpoint, "--receiver-grpc", f"127.0.0.1:{grpc_port}",
         "--receiver-http", http, "--telemetry", telemetry]
    )


@pytest.mark.bpf
@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls-and-token"])
def test_sdk_spans_over_tls_are_linked(receiver, kotel_run, tmp_path, mtls):
    pki = tls_certs.make_pki(tmp_path / "pki")
    port = free_port()
    kotel = _kotel(kotel_run, receiver, tmp_path, _config(tmp_path, pki, mtls, token=mtls),
                   port, "none", "none")
    flags = ["--ca", pki.ca]
    if mtls:
        flags += ["--client-cert", pki.client.cert, "--client-key", pki.client.key, "--token", TOKEN]
    truth = run_app(receiver, f"https://127.0.0.1:{port}", "--with-pid", "--thread-id", *flags)
    w = truth["workers"][0]
    code, stdout, stderr = kotel.interrupt()
    assert code == 0, stderr
    check_worker(w, receiver.spans(), truth, "thread", "resource")
    assert TOKEN not in stdout + stderr


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


def _span_request(tag: int) -> trace_service_pb2.ExportTraceServiceRequest:
    span = trace_pb2.Span(trace_id=bytes([tag]) * 16, span_id=bytes([tag]) * 8, name="tls-probe",
                          start_time_unix_nano=1, end_time_unix_nano=2)
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[span])])]
    )


def _grpc_export(port: int, *, ca: str | None, client: tls_certs.Pair | None, token: str | None,
                 tag: int = 1) -> grpc.StatusCode:
    """One export on a fresh channel; OK or the status code it failed with."""
    target = f"127.0.0.1:{port}"
    if ca is None:
        channel = grpc.insecure_channel(target)
    else:
        creds = grpc.ssl_channel_credentials(
            root_certificates=Path(ca).read_bytes(),
            private_key=Path(client.key).read_bytes() if client else None,
            certificate_chain=Path(client.cert).read_bytes() if client else None,
        )
        channel = grpc.secure_channel(target, creds)
    metadata = [("authorization", f"Bearer {token}")] if token else None
    try:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(_span_request(tag), timeout=10,
                                                               metadata=metadata)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()
    finally:
        channel.close()


def _https_post(port: int, *, ca: str, client: tls_certs.Pair | None, token: str | None) -> int | str:
    """POST an empty OTLP/JSON request over HTTPS; the status, or the error's name."""
    ctx = ssl.create_default_context(cafile=ca)
    if client:
        ctx.load_cert_chain(client.cert, client.key)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", "/v1/traces", body=b"{}", headers=headers)
        return conn.getresponse().status
    except (ssl.SSLError, OSError, http.client.HTTPException) as e:
        return type(e).__name__
    finally:
        conn.close()


def _plain_http_post(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 2\r\n\r\n{}")
        try:
            return s.recv(64)
        except OSError:
            return b""


def _rejected(telemetry_port: int) -> dict[str, int]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{telemetry_port}/metrics", timeout=10).read().decode()
    return {m[1]: int(m[2]) for m in re.finditer(r'kotel_receiver_rejected_total\{reason="(\w+)"\} (\d+)', text)}


def _wait_rejected(telemetry_port: int, reason: str, at_least: int) -> int:
    """The server counts a failed handshake a moment after the client saw it: bounded wait."""
    deadline = time.monotonic() + 10
    while True:
        n = _rejected(telemetry_port).get(reason, 0)
        if n >= at_least or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


@pytest.mark.bpf
def test_bad_clients_are_refused_and_counted(receiver, kotel_run, tmp_path):
    pki = tls_certs.make_pki(tmp_path / "pki")
    grpc_port, http_port, tele_port = free_port(), free_port(), free_port()
    kotel = _kotel(kotel_run, receiver, tmp_path, _config(tmp_path, pki, mtls=True, token=True),
                   grpc_port, f"127.0.0.1:{http_port}", f"127.0.0.1:{tele_port}")
    assert _rejected(tele_port).get("tls_handshake") == 0

    # Handshake refusals over HTTPS first, counted exactly: every attempt here is one connection
    # and counts once, and no gRPC channel exists yet whose reconnects could add to the count.
    for what, ca, client in [
        ("trusts the wrong CA", pki.wrong_ca, pki.client),
        ("presents a wrong-CA certificate", pki.ca, pki.wrong_client),
        ("presents an expired certificate", pki.ca, pki.client_expired),
        ("presents no certificate", pki.ca, None),
    ]:
        got = _https_post(http_port, ca=ca, client=client, token=TOKEN)
        assert got not in (200, 401), f"HTTPS client that {what} got an answer: {got}"
    assert not _plain_http_post(http_port).startswith(b"HTTP/1.1 2"), "plaintext HTTP answered"
    https_handshakes = 4 + 1  # the four clients above and the plaintext one
    assert _wait_rejected(tele_port, "tls_handshake", https_handshakes) == https_handshakes

    # Then over gRPC. gRPC may reconnect once on its own, so each counts at least once.
    handshakes = https_handshakes
    for what, ca, client in [
        ("trusts the wrong CA", pki.wrong_ca, pki.client),
        ("presents a wrong-CA certificate", pki.ca, pki.wrong_client),
        ("presents an expired certificate", pki.ca, pki.client_expired),
        ("presents no certificate", pki.ca, None),
    ]:
        code = _grpc_export(grpc_port, ca=ca, client=client, token=TOKEN)
        assert code == grpc.StatusCode.UNAVAILABLE, f"gRPC client that {what}: {code}"
        handshakes += 1
        assert _wait_rejected(tele_port, "tls_handshake", handshakes) >= handshakes, what
    code = _grpc_export(grpc_port, ca=None, client=None, token=TOKEN)
    assert code == grpc.StatusCode.UNAVAILABLE, f"plaintext gRPC client: {code}"
    handshakes += 1
    assert _wait_rejected(tele_port, "tls_handshake", handshakes) >= handshakes

    # Token refusals: exact counts, gRPC UNAUTHENTICATED and HTTP 401.
    good = {"ca": pki.ca, "client": pki.client}
    assert _grpc_export(grpc_port, token=None, **good) == grpc.StatusCode.UNAUTHENTICATED
    assert _grpc_export(grpc_port, token="wrong-" + TOKEN, **good) == grpc.StatusCode.UNAUTHENTICATED
    assert _https_post(http_port, token=None, **good) == 401
    assert _https_post(http_port, token=TOKEN + "x", **good) == 401
    assert _rejected(tele_port)["unauthenticated"] == 4

    # The right client gets through on both listeners; its span is forwarded upstream.
    assert _grpc_export(grpc_port, token=TOKEN, tag=42, **good) == grpc.StatusCode.OK
    assert _https_post(http_port, token=TOKEN, **good) == 200
    receiver.wait_for(lambda: bytes([42]) * 8 in {s.span.span_id for s in receiver.spans()}, timeout=20)
    counts = _rejected(tele_port)
    assert counts["unauthenticated"] == 4 and counts["malformed"] == 0, counts

    code, stdout, stderr = kotel.interrupt()
    assert code == 0, stderr
    assert "kotel.receiver.tls_handshake_failed" in stderr
    assert TOKEN not in stdout + stderr, "the token must never be printed"
    # The same counts go upstream as the self metric kotel.receiver.rejected.
    exported = {}
    for p in receiver.metrics():
        if p.metric.name == "kotel.receiver.rejected":
            exported[attributes(p.point.attributes)["kotel.reason"]] = p.point.as_int
    assert exported.get("unauthenticated") == 4, exported
    assert exported.get("tls_handshake", 0) >= handshakes, exported


# --------------------------------------------------------------------------------------------
# Startup: bad files exit 2 naming the field, before anything is loaded
# --------------------------------------------------------------------------------------------


def test_bad_tls_and_token_files_exit_2_naming_the_field(tmp_path):
    pki = tls_certs.make_pki(tmp_path / "pki")
    kotel = built_binary("kotel")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    def tls(cert, key, client_ca=None) -> str:
        text = f'[receiver.tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
        return text + (f'client_ca_file = "{client_ca}"\n' if client_ca else "")

    def render(scheme: str, ca) -> str:
        return f'[render]\nrenderer = "{scheme}://127.0.0.1:1"\n[render.tls]\nca_file = "{ca}"\n'

    cases = [
        (tls(pki.server.cert, pki.client.key), "receiver.tls.key_file", "does not belong"),
        (tls(tmp_path / "missing.crt", pki.server.key), "receiver.tls.cert_file", "missing.crt"),
        (tls(pki.server.cert, pki.server.key, empty), "receiver.tls.client_ca_file", "no PEM certificate"),
        (f'[receiver]\nbearer_token_file = "{empty}"\n', "receiver.bearer_token_file", "empty"),
        (render("https", empty), "render.tls.ca_file", "no PEM certificate"),
        (render("http", pki.ca), "render.tls", "not https://"),
    ]
    for text, field, detail in cases:
        config = tmp_path / "bad.toml"
        config.write_text(text)
        out = subprocess.run([str(kotel), "run", "--config", str(config), "--duration", "1s",
                              "--out", str(tmp_path / "out"), "--telemetry", "none"],
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 2, (text, out.stderr)
        assert field in out.stderr and detail in out.stderr, (field, out.stderr)
        assert "PRIVATE KEY" not in out.stderr
        assert "kotel.run.attached" not in out.stderr, "refused before anything was loaded"


def test_config_check_shows_the_token_file_not_the_token(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = tmp_path / "kotel.toml"
    config.write_text(f'[receiver]\nbearer_token_file = "{token_file}"\n')
    out = subprocess.run([str(built_binary("kotel")), "config", "check", str(config)],
                         capture_output=True, text=True, timeout=30, check=False,
                         env={"KOTEL_RECEIVER_BEARER_TOKEN": TOKEN})
    assert out.returncode == 0, out.stderr
    assert str(token_file) in out.stdout
    assert TOKEN not in out.stdout + out.stderr
