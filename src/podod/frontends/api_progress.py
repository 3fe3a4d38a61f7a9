"""A command's progress over HTTP: ``POST /api/commands`` and ``POST /api/plans/{id}`` with
``Accept: text/event-stream`` answer a Server-Sent Events stream of the command's ``progress``
events, then one ``reply`` (or ``problem``) event whose data is exactly the JSON body the
same request without the header gets (docs/api.md, "Progress of a long command").

The stream is the caller's own response: nobody else sees a command's progress, and the bus
authorizes and audits the request as it does any other. The bus's progress callback never
waits on the client (the handler may be inside a database transaction): reports go into a
small bounded queue that a writer task empties; a report of the same phase replaces the one
still waiting, and when a client reads too slowly the oldest waiting reports are dropped,
never the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

STREAM = "text/event-stream"
KEEP_ALIVE = 15.0  # seconds between comments while a long phase reports nothing
WAITING = 64  # progress events held for a slow client (the oldest go first)


def wants_stream(accept: str) -> bool:
    """Whether an Accept header asks for the event stream: ``text/event-stream`` named with
    a q above 0 and at least the q of ``application/json`` (when that is named too)."""
    quality: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        quality[media] = max(q, quality.get(media, 0.0))
    ours = quality.get(STREAM, 0.0)
    return ours > 0 and ours >= quality.get("application/json", 0.0)


def _event(name: str, data: Any) -> bytes:
    text = json.dumps(data, ensure_ascii=False, default=str)  # one line: no raw newline
    return f"event: {name}\ndata: {text}\n\n".encode("utf-8", "replace")


class CommandStream:
    """One request's event stream: :meth:`progress` is the bus's progress callback."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.waiting: deque[tuple[str, dict[str, Any]]] = deque()
        self.dropped = 0
        self.wake = asyncio.Event()
        self.ended = False
        self.gone = False  # the client went away: nothing more is written
        self.writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.writer = asyncio.create_task(self._write(), name="api-command-stream")

    async def progress(self, message: str, done: int | None = None,
                       total: int | None = None) -> None:
        event = {"message": message[:500], "done": done, "total": total}
        if self.waiting and self.waiting[-1][1]["message"] == event["message"]:
            self.waiting[-1] = ("progress", event)  # the same phase: only the latest counts
        else:
            self.waiting.append(("progress", event))
            if len(self.waiting) > WAITING:
                self.waiting.popleft()
                self.dropped += 1
        self.wake.set()

    async def _write(self) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), KEEP_ALIVE)
                self.wake.clear()
                if not self.waiting and not self.ended:
                    await self.response.write(b": keep-alive\n\n")
                while self.waiting:
                    name, data = self.waiting.popleft()
                    await self.response.write(_event(name, data))
                if self.ended:
                    return
        except (ConnectionError, RuntimeError, OSError):
            self.gone = True  # the command goes on; its reply is audited as usual

    async def finish(self, name: str, body: bytes) -> None:
        """The last event: ``reply`` or ``problem`` with the plain request's JSON body,
        after every progress event still waiting."""
        self.ended = True
        self.wake.set()
        if self.writer is not None:
            await self.writer
        if self.gone:
            return
        with contextlib.suppress(ConnectionError, RuntimeError, OSError):
            await self.response.write(f"event: {name}\ndata: ".encode() + body + b"\n\n")
            await self.response.write_eof()

    def close(self) -> None:
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()
