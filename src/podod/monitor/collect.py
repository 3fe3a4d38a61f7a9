"""What a collector is handed on every run.

A collector is declared with ``@registry.collector(name, interval=..., per_server=True)``
and called as ``await func(ctx)``, returning a list of :class:`~podod.monitor.model.Sample`.
A per-server collector runs once per configured server and tick; ``ctx.runner`` reaches the
server (SSH, or directly for ``local: true``). ``ctx.state`` is kept between runs of the
same collector on the same server (previous counter readings, for instance), in memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from podod.runtime import Runtime
    from podod.servers.runner import Runner
    from podod.servers.settings import ServerConfig


@dataclass
class CollectContext:
    runtime: Runtime
    collector: str
    server: ServerConfig | None = None  # None for a collector that is not per server
    runner: Runner | None = None
    state: dict[str, Any] = field(default_factory=dict)
    now: float = field(default_factory=time.time)

    @property
    def server_name(self) -> str:
        return self.server.name if self.server is not None else "podod"

    @property
    def settings(self) -> dict[str, Any]:
        """Per-collector settings: ``monitor.collectors.<name>`` in podod.yaml."""
        return dict(self.runtime.config.monitor.collectors.get(self.collector, {}))
