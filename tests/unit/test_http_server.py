"""The small HTTP/1.1 server behind /metrics, met over real loopback sockets: routes, HEAD,
keep-alive, HTTP/1.0, and what it answers to bad requests; stopping closes idle
connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from podod.frontends.http_server import HttpServer, Request, Response

seen: list[Request] = []


async def hello(request: Request) -> Response:
    seen.append(request)
    return Response(b"hello\n", content_type="text/plain; version=0.0.4; charset=utf-8",
                    headers={"Content-Encoding": "identity"})


async def broken(request: Request) -> Response:
    raise RuntimeError("boom")


@pytest.fixture
async def server() -> AsyncIterator[tuple[HttpServer, int]]:
    seen.clear()
    http = HttpServer({"/metrics": hello, "/broken": broken}, idle_timeout=0.5)
    _host, port = await http.start("127.0.0.1", 0)
    yield http, port
    await http.stop()


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


async def test_get_head_and_keep_alive(server: tuple[HttpServer, int]) -> None:
    _http, port = server
    answer = await exchange(port, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\n"
                                  b"X-Twice: 1\r\nX-Twice: 2\r\n\r\n"
                                  b"HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
                                  b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    responses = answer.split(b"HTTP/1.1 ")[1:]
    assert len(responses) == 3  # one connection, three answers, closed on request
    for response in responses:
        assert response.startswith(b"200 OK\r\n")
        assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n" in response
        assert b"Content-Length: 6\r\n" in response
        assert b"Content-Encoding: identity\r\n" in response
    assert responses[0].endswith(b"\r\n\r\nhello\n")
    assert responses[1].endswith(b"\r\n\r\n")  # HEAD: the GET's headers, no body
    assert seen[0].path == "/metrics" and seen[0].query == "x=1"
    assert seen[0].header("accept") == "text/plain" and seen[0].header("X-Twice") == "1, 2"
    assert [r.method for r in seen] == ["GET", "HEAD", "GET"]


async def test_http_1_0_gets_an_answer_and_a_close(server: tuple[HttpServer, int]) -> None:
    _http, port = server
    answer = await exchange(port, b"GET /metrics HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"hello\n")


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n", b"404 Not Found"),
    (b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi", b"405 Method Not "),
    (b"GET /broken HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", b"500 Internal Server"),
    (b"NOT HTTP AT ALL\r\n\r\n", b"400 Bad Request"),
    (b"GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000,
     b"413 Request Entity Too Large"),
])
async def test_bad_requests_get_a_status_not_a_crash(
        server: tuple[HttpServer, int], request_bytes: bytes, status: bytes) -> None:
    _http, port = server
    if status.startswith((b"404", b"405")):
        request_bytes += b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    answer = await exchange(port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]
    if status.startswith(b"405"):
        assert b"Allow: GET, HEAD\r\n" in answer
    if status.startswith((b"404", b"405")):  # the connection stays usable
        assert answer.endswith(b"hello\n")
    # and the server still answers the next client
    assert (await exchange(port, b"GET /metrics HTTP/1.0\r\n\r\n")).endswith(b"hello\n")


async def test_idle_connections_are_closed(server: tuple[HttpServer, int]) -> None:
    _http, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # nothing sent: the server closes after its idle timeout (0.5 s here)
    assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()


async def test_stop_closes_kept_alive_connections_and_frees_the_port() -> None:
    http = HttpServer({"/metrics": hello})
    _host, port = await http.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
    await writer.drain()
    assert (await reader.readuntil(b"hello\n")).startswith(b"HTTP/1.1 200 OK")
    await asyncio.wait_for(http.stop(), 30)
    assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    again = HttpServer({"/metrics": hello})  # the port can be taken again at once (reload)
    assert (await again.start("127.0.0.1", port))[1] == port
    await again.stop()
