"""The guarded transport (parley.tools.transport): connects to vetted addresses, and TLS still
checks the URL's hostname (SNI and certificate).

The HTTPS peer is ``tests/support/http_tool_server.py`` with a certificate for ``tool.test``
made here. ``tool.test`` and ``other.test`` are in no DNS: a guard pinned to 127.0.0.1 is their
only resolver, so a request that works went to the vetted address.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from parley.tools.ssrf import AddressGuard, ToolRefused
from parley.tools.transport import guarded_client

from tests.support.http_tool_server import HttpToolServer, running_http_tool_server


class PinnedGuard(AddressGuard):
    """Resolves every name to 127.0.0.1 and records what it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        return ["127.0.0.1"]


@dataclass
class TlsPeer:
    server: HttpToolServer
    #: The client context that trusts the peer's certificate.
    trusting: ssl.SSLContext
    #: Server names the peer was asked for (SNI), one per handshake.
    sni: list[str | None] = field(default_factory=list)


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_peer(tmp_path: Path) -> Iterator[TlsPeer]:
    cert, key = _self_signed(tmp_path, "tool.test")
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    sni: list[str | None] = []
    served.sni_callback = lambda _sock, name, _ctx: sni.append(name)
    with running_http_tool_server(tls=served) as server:
        yield TlsPeer(server, ssl.create_default_context(cafile=str(cert)), sni)


async def test_https_checks_the_certificate_against_the_url_hostname(tls_peer: TlsPeer) -> None:
    guard = PinnedGuard()
    port = tls_peer.server.port
    async with guarded_client(guard, timeout_s=5.0, ssl_context=tls_peer.trusting) as client:
        response = await client.post(f"https://tool.test:{port}/answer", content=b'{"x": 1}')
        assert response.status_code == 200
        assert response.json()["received"] == {"x": 1}

        with pytest.raises(httpx2.ConnectError, match=r"Hostname mismatch|doesn't match"):
            await client.post(f"https://other.test:{port}/answer", content=b"{}")

    assert tls_peer.sni == ["tool.test", "other.test"]  # SNI is the hostname, not 127.0.0.1
    assert guard.asked == [("tool.test", port), ("other.test", port)]
    assert len(tls_peer.server.requests) == 1


async def test_https_verifies_certificates_by_default(tls_peer: TlsPeer) -> None:
    async with guarded_client(PinnedGuard(), timeout_s=5.0) as client:
        with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.post(f"https://tool.test:{tls_peer.server.port}/answer", content=b"{}")
    assert tls_peer.server.requests == []


async def test_every_new_connection_asks_the_guard() -> None:
    """No connection is opened without a fresh check: two clients, two resolutions."""
    with running_http_tool_server() as server:
        guard = PinnedGuard()
        for _ in range(2):
            async with guarded_client(guard, timeout_s=5.0) as client:
                assert (await client.post(f"http://tool.test:{server.port}/answer", content=b"1")).is_success
    assert guard.asked == [("tool.test", server.port)] * 2


async def test_a_refusal_comes_out_of_the_client_as_tool_refused() -> None:
    async with guarded_client(AddressGuard(), timeout_s=5.0) as client:
        with pytest.raises(ToolRefused, match=r"localhost resolves to 127\.0\.0\.1"):
            await client.get("http://localhost:1/")  # were the guard broken, loopback would refuse
