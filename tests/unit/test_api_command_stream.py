"""The API's command event stream: which Accept headers ask for it, and that the bus's
progress callback never waits on a slow client (reports of one phase coalesce, the oldest
are dropped past a bound, the reply is always the last event)."""

from __future__ import annotations

import asyncio
import json

import pytest

from podod.frontends import api_progress
from podod.frontends.api_progress import CommandStream, wants_stream


@pytest.mark.parametrize(("accept", "wanted"), [
    ("text/event-stream", True),
    ("Text/Event-Stream; charset=utf-8", True),
    ("application/json;q=0.5, text/event-stream", True),
    ("text/event-stream, application/json", True),
    ("application/json, text/event-stream;q=0.5", False),
    ("text/event-stream;q=0", False),
    ("text/event-stream;q=x", False),
    ("*/*", False),
    ("application/json", False),
    ("", False),
])
def test_which_accept_headers_ask_for_the_stream(accept: str, wanted: bool) -> None:
    assert wants_stream(accept) is wanted


class SlowClient:
    """A response whose writes wait until the test lets them through."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.gate = asyncio.Event()

    async def write(self, data: bytes) -> None:
        await self.gate.wait()
        self.written.append(data)

    async def write_eof(self) -> None:
        self.written.append(b"EOF")


def _names(written: list[bytes]) -> list[tuple[str, dict[str, object]]]:
    out = []
    for chunk in written:
        if chunk.startswith(b"event: progress"):
            out.append(("progress", json.loads(chunk.split(b"data: ", 1)[1])))
        elif chunk.startswith(b"event: "):
            out.append((chunk.split(b"\n")[0][7:].decode(), {}))
    return out


def test_progress_never_waits_on_a_slow_client() -> None:
    async def run() -> list[bytes]:
        client = SlowClient()
        stream = CommandStream(client)  # type: ignore[arg-type]
        stream.start()
        # the handler reports while the client reads nothing: every call returns at once
        await asyncio.wait_for(stream.progress("reading the file"), 0.1)
        for done in range(1, 1001):
            await asyncio.wait_for(stream.progress("hashing passwords", done, 1000), 0.1)
        for n in range(200):
            await asyncio.wait_for(stream.progress(f"step {n}", 1, 1), 0.1)
        assert len(stream.waiting) <= api_progress.WAITING
        client.gate.set()
        await stream.finish("reply", b'{"ok": true}')
        return client.written

    written = asyncio.run(run())
    events = _names(written)
    assert events[-1] == ("reply", {}) and written[-1] == b"EOF"
    progress = [data for name, data in events if name == "progress"]
    # one phase's reports coalesce to its latest; past the bound the oldest went first
    assert len(progress) <= api_progress.WAITING + 1
    assert progress[-1] == {"message": "step 199", "done": 1, "total": 1}
    assert all(p["message"] != "hashing passwords" or p["done"] == 1000 for p in progress)


def test_a_client_that_went_away_stops_the_writing_not_the_command() -> None:
    class Gone:
        async def write(self, data: bytes) -> None:
            raise ConnectionResetError("gone")

        async def write_eof(self) -> None:
            raise AssertionError("nothing is written after the client went away")

    async def run() -> None:
        stream = CommandStream(Gone())  # type: ignore[arg-type]
        stream.start()
        await stream.progress("writing rows", 1, 2)
        await asyncio.sleep(0.01)
        await stream.progress("writing rows", 2, 2)  # still returns at once
        await stream.finish("reply", b"{}")
        assert stream.gone

    asyncio.run(run())
