"""``local: true``: the machine podod runs on, measured without SSH, and the connection
states every server reports.

Kept apart from ``podod.servers.connection`` so that a podod whose servers are all local
never imports asyncssh (see "Start-up budget" in docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Any

from podod.durations import format_duration
from podod.errors import ValidationError
from podod.events import EventBus
from podod.samples import Sample, SamplesCollected
from podod.servers.allowlist import AllowList
from podod.servers.runner import LocalRunner, Runner
from podod.servers.settings import ServerConfig

CONNECTING, CONNECTED, DISCONNECTED, STOPPED, LOCAL = (
    "connecting", "connected", "disconnected", "stopped", "local")


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def since_text(ts: float) -> str:
    return f"{utc(ts)}, {format_duration(max(0.0, time.time() - ts))} ago"


class LocalServer:
    """``local: true``: the machine podod runs on, measured without SSH."""

    local = True

    def __init__(self, config: ServerConfig, events: EventBus, allowlist: AllowList, *,
                 source: str = "config") -> None:
        self.config = config
        self.events = events
        self.source = source
        self.state = LOCAL
        self.since = time.time()
        self.runner: Runner = LocalRunner(config.name, allowlist,
                                          max_commands=config.max_commands,
                                          timeout=config.command_timeout)
        self.first_attempt = asyncio.Event()
        self.first_attempt.set()
        self.up = asyncio.Event()
        self.up.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def start(self) -> None:
        self._task = asyncio.create_task(self._report(), name=f"local-{self.name}")

    async def _report(self) -> None:
        while True:
            self.publish_samples()
            await asyncio.sleep(self.config.keepalive)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def reconnect_now(self) -> None:
        return None

    def publish_samples(self) -> None:
        now = time.time()
        self.events.publish(SamplesCollected(collector="ssh", server=self.name, samples=(
            Sample("ssh_connected", self.name, 1.0, ts=now),
            Sample("ssh_reconnects_total", self.name, 0.0, kind="counter", ts=now))))

    def tunnel_address(self, name: str) -> tuple[str, int]:
        """On this machine a "tunnel" is the service's own address."""
        tunnel = self.config.tunnel(name)
        assert tunnel is not None
        return tunnel.remote_host, tunnel.remote_port

    def assigned_ports(self) -> dict[str, int]:
        return {}

    async def restart_tunnels(self, names: list[str]) -> list[dict[str, Any]]:
        raise ValidationError(f"server {self.name} is local: its tunnels are the services' "
                              "own addresses, there is nothing to restart")

    def status(self) -> dict[str, Any]:
        c = self.config
        return {
            "name": self.name, "source": self.source, "local": True, "state": LOCAL,
            "since": self.since, "since_text": since_text(self.since), "host": None,
            "port": None, "address": c.address, "user": None, "key_file": None,
            "known_hosts": None, "rtt_seconds": None, "reconnects": 0, "last_error": None,
            "last_error_at": None, "failed_attempts": 0, "next_attempt_in": None,
            "commands_running": None, "max_commands": c.max_commands,
            "tunnels": [{"name": t.name, "local": f"{t.remote_host}:{t.remote_port}",
                         "local_port": t.remote_port,
                         "remote": f"{t.remote_host}:{t.remote_port}", "open": True,
                         "error": None} for t in c.tunnels],
            "services": list(c.services), "mail_log": c.mail_log,
        }
