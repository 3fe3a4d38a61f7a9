"""The ``traffic`` component: a log follower per server with ``mail_log`` set, the traffic
store, the cumulative counters published as samples, and the retention pruner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podod.events import Event
from podod.monitor.model import Sample, SamplesCollected
from podod.monitor.runners import Runners, monitored_servers
from podod.monitor.traffic import tally as t
from podod.monitor.traffic.clock import LogClock, local_zone
from podod.monitor.traffic.follower import LogFollower
from podod.monitor.traffic.store import Batch, TrafficStore
from podod.servers.events import ServerConnected, ServerDisconnected, ServerRemoved

if TYPE_CHECKING:
    from podod.bus.context import BusRuntime
    from podod.config import Config
    from podod.events import Subscription
    from podod.runtime import Runtime
    from podod.servers.settings import ServerConfig

log = logging.getLogger(__name__)

# Cumulative counter keys → series (catalogue names) and how their labels are named.
_SERIES: dict[str, tuple[str, tuple[str, ...]]] = {
    t.RECEIVED: ("postfix_messages_received_total", ()),
    t.DELIVERY: ("postfix_deliveries_total", ("transport", "status")),
    t.REJECT: ("postfix_smtpd_rejects_total", ("reason", "code")),
    t.SASL_FAILURES: ("postfix_sasl_auth_failures_total", ()),
    t.AUTH_FAILURE: ("dovecot_auth_failures_total", ("protocol",)),
    t.LOGIN: ("dovecot_logins_total", ("protocol",)),
    "lines": ("log_lines_total", ("service",)),
    "unparsed": ("log_lines_unparsed_total", ("service",)),
}
ALWAYS = (t.RECEIVED, t.SASL_FAILURES)  # published as 0 before the first event


def runner_for(runtime: BusRuntime, server: ServerConfig) -> Any:
    """The server's Runner, as the scheduler gets it: the servers component's (SSH, or
    local), else a LocalRunner for ``local: true``, else one whose commands say why the
    server cannot be reached."""
    return Runners(runtime).get(server)


async def wait_connected(runtime: Runtime, server: str, timeout: float) -> None:
    """Wait until ``server`` is connected again (at most ``timeout``)."""
    servers: Any = runtime.component("servers")
    wait = getattr(servers, "wait_connected", None)
    if wait is None:
        await asyncio.sleep(timeout)
        return
    try:
        await wait(server, timeout)
    except Exception:  # removed meanwhile: the component stops this follower anyway
        await asyncio.sleep(timeout)


def samples_of(server: str, totals: dict[str, int], now: float) -> list[Sample]:
    out: list[Sample] = []
    for k in ALWAYS:
        if k not in totals:
            series, _ = _SERIES[k]
            out.append(Sample(series, server, 0.0, (), "counter", now))
    for k, value in totals.items():
        metric, labels = t.split_key(k)
        spec = _SERIES.get(metric)
        if spec is None or len(labels) != len(spec[1]):
            continue
        series, names = spec
        out.append(Sample(series, server, float(value),
                          Sample.labels_of(**dict(zip(names, labels, strict=True))),
                          "counter", now))
    return out


class Traffic:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.config.traffic
        self.store = TrafficStore(Path(runtime.config.state_dir) / "traffic.db",
                                  top_keep=self.settings.top_candidates)
        self.zone = local_zone(self.settings.timezone)
        self.followers: dict[str, LogFollower] = {}
        self.specs: dict[str, str] = {}
        self.problems: dict[str, str] = {}
        self.totals: dict[str, dict[str, int]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._background: list[asyncio.Task[None]] = []
        self._subs: list[Subscription] = []
        self._planning = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        self.totals = await self.store.run(self.store.totals)
        await self._plan()
        # Servers added or removed at run time (server add|remove) start or stop followers.
        self._subs = [self.runtime.events.subscribe(
            (ServerConnected, ServerDisconnected, ServerRemoved), self._servers_changed,
            name="traffic-servers")]
        self._background = [asyncio.create_task(self._publish_loop(), name="traffic-publish"),
                            asyncio.create_task(self._prune_loop(), name="traffic-prune")]

    async def stop(self) -> None:
        for sub in self._subs:
            self.runtime.events.unsubscribe(sub)
        self._subs = []
        for task in self._background:
            task.cancel()
        for name in list(self._tasks):
            await self._stop_follower(name)
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.store.close()

    async def reload(self, config: Config) -> None:
        if config.traffic != self.settings:  # followers take the new settings on restart
            self.settings = config.traffic
            self.zone = local_zone(self.settings.timezone)
            for name in list(self._tasks):
                await self._stop_follower(name)
        await self._plan()

    async def _servers_changed(self, event: Event) -> None:
        await self._plan()

    async def _plan(self) -> None:
        """A follower for every server with ``mail_log``; restart one whose log changed."""
        async with self._planning:
            wanted = {s.name: s for s in monitored_servers(self.runtime) if s.mail_log}
            for name in list(self._tasks):
                server = wanted.get(name)
                if server is None or server.mail_log != self.specs.get(name):
                    await self._stop_follower(name)
            for server in wanted.values():
                if server.name not in self._tasks:
                    await self._start_follower(server)

    def servers(self) -> list[ServerConfig]:
        return monitored_servers(self.runtime)

    async def _start_follower(self, server: ServerConfig) -> None:
        if not server.mail_log:
            return
        runner = runner_for(self.runtime, server)
        position = await self.store.run(self.store.position, server.name)
        pending = await self.store.run(self.store.pending, server.name)
        name = server.name

        async def ready(timeout: float) -> None:
            await wait_connected(self.runtime, name, timeout)

        async def reload() -> tuple[Any, list[tuple[str, int, int, int, str]]]:
            return (await self.store.run(self.store.position, name),
                    await self.store.run(self.store.pending, name))

        follower = LogFollower(server.name, server.mail_log, runner, self.settings, self.commit,
                               clock=LogClock(self.zone), position=position, pending=pending,
                               ready=ready, reload=reload)
        self.followers[server.name] = follower
        self.specs[server.name] = server.mail_log
        self._tasks[server.name] = asyncio.create_task(follower.run(),
                                                       name=f"traffic-{server.name}")

    async def _stop_follower(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        follower = self.followers.pop(name, None)
        self.specs.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if follower is not None:  # what was read is committed with its position
            with contextlib.suppress(Exception):
                await asyncio.wait_for(follower.flush(), 5)

    # -- counting ------------------------------------------------------------------------------

    async def commit(self, batch: Batch) -> None:
        await self.store.run(self.store.commit, batch)
        if batch.import_record is None:  # backfills fill the reports, not the counters
            mine = self.totals.setdefault(batch.server, {})
            for k, n in batch.totals.items():
                mine[k] = mine.get(k, 0) + n

    async def flush_all(self) -> None:
        for follower in list(self.followers.values()):
            with contextlib.suppress(Exception):
                await follower.flush()

    def samples(self, server: str) -> list[Sample]:
        return samples_of(server, self.totals.get(server, {}), time.time())

    def publish(self) -> None:
        names = set(self.totals) | set(self.followers)
        for name in sorted(names):
            self.runtime.events.publish(SamplesCollected(
                collector="traffic", server=name, samples=tuple(self.samples(name))))

    async def _publish_loop(self) -> None:
        while True:
            self.publish()
            await asyncio.sleep(self.settings.publish_interval)

    async def _prune_loop(self) -> None:
        """Drop counts older than the retention, an hour (or less) at a time, pausing
        between steps so no single write is long."""
        while True:
            cutoff = int(time.time() - self.settings.retention)
            with contextlib.suppress(Exception):
                while await self.store.run(self.store.prune_step, cutoff, 1):
                    await asyncio.sleep(0.05)
            await asyncio.sleep(3600)

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for server in monitored_servers(self.runtime):
            if not server.mail_log:
                continue
            follower = self.followers.get(server.name)
            row: dict[str, Any] = {"server": server.name, "log": server.mail_log}
            if follower is None:
                row.update(state="stopped", error=self.problems.get(server.name))
            else:
                s = follower.status
                pos = follower.position
                row.update(state=s.state, since=s.since, lines=s.lines,
                           last_line_at=s.last_line_at, error=s.last_error,
                           inode=pos.inode if pos else None, offset=pos.offset if pos else None,
                           cursor=pos.cursor if pos else None,
                           followed_since=pos.followed_since if pos else None)
            rows.append(row)
        return rows
