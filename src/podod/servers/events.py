"""What the server manager tells the rest of the daemon about its connections (published on
the event bus; docs/servers.md, "Events"). Here, not in monitor/, so that servers/ and mail/
import nothing from monitor/."""

from __future__ import annotations

from dataclasses import dataclass

from podod.events import Event


@dataclass(frozen=True, kw_only=True)
class ServerConnected(Event):
    server: str
    rtt: float | None = None


@dataclass(frozen=True, kw_only=True)
class ServerDisconnected(Event):
    server: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class ServerRemoved(Event):
    """The server is no longer managed (``server remove``, or gone from podod.yaml after a
    reload): forget its latest values and resolve what is pending for it."""

    server: str
