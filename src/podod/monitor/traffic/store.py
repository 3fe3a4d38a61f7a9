"""``traffic.db``: hourly traffic counts, top lists, cumulative counters, and where each
server's log was last read, in one SQLite database (WAL) of the state directory.

A follower's counts and the position they were read up to are written in ONE transaction
(:meth:`TrafficStore.commit`), together with the state of the messages still in flight
(so a deferral after a restart is not a second "deferred" message). A crash therefore
loses nothing and counts nothing twice: after a restart the follower resumes exactly at
the committed position, with the committed counts.

Its own database rather than tables in metrics.db: the traffic counts have their own shape
(hourly counters and top lists, not samples), their own retention, and their own writer,
and they must survive whatever happens to the samples store.

Every call runs on one dedicated thread, which keeps SQLite off the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from podod.monitor.traffic.tally import TOP_KINDS, Tally
from podod.monitor.traffic.top import TopCounter
from podod.state import migrate_sync

T = TypeVar("T")

MIGRATIONS = [
    """
    CREATE TABLE hourly (
        server TEXT NOT NULL, hour INTEGER NOT NULL, key TEXT NOT NULL,
        value INTEGER NOT NULL, PRIMARY KEY (server, hour, key)) WITHOUT ROWID;
    CREATE TABLE top (
        server TEXT NOT NULL, hour INTEGER NOT NULL, kind TEXT NOT NULL, item TEXT NOT NULL,
        count INTEGER NOT NULL, PRIMARY KEY (server, hour, kind, item)) WITHOUT ROWID;
    CREATE TABLE totals (
        server TEXT NOT NULL, key TEXT NOT NULL, value INTEGER NOT NULL,
        PRIMARY KEY (server, key)) WITHOUT ROWID;
    CREATE TABLE position (
        server TEXT PRIMARY KEY, source TEXT NOT NULL, path TEXT, inode INTEGER,
        offset INTEGER, head TEXT, cursor TEXT, followed_since INTEGER,
        updated REAL NOT NULL);
    CREATE TABLE pending (
        server TEXT NOT NULL, qid TEXT NOT NULL, flags INTEGER NOT NULL,
        size INTEGER NOT NULL, hour INTEGER NOT NULL, transport TEXT NOT NULL,
        PRIMARY KEY (server, qid)) WITHOUT ROWID;
    CREATE TABLE imports (
        server TEXT NOT NULL, head TEXT NOT NULL, file TEXT NOT NULL,
        bytes INTEGER NOT NULL, lines INTEGER NOT NULL, imported REAL NOT NULL,
        PRIMARY KEY (server, head))
    """,
]


@dataclass
class Position:
    """Where a server's log was read up to.

    ``source`` is ``file`` (``path``, ``inode``, ``offset``: bytes consumed, ``head``:
    a digest of the file's first line, which tells a rotated or rewritten file from the
    one read before even when the inode number is reused) or ``journal`` (``cursor``).
    ``followed_since`` is when podod started counting this log live: backfills skip
    lines from then on.
    """

    source: str
    path: str | None = None
    inode: int | None = None
    offset: int = 0
    head: str | None = None
    cursor: str | None = None
    followed_since: int | None = None


@dataclass
class Batch:
    """What one flush of a follower writes."""

    server: str
    tally: Tally
    totals: Mapping[str, int]           # increments of the cumulative counters
    position: Position | None = None
    pending_kept: Mapping[str, list[object]] | None = None
    pending_gone: Iterable[str] = ()
    import_record: ImportRecord | None = None


@dataclass
class ImportRecord:
    """A backfilled file: known by the digest of its first line (``head``, the same for
    ``mail.log.1`` and the ``mail.log.2.gz`` it later becomes); ``bytes_before`` of its
    (decompressed) content were imported earlier, ``bytes_after`` are imported now."""

    head: str
    file: str
    bytes_before: int
    bytes_after: int
    lines: int


class AlreadyImported(Exception):
    """Another import of the same file committed first."""


class TrafficStore:
    def __init__(self, path: Path, *, top_keep: int = 200) -> None:
        self.path = Path(path)
        self.top_keep = top_keep
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="podod-traffic")
        self._conn: sqlite3.Connection | None = None

    # -- plumbing ----------------------------------------------------------------------------

    def open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions (area TEXT PRIMARY KEY, version INTEGER)")
        migrate_sync(conn, "traffic", MIGRATIONS)
        self._conn = conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the traffic store is not open")
        return self._conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        await self.run(self.open_sync)

    async def close(self) -> None:
        if self._conn is not None:
            await self.run(self.conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    def close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._executor.shutdown(wait=False)

    # -- writing -------------------------------------------------------------------------------

    def commit(self, batch: Batch) -> None:
        """Counts, top lists, counters, position and in-flight messages: all or nothing."""
        conn = self.conn
        server = batch.server
        conn.execute("BEGIN IMMEDIATE")
        try:
            rec = batch.import_record
            if rec is not None:
                if self._imported_bytes(server, rec.head) != rec.bytes_before:
                    raise AlreadyImported(rec.file)
                conn.execute(
                    "INSERT INTO imports VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(server, head) "
                    "DO UPDATE SET file=excluded.file, bytes=excluded.bytes, "
                    "lines=lines + excluded.lines, imported=excluded.imported",
                    (server, rec.head, rec.file, rec.bytes_after, rec.lines, time.time()))
            conn.executemany(
                "INSERT INTO hourly VALUES (?, ?, ?, ?) ON CONFLICT(server, hour, key) "
                "DO UPDATE SET value = value + excluded.value",
                ((server, hour, k, n) for hour, k, n in batch.tally.items() if n))
            self._merge_tops(conn, server, batch.tally)
            conn.executemany(
                "INSERT INTO totals VALUES (?, ?, ?) ON CONFLICT(server, key) "
                "DO UPDATE SET value = value + excluded.value",
                ((server, k, n) for k, n in batch.totals.items() if n))
            if batch.position is not None:
                p = batch.position
                conn.execute(
                    "INSERT INTO position VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(server) DO UPDATE SET source=excluded.source, "
                    "path=excluded.path, inode=excluded.inode, offset=excluded.offset, "
                    "head=excluded.head, cursor=excluded.cursor, "
                    "followed_since=excluded.followed_since, updated=excluded.updated",
                    (server, p.source, p.path, p.inode, p.offset, p.head, p.cursor,
                     p.followed_since, time.time()))
            if batch.pending_kept:
                conn.executemany(
                    "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?, ?)",
                    ((server, qid, int(s[0]), int(s[1]), int(s[2]), str(s[3]))  # type: ignore[call-overload]
                     for qid, s in batch.pending_kept.items()))
            gone = list(batch.pending_gone)
            if gone:
                conn.executemany("DELETE FROM pending WHERE server=? AND qid=?",
                                 ((server, qid) for qid in gone))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _merge_tops(self, conn: sqlite3.Connection, server: str, tally: Tally) -> None:
        for hour, lists in tally.tops.items():
            for kind, counter in lists.items():
                if not counter.counts:
                    continue
                merged = TopCounter(self.top_keep)
                merged.merge(conn.execute(
                    "SELECT item, count FROM top WHERE server=? AND hour=? AND kind=?",
                    (server, hour, kind)).fetchall())
                merged.merge(counter.counts.items())
                conn.execute("DELETE FROM top WHERE server=? AND hour=? AND kind=?",
                             (server, hour, kind))
                conn.executemany("INSERT INTO top VALUES (?, ?, ?, ?, ?)",
                                 ((server, hour, kind, item, n)
                                  for item, n in merged.top(self.top_keep)))

    def prune_step(self, before: int, limit_hours: int = 24) -> int:
        """Delete the oldest (at most ``limit_hours``) hours before ``before``; returns
        the rows deleted (0: nothing left to prune). Small steps keep each write short."""
        conn = self.conn
        hours = [row[0] for row in conn.execute(
            "SELECT DISTINCT hour FROM hourly WHERE hour < ? ORDER BY hour LIMIT ?",
            (before, limit_hours))]
        hours += [row[0] for row in conn.execute(
            "SELECT DISTINCT hour FROM top WHERE hour < ? ORDER BY hour LIMIT ?",
            (before, limit_hours))]
        if not hours:
            return 0
        last = max(hours)
        conn.execute("BEGIN IMMEDIATE")
        try:
            deleted = conn.execute("DELETE FROM hourly WHERE hour <= ? AND hour < ?",
                                   (last, before)).rowcount
            deleted += conn.execute("DELETE FROM top WHERE hour <= ? AND hour < ?",
                                    (last, before)).rowcount
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return deleted

    # -- reading -------------------------------------------------------------------------------

    def position(self, server: str) -> Position | None:
        row = self.conn.execute(
            "SELECT source, path, inode, offset, head, cursor, followed_since FROM position "
            "WHERE server=?", (server,)).fetchone()
        return Position(*row) if row else None

    def pending(self, server: str) -> list[tuple[str, int, int, int, str]]:
        return [(str(q), int(f), int(s), int(h), str(t)) for q, f, s, h, t in self.conn.execute(
            "SELECT qid, flags, size, hour, transport FROM pending WHERE server=? "
            "ORDER BY hour", (server,))]

    def totals(self, server: str | None = None) -> dict[str, dict[str, int]]:
        """Cumulative counters: server -> key -> value."""
        out: dict[str, dict[str, int]] = {}
        query = "SELECT server, key, value FROM totals"
        args: tuple[Any, ...] = ()
        if server is not None:
            query += " WHERE server=?"
            args = (server,)
        for srv, k, v in self.conn.execute(query, args):
            out.setdefault(srv, {})[k] = v
        return out

    def tally(self, servers: Iterable[str] | None, since: int | None,
              until: int | None = None) -> Tally:
        """The stored counts of ``servers`` (all when None) in ``[since, until)``."""
        tally = Tally(top_capacity=max(self.top_keep, 1000))
        where = ["1=1"]
        args: list[Any] = []
        if servers is not None:
            names = list(servers)
            where.append(f"server IN ({','.join('?' * len(names))})")
            args += names
        if since is not None:
            where.append("hour >= ?")
            args.append(since)
        if until is not None:
            where.append("hour < ?")
            args.append(until)
        clause = " AND ".join(where)
        for hour, k, n in self.conn.execute(
                f"SELECT hour, key, SUM(value) FROM hourly WHERE {clause} GROUP BY hour, key",
                args):
            tally.add(hour, k, n)
        for hour, kind, item, n in self.conn.execute(
                f"SELECT hour, kind, item, SUM(count) FROM top WHERE {clause} "
                "GROUP BY hour, kind, item", args):
            if kind in TOP_KINDS:
                tally.top_lists(hour)[kind].add(item, n)
        return tally

    def _imported_bytes(self, server: str, head: str) -> int:
        row = self.conn.execute("SELECT bytes FROM imports WHERE server=? AND head=?",
                                (server, head)).fetchone()
        return int(row[0]) if row else 0

    def imported_bytes(self, server: str, head: str) -> int:
        """How many bytes of the file with this first-line digest were imported."""
        return self._imported_bytes(server, head)

