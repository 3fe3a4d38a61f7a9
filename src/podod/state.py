"""The daemon's own SQLite database (``<state_dir>/state.db``): audit log, backup catalog,
servers added at run time, alert state. Monitoring samples live in their own database.

SQLite calls block, so every call runs on ONE dedicated thread: that keeps the event loop
free and serializes access without locks. Each area declares its schema as numbered
migration steps under its own name.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from podod.errors import PododError

T = TypeVar("T")


class StateDB:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="podod-state")
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions (area TEXT PRIMARY KEY, version INTEGER)")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("state database is not open")
        return self._conn

    async def open(self) -> None:
        try:
            self._conn = await self.run(lambda _c: self._open(), _raw=True)
        except sqlite3.DatabaseError as exc:
            raise PododError(
                f"the state database {self.path} cannot be opened ({exc}); it holds the audit "
                "log and the backup catalog: restore it from a copy, or move it aside to "
                "start with an empty one", code="state-db") from None

    def open_sync(self) -> None:
        """For command-line tools that do not run the event loop."""
        self._conn = self._open()

    async def run(self, fn: Callable[..., T], *args: Any, _raw: bool = False) -> T:
        """Run ``fn(conn, *args)`` on the database thread.

        Once called, the work happens even if the caller is cancelled (a request or loop
        stopped at shutdown): cancelling a call still queued behind others would otherwise
        drop it silently, an audit record or a notification log with it. Calls run in the
        order they were made, and ``close`` comes after all of them."""
        loop = asyncio.get_running_loop()
        if _raw:
            fut = loop.run_in_executor(self._executor, fn, None)
        else:
            fut = loop.run_in_executor(self._executor, lambda: fn(self.conn, *args))
        fut.add_done_callback(_retrieve)
        return await asyncio.shield(fut)

    async def migrate(self, area: str, steps: Sequence[str]) -> int:
        return await self.run(migrate_sync, area, steps)

    async def close(self) -> None:
        if self._conn is not None:
            conn = self._conn
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark the outcome of a call whose caller went away as seen (its error was the
    caller's to report; asyncio would otherwise log "exception was never retrieved")."""
    if not fut.cancelled():
        fut.exception()


def migrate_sync(conn: sqlite3.Connection, area: str, steps: Sequence[str]) -> int:
    """Apply the steps of ``area`` not applied yet, each in its own transaction."""
    row = conn.execute("SELECT version FROM schema_versions WHERE area=?", (area,)).fetchone()
    version = row[0] if row else 0
    for number, script in enumerate(steps[version:], start=version + 1):
        conn.execute("BEGIN")
        try:
            for statement in script.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_versions(area, version) VALUES (?, ?) "
                "ON CONFLICT(area) DO UPDATE SET version=excluded.version", (area, number))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        version = number
    return version
