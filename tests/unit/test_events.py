"""The event bus: typed delivery, and a slow or failing subscriber stalls nobody."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from podod.events import Event, EventBus


@dataclass(frozen=True, kw_only=True)
class Ping(Event):
    n: int


@dataclass(frozen=True, kw_only=True)
class Other(Event):
    pass


async def test_typed_delivery_and_isolation() -> None:
    bus = EventBus()
    fast: list[int] = []
    slow_started = asyncio.Event()

    async def slow(event: Ping) -> None:
        slow_started.set()
        await asyncio.sleep(10)

    def failing(event: Ping) -> None:
        raise RuntimeError("boom")

    bus.subscribe(Ping, slow)
    bus.subscribe(Ping, failing)
    bus.subscribe(Ping, lambda e: fast.append(e.n))
    others: list[Event] = []
    bus.subscribe(Other, others.append)
    await bus.start()
    for n in range(100):
        bus.publish(Ping(n=n))
    await asyncio.wait_for(slow_started.wait(), 1)
    await asyncio.sleep(0.05)
    assert fast == list(range(100))  # neither the slow nor the failing one held it up
    assert others == []
    await bus.stop()


async def test_full_queue_drops_oldest_for_that_subscriber_only() -> None:
    bus = EventBus(queue_size=5)
    got: list[int] = []
    sub = bus.subscribe(Ping, lambda e: got.append(e.n))
    for n in range(8):  # not started yet: the queue fills
        bus.publish(Ping(n=n))
    assert sub.dropped == 3
    await bus.start()
    await bus.drain()
    assert got == [3, 4, 5, 6, 7]
    await bus.stop()
