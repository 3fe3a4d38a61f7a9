"""The in-process event bus: typed events, publish/subscribe, slow subscribers isolated.

Every subscriber gets its own bounded queue and its own task, so a slow or failing
subscriber never stalls the publisher or the other subscribers. When a subscriber's queue is
full the oldest event is dropped for that subscriber only and counted in ``dropped``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event; ``at`` is a Unix timestamp."""

    at: float = field(default_factory=time.time)


@dataclass(frozen=True, kw_only=True)
class DaemonStarted(Event):
    version: str


@dataclass(frozen=True, kw_only=True)
class DaemonStopping(Event):
    reason: str


@dataclass(frozen=True, kw_only=True)
class ConfigReloaded(Event):
    path: str


@dataclass(frozen=True, kw_only=True)
class ConfigRejected(Event):
    path: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class CommandCompleted(Event):
    command: str
    origin: str
    actor: str
    result: str  # "ok", "sandbox", or an error code
    duration: float


@dataclass(frozen=True, kw_only=True)
class AfterActionFailed(Event):
    """An after-action (cache flush, reload, maildir move) failed after its change was
    committed: the change stands, what is left to do is in the reply's notes."""

    command: str
    actor: str
    action: str
    reason: str
    kind: str = "other"  # what sort of action (flush_auth_cache, recalc_quota, ...)


@dataclass(frozen=True, kw_only=True)
class AfterActionDone(Event):
    """An after-action finished after its change was committed; ``output`` is what it said
    (bounded, one line), also shown in the reply's notes."""

    command: str
    actor: str
    action: str
    output: str
    kind: str = "other"


@dataclass(frozen=True, kw_only=True)
class AlertChanged(Event):
    """An alert fired or resolved (published by the alerts component; the REST API's live
    events carry it)."""

    state: str  # firing | resolved
    rule: str
    server: str
    severity: str
    fingerprint: str
    value: float
    labels: dict[str, str]
    summary: str = ""


E = TypeVar("E", bound=Event)
Handler = Callable[[Any], Awaitable[None] | None]


@dataclass
class Subscription:
    name: str
    types: tuple[type[Event], ...]
    handler: Handler
    queue: asyncio.Queue[Event]
    task: asyncio.Task[None] | None = None
    dropped: int = 0
    failures: int = 0


class EventBus:
    def __init__(self, *, queue_size: int = 10_000) -> None:
        self._subs: list[Subscription] = []
        self._queue_size = queue_size
        self._running = False

    def subscribe(
        self, types: type[E] | tuple[type[Event], ...], handler: Callable[[E], Any],
        *, name: str | None = None,
    ) -> Subscription:
        """Call ``handler`` (sync or async) for every published event of ``types``."""
        if not isinstance(types, tuple):
            types = (types,)
        sub = Subscription(
            name=name or str(getattr(handler, "__qualname__", repr(handler))),
            types=types, handler=handler, queue=asyncio.Queue(self._queue_size),
        )
        self._subs.append(sub)
        if self._running:
            sub.task = asyncio.get_running_loop().create_task(self._pump(sub))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        if sub.task is not None:
            sub.task.cancel()

    def publish(self, event: Event) -> None:
        """Queue ``event`` for every matching subscriber; never blocks, never raises."""
        for sub in self._subs:
            if not isinstance(event, sub.types):
                continue
            if sub.queue.full():
                try:
                    sub.queue.get_nowait()
                except asyncio.QueueEmpty:
                    pass
                sub.dropped += 1
            sub.queue.put_nowait(event)

    async def start(self) -> None:
        self._running = True
        loop = asyncio.get_running_loop()
        for sub in self._subs:
            if sub.task is None:
                sub.task = loop.create_task(self._pump(sub))

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until every subscriber has handled what is queued."""
        deadline = time.monotonic() + timeout
        while any(not s.queue.empty() for s in self._subs) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._running = False
        tasks = [s.task for s in self._subs if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sub in self._subs:
            sub.task = None

    async def _pump(self, sub: Subscription) -> None:
        while True:
            event = await sub.queue.get()
            try:
                result = sub.handler(event)
                if asyncio.iscoroutine(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                sub.failures += 1
                log.exception("event subscriber %s failed on %s", sub.name, type(event).__name__)
