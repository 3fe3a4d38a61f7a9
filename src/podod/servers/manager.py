"""The ``servers`` component: every configured and added server, connected and measured.

Others reach a server only through here: ``runner(name)`` (a :class:`LocalRunner` for
``local: true``, otherwise the server's :class:`SSHRunner`, whose commands raise
``ServerUnreachable`` while it is down), ``tunnel_address(server, tunnel)`` (the local end
of a port forward, stable across reconnects), ``configs()`` (configured + added, for
collectors), ``wait_connected(name)`` (for a log follower resuming after a drop) and
``summary()`` (for ``status``).

podod.yaml wins over the state database: a server added at run time whose name later appears
in the file is shadowed by the file's entry (and reported).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, TypeAlias

from podod.errors import Conflict, NotFound
from podod.events import DaemonStarted, Subscription
from podod.servers.allowlist import AllowList
from podod.servers.events import ServerDisconnected, ServerRemoved
from podod.servers.local import CONNECTED, LocalServer
from podod.servers.runner import Runner
from podod.servers.settings import ServerConfig
from podod.servers.store import AddedServer, AddedServers

if TYPE_CHECKING:
    from podod.config import Config
    from podod.runtime import Runtime
    from podod.servers.connection import ServerConnection

log = logging.getLogger(__name__)

# How long start-up (and reload) waits for the first connection attempts, so that the mail
# database's tunnel is open when the maildb component starts right after.
STARTUP_WAIT = 5.0

Connection: TypeAlias = "ServerConnection | LocalServer"


class ServerManager:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = AddedServers(runtime.state)
        self.added: dict[str, AddedServer] = {}
        self.connections: dict[str, Connection] = {}
        self.problems: list[str] = []
        self._sub: Subscription | None = None
        self._lock = asyncio.Lock()

    @property
    def allowlist(self) -> AllowList:
        return self.runtime.registry.allowlist

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.setup()
        added, self.problems = await self.store.load()
        for problem in self.problems:
            log.error("%s", problem)
        self.added = {a.config.name: a for a in added}
        opened = [self._open(config, source)
                  for config, source in self._desired(self.runtime.config).values()]
        self._sub = self.runtime.events.subscribe(DaemonStarted, self._announce,
                                                  name="servers-announce")
        await self._wait_first(opened)

    async def stop(self) -> None:
        if self._sub is not None:
            self.runtime.events.unsubscribe(self._sub)
            self._sub = None
        connections, self.connections = list(self.connections.values()), {}
        await asyncio.gather(*(c.stop() for c in connections), return_exceptions=True)

    async def reload(self, config: Config) -> None:
        """Connect new servers, drop removed ones, restart changed ones; leave the rest."""
        async with self._lock:
            desired = self._desired(config)
            for name in [n for n in self.connections if n not in desired]:
                log.info("server %s: removed from the configuration", name)
                await self._close(name, removed=True)
            opened = []
            for name, (server, source) in desired.items():
                current = self.connections.get(name)
                if current is None:
                    log.info("server %s: added by the configuration", name)
                    opened.append(self._open(server, source))
                elif current.source == source and current.config != server and \
                        current.config.model_copy(update={"control": server.control}) == server:
                    # Only what service control and after-actions read: no reconnect (it
                    # would cut the tunnels, the mail database's among them).
                    log.info("server %s: control settings changed", name)
                    current.config = server
                elif current.config != server or current.source != source:
                    log.info("server %s: settings changed; reconnecting", name)
                    ports = current.assigned_ports()
                    await self._close(name, removed=False)
                    opened.append(self._open(server, source, ports))
            await self._wait_first(opened)

    def _announce(self, event: DaemonStarted) -> None:
        """Components that started after this one (live state, alerts) missed the first
        reports: repeat them once everything runs."""
        for connection in self.connections.values():
            connection.publish_samples()
            if not isinstance(connection, LocalServer) and connection.state != CONNECTED \
                    and connection.last_error is not None:
                self.runtime.events.publish(ServerDisconnected(
                    server=connection.name, reason=connection.last_error))

    def _desired(self, config: Config) -> dict[str, tuple[ServerConfig, str]]:
        out = {s.name: (s, "config") for s in config.servers}
        for name, added in self.added.items():
            if name in out:
                log.warning("server %s from the state database is shadowed by podod.yaml's "
                            "entry of the same name", name)
                continue
            out[name] = (added.config, "added")
        return out

    def _open(self, config: ServerConfig, source: str,
              ports: dict[str, int] | None = None) -> Connection:
        events = self.runtime.events
        connection: Connection
        if config.local:
            connection = LocalServer(config, events, self.allowlist, source=source)
        else:
            # asyncssh is imported with the first remote server, not before (start-up budget)
            from podod.servers.connection import ServerConnection

            connection = ServerConnection(config, events, self.allowlist, source=source,
                                          ports=ports)
        self.connections[config.name] = connection
        connection.start()
        return connection

    async def _close(self, name: str, *, removed: bool) -> None:
        connection = self.connections.pop(name, None)
        if connection is None:
            return
        await connection.stop()
        if removed:
            self.runtime.events.publish(ServerRemoved(server=name))

    async def _wait_first(self, opened: list[Connection],
                          limit: float = STARTUP_WAIT) -> None:
        tasks = [asyncio.create_task(c.first_attempt.wait()) for c in opened]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=limit)
        for task in pending:
            task.cancel()

    # -- what the rest of podod uses ---------------------------------------------------------

    def configs(self) -> list[ServerConfig]:
        """Every managed server (configured, then added), for collectors and followers."""
        return [c.config for c in self.connections.values()]

    def names(self) -> list[str]:
        return list(self.connections)

    def connection(self, name: str) -> Connection:
        connection = self.connections.get(name)
        if connection is None:
            known = ", ".join(sorted(self.connections)) or "none configured"
            raise NotFound(f"there is no server named '{name}' (servers: {known})")
        return connection

    def get(self, name: str) -> ServerConfig:
        return self.connection(name).config

    def runner(self, name: str) -> Runner:
        """How to run allow-listed commands on ``name``. The runner of an SSH server is the
        same object across reconnects; its calls raise ``ServerUnreachable`` (saying since
        when and why) while the server is down."""
        return self.connection(name).runner

    def tunnel_address(self, server: str, tunnel: str) -> tuple[str, int]:
        """(host, port) to connect to for ``tunnel`` of ``server``: the forward's local end,
        the same port after every reconnect (for ``local: true``, the service itself)."""
        connection = self.connection(server)
        if connection.config.tunnel(tunnel) is None:
            names = ", ".join(t.name for t in connection.config.tunnels) or "none"
            raise NotFound(f"server {server} has no tunnel named '{tunnel}' (its tunnels: "
                           f"{names})")
        return connection.tunnel_address(tunnel)

    def is_connected(self, name: str) -> bool:
        return self.connection(name).state in (CONNECTED, "local")

    async def wait_connected(self, name: str, timeout: float | None = None) -> bool:
        """Wait until ``name`` is connected (True) or ``timeout`` passes (False)."""
        connection = self.connection(name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connection.up.wait(), timeout)
            return True
        return False

    def status(self, name: str) -> dict[str, Any]:
        connection = self.connection(name)
        out = connection.status()
        added = self.added.get(name)
        if connection.source == "added" and added is not None:
            out["added_by"], out["added_at"] = added.added_by, added.added_at
        return out

    def statuses(self) -> list[dict[str, Any]]:
        return [self.status(name) for name in self.connections]

    def summary(self) -> list[dict[str, Any]]:
        """One line per server for ``status``."""
        out = []
        for connection in self.connections.values():
            item: dict[str, Any] = {"name": connection.name, "state": connection.state,
                                    "since": connection.since}
            if not isinstance(connection, LocalServer):
                item["rtt_seconds"] = connection.rtt if connection.state == CONNECTED else None
                item["last_error"] = connection.last_error \
                    if connection.state != CONNECTED else None
            out.append(item)
        return out

    # -- server add / remove -------------------------------------------------------------------

    def source_of(self, name: str) -> str | None:
        """"config", "added", or None when no server has that name."""
        if any(s.name == name for s in self.runtime.config.servers):
            return "config"
        if name in self.added:
            return "added"
        return None

    async def add(self, config: ServerConfig, actor: str,
                  wait: float | None = None) -> Connection:
        """Persist a new server and connect it at once (waits for the first attempt)."""
        async with self._lock:
            if self.source_of(config.name) is not None:
                raise Conflict(f"a server named {config.name} exists already")
            self.added[config.name] = await self.store.insert(config, actor)
            connection = self._open(config, "added")
        await self._wait_first([connection], wait if wait is not None
                               else config.connect_timeout + 1)
        return connection

    async def replace(self, config: ServerConfig, actor: str) -> Connection:
        """Store new settings of an added server and reconnect it with them (its tunnels
        keep their local ports where the new settings do not name others)."""
        async with self._lock:
            if config.name not in self.added:
                raise NotFound(f"there is no server named '{config.name}' added with "
                               "'server add'")
            old = self.connections.get(config.name)
            ports = old.assigned_ports() if old is not None and \
                hasattr(old, "assigned_ports") else None
            await self.store.delete(config.name)
            self.added[config.name] = await self.store.insert(config, actor)
            await self._close(config.name, removed=False)
            connection = self._open(config, "added", ports)
        await self._wait_first([connection], config.connect_timeout + 1)
        return connection

    async def remove(self, name: str) -> str:
        """Forget an added server; return what was done, as a sentence."""
        async with self._lock:
            source = self.source_of(name)
            if source is None:
                raise NotFound(f"there is no server named '{name}'")
            await self.store.delete(name)
            self.added.pop(name, None)
            if source == "config":  # a shadowed copy: the file's entry stays
                return (f"removed the stored copy of server {name}; the entry in podod.yaml "
                        "stays in use")
            await self._close(name, removed=True)
            return f"removed server {name} and closed its connection"
