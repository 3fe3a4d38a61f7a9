"""A small HTTP/1.1 server for read-only endpoints (``/metrics``): asyncio streams and h11.

aiohttp's server would do, but aiohttp's package imports its whole client on the way to
``aiohttp.web`` (the connector builds two TLS contexts from the system's CA store at
import): about 0.1 s and 11 MB on every start, for two GET routes. h11 does the protocol
(request parsing with a size limit, keep-alive, HEAD, HTTP/1.0 peers, framing); this module
routes a path to a handler and keeps track of its connections so that stopping closes them.
aiohttp stays for the clients that post (webhook, Alertmanager) and is imported by them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus

import h11

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024  # request line and headers
MAX_BODY = 64 * 1024  # these endpoints take no body; a small one is read and ignored
IDLE_TIMEOUT = 75.0  # an idle keep-alive connection is closed after this (aiohttp's default)
READ_SIZE = 16 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]  # names in lower case; repeated headers joined with ", "

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class HttpServer:
    """Serves ``routes`` (path → handler) for GET and HEAD."""

    def __init__(self, routes: dict[str, Handler], *, idle_timeout: float = IDLE_TIMEOUT
                 ) -> None:
        self.routes = routes
        self.idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; return the bound (host, port). An OSError says why it cannot."""
        self._server = await asyncio.start_server(self._client, host, port,
                                                  reuse_address=True, limit=READ_SIZE)
        bound = self._server.sockets[0].getsockname() if self._server.sockets else (host, port)
        return str(bound[0]), int(bound[1])

    async def stop(self) -> None:
        """Stop listening and close every connection (a request in flight is cut short)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)

    # -- one connection ---------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            while await self._serve_one(conn, reader, writer):
                conn.start_next_cycle()
        except (ConnectionError, TimeoutError):
            pass  # the peer went away or stayed silent: nothing to answer
        except Exception:
            log.exception("an HTTP connection failed")
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _serve_one(self, conn: h11.Connection, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> bool:
        """Answer one request; True when the connection may carry another."""
        try:
            event = await self._next(conn, reader)
            if not isinstance(event, h11.Request):
                return False  # closed by the peer (or nothing but a closed connection)
            request = _request(event)
            body = 0
            while not isinstance(event := await self._next(conn, reader), h11.EndOfMessage):
                if isinstance(event, h11.Data):
                    body += len(event.data)
                    if body > MAX_BODY:
                        await self._send(conn, writer, request.method,
                                         _error(413, "request body too large", close=True))
                        return False
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await self._send(conn, writer, "GET",
                                 _error(exc.error_status_hint, "malformed request", close=True))
            return False
        response = await self._respond(request)
        await self._send(conn, writer, request.method, response)
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    async def _next(self, conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(READ_SIZE), self.idle_timeout)
                conn.receive_data(data)  # b"" is the peer closing
                continue
            if event is h11.PAUSED:
                return h11.ConnectionClosed()
            assert isinstance(event, h11.Event)
            return event

    async def _respond(self, request: Request) -> Response:
        handler = self.routes.get(request.path)
        if handler is None:
            return _error(404, "not found")
        if request.method not in ("GET", "HEAD"):
            response = _error(405, "method not allowed")
            response.headers["Allow"] = "GET, HEAD"
            return response
        try:
            return await handler(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return _error(500, "internal error (see podod's log)")

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, method: str,
                    response: Response) -> None:
        headers = [("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body))),
                   ("Date", formatdate(usegmt=True)), *response.headers.items()]
        data = conn.send(h11.Response(status_code=response.status, headers=headers,
                                      reason=HTTPStatus(response.status).phrase))
        if method != "HEAD" and response.body:
            data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
        data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
        writer.write(data)
        await writer.drain()


def _request(event: h11.Request) -> Request:
    target = event.target.decode("latin-1")
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return Request(event.method.decode("ascii", "replace"), path, query, headers)


def _error(status: int, text: str, *, close: bool = False) -> Response:
    return Response(f"{status}: {text}\n".encode(), status=status,
                    headers={"Connection": "close"} if close else {})
