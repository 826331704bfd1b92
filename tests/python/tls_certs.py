"""Test certificates made on the spot, for kotel's TLS and mTLS tests.

Nothing here is checked in: every run makes a fresh private key for each party. It makes two
unrelated certificate authorities (the trusted one and a "wrong" one), and under them:

- ``server``: a server certificate for localhost, 127.0.0.1 and ::1, signed by the trusted CA;
- ``client``: a client certificate (for mTLS) signed by the trusted CA;
- ``server_expired`` / ``client_expired``: the same, but valid only in the past;
- ``wrong_server`` / ``wrong_client``: the same names, signed by the wrong CA.

Used as a module (``make_pki(dir)``) by the pytest tests, and as a command
(``python3 tls_certs.py OUT_DIR``) by the Rust tests, which read the JSON it prints.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_HOSTS = ["localhost"]
_IPS = ["127.0.0.1", "::1"]


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key, as PEM file paths."""

    cert: str
    key: str


@dataclass(frozen=True)
class Pki:
    """Every file a TLS test may need, as paths."""

    ca: str
    wrong_ca: str
    server: Pair
    client: Pair
    server_expired: Pair
    client_expired: Pair
    wrong_server: Pair
    wrong_client: Pair


class _Authority:
    def __init__(self, name: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, common_name: str, server: bool, expired: bool) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        if expired:
            start, end = now - dt.timedelta(days=10), now - dt.timedelta(days=1)
        else:
            start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=7)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            names: list[x509.GeneralName] = [x509.DNSName(h) for h in _HOSTS]
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in _IPS]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def make_pki(out_dir: str | Path) -> Pki:
    """Writes a fresh set of keys and certificates into ``out_dir`` and returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trusted, wrong = _Authority("kotel test CA"), _Authority("kotel wrong CA")

    def write(name: str, data: bytes) -> str:
        path = out / name
        path.write_bytes(data)
        path.chmod(0o600)
        return str(path)

    def pair(name: str, ca: _Authority, server: bool, expired: bool) -> Pair:
        cert, key = ca.issue(f"kotel test {name}", server, expired)
        return Pair(cert=write(f"{name}.crt", cert), key=write(f"{name}.key", key))

    return Pki(
        ca=write("ca.crt", trusted.cert_pem()),
        wrong_ca=write("wrong-ca.crt", wrong.cert_pem()),
        server=pair("server", trusted, server=True, expired=False),
        client=pair("client", trusted, server=False, expired=False),
        server_expired=pair("server-expired", trusted, server=True, expired=True),
        client_expired=pair("client-expired", trusted, server=False, expired=True),
        wrong_server=pair("wrong-server", wrong, server=True, expired=False),
        wrong_client=pair("wrong-client", wrong, server=False, expired=False),
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: tls_certs.py OUT_DIR")
    print(json.dumps(asdict(make_pki(sys.argv[1]))))
