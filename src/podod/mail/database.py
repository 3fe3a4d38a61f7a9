"""The mail database: a connection pool (component ``maildb``) and the unit of work every
changing mail command runs in.

The unit of work is what makes the sandbox honest: the handler's real SQL runs in one
transaction; every insert, update and delete goes through :class:`MailUnitOfWork`, which
records the change (key fields only, never password hashes) and the row as it was before.
The bus then rolls the transaction back (sandbox), or asks the backup gate to take and verify
a backup of exactly those rows and commits (real).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from podod.bus.context import Change, CommandContext
from podod.errors import BackupFailed, Unavailable
from podod.mail.schema import PRIMARY_KEYS
from podod.mail.settings import DatabaseSettings

if TYPE_CHECKING:
    from podod.runtime import Runtime

log = logging.getLogger(__name__)

HIDDEN_COLUMNS = {"password", "token"}


def connect_kwargs(settings: DatabaseSettings, runtime: Runtime | None) -> dict[str, Any]:
    """asyncpg connection arguments; through an SSH tunnel when ``via_server`` is set."""
    dsn = settings.dsn or ""
    if settings.via_server:
        servers = runtime.component("servers") if runtime is not None else None
        if servers is None or not hasattr(servers, "tunnel_address"):
            raise Unavailable(f"mail.database.via_server: server {settings.via_server} is "
                              "not connected (its tunnel cannot be opened)")
        host, port = servers.tunnel_address(settings.via_server, settings.tunnel or "postgres")
        parts = urlsplit(dsn)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"{host}:{port}"
        dsn = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    out: dict[str, Any] = {"dsn": dsn, "timeout": settings.connect_timeout}
    if settings.password is not None:
        out["password"] = settings.password.get_secret_value()
    return out


class MailDatabase:
    """The ``maildb`` component: a pool, opened lazily so a database that is down at start
    does not stop the daemon (commands then say it is unreachable)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        try:
            await self.pool()
        except Unavailable as exc:
            log.warning("%s; mail commands will retry", exc.message)

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            settings = self.runtime.config.mail.database
            try:
                self._pool = await asyncpg.create_pool(
                    **connect_kwargs(settings, self.runtime), min_size=settings.min_pool,
                    max_size=settings.max_pool)
            except Unavailable:
                raise
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                raise Unavailable(f"the mail database cannot be reached ({exc})") from None
        return self._pool

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def reload(self, config: Any) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _key_of(table: str, row: dict[str, Any]) -> dict[str, Any]:
    column = PRIMARY_KEYS[table]
    return {column: row[column]}


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in HIDDEN_COLUMNS
            and k not in ("created", "modified")}


class MailUnitOfWork:
    """One transaction on the mail database, recording what it changes."""

    def __init__(self, ctx: CommandContext, database: MailDatabase) -> None:
        self.ctx = ctx
        self.database = database
        self.conn: asyncpg.Connection = None  # set by begin()
        self._tx: Any = None
        self.touched: set[str] = set()
        self.before_images: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = []
        self._changes: list[Change] = []
        self._done = False

    async def begin(self) -> None:
        pool = await self.database.pool()
        try:
            self.conn = await pool.acquire()
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise Unavailable(f"the mail database cannot be reached ({exc})") from None
        self._tx = self.conn.transaction()
        await self._tx.start()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, *args)

    def _record(self, action: str, table: str, key: dict[str, Any], before: dict[str, Any] | None,
                detail: dict[str, Any]) -> None:
        self.touched.add(table)
        self.before_images.append((table, action, key, before))
        self._changes.append(Change(action, table, str(next(iter(key.values()))), detail))

    async def insert(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        columns = list(row)
        placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        record = await self.conn.fetchrow(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) RETURNING *",
            *row.values())
        assert record is not None
        inserted = dict(record)
        self._record("insert", table, _key_of(table, inserted), None,
                     {k: v for k, v in _shown(row).items() if k != PRIMARY_KEYS[table]})
        return inserted

    def _where(self, where: dict[str, Any], start: int = 1) -> tuple[str, list[Any]]:
        clauses = [f"{column} = ${i}" for i, column in enumerate(where, start=start)]
        return " AND ".join(clauses) or "true", list(where.values())

    async def update(self, table: str, where: dict[str, Any], values: dict[str, Any]
                     ) -> list[dict[str, Any]]:
        clause, args = self._where(where)
        before = [dict(r) for r in await self.conn.fetch(
            f"SELECT * FROM {table} WHERE {clause} FOR UPDATE", *args)]
        if not before:
            return []
        values = {**values, "modified": values.get("modified") or _now_sql}
        sets, set_args = [], []
        for column, value in values.items():
            if value is _now_sql:
                sets.append(f"{column} = now()")
            else:
                set_args.append(value)
                sets.append(f"{column} = ${len(args) + len(set_args)}")
        rows = [dict(r) for r in await self.conn.fetch(
            f"UPDATE {table} SET {', '.join(sets)} WHERE {clause} RETURNING *",
            *args, *set_args)]
        shown = {k: ("(changed)" if k in HIDDEN_COLUMNS else v)
                 for k, v in values.items() if k != "modified"}
        for old in before:
            self._record("update", table, _key_of(table, old), old, shown)
        return rows

    async def delete(self, table: str, where: dict[str, Any]) -> list[dict[str, Any]]:
        clause, args = self._where(where)
        rows = [dict(r) for r in await self.conn.fetch(
            f"DELETE FROM {table} WHERE {clause} RETURNING *", *args)]
        for old in rows:
            self._record("delete", table, _key_of(table, old), old, {})
        return rows

    def changes(self) -> list[Change]:
        return list(self._changes)

    async def rollback(self) -> None:
        if self._done or self.conn is None:
            return
        self._done = True
        try:
            await self._tx.rollback()
        finally:
            await self._release()

    async def commit(self, ctx: CommandContext) -> str | None:
        if not self._changes:
            await self.rollback()
            return None
        gate = ctx.runtime.component("backup")
        if gate is None:
            raise BackupFailed("the backup could not be taken (no backup gate is running); "
                               "nothing was changed")
        backup_id: str = await gate.take(self, ctx)
        self._done = True
        try:
            await self._tx.commit()
        finally:
            await self._release()
        return backup_id

    async def _release(self) -> None:
        pool = await self.database.pool()
        await pool.release(self.conn)


class _NowSql:
    """Marker: set the column to the database's now()."""


_now_sql = _NowSql()
