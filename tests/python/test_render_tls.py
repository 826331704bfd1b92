"""The ``kotel-render`` binary's TLS flags: ``--tls-cert``/``--tls-key`` put its HTTP and gRPC
listeners on TLS (https artifact URLs), ``--tls-client-ca`` requires client certificates, and a
key that does not belong to the certificate exits 2 naming the flag. Certificates are made on
the spot by ``tls_certs.py``. (The TLS render round trips themselves are in render/tests/tls.rs
and collector/tests/sidecar_tls.rs.)
"""

from __future__ import annotations

import http.client
import queue
import re
import ssl
import subprocess
import time
from pathlib import Path

import tls_certs
from conftest import LineReader, built_binary, free_port


def _start(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen, LineReader, int]:
    http_port = free_port()
    proc = subprocess.Popen(
        [str(built_binary("kotel-render")), "--grpc", f"127.0.0.1:{free_port()}",
         "--http", f"127.0.0.1:{http_port}", "--store", str(tmp_path / "store"), *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    return proc, LineReader(proc.stderr), http_port


def _get(port: int, ctx: ssl.SSLContext) -> int | str:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    except (ssl.SSLError, OSError, http.client.HTTPException) as e:
        return type(e).__name__
    finally:
        conn.close()


def _wait_for_line(lines: LineReader, marker: str, timeout: float) -> bool:
    """Reads on (bounded) until a line holding ``marker``; whether one came."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.next_line(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            return False
        if line is None:
            return False
        if marker in line:
            return True


def test_kotel_render_tls_flags(tmp_path):
    pki = tls_certs.make_pki(tmp_path / "pki")

    bad = subprocess.run(
        [str(built_binary("kotel-render")), "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0",
         "--store", str(tmp_path / "store"), "--tls-cert", pki.server.cert, "--tls-key", pki.client.key],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert bad.returncode == 2, bad.stderr
    assert "--tls-key" in bad.stderr and "does not belong" in bad.stderr, bad.stderr
    assert "PRIVATE KEY" not in bad.stderr

    proc, stderr, port = _start(tmp_path, "--tls-cert", pki.server.cert, "--tls-key", pki.server.key,
                                "--tls-client-ca", pki.ca)
    try:
        line = stderr.next_line(timeout=30)
        assert line and "client certificates required" in line, line
        assert re.search(rf"served as https://127\.0\.0\.1:{port}/artifacts/", line), line

        ctx = ssl.create_default_context(cafile=pki.ca)
        ctx.load_cert_chain(pki.client.cert, pki.client.key)
        assert _get(port, ctx) == 200, "mTLS client gets the gallery"
        no_cert = ssl.create_default_context(cafile=pki.ca)
        assert _get(port, no_cert) != 200, "a client without a certificate is refused"
        wrong = ssl.create_default_context(cafile=pki.wrong_ca)
        wrong.load_cert_chain(pki.client.cert, pki.client.key)
        assert _get(port, wrong) != 200, "a client trusting another CA refuses the server"
        # The server logs a failed handshake once it has seen it fail, which may be after the
        # client saw it: wait for the line (bounded) before stopping the server.
        logged = _wait_for_line(stderr, "kotel_render.tls.handshake_failed", timeout=30)
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    rest = stderr.rest()
    assert logged, rest
