"""A daemon's runtime in the test's own process, for testing components from the inside
(the store, the scheduler, collectors) with the real event bus, registry and state database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from podod.config import parse_config
from podod.events import Event, EventBus
from podod.plugins import Registry
from podod.runtime import Runtime
from podod.state import StateDB
from testbed.daemon import base_config


@asynccontextmanager
async def runtime_for(root: Path, registry: Registry | None = None, **sections: Any
                      ) -> AsyncIterator[Runtime]:
    """A started event bus and an open state.db under ``root``; sections as in podod.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    config = parse_config(base_config(root, **sections), source="test", base_dir=root)
    runtime = Runtime(config=config, config_path=None, events=EventBus(),
                      registry=registry or Registry(), state=StateDB(root / "state.db"))
    await runtime.state.open()
    await runtime.events.start()
    try:
        yield runtime
    finally:
        await runtime.events.stop()
        await runtime.state.close()


class EventLog:
    """Every event of some types, as they arrive (subscribe before the events happen)."""

    def __init__(self, runtime: Runtime, *types: type[Event]) -> None:
        self.events: list[Any] = []
        self._changed = asyncio.Event()
        runtime.events.subscribe(types, self._add, name="test-event-log")

    def _add(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, kind: type[Event], count: int = 1, timeout: float = 30.0
                       ) -> list[Any]:
        """Wait until ``count`` events of ``kind`` have arrived; fail after ``timeout``."""
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of(kind)
