"""Protocol probes: does the service answer the way it should, and how fast?

Each probe returns a :class:`ProbeResult`; an unreachable port, a wrong greeting or a timeout
is a failed result with a one-line detail, never an exception. TLS probes (smtps, imaps,
https) do not verify certificates: they measure whether the service answers; certificate
expiry and validity are the tls plugin's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProbeResult:
    name: str
    ok: bool
    duration: float
    detail: str


class ProbeError(Exception):
    """The service answered, but not as it should."""


def _insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _open(host: str, port: int, tls: bool
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port, ssl=_insecure_context() if tls else None,
                                         server_hostname=host if tls else None)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1)


async def _line(reader: asyncio.StreamReader) -> str:
    raw = await reader.readline()
    if not raw:
        raise ProbeError("the connection was closed before an answer")
    return raw.decode("utf-8", "replace").rstrip("\r\n")


async def smtp(host: str, port: int, *, tls: bool = False) -> str:
    """Read the (possibly multi-line) 220 banner, then QUIT."""
    reader, writer = await _open(host, port, tls)
    try:
        while True:
            line = await _line(reader)
            if len(line) < 3 or not line[:3].isdigit():
                raise ProbeError(f"not an SMTP banner: {line[:80]!r}")
            if line[:3] != "220":
                raise ProbeError(f"SMTP banner {line[:120]}")
            if line[3:4] != "-":
                break
        writer.write(b"QUIT\r\n")
        with contextlib.suppress(Exception):
            await writer.drain()
        return line[4:].strip()
    finally:
        await _close(writer)


async def imap(host: str, port: int, *, tls: bool = False) -> str:
    """Read the greeting (``* OK``), ask CAPABILITY, expect ``OK``, then LOGOUT."""
    reader, writer = await _open(host, port, tls)
    try:
        greeting = await _line(reader)
        if not greeting.upper().startswith(("* OK", "* PREAUTH")):
            raise ProbeError(f"IMAP greeting {greeting[:120]!r}")
        writer.write(b"p1 CAPABILITY\r\n")
        await writer.drain()
        capabilities = ""
        while True:
            line = await _line(reader)
            if line.upper().startswith("* CAPABILITY"):
                capabilities = line[len("* CAPABILITY"):].strip()
            elif line.startswith("p1 "):
                if not line[3:].upper().startswith("OK"):
                    raise ProbeError(f"CAPABILITY answered {line[3:120]!r}")
                break
        if "IMAP4REV1" not in capabilities.upper().split():
            raise ProbeError("CAPABILITY did not list IMAP4rev1")
        writer.write(b"p2 LOGOUT\r\n")
        with contextlib.suppress(Exception):
            await writer.drain()
        return capabilities
    finally:
        await _close(writer)


async def tcp(host: str, port: int) -> str:
    _reader, writer = await asyncio.open_connection(host, port)
    await _close(writer)
    return "connected"


async def http(url: str) -> str:
    """GET ``url`` (no redirects followed); any status below 400 is an answer."""
    import aiohttp

    async with aiohttp.ClientSession() as session, \
            session.get(url, allow_redirects=False, ssl=False) as response:
        await response.read()
        if response.status >= 400:
            raise ProbeError(f"HTTP {response.status} from {url}")
        return f"HTTP {response.status}"


POSTGRES_HUNG_UP = ("the connection was closed before PostgreSQL answered (nothing listening "
                    "where it leads, e.g. at the far end of an SSH tunnel?)")


def describe_postgres_failure(exc: BaseException) -> str:
    """Like :func:`describe_failure`, but a far end that hangs up before PostgreSQL's first
    answer is one sentence however it shows: asyncpg's ``connection_lost`` or a reset (which
    of the two depends on timing, e.g. an SSH tunnel's channel open failing)."""
    if isinstance(exc, ConnectionResetError):
        return POSTGRES_HUNG_UP
    return _describe(exc)


async def postgres(connect_kwargs: dict[str, Any]) -> str:
    import asyncpg

    try:
        conn = await asyncpg.connect(**connect_kwargs)
    except ConnectionResetError as exc:
        raise ProbeError(POSTGRES_HUNG_UP) from exc
    try:
        value = await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
    if value != 1:
        raise ProbeError(f"SELECT 1 returned {value!r}")
    return "SELECT 1 ok"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = " ".join(str(exc).split())
    if "connection_lost" in text:  # asyncpg's words when the far end hangs up at once
        return POSTGRES_HUNG_UP
    return text[:200] or type(exc).__name__


describe_failure = _describe


async def run_probe(name: str, call: Callable[[], Awaitable[str]], timeout: float
                    ) -> ProbeResult:
    started = time.monotonic()
    try:
        detail = await asyncio.wait_for(call(), timeout)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # every failure is a result, never an exception
        return ProbeResult(name, False, time.monotonic() - started, _describe(exc))
    return ProbeResult(name, True, time.monotonic() - started, " ".join(detail.split())[:200])
