"""The ``store`` component: ``state_dir/metrics.db``, fed from the event bus.

- Samples from ``SamplesCollected`` (and ``collector_errors_total`` from ``CollectorFailed``)
  are queued in memory and written in batches, one transaction each, on a dedicated writer
  thread: SQLite calls block, and the event loop must not.
- Queries run on their own reader thread and connection (WAL lets them read while the
  writer writes).
- At start the file is opened and checked (``PRAGMA quick_check``) on the writer thread; a
  file that fails is moved aside (``metrics.db.corrupt-<time>``), logged, announced with a
  ``StoreReset`` event, and a new one is started. After a kill -9, SQLite's WAL recovery
  brings back everything up to the last committed batch.
- When a write fails (a full disk, say) the batch goes back to the front of the queue,
  ``StoreDegraded`` says why, collection goes on, the queue is kept in memory up to
  ``monitor.store.max_backlog`` samples (the oldest are dropped beyond that), and writing is
  retried every ``retry_interval``; once it works the backlog is flushed and
  ``StoreRecovered`` is published.
- Retention is pruned in small transactions (``prune_step_rows``) on the writer thread,
  interleaved with the ingest batches, so neither the loop nor the ingest stalls.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from podod.errors import Unavailable
from podod.events import DaemonStarted, Event
from podod.monitor import metricsdb
from podod.monitor.model import (
    CollectorFailed,
    Sample,
    SamplesCollected,
    StoreDegraded,
    StoreRecovered,
    StoreReset,
)
from podod.monitor.query import QueryPlan, run_query
from podod.plugins import Registry

if TYPE_CHECKING:
    from podod.events import Subscription
    from podod.monitor.settings import MonitorSettings
    from podod.runtime import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")


def describe_write_error(exc: BaseException, path: Path) -> str:
    """One sentence for a failed write, naming a full disk when that is what it is."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL" or "disk is full" in str(exc) or \
            getattr(exc, "errno", None) == 28:
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = -1
        shown = f"{free} bytes free" if free >= 0 else "no space"
        return f"the file system holding {path} is full ({shown})"
    return f"writing {path} failed: {exc}"


