"""What a running daemon is made of, handed to components, handlers and plugins."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podod import __version__
from podod.config import Config
from podod.events import EventBus
from podod.plugins import Registry
from podod.state import StateDB

if TYPE_CHECKING:
    from podod.api.auth import ApiAuth
    from podod.bus.core import CommandBus


@dataclass
class Runtime:
    config: Config
    config_path: Path | None
    events: EventBus
    registry: Registry
    state: StateDB
    started_at: float = field(default_factory=time.time)
    version: str = __version__
    components: dict[str, Any] = field(default_factory=dict)
    bus: CommandBus | None = None
    api_auth: ApiAuth | None = None  # the REST API's accounts and keys (podod.api.auth)

    def component(self, name: str) -> Any:
        """A running component by name, or None when it is not configured."""
        return self.components.get(name)
