"""The tls plugin against real TLS servers on loopback, with certificates the test makes."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from podod.plugins import Registry, load_plugins

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime.now(dt.UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_ca(tmp: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "podod test CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


def make_server_cert(tmp: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                     name: str, not_after: dt.datetime) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=30)).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[dict[str, object]]:
    ca, ca_key, ca_path = make_ca(tmp_path)
    good_until = (NOW + dt.timedelta(days=40)).replace(microsecond=0)
    good = make_server_cert(tmp_path, ca, ca_key, "good", good_until)
    expired = make_server_cert(tmp_path, ca, ca_key, "expired", NOW - dt.timedelta(days=2))

    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        writer.close()

    implicit = await asyncio.start_server(hello, "127.0.0.1", 0, ssl=good)
    stale = await asyncio.start_server(hello, "127.0.0.1", 0, ssl=expired)
    smtp_port = free_port()
    smtp = Controller(object(), hostname="127.0.0.1", port=smtp_port, tls_context=good,
                      server_hostname="localhost")
    smtp.start()
    yield {
        "ca": str(ca_path), "good_until": good_until.timestamp(),
        "implicit": implicit.sockets[0].getsockname()[1],
        "expired": stale.sockets[0].getsockname()[1], "smtp": smtp_port,
    }
    smtp.stop()
    implicit.close()
    stale.close()


def load_tls_plugin(settings: dict[str, object]) -> Registry:
    registry = Registry({"tls": settings})
    infos = load_plugins(registry, [REPO / "plugins"], use_entry_points=False)
    assert next(i for i in infos if i.name == "tls").loaded
    return registry


async def test_starttls_and_implicit_tls_expiry_and_validity(servers: dict[str, int]) -> None:
    registry = load_tls_plugin({
        "endpoints": {"submission": servers["smtp"], "imaps": servers["implicit"],
                      "old": servers["expired"], "closed": free_port()},
        "ca_file": servers["ca"], "server_name": "localhost", "timeout": "3s"})
    ctx = SimpleNamespace(server=SimpleNamespace(name="mx1", host="127.0.0.1", local=False))
    samples = await registry.collectors["tls"].func(ctx)
    by = {(s.series, dict(s.labels)["endpoint"]): s.value for s in samples}
    assert by[("tls_cert_not_after_timestamp_seconds", "submission")] == servers["good_until"]
    assert by[("tls_cert_valid", "submission")] == 1.0
    assert by[("tls_cert_not_after_timestamp_seconds", "imaps")] == servers["good_until"]
    assert by[("tls_cert_valid", "imaps")] == 1.0
    assert by[("tls_cert_not_after_timestamp_seconds", "old")] < NOW.timestamp()
    assert by[("tls_cert_valid", "old")] == 0.0  # expired: still reported, not valid
    assert by[("tls_probe_success", "closed")] == 0.0
    assert ("tls_cert_valid", "closed") not in by
    assert all(s.server == "mx1" for s in samples)


async def test_untrusted_chain_is_not_valid(servers: dict[str, int]) -> None:
    probe = importlib.import_module("podod_plugins.tls.probe") \
        if "podod_plugins.tls.probe" in sys.modules else None
    if probe is None:
        load_tls_plugin({})
        probe = importlib.import_module("podod_plugins.tls.probe")
    result = await probe.probe("imaps", "127.0.0.1", servers["implicit"], "implicit",
                               server_name="localhost", timeout=3)
    assert result.ok and not result.valid
    assert "self-signed certificate in certificate chain" in (result.verify_error or "") or \
        "unable to get local issuer certificate" in (result.verify_error or "")


def test_bad_settings_fail_the_plugin_by_name() -> None:
    registry = Registry({"tls": {"endpoints": {"smtp": "twenty-five"}}})
    infos = load_plugins(registry, [REPO / "plugins"], use_entry_points=False)
    tls = next(i for i in infos if i.name == "tls")
    assert not tls.loaded
    assert tls.error == "ValueError: plugins.settings.tls.endpoints.smtp must be a port number"
