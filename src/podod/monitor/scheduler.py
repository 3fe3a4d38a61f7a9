"""The ``scheduler`` component: runs every registered collector at its interval.

A *job* is one collector on one server (``per_server=True``) or the collector once
(``per_server=False``). Each job is its own task, so a collector that raises or hangs never
delays another. Its interval is ``monitor.intervals.<name>``, else the collector's own
default, else ``monitor.interval``. Jobs are spread over the interval by a hash of their
name (the same phase after every restart, like Prometheus): 200 servers do not fire in the
same millisecond. A run gets ``min(monitor.timeout, interval)``; at most
``monitor.max_concurrent`` runs go at once. A run that is still waiting when its next turn
comes skips the missed turns instead of piling up.

A run's samples are published as ``SamplesCollected``; a failure (exception, timeout, a
result that is not a list of samples, a server that cannot be reached) as
``CollectorFailed`` with a one-line reason, logged once when it starts failing (repeats at
debug level) and once when it works again; it is retried at the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from podod.errors import PododError
from podod.events import Event
from podod.monitor.collect import CollectContext
from podod.monitor.model import (
    CollectorFailed,
    Sample,
    SamplesCollected,
    ServerConnected,
    ServerDisconnected,
    ServerRemoved,
)
from podod.monitor.runners import Runners, monitored_servers
from podod.plugins import CollectorSpec, Registry

if TYPE_CHECKING:
    from podod.events import Subscription
    from podod.runtime import Runtime
    from podod.servers.settings import ServerConfig

log = logging.getLogger(__name__)


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.strip().split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def spread(key: str, interval: float) -> float:
    """A stable offset in [0, interval) for ``key``."""
    return zlib.crc32(key.encode()) / 2**32 * interval


@dataclass
class Job:
    spec: CollectorSpec
    server: ServerConfig | None
    interval: float
    state: dict[str, Any]
    task: asyncio.Task[None] | None = None
    runs: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    skipped: int = 0
    last_error: str | None = None
    last_run: float | None = None
    last_duration: float | None = None
    last_samples: int = 0
    started: float = field(default_factory=time.time)

    @property
    def server_name(self) -> str:
        return self.server.name if self.server is not None else "podod"

    @property
    def key(self) -> tuple[str, str]:
        return (self.spec.name, self.server_name)


class Scheduler:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.runners = Runners(runtime)
        self.jobs: dict[tuple[str, str], Job] = {}
        self._states: dict[tuple[str, str], dict[str, Any]] = {}
        self._slots = asyncio.Semaphore(runtime.config.monitor.max_concurrent)
        self._slots_size = runtime.config.monitor.max_concurrent
        self._abandoned: set[asyncio.Task[Any]] = set()
        self._subs: list[Subscription] = []
        self._planned_servers: set[str] = set()

    async def start(self) -> None:
        # Servers added or removed at run time (server add|remove) change the jobs too.
        self._subs = [self.runtime.events.subscribe(
            (ServerConnected, ServerDisconnected, ServerRemoved), self._servers_changed,
            name="scheduler-servers")]
        self._plan()
        if not self.runtime.config.monitor.enabled:
            log.info("scheduler: monitor.enabled is false; no collector runs")
        else:
            log.info("scheduler: %d collector jobs (%d collectors, %d servers)",
                     len(self.jobs), len(self.runtime.registry.collectors),
                     len(monitored_servers(self.runtime)))

    async def stop(self) -> None:
        for sub in self._subs:
            self.runtime.events.unsubscribe(sub)
        self._subs = []
        tasks = [job.task for job in self.jobs.values() if job.task is not None]
        for task in [*tasks, *self._abandoned]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._abandoned:  # runs that ignore cancellation get a moment, not forever
            await asyncio.wait(set(self._abandoned), timeout=2)
        self.jobs.clear()

    async def reload(self, config: Any) -> None:
        self._plan()

    def _servers_changed(self, event: Event) -> None:
        names = {s.name for s in monitored_servers(self.runtime)}
        if names != self._planned_servers:
            self._plan()

    # -- planning -------------------------------------------------------------------------------

    def interval_of(self, spec: CollectorSpec) -> float:
        monitor = self.runtime.config.monitor
        if spec.name in monitor.intervals:
            return float(monitor.intervals[spec.name])
        return float(spec.interval if spec.interval else monitor.interval)

    def _wanted(self) -> dict[tuple[str, str], tuple[CollectorSpec, ServerConfig | None, float]]:
        monitor = self.runtime.config.monitor
        if not monitor.enabled:
            return {}
        servers = monitored_servers(self.runtime)
        wanted: dict[tuple[str, str], tuple[CollectorSpec, ServerConfig | None, float]] = {}
        for spec in self.runtime.registry.collectors.values():
            interval = self.interval_of(spec)
            if spec.per_server:
                for server in servers:
                    wanted[(spec.name, server.name)] = (spec, server, interval)
            else:
                wanted[(spec.name, "podod")] = (spec, None, interval)
        return wanted

    def _plan(self) -> None:
        """Start, stop or restart jobs to match the configuration (state is kept)."""
        size = self.runtime.config.monitor.max_concurrent
        if size != self._slots_size:
            self._slots = asyncio.Semaphore(size)
            self._slots_size = size
        wanted = self._wanted()
        self._planned_servers = {s.name for s in monitored_servers(self.runtime)}
        for key in list(self.jobs):
            job = self.jobs[key]
            target = wanted.get(key)
            if target is not None and target[0] is job.spec and target[2] == job.interval \
                    and target[1] == job.server:
                continue
            if job.task is not None:
                job.task.cancel()
            del self.jobs[key]
        for key, (spec, server, interval) in wanted.items():
            if key in self.jobs:
                continue
            state = self._states.setdefault(key, {})
            job = Job(spec, server, interval, state)
            job.task = asyncio.create_task(self._loop(job), name=f"collect-{key[0]}-{key[1]}")
            self.jobs[key] = job
        for key in list(self._states):
            if key not in wanted:
                del self._states[key]

    # -- running --------------------------------------------------------------------------------

    async def _loop(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        interval = job.interval
        offset = spread(f"{job.key[0]}/{job.key[1]}", interval)
        next_at = loop.time() + (offset - time.time() % interval) % interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            await self.run_job(job)
            next_at += interval
            late = loop.time() - next_at
            if late > 0:
                missed = int(late // interval) + 1
                next_at += missed * interval
                job.skipped += missed
                log.debug("collector %s on %s: skipped %d turn(s) (the run took too long or "
                          "waited for a free slot)", job.key[0], job.key[1], missed)

    async def run_job(self, job: Job) -> None:
        """One run of ``job``: publish its samples or its failure."""
        async with self._slots:
            await self._run(job)

    async def _run(self, job: Job) -> None:
        spec = job.spec
        runner = self.runners.get(job.server) if job.server is not None else None
        ctx = CollectContext(self.runtime, spec.name, job.server, runner, job.state)
        timeout = min(self.runtime.config.monitor.timeout, job.interval)
        started = time.monotonic()
        job.last_run = time.time()
        reason: str | None = None
        samples: list[Sample] = []
        task = asyncio.ensure_future(self._call(spec, ctx))
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            self._abandon(task)
            reason = f"did not finish within {timeout:g}s"
        else:
            try:
                result = task.result()
            except PododError as exc:
                reason = one_line(exc.message)
            except Exception as exc:
                reason = one_line(f"{type(exc).__name__}: {exc}" if str(exc)
                                  else type(exc).__name__)
                if reason != job.last_error:  # the traceback once, for whoever debugs it
                    log.debug("collector %s on %s raised", spec.name, job.server_name,
                              exc_info=True)
            else:
                if isinstance(result, list | tuple) and all(
                        isinstance(s, Sample) for s in result):
                    samples = list(result)
                else:
                    reason = (f"returned {type(result).__name__} instead of a list of "
                              "samples")
        job.runs += 1
        job.last_duration = time.monotonic() - started
        events = self.runtime.events
        if reason is None:
            job.last_samples = len(samples)
            if job.consecutive_failures:
                log.info("collector %s on %s works again (after %d failed runs)", spec.name,
                         job.server_name, job.consecutive_failures)
            job.consecutive_failures = 0
            job.last_error = None
            if samples:
                events.publish(SamplesCollected(collector=spec.name, server=job.server_name,
                                                samples=tuple(samples)))
            return
        job.failures += 1
        job.consecutive_failures += 1
        if reason != job.last_error:
            log.warning("collector %s on %s failed: %s (retried every %gs)", spec.name,
                        job.server_name, reason, job.interval)
        else:
            log.debug("collector %s on %s failed again: %s", spec.name, job.server_name,
                      reason)
        job.last_error = reason
        events.publish(CollectorFailed(collector=spec.name, server=job.server_name,
                                       reason=reason))

    @staticmethod
    async def _call(spec: CollectorSpec, ctx: CollectContext) -> Any:
        result = spec.func(ctx)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _abandon(self, task: asyncio.Task[Any]) -> None:
        """A timed-out run was cancelled; if it ignores that, let it finish on its own
        without holding a slot, and collect its outcome so nothing is logged as lost."""
        self._abandoned.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._abandoned.discard(t)
            with contextlib.suppress(BaseException):
                t.exception()

        task.add_done_callback(done)

    # -- for commands ---------------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for (name, server), job in sorted(self.jobs.items()):
            out.append({"collector": name, "server": server, "interval": job.interval,
                        "runs": job.runs, "failures": job.failures,
                        "skipped": job.skipped, "last_run": job.last_run,
                        "last_duration": job.last_duration, "last_samples": job.last_samples,
                        "last_error": job.last_error, "plugin": job.spec.plugin})
        return out


def setup(registry: Registry) -> None:
    registry.component("scheduler", Scheduler)