class Store:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.path = Path(runtime.config.state_dir) / "metrics.db"
        self._writer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="podod-mstore")
        self._reader_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="podod-mread")
        self._writer: metricsdb.MetricsWriter | None = None
        self._reader: sqlite3.Connection | None = None
        self._pending: collections.deque[Sample] = collections.deque()
        self._wake = asyncio.Event()
        self._subs: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._errors: dict[tuple[str, str], int] = {}
        self._announce: list[Event] = []
        self._started = False
        self.degraded: str | None = None
        self.degraded_since: float | None = None
        self.dropped = 0  # samples dropped because the backlog was full (this degradation)
        self.dropped_total = 0
        self.last_prune: dict[str, Any] = {}
        self.reset: dict[str, str] | None = None
        self._backlog_warned = False

    @property
    def settings(self) -> MonitorSettings:
        return self.runtime.config.monitor

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        events = self.runtime.events
        self._subs = [
            events.subscribe(SamplesCollected, self._on_samples, name="store-samples"),
            events.subscribe(CollectorFailed, self._on_failure, name="store-failures"),
            events.subscribe(DaemonStarted, self._on_started, name="store-started"),
        ]
        try:
            await self._open()
        except (sqlite3.Error, OSError) as exc:
            self._degrade(exc)
        self._tasks = [asyncio.create_task(self._flusher(), name="store-flusher"),
                       asyncio.create_task(self._pruner(), name="store-pruner")]

    async def stop(self) -> None:
        for sub in self._subs:
            self.runtime.events.unsubscribe(sub)
        self._subs = []
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._writer is not None and self.degraded is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), 5)
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await loop.run_in_executor(self._writer_pool, writer.close)
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await loop.run_in_executor(self._reader_pool, reader.close)
        self._writer_pool.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)

    async def reload(self, config: Any) -> None:
        self._wake.set()  # new intervals take effect on the next round

    def _on_started(self, event: DaemonStarted) -> None:
        self._started = True
        for pending in self._announce:
            self.runtime.events.publish(pending)
        self._announce = []

    def _publish(self, event: Event) -> None:
        """Publish now, or once the daemon has started (so every subscriber is there)."""
        if self._started:
            self.runtime.events.publish(event)
        else:
            self._announce.append(event)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer_pool, self._open_sync)
        self._reader = await loop.run_in_executor(
            self._reader_pool, lambda: metricsdb.connect(self.path, readonly=True))

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        problem = metricsdb.quick_check(self.path)
        if problem is not None:
            moved = metricsdb.move_aside(self.path)
            log.error("metrics store: %s failed its integrity check (%s); moved it to %s and "
                      "started a new one", self.path, problem, moved)
            self.reset = {"reason": problem, "moved_to": str(moved)}
            self._publish(StoreReset(reason=f"{self.path.name} failed its integrity check: "
                                            f"{problem}", moved_to=str(moved)))
        else:
            log.info("metrics store: %s opened, quick_check ok", self.path)
        self._writer = metricsdb.MetricsWriter(self.path)

    # -- ingest -------------------------------------------------------------------------------

    def _on_samples(self, event: SamplesCollected) -> None:
        self.add(event.samples)

    def _on_failure(self, event: CollectorFailed) -> None:
        key = (event.collector, event.server)
        self._errors[key] = self._errors.get(key, 0) + 1
        self.add([Sample("collector_errors_total", event.server, float(self._errors[key]),
                         Sample.labels_of(collector=event.collector), "counter", event.at)])

    def add(self, samples: tuple[Sample, ...] | list[Sample]) -> None:
        """Queue samples for the next batch (bounded: the oldest go first)."""
        pending = self._pending
        pending.extend(samples)
        self._trim()
        if len(pending) >= self.settings.store.max_batch and self.degraded is None:
            self._wake.set()

    def _trim(self) -> None:
        pending = self._pending
        excess = len(pending) - self.settings.store.max_backlog
        if excess <= 0:
            return
        for _ in range(excess):
            pending.popleft()
        self.dropped += excess
        self.dropped_total += excess
        if not self._backlog_warned:
            self._backlog_warned = True
            log.warning("metrics store: more than %d samples wait to be written; dropping the "
                        "oldest", self.settings.store.max_backlog)

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Write everything queued now, batch by batch; return how many samples were written.
        Raises the write error if the store cannot write."""
        loop = asyncio.get_running_loop()
        written = 0
        if self._writer is None:
            await self._open()
        first = True
        while self._pending:
            size = min(len(self._pending), self.settings.store.max_batch)
            if first and self.degraded is not None:
                size = min(size, 1000)  # a small probe write first while degraded
            first = False
            batch = [self._pending.popleft() for _ in range(size)]
            writer = self._writer
            assert writer is not None
            try:
                n = await loop.run_in_executor(self._writer_pool, writer.ingest, batch)
            except BaseException:
                self._pending.extendleft(reversed(batch))
                self._trim()
                raise
            written += n
            log.debug("metrics store: wrote %d samples (batch %d, %d in all, newest %.3f)",
                      n, writer.batches, writer.written, writer.newest_ts)
        return written

    async def _flusher(self) -> None:
        flushed_while_degraded = 0
        while True:
            wait = (self.settings.store.retry_interval if self.degraded is not None
                    else self.settings.store.flush_interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            backlog = self.backlog
            try:
                await self.flush()
            except (sqlite3.Error, OSError) as exc:
                self._degrade(exc)
                continue
            except Exception:
                log.exception("metrics store: unexpected failure while writing")
                continue
            if self.degraded is not None:
                flushed_while_degraded = backlog
                self._recover(flushed_while_degraded)

    def _degrade(self, exc: BaseException) -> None:
        reason = describe_write_error(exc, self.path)
        if self.degraded is None:
            self.degraded_since = time.time()
            log.error("metrics store cannot write: %s; collection goes on, keeping up to %d "
                      "samples in memory and retrying every %gs", reason,
                      self.settings.store.max_backlog, self.settings.store.retry_interval)
            self._publish(StoreDegraded(reason=f"{reason}; samples are kept in memory"))
        elif reason != self.degraded:
            log.warning("metrics store still cannot write: %s", reason)
        self.degraded = reason

    def _recover(self, flushed: int) -> None:
        took = time.time() - (self.degraded_since or time.time())
        log.info("metrics store writes again after %.0fs: %d queued samples written, %d "
                 "dropped", took, flushed, self.dropped)
        self._publish(StoreRecovered(flushed=flushed, dropped=self.dropped))
        self.degraded = None
        self.degraded_since = None
        self.dropped = 0
        self._backlog_warned = False

    # -- retention ----------------------------------------------------------------------------

    async def _pruner(self) -> None:
        await asyncio.sleep(min(60.0, self.settings.store.prune_interval))
        while True:
            if self.degraded is None and self._writer is not None:
                try:
                    await self.prune()
                except (sqlite3.Error, OSError) as exc:
                    log.warning("metrics store: pruning failed: %s", exc)
                except Exception:
                    log.exception("metrics store: pruning failed")
            await asyncio.sleep(self.settings.store.prune_interval)

    async def prune(self, now: float | None = None) -> dict[str, Any]:
        """One pass over every series, in small transactions; returns what was deleted."""
        now = time.time() if now is None else now
        monitor = self.settings
        cursor = metricsdb.PruneCursor(raw_cut_ms=int((now - monitor.raw_retention) * 1000),
                                       rollup_cut=int(now - monitor.rollup_retention))
        loop = asyncio.get_running_loop()
        steps = 0
        while True:
            writer = self._writer
            if writer is None:
                raise Unavailable("the metrics store is not open")
            done = await loop.run_in_executor(self._writer_pool, writer.prune_step, cursor,
                                              monitor.store.prune_step_rows)
            steps += 1
            if done:
                break
            await asyncio.sleep(0)  # let queued ingest batches run between steps
        result = {"samples": cursor.deleted_samples, "rollups": cursor.deleted_rollups,
                  "series": cursor.deleted_series, "steps": steps,
                  "seconds": round(time.monotonic() - cursor.started, 3), "at": now}
        self.last_prune = result
        if cursor.deleted_samples or cursor.deleted_rollups:
            log.info("metrics store: pruned %d samples, %d rollups and %d series in %d steps",
                     cursor.deleted_samples, cursor.deleted_rollups, cursor.deleted_series,
                     steps)
        return result

    # -- reading ------------------------------------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the reader thread (a read-only connection)."""
        if self._reader is None:
            if self.degraded:
                raise Unavailable(f"the metrics store is not open ({self.degraded})")
            raise Unavailable("the metrics store is not open yet")
        reader = self._reader
        return await asyncio.get_running_loop().run_in_executor(
            self._reader_pool, lambda: fn(reader, *args))

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the writer thread, between ingest batches (for other
        areas' tables in metrics.db; ``fn`` manages its own transaction)."""
        writer = self._writer
        if writer is None:
            raise Unavailable("the metrics store is not open")
        return await asyncio.get_running_loop().run_in_executor(
            self._writer_pool, lambda: fn(writer.conn, *args))

    async def migrate(self, area: str, steps: list[str]) -> int:
        """Numbered schema steps for another area's tables in metrics.db."""
        from podod.state import migrate_sync

        return await self.write(migrate_sync, area, steps)

    async def query(self, name: str, server: str | None, labels: dict[str, str],
                    plan: QueryPlan) -> list[dict[str, Any]]:
        return await self.read(run_query, name, server, labels, plan)

    async def series(self, server: str | None = None, name: str | None = None
                     ) -> list[dict[str, Any]]:
        def fetch(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            out = []
            for row in metricsdb.find_series(conn, name, server):
                newest, value, oldest = metricsdb.series_extent(conn, row.id)
                out.append({"name": row.name, "server": row.server, "labels": row.labels,
                            "kind": row.kind, "last_ts": newest / 1000 if newest else None,
                            "last_value": value, "oldest_rollup": oldest})
            return out

        return await self.read(fetch)

    def status(self) -> dict[str, Any]:
        writer = self._writer
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(str(self.path) + suffix).st_size
        return {
            "path": str(self.path), "open": writer is not None, "size_bytes": size,
            "degraded": self.degraded, "degraded_since": self.degraded_since,
            "backlog": self.backlog, "max_backlog": self.settings.store.max_backlog,
            "dropped": self.dropped_total, "written": writer.written if writer else 0,
            "batches": writer.batches if writer else 0,
            "raw_retention": self.settings.raw_retention,
            "rollup_retention": self.settings.rollup_retention,
            "last_prune": self.last_prune or None, "reset": self.reset,
        }


def setup(registry: Registry) -> None:
    registry.component("store", Store)
