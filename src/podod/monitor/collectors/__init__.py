"""podod's built-in collectors, registered through the same API as a plugin's."""

from __future__ import annotations

from podod.monitor.collectors import postgres, queue, services, system
from podod.plugins import Registry


def setup(registry: Registry) -> None:
    for module in (system, services, queue, postgres):
        module.setup(registry)
