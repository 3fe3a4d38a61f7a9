"""How the monitor reaches a server, in one small place that can change as the daemon grows.

When the ``servers`` component runs (SSH connections, docs/servers.md) its ``runner(name)``
is used for every server. Without it, a ``local: true`` server gets a
:class:`~podod.servers.runner.LocalRunner`, and a remote server an
:class:`UnreachableRunner` whose every command fails with a sentence saying why, so the
collectors that need no commands (protocol probes) still run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from podod.errors import PododError
from podod.servers.runner import CommandResult, LocalRunner, Runner, ServerUnreachable

if TYPE_CHECKING:
    from podod.bus.context import BusRuntime
    from podod.servers.settings import ServerConfig


class UnreachableRunner:
    """A runner for a server podod cannot reach: every call raises ``ServerUnreachable``."""

    local = False

    def __init__(self, server: str, reason: str) -> None:
        self.server = server
        self.reason = reason

    async def run(self, argv: Sequence[str], *, timeout: float | None = None,
                  input: bytes | None = None, check: bool = False) -> CommandResult:
        raise ServerUnreachable(self.reason)

    async def run_script(self, name: str, *, timeout: float | None = None,
                         check: bool = False) -> CommandResult:
        raise ServerUnreachable(self.reason)

    async def stream(self, argv: Sequence[str]) -> AsyncIterator[bytes]:
        raise ServerUnreachable(self.reason)
        yield b""  # pragma: no cover - makes this an async generator


def monitored_servers(runtime: BusRuntime) -> list[ServerConfig]:
    """Every server to measure: the servers component's list (configured and added at run
    time) when it offers one, else the configured ``servers:``."""
    servers: Any = runtime.component("servers")
    configs = getattr(servers, "configs", None)
    if callable(configs):
        return list(configs())
    return list(runtime.config.servers)


class Runners:
    def __init__(self, runtime: BusRuntime) -> None:
        self.runtime = runtime
        self._local: dict[str, tuple[tuple[Any, ...], LocalRunner]] = {}

    def get(self, server: ServerConfig) -> Runner:
        manager: Any = self.runtime.component("servers")
        if manager is not None and hasattr(manager, "runner"):
            try:
                runner: Runner = manager.runner(server.name)
                return runner
            except PododError as exc:
                return UnreachableRunner(server.name, exc.message)
        if server.local:
            shape = (server.max_commands, server.command_timeout)
            cached = self._local.get(server.name)
            if cached is None or cached[0] != shape:
                cached = (shape, LocalRunner(server.name, self.runtime.registry.allowlist,
                                             max_commands=server.max_commands,
                                             timeout=server.command_timeout))
                self._local[server.name] = cached
            return cached[1]
        return UnreachableRunner(
            server.name, f"server {server.name} is remote and podod's SSH connections (the "
            "servers component) are not running")


def runner_for(runtime: BusRuntime, server: ServerConfig) -> Runner:
    """The runner the scheduler uses for ``server`` (for commands such as queue summary)."""
    scheduler: Any = runtime.component("scheduler")
    runners = getattr(scheduler, "runners", None)
    if isinstance(runners, Runners):
        return runners.get(server)
    return Runners(runtime).get(server)
