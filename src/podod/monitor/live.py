"""The ``live`` component: the latest value of every series, fed from the event bus.

/metrics and ``server show`` read it; the alert engine subscribes to the same events itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from podod.monitor.model import CollectorFailed, LiveState, SamplesCollected
from podod.plugins import Registry
from podod.servers.events import ServerRemoved

if TYPE_CHECKING:
    from podod.events import Subscription
    from podod.runtime import Runtime


class Live:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.state = LiveState()
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        events = self.runtime.events
        self._subs = [
            # One queue for both, so a removal is handled after the samples before it.
            events.subscribe((SamplesCollected, ServerRemoved), self._samples,
                             name="live-samples"),
            events.subscribe(CollectorFailed, self._failed, name="live-failures"),
        ]

    async def stop(self) -> None:
        for sub in self._subs:
            self.runtime.events.unsubscribe(sub)
        self._subs = []

    def _samples(self, event: SamplesCollected | ServerRemoved) -> None:
        if isinstance(event, ServerRemoved):
            self._removed(event)
        else:
            self.state.update(event.samples)

    def _removed(self, event: ServerRemoved) -> None:
        self.state.forget_server(event.server)
        for key in [k for k in self.state.collector_errors if k[1] == event.server]:
            del self.state.collector_errors[key]

    def _failed(self, event: CollectorFailed) -> None:
        key = (event.collector, event.server)
        self.state.collector_errors[key] = self.state.collector_errors.get(key, 0) + 1


def setup(registry: Registry) -> None:
    registry.component("live", Live)
