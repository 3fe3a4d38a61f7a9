"""TLS certificate probes: STARTTLS for SMTP (25/587) and IMAP (143), implicit TLS (465, 993,
443). Each probe reads the server's certificate even when it does not verify, so an expired
or self-signed certificate still reports its expiry, and says separately whether the chain
and host name verify against the trust store."""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import Literal

Mode = Literal["smtp-starttls", "imap-starttls", "implicit"]

DEFAULT_ENDPOINTS: dict[str, tuple[int, Mode]] = {
    "smtp": (25, "smtp-starttls"),
    "submission": (587, "smtp-starttls"),
    "smtps": (465, "implicit"),
    "imap": (143, "imap-starttls"),
    "imaps": (993, "implicit"),
    "https": (443, "implicit"),
}


@dataclass
class TlsResult:
    endpoint: str
    ok: bool  # a certificate was obtained
    valid: bool  # chain and host name verify
    not_after: float | None = None
    subject: str | None = None
    error: str | None = None
    verify_error: str | None = None
    duration: float = 0.0


class ProbeError(Exception):
    pass


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readline()
    if not line:
        raise ProbeError("the server closed the connection")
    return line


async def _smtp_starttls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async def response() -> bytes:
        while True:
            line = await _read_line(reader)
            if line[3:4] != b"-":
                return line

    banner = await response()
    if not banner.startswith(b"220"):
        raise ProbeError(f"unexpected SMTP banner {banner[:60]!r}")
    writer.write(b"EHLO podod.invalid\r\n")
    await writer.drain()
    await response()
    writer.write(b"STARTTLS\r\n")
    await writer.drain()
    answer = await response()
    if not answer.startswith(b"220"):
        raise ProbeError("the server does not offer STARTTLS")


async def _imap_starttls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    greeting = await _read_line(reader)
    if not greeting.startswith(b"* OK"):
        raise ProbeError(f"unexpected IMAP greeting {greeting[:60]!r}")
    writer.write(b"a1 STARTTLS\r\n")
    await writer.drain()
    while True:
        line = await _read_line(reader)
        if line.startswith(b"a1 "):
            if not line.startswith(b"a1 OK"):
                raise ProbeError("the server does not offer STARTTLS")
            return


def _certificate(der: bytes) -> tuple[float, str]:
    from cryptography import x509  # with the first certificate, not at podod's start-up

    cert = x509.load_der_x509_certificate(der)
    return cert.not_valid_after_utc.timestamp(), cert.subject.rfc4514_string()


async def _handshake(host: str, port: int, mode: Mode, server_name: str,
                     context: ssl.SSLContext, timeout: float) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        if mode == "smtp-starttls":
            await asyncio.wait_for(_smtp_starttls(reader, writer), timeout)
        elif mode == "imap-starttls":
            await asyncio.wait_for(_imap_starttls(reader, writer), timeout)
        if mode == "implicit":
            writer.close()
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                host, port, ssl=context, server_hostname=server_name), timeout)
        else:
            await asyncio.wait_for(writer.start_tls(context, server_hostname=server_name),
                                   timeout)
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not der:
            raise ProbeError("the server sent no certificate")
        return bytes(der)
    finally:
        writer.close()


async def probe(endpoint: str, host: str, port: int, mode: Mode, *, server_name: str | None = None,
                ca_file: str | None = None, timeout: float = 10.0) -> TlsResult:
    """Fetch the certificate (unverified), then check whether it verifies."""
    started = time.monotonic()
    name = server_name or host
    loose = ssl.create_default_context()
    loose.check_hostname = False
    loose.verify_mode = ssl.CERT_NONE
    try:
        der = await _handshake(host, port, mode, name, loose, timeout)
        not_after, subject = _certificate(der)
    except (OSError, ProbeError, TimeoutError, ssl.SSLError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        return TlsResult(endpoint, False, False, error=reason,
                         duration=time.monotonic() - started)
    strict = ssl.create_default_context(cafile=ca_file)
    verify_error = None
    try:
        await _handshake(host, port, mode, name, strict, timeout)
    except ssl.SSLCertVerificationError as exc:
        verify_error = exc.verify_message or str(exc)
    except (OSError, ProbeError, TimeoutError, ssl.SSLError) as exc:
        verify_error = str(exc) or type(exc).__name__
    return TlsResult(endpoint, True, verify_error is None, not_after, subject,
                     verify_error=verify_error, duration=time.monotonic() - started)
