"""One server's SSH connection, kept up for as long as podod runs.

A task per server connects (host key verified against known_hosts, key authentication,
connect timeout), opens the tunnels, then measures the round-trip time every ``keepalive``
seconds while asyncssh's own keepalive detects a dead peer. Whatever ends the connection or
fails an attempt, the task waits (exponential backoff with jitter, capped) and tries again;
tunnels are reopened on the SAME local ports. Every change of state is published as
``ServerConnected``/``ServerDisconnected`` and, with every measurement, as ``ssh_*`` samples.

Only this module (with ``ssh_runner`` and ``hostkeys``) imports asyncssh, and only the
manager's first remote server imports this module: a podod whose servers are all ``local:
true`` never loads asyncssh (see "Start-up budget" in docs/architecture.md).
:class:`LocalServer` lives in ``podod.servers.local`` (re-exported here).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncssh

from podod.errors import NotFound
from podod.events import EventBus
from podod.samples import Sample, SamplesCollected
from podod.servers.allowlist import AllowList
from podod.servers.backoff import Backoff
from podod.servers.events import ServerConnected, ServerDisconnected
from podod.servers.hostkeys import explain_refused_key, known_hosts_path
from podod.servers.local import (
    CONNECTED,
    CONNECTING,
    DISCONNECTED,
    LOCAL,
    STOPPED,
    LocalServer,
    since_text,
    utc,
)
from podod.servers.runner import Runner, ServerUnreachable
from podod.servers.settings import ServerConfig, TunnelConfig
from podod.servers.ssh_runner import SSHRunner

log = logging.getLogger(__name__)

__all__ = ["CONNECTED", "CONNECTING", "DISCONNECTED", "LOCAL", "STOPPED", "LocalServer",
           "ServerConnection", "Tunnel", "since_text", "tunnel_once", "utc"]


@dataclass
class Tunnel:
    """A local forward and the port it keeps: configured, or taken at first open."""

    config: TunnelConfig
    local_port: int = 0
    listener: asyncssh.SSHListener | None = None
    error: str | None = None
    opened_at: float | None = None
    stopped: bool = False  # held closed by 'server tunnel stop' until 'server tunnel start'

    @property
    def is_open(self) -> bool:
        return self.listener is not None

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"name": c.name,
                "local": f"127.0.0.1:{self.local_port}" if self.local_port else "(not open yet)",
                "local_port": self.local_port or None,
                "remote": f"{c.remote_host}:{c.remote_port}", "open": self.is_open,
                "error": self.error, "stopped": self.stopped}


class _Client(asyncssh.SSHClient):
    """Remembers what the server presented and why the connection ended."""

    def __init__(self, owner: ServerConnection) -> None:
        self.owner = owner

    def validate_host_public_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:
        self.owner._presented_key = key  # only called for a key known_hosts does not trust
        self.owner._peer_addr = addr
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost = exc


class ServerConnection:
    """The connection to one SSH server, its tunnels, state and runner."""

    local = False

    def __init__(self, config: ServerConfig, events: EventBus, allowlist: AllowList, *,
                 source: str = "config", ports: dict[str, int] | None = None) -> None:
        self.config = config
        self.events = events
        self.source = source
        self.state = CONNECTING
        self.since = time.time()
        self.attempting = False
        self.running = 0  # commands holding a slot now
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.rtt: float | None = None
        self.reconnects = 0
        self.next_attempt_at: float | None = None
        self.conn: asyncssh.SSHClientConnection | None = None
        self.slots = asyncio.Semaphore(config.max_commands)
        self.tunnels = {t.name: Tunnel(t, t.local_port or (ports or {}).get(t.name, 0))
                        for t in config.tunnels}
        self.backoff = Backoff(config.reconnect_min, config.reconnect_max)
        self.runner: Runner = SSHRunner(self, allowlist)
        self.first_attempt = asyncio.Event()
        self.up = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ever_connected = False
        self._reported_down = False
        self._presented_key: asyncssh.SSHKey | None = None
        self._peer_addr: str | None = None
        self._lost: Exception | None = None

    @property
    def name(self) -> str:
        return self.config.name

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"ssh-{self.name}")

    async def stop(self) -> None:
        """Close everything without reporting a failure (podod stops, or the server was
        removed or changed)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self._close_connection()
        self.state, self.since = STOPPED, time.time()

    def reconnect_now(self) -> None:
        """Cut the current backoff wait short (``server reconnect``)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self.attempting = True
            try:
                conn = await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.attempting = False
                self._failed(self.describe_failure(exc))
                await self._wait_before_retry()
                continue
            self.attempting = False
            problem = await self._established(conn)
            reason = problem or await self._watch(conn)
            await self._close_connection()
            self._failed(reason)
            await self._wait_before_retry()

    async def _connect(self) -> asyncssh.SSHClientConnection:
        c = self.config
        self._presented_key = None
        self._peer_addr = None
        self._lost = None
        keys: Any = ()
        if c.key_file is not None:
            passphrase = c.key_passphrase.get_secret_value() if c.key_passphrase else None
            keys = [asyncssh.read_private_key(str(c.key_file), passphrase)]
        path = known_hosts_path(c)
        # A missing file must not fall back to asyncssh's default (~/.ssh/known_hosts):
        # empty trust lists refuse every key, and the refusal then names the missing file.
        known_hosts: Any = str(path) if path.is_file() else ([], [], [])
        return await asyncssh.connect(
            c.host, c.port, username=c.user, client_keys=keys, known_hosts=known_hosts,
            agent_path=None, config=None, connect_timeout=c.connect_timeout,
            login_timeout=c.connect_timeout, keepalive_interval=c.keepalive,
            keepalive_count_max=c.keepalive_count_max,
            client_factory=lambda: _Client(self))

    async def _established(self, conn: asyncssh.SSHClientConnection) -> str | None:
        """Measure, open the tunnels, announce; return a reason if the connection is no good."""
        self.conn = conn
        self.backoff.reset()
        self.next_attempt_at = None
        try:
            await self._ping(conn)  # the first session on a connection costs more: warm up
            self.rtt = await self._ping(conn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return f"the round-trip probe failed right after connecting " \
                   f"({self.describe_failure(exc)})"
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        await self._open_tunnels(conn)
        self._reported_down = False
        self._set_state(CONNECTED)
        self.up.set()
        self.first_attempt.set()
        log.info("server %s: connected to %s as %s (round trip %.1f ms)%s", self.name,
                 self.config.address, self.config.user, (self.rtt or 0) * 1000,
                 f", reconnect #{self.reconnects}" if self.reconnects else "")
        self.events.publish(ServerConnected(server=self.name, rtt=self.rtt))
        self.publish_samples()
        return None

    async def _watch(self, conn: asyncssh.SSHClientConnection) -> str:
        """Measure the round trip every ``keepalive`` seconds until the connection ends;
        return why it ended."""
        closed = asyncio.ensure_future(conn.wait_closed())
        # A random first phase spreads a fleet's probes over the interval instead of firing
        # them all at once after a common start.
        wait = self.config.keepalive * random.uniform(0.5, 1.0)
        try:
            while not closed.done():
                await asyncio.wait({closed}, timeout=wait)
                wait = self.config.keepalive
                if closed.done():
                    break
                try:
                    self.rtt = await self._ping(conn)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if closed.done() or conn.is_closed() or self._lost is not None:
                        break  # the connection ended under the probe: report why it ended
                    detail = (f"no answer within {max(self.config.command_timeout, 1.0):g} s"
                              if isinstance(exc, TimeoutError) else self.describe_failure(exc))
                    reason = f"the round-trip probe failed ({detail}); reconnecting"
                    log.warning("server %s: %s", self.name, reason)
                    conn.abort()
                    return reason
                self.publish_samples()
        finally:
            closed.cancel()
        return self._lost_reason()

    async def _ping(self, conn: asyncssh.SSHClientConnection) -> float:
        """Round trip of a no-op command (``true``), outside the command slots so it measures
        the link, not the queue."""
        started = time.monotonic()
        async with asyncio.timeout(max(self.config.command_timeout, 1.0)):
            await conn.run("true", check=False)
        return time.monotonic() - started

    def _lost_reason(self) -> str:
        exc = self._lost
        if exc is None:
            return "the server closed the connection"
        if isinstance(exc, asyncssh.ConnectionLost):
            return f"the connection was lost ({exc.reason or 'no reason given'})"
        return f"the connection was lost ({self.describe_failure(exc)})"

    async def _close_connection(self) -> None:
        self.up.clear()
        for tunnel in self.tunnels.values():
            tunnel.close()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 2)

    def _failed(self, reason: str) -> None:
        self.last_error, self.last_error_at = reason, time.time()
        self.rtt = None
        self._set_state(DISCONNECTED)
        if not self._reported_down:
            self._reported_down = True
            log.warning("server %s: not connected: %s", self.name, reason)
            self.events.publish(ServerDisconnected(server=self.name, reason=reason))
        else:
            log.info("server %s: attempt %d failed: %s", self.name, self.backoff.failures + 1,
                     reason)
        self.first_attempt.set()

    async def _wait_before_retry(self) -> None:
        delay = self.backoff.failed()
        self.next_attempt_at = time.time() + delay
        self.publish_samples()
        deadline = time.monotonic() + delay
        self._wake.clear()
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(left, self.config.keepalive))
                break  # woken: try at once
            self.publish_samples()  # keep ssh_connected 0 fresh while waiting
        self.next_attempt_at = None

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state, self.since = state, time.time()

    # -- tunnels -----------------------------------------------------------------------------

    async def _open_tunnels(self, conn: asyncssh.SSHClientConnection) -> None:
        for tunnel in self.tunnels.values():
            if not tunnel.stopped:
                await self._open_tunnel(conn, tunnel)

    async def start_tunnel(self, name: str) -> bool:
        """Open a stopped (or failed) tunnel again now, if the connection is up; it is
        opened on every later connect too. True if it is open."""
        tunnel = self.tunnels[name]
        tunnel.stopped = False
        if self.conn is not None and self.state == CONNECTED and not tunnel.is_open:
            await self._open_tunnel(self.conn, tunnel)
        return tunnel.is_open

    def stop_tunnel(self, name: str) -> None:
        """Close a tunnel and keep it closed (reconnects included) until started again."""
        tunnel = self.tunnels[name]
        tunnel.stopped = True
        tunnel.close()
        tunnel.error = None
        log.info("server %s: tunnel %s stopped", self.name, name)

    async def restart_tunnels(self, names: list[str]) -> list[dict[str, Any]]:
        """Close the named tunnels and open them again on the same local ports (``server
        tunnel restart``); their descriptions afterwards. Needs the connection up."""
        conn = self.require()
        for name in names:
            tunnel = self.tunnels[name]
            tunnel.stopped = False
            tunnel.close()
            await self._open_tunnel(conn, tunnel)
        return [self.tunnels[n].describe() for n in names]

    async def _open_tunnel(self, conn: asyncssh.SSHClientConnection, tunnel: Tunnel) -> None:
        c = tunnel.config
        for attempt in range(10):
            try:
                tunnel.listener = await conn.forward_local_port(
                    "127.0.0.1", tunnel.local_port, c.remote_host, c.remote_port)
            except OSError as exc:
                # The old listener's port may take a moment to be released.
                if exc.errno == errno.EADDRINUSE and attempt < 9:
                    await asyncio.sleep(0.2)
                    continue
                tunnel.error = (f"cannot listen on 127.0.0.1:{tunnel.local_port} "
                                f"({exc.strerror or exc})")
                log.error("server %s: tunnel %s: %s", self.name, c.name, tunnel.error)
                break
            tunnel.local_port = tunnel.listener.get_port()
            tunnel.error = None
            tunnel.opened_at = time.time()
            log.info("server %s: tunnel %s open: 127.0.0.1:%d -> %s:%d", self.name,
                     c.name, tunnel.local_port, c.remote_host, c.remote_port)
            break

    def tunnel_address(self, name: str) -> tuple[str, int]:
        tunnel = self.tunnels[name]
        if tunnel.is_open:
            return "127.0.0.1", tunnel.local_port
        if tunnel.stopped:
            raise ServerUnreachable(f"the tunnel {name} of server {self.name} is stopped "
                                    f"('server tunnel start {self.name} {name}' opens it)")
        if self.state != CONNECTED:
            raise ServerUnreachable(f"the tunnel {name} of {self.not_connected_sentence()}")
        raise ServerUnreachable(f"the tunnel {name} of server {self.name} is not open: "
                                f"{tunnel.error or 'it failed to open'}")

    def assigned_ports(self) -> dict[str, int]:
        return {n: t.local_port for n, t in self.tunnels.items() if t.local_port}

    # -- what runners and commands use -------------------------------------------------------

    def require(self) -> asyncssh.SSHClientConnection:
        """The live connection, or :class:`ServerUnreachable` saying since when and why."""
        if self.conn is None or self.state != CONNECTED:
            raise ServerUnreachable(self.not_connected_sentence())
        return self.conn

    def not_connected_sentence(self) -> str:
        who = f"server {self.name} ({self.config.address})"
        if self.state == STOPPED:
            return f"{who} is no longer managed by podod"
        if self.last_error is None or self.state == CONNECTING:
            return f"{who} is not connected yet (the first attempt is under way)"
        text = f"{who} is not connected since {since_text(self.since)}: {self.last_error}"
        if self.next_attempt_at is not None:
            text += f"; podod tries again in {max(0.0, self.next_attempt_at - time.time()):.0f} s"
        elif self.attempting:
            text += "; podod is trying again now"
        return text

    def dropped_while(self, command: str, exc: BaseException | None) -> ServerUnreachable:
        detail = self.describe_failure(exc) if exc is not None else "the connection dropped"
        return ServerUnreachable(f"the connection to server {self.name} dropped while running "
                                 f"'{command}' ({detail})")

    def describe_failure(self, exc: BaseException) -> str:
        """One plain clause for why a connection attempt (or a channel) failed."""
        c = self.config
        address = c.address
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            return explain_refused_key(c, self._presented_key, self._peer_addr)
        if isinstance(exc, asyncssh.PermissionDenied):
            key = str(c.key_file) if c.key_file else "podod's default keys (~/.ssh/id_*)"
            return (f"{address} refused the login of user {c.user} with the key {key} (is its "
                    "public key in that user's authorized_keys?)")
        if isinstance(exc, asyncssh.KeyImportError | asyncssh.KeyEncryptionError):
            return f"the key file {c.key_file} cannot be used ({exc})"
        if isinstance(exc, asyncssh.ConnectionLost):
            return f"the connection was lost ({exc.reason or 'no reason given'})"
        if isinstance(exc, asyncssh.DisconnectError):
            return f"the server ended the connection ({exc.reason or exc.code})"
        if isinstance(exc, asyncssh.ChannelOpenError):
            return f"the server refused to open a channel ({exc.reason or exc.code})"
        if isinstance(exc, asyncssh.Error):
            return f"{exc.reason or type(exc).__name__}"
        if isinstance(exc, TimeoutError):
            return f"no answer from {address} within {c.connect_timeout:g} s"
        if isinstance(exc, ConnectionRefusedError):
            return f"connection refused by {address} (is sshd running?)"
        if isinstance(exc, socket.gaierror):
            return f"the host name {c.host} cannot be resolved ({exc.strerror})"
        if isinstance(exc, FileNotFoundError | PermissionError) and exc.filename:
            return f"{exc.filename} cannot be read ({exc.strerror})"
        if isinstance(exc, OSError):
            return f"{address}: {exc.strerror or exc}"
        return f"{type(exc).__name__}: {exc}"

    def publish_samples(self) -> None:
        now = time.time()
        up = self.state == CONNECTED
        samples = [Sample("ssh_connected", self.name, 1.0 if up else 0.0, ts=now),
                   Sample("ssh_reconnects_total", self.name, float(self.reconnects),
                          kind="counter", ts=now)]
        if up and self.rtt is not None:
            samples.append(Sample("ssh_rtt_seconds", self.name, self.rtt, ts=now))
        self.events.publish(SamplesCollected(collector="ssh", server=self.name,
                                             samples=tuple(samples)))

    def status(self) -> dict[str, Any]:
        c = self.config
        return {
            "name": self.name, "source": self.source, "local": False, "state": self.state,
            "since": self.since, "since_text": since_text(self.since),
            "host": c.host, "port": c.port, "address": c.address, "user": c.user,
            "key_file": str(c.key_file) if c.key_file else None,
            "known_hosts": str(known_hosts_path(c)),
            "rtt_seconds": self.rtt if self.state == CONNECTED else None,
            "reconnects": self.reconnects,
            "last_error": self.last_error, "last_error_at": self.last_error_at,
            "failed_attempts": self.backoff.failures, "attempting": self.attempting,
            "next_attempt_in": (max(0.0, self.next_attempt_at - time.time())
                                if self.next_attempt_at is not None else None),
            "commands_running": self.running, "max_commands": c.max_commands,
            "tunnels": [t.describe() for t in self.tunnels.values()],
            "services": list(c.services), "mail_log": c.mail_log,
        }


@contextlib.asynccontextmanager
async def tunnel_once(config: ServerConfig, tunnel: str) -> AsyncIterator[tuple[str, int]]:
    """For tools that run without the daemon (``podod db``): connect to ``config`` once, with
    exactly the daemon's checks (known_hosts, key, timeouts) and failure sentences, forward a
    free local port to ``tunnel``'s far end, yield ``(host, port)``, close everything.

    A ``local: true`` server yields the service's own address. Failures raise
    :class:`ServerUnreachable` with one sentence."""
    spec = config.tunnel(tunnel)
    if spec is None:
        names = ", ".join(t.name for t in config.tunnels) or "none"
        raise NotFound(f"server {config.name} has no tunnel named '{tunnel}' (its tunnels: "
                       f"{names})")
    if config.local:
        yield spec.remote_host, spec.remote_port
        return
    connection = ServerConnection(config, EventBus(), AllowList())  # nobody listens: a one-off
    try:
        conn = await connection._connect()
    except Exception as exc:
        raise ServerUnreachable(f"cannot connect to server {config.name} ({config.address}): "
                                f"{connection.describe_failure(exc)}") from None
    try:
        try:
            listener = await conn.forward_local_port("127.0.0.1", 0, spec.remote_host,
                                                     spec.remote_port)
        except (asyncssh.Error, OSError) as exc:
            raise ServerUnreachable(f"server {config.name} refused the tunnel {tunnel} to "
                                    f"{spec.remote_host}:{spec.remote_port} "
                                    f"({connection.describe_failure(exc)})") from None
        try:
            yield "127.0.0.1", listener.get_port()
        finally:
            listener.close()
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.wait_closed(), 2)
