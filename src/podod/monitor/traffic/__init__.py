"""Mail traffic from the logs: the parser, the follower, the traffic store and its commands.

``setup`` registers the ``traffic`` component, the ``traffic ...`` commands and the
commands the follower runs on servers. Importing this package stays light (the config
loads ``podod.monitor.traffic.settings``); the rest is imported by ``setup``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing: mypy knows it)
if TYPE_CHECKING:
    from typing import Any

    from podod.plugins import Registry


def _component(runtime: Any) -> Any:
    from podod.monitor.traffic.component import Traffic

    return Traffic(runtime) if runtime.config.traffic.enabled else None


def setup(registry: Registry) -> None:
    from podod.monitor.traffic import health, sources
    from podod.monitor.traffic.commands import setup_commands

    sources.register(registry)
    setup_commands(registry)
    health.setup(registry)
    registry.component("traffic", _component)
