"""podod's built-in collectors, registered through the same API as a plugin's."""

from __future__ import annotations

from podod.monitor.collectors import dovecot, postgres, queue, services, system
from podod.plugins import Registry


def setup(registry: Registry) -> None:
    for module in (system, services, queue, postgres, dovecot):
        module.setup(registry)
