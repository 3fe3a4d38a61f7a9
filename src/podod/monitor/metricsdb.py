"""metrics.db at the SQLite level: schema, batched ingest with rollups, pruning, queries.

Everything here is synchronous and meant to run on ONE thread per connection (the store's
writer thread, or its reader thread); :mod:`podod.monitor.store` drives it from the event
loop. Layout:

- ``series``: one row per (name, server, labels), with its kind (gauge or counter).
- ``samples``: raw values, clustered by (series_id, ts) (``WITHOUT ROWID``), ``ts`` in
  milliseconds: a range of one series is one contiguous read.
- ``rollups``: per series, step (300 s, 3600 s) and bucket start: count, sum, min, max, last
  (and its time) and, for counters, ``increase``: the sum of the positive steps between
  consecutive samples, where a drop counts as a reset to zero (the source restarted, e.g.
  Dovecot's stats after a reload), so a rate is never negative.

A batch is one transaction: raw rows and the rollups they change are written together, so a
kill -9 loses at most the batch in flight and the rollups always agree with the raw rows.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podod.monitor.model import LabelKey, Sample
from podod.state import migrate_sync

log = logging.getLogger(__name__)

STEPS = (300, 3600)

SCHEMA = [
    """
    CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        server TEXT NOT NULL,
        labels TEXT NOT NULL,
        kind TEXT NOT NULL,
        created REAL NOT NULL,
        UNIQUE (name, server, labels)
    );
    CREATE TABLE samples (
        series_id INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (series_id, ts)
    ) WITHOUT ROWID;
    CREATE TABLE rollups (
        series_id INTEGER NOT NULL,
        step INTEGER NOT NULL,
        bucket INTEGER NOT NULL,
        count INTEGER NOT NULL,
        sum REAL NOT NULL,
        min REAL NOT NULL,
        max REAL NOT NULL,
        last REAL NOT NULL,
        last_ts INTEGER NOT NULL,
        increase REAL,
        PRIMARY KEY (series_id, step, bucket)
    ) WITHOUT ROWID
    """,
]

_UPSERT_ROLLUP = (
    "INSERT INTO rollups (series_id, step, bucket, count, sum, min, max, last, last_ts, "
    "increase) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET "
    "count = count + excluded.count, sum = sum + excluded.sum, "
    "min = min(min, excluded.min), max = max(max, excluded.max), "
    "last = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last ELSE last END, "
    "last_ts = max(last_ts, excluded.last_ts), "
    "increase = CASE WHEN excluded.increase IS NULL THEN increase "
    "ELSE coalesce(increase, 0) + excluded.increase END")


def labels_text(labels: LabelKey) -> str:
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"))


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=10000")
    if readonly:
        conn.execute("PRAGMA query_only=1")
        return conn
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA journal_size_limit=67108864")
    conn.execute("CREATE TABLE IF NOT EXISTS schema_versions "
                 "(area TEXT PRIMARY KEY, version INTEGER)")
    return conn


def quick_check(path: Path) -> str | None:
    """None when ``path`` passes ``PRAGMA quick_check`` (or does not exist), else why not."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    if rows and rows[0][0] == "ok":
        return None
    return "; ".join(str(r[0]) for r in rows[:3]) or "quick_check returned nothing"


