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

Every turn is also accounted to its collector's *cycle* (:mod:`podod.monitor.cycles`): when
a cycle closes, its figures are published as the ``collector_cycle_*`` series of server
``podod`` and kept for ``collector cycles``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import re
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from podod.errors import PododError
from podod.events import Event
from podod.monitor.collect import CollectContext
from podod.monitor.cycles import Cycle, CycleStats
from podod.monitor.model import CollectorFailed, Sample, SamplesCollected
from podod.monitor.runners import Runners, monitored_servers
from podod.plugins import CollectorSpec, Registry
from podod.servers.events import ServerConnected, ServerDisconnected, ServerRemoved

if TYPE_CHECKING:
    from podod.events import Subscription
    from podod.runtime import Runtime
    from podod.servers.settings import ServerConfig

log = logging.getLogger(__name__)


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.strip().split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


def same_failure(reason: str, earlier: str | None) -> bool:
    """Whether ``reason`` repeats ``earlier``, numbers aside: an unreachable server's reason
    names the time since it went down and the next attempt ("since 12:03:04, 8s ago; podod
    tries again in 3 s"), which change at every run while the failure stays the same."""
    return earlier is not None and _NUMBERS.sub("#", reason) == _NUMBERS.sub("#", earlier)


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
    first_cycle: int = 0  # the cycle of the job's first turn (cycles.py)

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
        self._by_collector: dict[str, list[Job]] = {}
        self.cycles = CycleStats(self._expected)
        self._overrunning: set[str] = set()

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
        by_collector: dict[str, list[Job]] = {}
        for job in self.jobs.values():
            by_collector.setdefault(job.spec.name, []).append(job)
        for gone in set(self._by_collector) - set(by_collector):
            self.cycles.forget(gone)
        self._by_collector = by_collector
        self._publish_cycles(self.cycles.close_all_due(time.time()))

    # -- running --------------------------------------------------------------------------------

    async def _loop(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        interval = job.interval
        offset = spread(f"{job.key[0]}/{job.key[1]}", interval)
        # turn k is due at k·interval + offset (Unix time): the same phase after a restart
        now = time.time()
        k = math.ceil((now - offset) / interval)
        job.first_cycle = k
        next_at = loop.time() + (k * interval + offset - now)
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            await self.run_job(job, turn=k * interval + offset)
            next_at += interval
            k += 1
            late = loop.time() - next_at
            if late > 0:
                missed = int(late // interval) + 1
                turns = [(k + i) * interval + offset for i in range(missed)]
                next_at += missed * interval
                k += missed
                job.skipped += missed
                self._publish_cycles(self.cycles.skipped(
                    job.spec.name, job.server_name, interval, turns, time.time()))
                log.debug("collector %s on %s: skipped %d turn(s) (the run took too long or "
                          "waited for a free slot)", job.key[0], job.key[1], missed)

    async def run_job(self, job: Job, turn: float | None = None) -> None:
        """One run of ``job``: publish its samples or its failure. ``turn``: when the run
        was due (Unix time), for the cycle statistics; None for a run out of turn."""
        async with self._slots:
            await self._run(job, turn)

    async def _run(self, job: Job, turn: float | None = None) -> None:
        spec = job.spec
        runner = self.runners.get(job.server) if job.server is not None else None
        ctx = CollectContext(self.runtime, spec.name, job.server, runner, job.state)
        timeout = min(self.runtime.config.monitor.timeout, job.interval)
        started = time.monotonic()
        job.last_run = time.time()
        if turn is not None:
            self.cycles.started(spec.name, job.server_name, job.interval, turn, job.last_run)
        reason: str | None = None
        samples: list[Sample] = []
        task = asyncio.ensure_future(self._call(spec, ctx))
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            if turn is not None:  # the job was stopped (reload, stop): not a late run
                self.cycles.cancelled(spec.name, job.server_name, job.interval, turn)
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
                if not same_failure(reason, job.last_error):  # the traceback once
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
        if turn is not None:
            self._publish_cycles(self.cycles.finished(
                spec.name, job.server_name, job.interval, turn, job.last_run,
                job.last_run + job.last_duration, reason is None))
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
        if not same_failure(reason, job.last_error):
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

    # -- cycles ---------------------------------------------------------------------------------

    def _expected(self, collector: str, index: int) -> int:
        return sum(1 for job in self._by_collector.get(collector, ())
                   if job.first_cycle <= index)

    def _publish_cycles(self, closed: list[Cycle]) -> None:
        """Closed cycles become series of server ``podod`` (alert rules and /metrics)."""
        if not closed:
            return
        samples: list[Sample] = []
        for cycle in closed:
            now = cycle.closed_at or time.time()

            def gauge(name: str, value: float, *, cycle: Cycle = cycle, now: float = now,
                      **labels: str) -> None:
                samples.append(Sample(name, "podod", float(value), Sample.labels_of(
                    collector=cycle.collector, **labels), "gauge", now))

            gauge("collector_cycle_seconds", cycle.cycle_time)
            gauge("collector_interval_seconds", cycle.interval)
            gauge("collector_cycle_jobs", cycle.jobs)
            for outcome in ("ok", "failed", "skipped", "overran"):
                gauge("collector_cycle_runs", getattr(cycle, outcome), outcome=outcome)
            # logged once when cycles stop fitting, once when they fit again
            if not cycle.fits and cycle.collector not in self._overrunning:
                self._overrunning.add(cycle.collector)
                log.warning("collector %s: a cycle did not fit its %gs interval (%d of %d "
                            "jobs ran, %d skipped, %d overran; cycle time %.1fs): raise "
                            "monitor.max_concurrent or the interval, or see 'collector "
                            "cycles'", cycle.collector, cycle.interval, cycle.runs,
                            cycle.jobs, cycle.skipped, cycle.overran, cycle.cycle_time)
            elif cycle.fits and cycle.collector in self._overrunning:
                self._overrunning.discard(cycle.collector)
                log.info("collector %s: its cycles fit the %gs interval again",
                         cycle.collector, cycle.interval)
        self.runtime.events.publish(SamplesCollected(collector="scheduler", server="podod",
                                                     samples=tuple(samples)))

    def cycle_summary(self, collector: str, last: int | None = None) -> dict[str, Any]:
        self._publish_cycles(self.cycles.close_due(collector, time.time()))
        jobs = self._by_collector.get(collector, [])
        interval = jobs[0].interval if jobs else None
        return {"collector": collector, "interval": interval, "jobs": len(jobs),
                **self.cycles.summary(collector, last)}

    def collectors(self) -> list[str]:
        return sorted(self._by_collector)

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
