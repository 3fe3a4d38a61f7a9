"""Opening an aiohttp runner's TCP listener, for /metrics and the REST API alike: a port that
cannot be had is one sentence naming the config keys, and the address really bound (port 0
picks one) is returned."""

from __future__ import annotations

import os
import ssl

from aiohttp import web


async def start_site(runner: web.AppRunner, host: str, port: int, keys: str,
                     ssl_context: ssl.SSLContext | None = None) -> tuple[str, int]:
    """Listen on ``host:port`` with ``runner`` (already set up); the bound address. On
    failure the runner is cleaned up and RuntimeError says why, naming ``keys``."""
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise RuntimeError(f"{keys}: cannot listen on {host}:{port} ({reason})") from None
    server = site._server
    sockets = list(server.sockets if server else [])  # type: ignore[attr-defined]
    bound = sockets[0].getsockname() if sockets else (host, port)
    return str(bound[0]), int(bound[1])