def move_aside(path: Path) -> Path:
    """Rename ``path`` (and its -wal/-shm) to ``path.corrupt-<UTC time>``; return the name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            os.replace(extra, target.with_name(target.name + suffix))
    return target


@dataclass
class PruneCursor:
    """Where a pruning pass stands (series are visited in id order, a few at a time)."""

    after_id: int = 0
    raw_cut_ms: int = 0
    rollup_cut: int = 0
    deleted_samples: int = 0
    deleted_rollups: int = 0
    deleted_series: int = 0
    started: float = field(default_factory=time.monotonic)


class MetricsWriter:
    """The write side, confined to the store's writer thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path)
        migrate_sync(self.conn, "metrics", SCHEMA)
        self._ids: dict[tuple[str, str, LabelKey], int] = {}
        self._counters: set[int] = set()  # ids of counter series
        self._last: dict[int, tuple[int, float]] = {}  # counter series → newest (ts, value)
        self.written = 0
        self.batches = 0
        self.newest_ts = 0.0

    def close(self) -> None:
        self.conn.close()

    # -- ingest ----------------------------------------------------------------------------

    def _series_id(self, key: tuple[str, str, LabelKey], kind: str,
                   created: list[tuple[str, str, LabelKey]]) -> int:
        name, server, labels = key
        text = labels_text(labels)
        row = self.conn.execute("SELECT id, kind FROM series WHERE name=? AND server=? AND "
                                "labels=?", (name, server, text)).fetchone()
        if row is None:
            cur = self.conn.execute(
                "INSERT INTO series (name, server, labels, kind, created) VALUES (?,?,?,?,?)",
                (name, server, text, kind, time.time()))
            sid, counter = int(cur.lastrowid or 0), kind == "counter"
            created.append(key)
        else:
            sid, counter = int(row[0]), row[1] == "counter"
        self._ids[key] = sid
        if counter:
            self._counters.add(sid)
        return sid

    def ingest(self, samples: Sequence[Sample]) -> int:
        """Write ``samples`` and their rollups in one transaction; return how many."""
        if not samples:
            return 0
        conn = self.conn
        ids = self._ids
        created: list[tuple[str, str, LabelKey]] = []
        rows: list[tuple[int, int, float]] = []
        append = rows.append
        conn.execute("BEGIN IMMEDIATE")
        try:
            for s in samples:
                sid = ids.get((s.series, s.server, s.labels))
                if sid is None:
                    sid = self._series_id((s.series, s.server, s.labels), s.kind, created)
                append((sid, int(s.ts * 1000), s.value))
            rows.sort()
            last: dict[int, tuple[int, float]] = {}
            rollups = aggregate(rows, self._counters, self._previous, last)
            conn.executemany("INSERT OR REPLACE INTO samples (series_id, ts, value) "
                             "VALUES (?,?,?)", rows)
            conn.executemany(_UPSERT_ROLLUP, rollups)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for key in created:  # their ids were rolled back with the transaction
                sid = ids.pop(key, None)
                self._counters.discard(sid or 0)
            raise
        self._last.update(last)
        self.written += len(rows)
        self.batches += 1
        self.newest_ts = max(self.newest_ts, rows[-1][1] / 1000 if rows else 0)
        return len(rows)

    def _previous(self, sid: int) -> tuple[int, float] | None:
        """The newest stored reading of a counter series before this batch."""
        known = self._last.get(sid)
        if known is None:
            row = self.conn.execute("SELECT ts, value FROM samples WHERE series_id=? "
                                    "ORDER BY ts DESC LIMIT 1", (sid,)).fetchone()
            if row is not None:
                known = (int(row[0]), float(row[1]))
        return known

    # -- retention ---------------------------------------------------------------------------

    def prune_step(self, cursor: PruneCursor, max_rows: int) -> bool:
        """Delete up to about ``max_rows`` expired rows in one transaction; True when the pass
        over all series is complete."""
        conn = self.conn
        ids = [r[0] for r in conn.execute(
            "SELECT id FROM series WHERE id > ? ORDER BY id LIMIT 256", (cursor.after_id,))]
        if not ids:
            return True
        budget = max_rows
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sid in ids:
                n = self._delete_bounded(
                    "samples", "ts", sid, cursor.raw_cut_ms, budget, ())
                cursor.deleted_samples += n
                budget -= n
                for step in STEPS:
                    if budget <= 0:
                        break
                    n = self._delete_bounded("rollups", "bucket", sid, cursor.rollup_cut,
                                             budget, (("step", step),))
                    cursor.deleted_rollups += n
                    budget -= n
                if budget <= 0:
                    break  # this series may hold more: visit it again next step
                cursor.after_id = sid
                if conn.execute("SELECT 1 FROM samples WHERE series_id=? LIMIT 1",
                                (sid,)).fetchone() is None and conn.execute(
                        "SELECT 1 FROM rollups WHERE series_id=? LIMIT 1",
                        (sid,)).fetchone() is None:
                    conn.execute("DELETE FROM series WHERE id=?", (sid,))
                    cursor.deleted_series += 1
                    self._forget(sid)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return False

    def _delete_bounded(self, table: str, column: str, sid: int, cut: int, budget: int,
                        extra: tuple[tuple[str, int], ...]) -> int:
        where = "series_id=?" + "".join(f" AND {k}=?" for k, _ in extra)
        args: tuple[Any, ...] = (sid, *(v for _, v in extra))
        edge = self.conn.execute(
            f"SELECT {column} FROM {table} WHERE {where} AND {column} < ? ORDER BY {column} "
            "LIMIT 1 OFFSET ?", (*args, cut, budget - 1)).fetchone()
        before = self.conn.total_changes
        if edge is None:  # fewer than budget rows expired: delete them all
            self.conn.execute(f"DELETE FROM {table} WHERE {where} AND {column} < ?",
                              (*args, cut))
        else:
            self.conn.execute(f"DELETE FROM {table} WHERE {where} AND {column} <= ?",
                              (*args, edge[0]))
        return self.conn.total_changes - before

    def _forget(self, sid: int) -> None:
        self._last.pop(sid, None)
        self._counters.discard(sid)
        for key, known in list(self._ids.items()):
            if known == sid:
                del self._ids[key]


