"""The ``email`` channel over TLS against a real aiosmtpd server: STARTTLS and implicit TLS (SMTPS) with a private CA
given as ``ca_file``, and a server certificate the daemon must refuse. Key material is made per test in ``tmp_path``
with ``cryptography`` (a throwaway CA and a server certificate for 127.0.0.1/localhost) and never leaves it.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.multistore import Mailbox, _authenticator, free_port, multi_stack

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


class TlsMailbox(Mailbox):
    """Mailbox that also records the TLS version of the connection each message came over (None: plaintext)."""

    def __init__(self) -> None:
        super().__init__()
        self.tls_versions: list[str | None] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        ssl_object = server.transport.get_extra_info("ssl_object")
        self.tls_versions.append(ssl_object.version() if ssl_object is not None else None)
        return await super().handle_DATA(server, session, envelope)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _server_context(
    tmp_path: Path,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    names: tuple[str, ...] = ("127.0.0.1", "localhost"),
) -> ssl.SSLContext:
    """A server SSLContext whose certificate (for ``names``) is signed by the given CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


def _write_ca(tmp_path: Path, cert: x509.Certificate) -> str:
    path = tmp_path / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


@contextlib.contextmanager
def _smtp_server(mailbox: Mailbox, port: int, context: ssl.SSLContext, security: str) -> Iterator[None]:
    """aiosmtpd with AUTH only over TLS: STARTTLS required (``starttls``) or TLS from the first byte (``tls``).

    For SMTPS ``auth_require_tls`` is off because aiosmtpd only counts STARTTLS as TLS and would hide AUTH; the
    socket is TLS from the first byte there anyway, and :class:`TlsMailbox` checks it for every message."""
    tls: dict[str, Any] = (
        {"tls_context": context, "require_starttls": True, "auth_require_tls": True}
        if security == "starttls"
        else {"ssl_context": context, "server_hostname": "localhost", "auth_require_tls": False}
    )
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, authenticator=_authenticator, auth_required=True, **tls
    )
    controller.start()
    try:
        yield
    finally:
        controller.stop()


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_email_over_tls_with_a_private_ca_arrives(tmp_path: Path, security: str) -> None:
    """With ``ca_file`` naming the private CA, STARTTLS and implicit TLS both deliver, and the mail came over TLS."""
    ca_key, ca_cert = _ca("Test Mail CA")
    context = _server_context(tmp_path, ca_key, ca_cert)
    mailbox, port = TlsMailbox(), free_port()
    smtp = {"port": port, "security": security, "ca_file": _write_ca(tmp_path, ca_cert), "timeout": 10}
    with _smtp_server(mailbox, port, context, security):
        async with multi_stack(tmp_path, smtp=smtp) as multi:
            await multi.generic().send("order.paid", {"order_id": "T-1", "email": "eve@example.org"})
            await multi.drain()
            job = await multi.job("generic", "T-1")
            assert job.state == "delivered", job.last_error
            [envelope] = mailbox.messages
            assert envelope.rcpt_tos == ["eve@example.org"]
            assert message_from_bytes(envelope.content)["Subject"] == "Order T-1"
            assert mailbox.tls_versions[0] in {"TLSv1.2", "TLSv1.3"}
            assert "smtp-pass-123" not in multi.logs.getvalue()


@pytest.mark.parametrize("security", ["starttls", "tls"])
@pytest.mark.parametrize("problem", ["other-ca", "wrong-name"])
async def test_email_to_an_unverifiable_server_is_retried_never_plaintext(
    tmp_path: Path, security: str, problem: str
) -> None:
    """Cert not from ``ca_file`` or for another host: nothing sent (no plaintext fallback), job Retry, not dead."""
    trusted_key, trusted_cert = _ca("Trusted Mail CA")
    if problem == "other-ca":
        other_key, other_cert = _ca("Someone Else's CA")
        context = _server_context(tmp_path, other_key, other_cert)
    else:
        context = _server_context(tmp_path, trusted_key, trusted_cert, names=("mail.example.org",))
    mailbox, port = TlsMailbox(), free_port()
    smtp = {"port": port, "security": security, "ca_file": _write_ca(tmp_path, trusted_cert), "timeout": 10}
    with _smtp_server(mailbox, port, context, security):
        async with multi_stack(tmp_path, smtp=smtp) as multi:
            await multi.generic().send("order.paid", {"order_id": "T-2", "email": "eve@example.org"})
            await multi.drain()
            job = await multi.job("generic", "T-2")
            assert job.state == "retry_wait", job.last_error
            # aiosmtplib wraps an SMTPS handshake failure, a failed STARTTLS handshake surfaces as the ssl error
            assert job.last_error in {"SMTP failure (SMTPConnectError)", "SMTP failure (SSLCertVerificationError)"}
            assert job.content is not None
            assert mailbox.messages == [] and mailbox.tls_versions == []
            assert "smtp-pass-123" not in multi.logs.getvalue()