def aggregate(rows: Sequence[tuple[int, int, float]], counters: set[int],
              previous: Callable[[int], tuple[int, float] | None],
              last: dict[int, tuple[int, float]]) -> list[tuple[Any, ...]]:
    """Rollup rows for ``rows`` (sorted by series, then time): 5-minute buckets from the
    samples, hourly buckets merged from those. ``previous(sid)`` gives a counter's newest
    earlier reading (before this batch); ``last`` receives each counter's newest reading.
    It runs before the batch is inserted, so ``previous`` sees the stored state."""
    five: list[list[Any]] = []  # [sid, bucket, count, sum, min, max, last, last_ts, increase]
    cur_sid = -1
    is_counter = False
    prev: tuple[int, float] | None = None
    a: list[Any] = [-1, -1]
    for sid, ts, v in rows:
        if sid != cur_sid:
            if is_counter and prev is not None:
                last[cur_sid] = prev
            cur_sid = sid
            is_counter = sid in counters
            prev = previous(sid) if is_counter else None
        inc: float | None = None
        if is_counter:
            if prev is None or ts <= prev[0]:
                inc = 0.0
            else:
                delta = v - prev[1]
                inc = delta if delta >= 0 else v  # a drop is a reset: count from zero
            if prev is None or ts > prev[0]:
                prev = (ts, v)
        sec = ts // 1000
        bucket = sec - sec % 300
        if a[0] != sid or a[1] != bucket:
            a = [sid, bucket, 1, v, v, v, v, ts, inc]
            five.append(a)
            continue
        a[2] += 1
        a[3] += v
        if v < a[4]:
            a[4] = v
        elif v > a[5]:
            a[5] = v
        if ts >= a[7]:
            a[6] = v
            a[7] = ts
        if inc is not None:
            a[8] += inc
    if is_counter and prev is not None:
        last[cur_sid] = prev
    out: list[tuple[Any, ...]] = []
    append = out.append
    out_hours: list[list[Any]] = []
    h: list[Any] = [-1, -1]
    for sid, bucket, count, total, lo, hi, lv, lts, inc in five:
        append((sid, 300, bucket, count, total, lo, hi, lv, lts, inc))
        hour = bucket - bucket % 3600
        if h[0] != sid or h[1] != hour:
            h = [sid, hour, count, total, lo, hi, lv, lts, inc]
            out_hours.append(h)
            continue
        h[2] += count
        h[3] += total
        if lo < h[4]:
            h[4] = lo
        if hi > h[5]:
            h[5] = hi
        if lts >= h[7]:
            h[6] = lv
            h[7] = lts
        if inc is not None:
            h[8] = inc if h[8] is None else h[8] + inc
    for sid, hour, count, total, lo, hi, lv, lts, inc in out_hours:
        append((sid, 3600, hour, count, total, lo, hi, lv, lts, inc))
    return out


# -- reading -----------------------------------------------------------------------------------


@dataclass
class SeriesRow:
    id: int
    name: str
    server: str
    labels: dict[str, str]
    kind: str


def find_series(conn: sqlite3.Connection, name: str | None = None,
                server: str | None = None) -> list[SeriesRow]:
    sql = "SELECT id, name, server, labels, kind FROM series"
    where, args = [], []
    if name is not None:
        where.append("name=?")
        args.append(name)
    if server is not None:
        where.append("server=?")
        args.append(server)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY name, server, labels"
    return [SeriesRow(r[0], r[1], r[2], json.loads(r[3]), r[4])
            for r in conn.execute(sql, args)]


def raw_points(conn: sqlite3.Connection, sid: int, since_ms: int, until_ms: int
               ) -> list[tuple[int, float]]:
    return conn.execute("SELECT ts, value FROM samples WHERE series_id=? AND ts>=? AND ts<=? "
                        "ORDER BY ts", (sid, since_ms, until_ms)).fetchall()


def rollup_rows(conn: sqlite3.Connection, sid: int, step: int, since: int, until: int
                ) -> list[tuple[int, int, float, float, float, float, int, float | None]]:
    return conn.execute(
        "SELECT bucket, count, sum, min, max, last, last_ts, increase FROM rollups "
        "WHERE series_id=? AND step=? AND bucket>=? AND bucket<=? ORDER BY bucket",
        (sid, step, since, until)).fetchall()


def series_extent(conn: sqlite3.Connection, sid: int) -> tuple[int | None, float | None,
                                                                   int | None]:
    """Newest raw (ts ms, value) and the oldest rollup bucket of a series."""
    row = conn.execute("SELECT ts, value FROM samples WHERE series_id=? ORDER BY ts DESC "
                       "LIMIT 1", (sid,)).fetchone()
    oldest = conn.execute("SELECT min(bucket) FROM rollups WHERE series_id=? AND step=3600",
                          (sid,)).fetchone()
    return (row[0] if row else None, row[1] if row else None, oldest[0] if oldest else None)
