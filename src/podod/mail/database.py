"""The mail database: a connection pool (component ``maildb``) and the unit of work every
changing mail command runs in.

The unit of work is what makes the sandbox honest: the handler's real SQL runs in one
transaction; every insert, update and delete goes through :class:`MailUnitOfWork`, which
records the change (key fields only, never password hashes) and the row as it was before.
The bus then rolls the transaction back (sandbox), or runs its pre-change gates (the backup
gate takes and verifies a backup of exactly those rows) and commits (real).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from podod.bus.context import Change, CommandContext
from podod.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    PododError,
    Unavailable,
    ValidationError,
)
from podod.events import Subscription
from podod.mail.schema import PRIMARY_KEYS
from podod.mail.settings import DEFAULT_NAME, DatabaseSettings
from podod.servers.events import ServerDisconnected
from podod.servers.runner import ServerUnreachable

if TYPE_CHECKING:
    from podod.runtime import Runtime

log = logging.getLogger(__name__)

HIDDEN_COLUMNS = {"password", "token"}
# Set with every change, not chosen by the admin: kept in backups, left out of the change list
# (a plan made a minute ago must still match when confirmed).
TIMESTAMP_COLUMNS = {"created", "modified", "password_expiry"}


def connect_kwargs(settings: DatabaseSettings, runtime: Runtime | None,
                   address: tuple[str, int] | None = None) -> dict[str, Any]:
    """asyncpg connection arguments. Through an SSH tunnel when ``via_server`` is set: the
    DSN's host and port become ``address`` or, in the daemon, the tunnel's local end."""
    dsn = settings.dsn or ""
    if settings.via_server and address is None:
        address = tunnel_address(settings, runtime)
    if address is not None:
        host, port = address
        parts = urlsplit(dsn)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"{host}:{port}"
        dsn = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    out: dict[str, Any] = {"dsn": dsn, "timeout": settings.connect_timeout}
    if settings.password is not None:
        out["password"] = settings.password.get_secret_value()
    return out


def tunnel_address(settings: DatabaseSettings, runtime: Runtime | None,
                   label: str = "the mail database", option: str = "mail.database"
                   ) -> tuple[str, int]:
    """The local end of ``via_server``'s tunnel, or ONE sentence from the server manager
    saying since when and why the server is unreachable."""
    server, tunnel = settings.via_server or "", settings.tunnel or "postgres"
    servers = runtime.component("servers") if runtime is not None else None
    if servers is None:
        raise Unavailable(f"{label} is reached through server {server} "
                          f"({option}.via_server), but the server connections are not "
                          "running")
    try:
        address: tuple[str, int] = servers.tunnel_address(server, tunnel)
    except ServerUnreachable as exc:
        raise ServerUnreachable(f"{label} cannot be reached: {exc.message}") from None
    except NotFound as exc:
        raise Unavailable(f"{option}.via_server/tunnel: {exc.message}") from None
    return address


def _reason(exc: BaseException) -> str:
    """asyncpg's and the socket layer's failures in plain words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def sql_error(exc: BaseException) -> PododError | None:
    """What the database refused, as one sentence; None for a programming error (a bug,
    which the bus reports with a request id).

    Handlers check what they can first; this is the net under them: a row another
    request created a moment ago, a value too long for its column, a database that went
    away in the middle of a command, a role without the rights it needs."""
    if isinstance(exc, asyncpg.PostgresError):
        what = str(getattr(exc, "message", "") or exc).rstrip(".")
        detail = str(getattr(exc, "detail", "") or "").rstrip(".")
        if detail.startswith("Failing row contains"):
            detail = ""  # the whole row, password hash included: never in a reply or audit
        text = f"{what} ({detail})" if detail else what
        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            return Conflict(f"the database refused the change: {text}; nothing was changed")
        if isinstance(exc, asyncpg.DataError):
            return ValidationError(f"the database refused a value: {text}; nothing was "
                                   "changed")
        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            return PermissionDenied(f"the mail database refused podod's role: {text} (the "
                                    "role in mail.database.dsn should own the tables)")
        if isinstance(exc, asyncpg.TransactionRollbackError | asyncpg.LockNotAvailableError):
            return Conflict(f"the database is busy with a conflicting change ({text}); "
                            "nothing was changed, try again")
        if isinstance(exc, asyncpg.PostgresConnectionError |
                      asyncpg.exceptions.OperatorInterventionError):
            return Unavailable(f"the connection to the mail database was lost ({text}); "
                               "nothing was committed")
        return None
    if isinstance(exc, asyncpg.InterfaceError | ConnectionError):
        return Unavailable(f"the connection to the mail database was lost ({_reason(exc)}); "
                           "nothing was committed")
    return None


class _PoolFloorFilter(logging.Filter):
    """asyncpg's pool retries its minimum size in the background and logs a warning with a
    traceback each time (1 s, 2 s, 4 s, ... apart) while the database is away: keep the
    first as one line, the repeats at debug level, until a connection works again."""

    def __init__(self) -> None:
        super().__init__()
        self.reported = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "pool connection floor" not in record.getMessage():
            return True
        reason = _reason(record.exc_info[1]) if record.exc_info and record.exc_info[1] \
            else "unknown reason"
        record.msg, record.args, record.exc_info, record.exc_text = (
            "the mail database pool cannot reconnect (%s); retrying with backoff",
            (reason,), None, None)
        if self.reported:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        self.reported = True
        return True


class MailDatabase:
    """The ``maildb`` component: a pool, opened lazily so a database that is down at start
    does not stop the daemon (commands then say it is unreachable).

    Through a tunnel, the pool is closed when the server disconnects (asyncpg would retry
    against the dead tunnel), and every command answers the server manager's sentence until
    the server is back; the next command then opens a new pool."""

    def __init__(self, runtime: Runtime, name: str = DEFAULT_NAME) -> None:
        self.runtime = runtime
        self.name = name
        self._pool: asyncpg.Pool | None = None
        self._floor = _PoolFloorFilter()
        self._sub: Subscription | None = None
        # Called after a commit that changed domain or alias_domain rows (the domain map).
        self.domains_changed: Callable[[], None] | None = None

    @property
    def settings(self) -> DatabaseSettings:
        mail = self.runtime.config.mail
        if not getattr(mail, "databases", None):
            return mail.database
        return mail.databases.get(self.name) or DatabaseSettings()

    @property
    def several(self) -> bool:
        return bool(getattr(self.runtime.config.mail, "databases", None))

    @property
    def label(self) -> str:
        """How sentences name it: "the mail database", or "the mail database mx2" when
        there are several."""
        return f"the mail database {self.name}" if self.several else "the mail database"

    @property
    def option(self) -> str:
        return f"mail.databases.{self.name}" if self.several else "mail.database"

    def _tunnel(self) -> tuple[str, int]:
        return tunnel_address(self.settings, self.runtime, self.label, self.option)

    async def start(self) -> None:
        logging.getLogger("asyncpg.pool").addFilter(self._floor)
        self._sub = self.runtime.events.subscribe(ServerDisconnected, self._disconnected,
                                                  name="maildb-tunnel")
        try:
            await self.pool()
        except Unavailable as exc:
            log.warning("%s; mail commands will retry", exc.message)

    async def _disconnected(self, event: ServerDisconnected) -> None:
        if event.server == self.settings.via_server and self._pool is not None:
            log.info("mail database %s: server %s is down; closing the pool until it is "
                     "back", self.name, event.server)
            self._close_now()

    def _close_now(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()

    async def pool(self) -> asyncpg.Pool:
        settings = self.settings
        if settings.via_server:
            try:
                self._tunnel()
            except Unavailable:
                self._close_now()
                raise
        if self._pool is None:
            try:
                self._pool = await asyncpg.create_pool(
                    **connect_kwargs(settings, self.runtime, self._tunnel()
                                     if settings.via_server else None),
                    min_size=settings.min_pool,
                    max_size=settings.max_pool)
            except Unavailable:
                raise
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                raise self.unreachable(exc) from None
            self._floor.reported = False
        return self._pool

    def unreachable(self, exc: BaseException) -> Unavailable:
        """The one sentence for a failed connection: the server manager's when the tunnel's
        server is down, otherwise what the database (or the tunnel's far end) said."""
        settings = self.settings
        if not settings.via_server:
            parts = urlsplit(settings.dsn or "")
            where = f" at {parts.hostname}:{parts.port or 5432}" if parts.hostname else ""
            hint = " (is PostgreSQL running?)" if isinstance(exc, ConnectionRefusedError) else ""
            return Unavailable(f"{self.label}{where} cannot be reached: "
                               f"{_reason(exc)}{hint}")
        try:
            host, port = self._tunnel()
        except Unavailable as down:
            self._close_now()
            return down
        return Unavailable(f"{self.label} cannot be reached through the tunnel "
                           f"{settings.tunnel or 'postgres'} of server {settings.via_server} "
                           f"({host}:{port}): {_reason(exc)} (is PostgreSQL running and "
                           "reachable from that server?)")

    async def stop(self) -> None:
        if self._sub is not None:
            self.runtime.events.unsubscribe(self._sub)
            self._sub = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        logging.getLogger("asyncpg.pool").removeFilter(self._floor)

    async def reload(self, config: Any) -> None:
        """Requests from now on open a pool on the new settings; the old pool closes once
        the requests still holding its connections are done. (Closing it while it was still
        handed out answered a request sent during the reload with asyncpg's "pool is
        closing", as an internal error.)"""
        pool, self._pool = self._pool, None
        if pool is not None:
            log.info("mail database %s: a new pool for the reloaded configuration; the old "
                     "one closes when its requests are done", self.name)
            await pool.close()


def _key_of(table: str, row: dict[str, Any]) -> dict[str, Any]:
    column = PRIMARY_KEYS[table]
    return {column: row[column]}


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in HIDDEN_COLUMNS
            and k not in TIMESTAMP_COLUMNS}


@dataclass
class CommitStep:
    """Work outside the database that belongs to a change (a maildir's move): ``do`` runs
    after the pre-change gates, just before the commit; ``undo`` when it, a later step or the
    commit fails (or is cancelled). ``undo`` may return a sentence (what is left to do by
    hand); it must itself find out how far ``do`` got, and whether an unknown outcome (the
    connection broke during COMMIT) was a commit after all."""

    description: str
    do: Callable[[], Awaitable[None]]
    undo: Callable[[], Awaitable[str | None]]


class MailUnitOfWork:
    """One transaction on the mail database, recording what it changes.

    With several mail databases the unit starts unbound (``database`` None): the handler
    binds it to the database of the domain it works on (:meth:`bind`, through
    ``common.unit_for``) before its first statement. A change on two databases (``domain
    move``, the restore of a move's backup) has one unit per database: :meth:`leg` hands out
    the unit of another database, linked to this one, and commits them together (the one
    that deletes the fewest rows first, see docs/databases.md)."""

    def __init__(self, ctx: CommandContext, database: MailDatabase | None) -> None:
        self.ctx = ctx
        self.database = database
        self.conn: asyncpg.Connection = None  # set by begin()
        self._tx: Any = None
        self.touched: set[str] = set()
        self.before_images = Images()
        self._changes: list[Change] = []
        self._done = False
        self._started = False
        self._pool: asyncpg.Pool | None = None
        self._legs: list[MailUnitOfWork] = []  # the other databases' units of one change
        self._steps: list[CommitStep] = []  # work outside the database, see with_commit

    async def bind(self, database: MailDatabase) -> None:
        """Work on ``database``; a unit bound to another one refuses (one sentence)."""
        if self.database is database and self.conn is not None:
            return
        if self.database is not None and self.database is not database:
            raise Conflict(f"this change would touch two mail databases ({self.database.name} "
                           f"and {database.name}); make it one command per database (a "
                           "domain goes over with 'domain move'); nothing was changed")
        self.database = database
        await self.begin()

    async def leg(self, database: MailDatabase) -> MailUnitOfWork:
        """The unit of ``database`` in this change: this one, or a linked one committed and
        rolled back with it."""
        if self.database is None or self.database is database:
            await self.bind(database)
            return self
        for other in self._legs:
            if other.database is database:
                return other
        other = MailUnitOfWork(self.ctx, database)
        await other.begin()
        self._legs.append(other)
        return other

    def legs(self) -> list[MailUnitOfWork]:
        """Every database's unit of this change, this one first."""
        return [self, *self._legs]

    def with_commit(self, description: str, do: Callable[[], Awaitable[None]],
                    undo: Callable[[], Awaitable[str | None]]) -> None:
        """Run ``do`` with the commit (only a real run commits): after the backup, before
        the COMMIT, and ``undo`` if the change is not committed in the end."""
        self._steps.append(CommitStep(description, do, undo))

    async def _undo(self, done: list[CommitStep]) -> str:
        """Undo the steps done, last first; what is left to do by hand, as text to append
        to the error's sentence."""
        left: list[str] = []
        for step in reversed(done):
            try:
                note = await step.undo()
            except Exception as exc:  # say it: the change was not committed, the step stands
                reason = exc.message if isinstance(exc, PododError) else repr(exc)
                log.error("could not undo '%s': %s", step.description, reason)
                note = f"undoing '{step.description}' failed too ({reason})"
            if note:
                left.append(note)
        return "".join(f"; {note}" for note in left)

    async def begin(self) -> None:
        if self.database is None:
            return  # several databases: bound by the handler
        pool = self._pool = await self.database.pool()
        try:
            self.conn = await pool.acquire()
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise self.database.unreachable(exc) from None
        self._tx = self.conn.transaction()

    async def _start(self) -> None:
        """The transaction opens with the unit's first statement, not when the bus hands the
        unit out: a command may do slow work first (an import hashes its passwords) without
        holding a transaction, and the locks it takes, open meanwhile."""
        if self.conn is None:
            raise PododError("this command did not say which mail database it works on (a "
                             "bug: please report it); nothing was changed", code="internal")
        if not self._started:
            self._started = True
            await self._tx.start()

    async def _query(self, method: str, sql: str, *args: Any) -> Any:
        """Every statement of the unit: what the database refuses becomes one sentence."""
        try:
            await self._start()
            return await getattr(self.conn, method)(sql, *args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError) as exc:
            refused = sql_error(exc)
            if refused is None:
                raise
            raise refused from None

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return list(await self._query("fetch", sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        record: asyncpg.Record | None = await self._query("fetchrow", sql, *args)
        return record

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._query("fetchval", sql, *args)

    def _record(self, action: str, table: str, key: dict[str, Any], before: dict[str, Any] | None,
                detail: dict[str, Any]) -> None:
        self.touched.add(table)
        self.before_images.append((table, action, key, before))
        self._changes.append(Change(action, table, str(next(iter(key.values()))), detail))

    async def insert(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        """Insert ``row`` and return it as the table holds it.

        ``RETURNING`` is not relied on: PostfixAdmin's PostgreSQL schema has ``BEFORE
        INSERT`` triggers (``merge_quota2`` on ``quota2``, ``merge_quota`` on ``quota``) that
        add a new row into an existing one, or insert it themselves, and return NULL, so the
        INSERT reports no row. The row is then read back by its primary key. Whether a row
        with that key was there before is read first (and locked): a merge into it is
        recorded as the update it is, with that row as its before image, so the backup holds
        it and a restore puts it back instead of deleting it."""
        key_column = PRIMARY_KEYS[table]
        key_value = row[key_column]
        existing = await self.fetchrow(
            f"SELECT * FROM {table} WHERE {key_column} = $1 FOR UPDATE", key_value)
        columns = list(row)
        placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        record = await self.fetchrow(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) RETURNING *",
            *row.values())
        if record is None:  # a BEFORE INSERT trigger returned NULL: it merged or inserted
            record = await self.fetchrow(f"SELECT * FROM {table} WHERE {key_column} = $1",
                                         key_value)
        if record is None:
            raise Conflict(f"the database did not store the new {table} row {key_value} (a "
                           f"trigger on {table} discarded it); nothing was changed")
        stored = dict(record)
        shown = {k: v for k, v in _shown(row).items() if k != key_column}
        if existing is None:
            self._record("insert", table, {key_column: key_value}, None, shown)
        else:
            merged = {k: stored[k] for k in shown if k in stored}
            self._record("update", table, {key_column: key_value}, dict(existing),
                         {**merged, "merged": f"into the existing row by {table}'s insert "
                                              "trigger"})
        return stored

    async def insert_many(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Insert many new rows with one COPY (bulk imports: thousands of rows a second).

        The caller has checked, inside this transaction and under the domains' locks, that
        none of the keys is there yet; every row has the same columns. Each row is recorded
        as an insert (before image: none), so the backup and the plan hold them all."""
        if not rows:
            return
        columns = list(rows[0])
        key_column = PRIMARY_KEYS[table]
        records = [tuple(row[c] for c in columns) for row in rows]
        try:
            await self._start()
            await self.conn.copy_records_to_table(table, records=records, columns=columns)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError) as exc:
            refused = sql_error(exc)
            if refused is None:
                raise
            raise refused from None
        # The details a plan compares, kept small (100 000 rows are held until the commit):
        # what the database or the domain decides (quota, active, targets); the rest comes
        # from the file, which a confirmation sends again unchanged.
        shown = [c for c in columns if c in _BULK_DETAILS]
        self.touched.add(table)
        keys = [row[key_column] for row in rows]
        self.before_images.inserted(table, key_column, keys)
        # Rows with the same details share one dict (never changed afterwards): an import's
        # mailboxes mostly have the same quota and active flag. A mailbox's own alias row
        # (goto = its address) shows no goto.
        shared: dict[tuple[Any, ...], dict[str, Any]] = {(): _NO_DETAIL}
        for row, key in zip(rows, keys, strict=True):
            names = [c for c in shown if not (c == "goto" and row[c] == key)]
            values = tuple((c, row[c]) for c in names)
            detail = shared.get(values)
            if detail is None:
                detail = dict(values)
                if len(shared) < 1000:  # unique details (alias targets) are not kept twice
                    shared[values] = detail
            self._changes.append(Change("insert", table, str(key), detail))

    def _where(self, where: dict[str, Any], start: int = 1) -> tuple[str, list[Any]]:
        clauses = [f"{column} = ${i}" for i, column in enumerate(where, start=start)]
        return " AND ".join(clauses) or "true", list(where.values())

    async def update(self, table: str, where: dict[str, Any], values: dict[str, Any]
                     ) -> list[dict[str, Any]]:
        clause, args = self._where(where)
        before = [dict(r) for r in await self.fetch(
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
        rows = [dict(r) for r in await self.fetch(
            f"UPDATE {table} SET {', '.join(sets)} WHERE {clause} RETURNING *",
            *args, *set_args)]
        shown = {k: ("(changed)" if k in HIDDEN_COLUMNS else v)
                 for k, v in values.items() if k not in TIMESTAMP_COLUMNS}
        for old in before:
            self._record("update", table, _key_of(table, old), old, shown)
        return rows

    async def update_each(self, table: str, column: str, values: dict[str, str]) -> None:
        """Set the text ``column`` of many rows, each to its own value (``values``: primary
        key → value), with one SELECT and one UPDATE however many rows there are (a
        rename's forwarding aliases). Each row is recorded as the update it is."""
        if not values:
            return
        key_column = PRIMARY_KEYS[table]
        keys, texts = list(values), list(values.values())
        before = {str(r[key_column]): dict(r) for r in await self.fetch(
            f"SELECT * FROM {table} WHERE {key_column} = ANY($1::text[]) FOR UPDATE", keys)}
        await self.fetch(
            f"UPDATE {table} t SET {column} = v.value, modified = now() FROM "
            "unnest($1::text[], $2::text[]) AS v(key, value) "
            f"WHERE t.{key_column} = v.key", keys, texts)
        for key, text in values.items():
            if key in before:
                self._record("update", table, {key_column: key}, before[key], {column: text})

    async def delete(self, table: str, where: dict[str, Any]) -> list[dict[str, Any]]:
        clause, args = self._where(where)
        rows = [dict(r) for r in await self.fetch(
            f"DELETE FROM {table} WHERE {clause} RETURNING *", *args)]
        for old in rows:
            self._record("delete", table, _key_of(table, old), old, {})
        return rows

    async def delete_many(self, table: str, column: str, values: list[Any]
                          ) -> list[dict[str, Any]]:
        """Delete the rows whose ``column`` is one of ``values`` with one statement (a
        domain move's thousands of rows), each recorded as a delete with its row."""
        if not values:
            return []
        rows = [dict(r) for r in await self.fetch(
            f"DELETE FROM {table} WHERE {column} = ANY($1::text[]) RETURNING *", values)]
        for old in rows:
            self._record("delete", table, _key_of(table, old), old, {})
        return rows

    def changes(self) -> list[Change]:
        if not self._legs:
            return list(self._changes)
        return [change for leg in self.legs() for change in leg._changes]

    async def rollback(self) -> None:
        for other in self._legs:
            await other.rollback()
        if self._done or self.conn is None:
            return
        self._done = True
        try:
            if self._started and not self.conn.is_closed():
                await self._tx.rollback()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            # The connection broke: its transaction died with it, nothing was committed.
            log.debug("rollback on a broken connection: %s", exc)
        finally:
            await self._release()

    async def commit(self, ctx: CommandContext) -> None:
        """Commit; the bus ran its pre-change gates (the backup, ``ctx.backup_id``) first.

        Several legs commit one after another, the one deleting the fewest rows first: a
        domain move commits the copy in the target, then the deletion in the source, so a
        stop in between leaves the domain in both (refused by every change until a second
        ``domain move`` finishes it), never in neither.

        In each, the steps of :meth:`with_commit` run first; if one fails, or the COMMIT
        does, the ones done are undone (and the transaction rolled back)."""
        if self._legs:
            order = sorted(self.legs(), key=lambda leg: sum(
                1 for c in leg._changes if c.action == "delete"))
            for done, leg in enumerate(order):
                try:
                    await leg._commit_one(ctx)
                except PododError as exc:
                    if done:
                        committed = ", ".join(str(getattr(x.database, "name", "?"))
                                              for x in order[:done])
                        raise type(exc)(f"{exc.message.replace('; nothing was changed', '')}"
                                        f" (the change was already committed in {committed}: "
                                        "run the command again to finish it)") from None
                    for rest in order[1:]:
                        await rest.rollback()
                    raise
            return
        await self._commit_one(ctx)

    async def _commit_one(self, ctx: CommandContext) -> None:
        if self.conn is None:
            self._done = True
            return
        if not self._started:  # a leg that ran no statement: nothing to commit
            self._done = True
            await self._release()
            return
        backup_id = ctx.backup_id
        done: list[CommitStep] = []
        try:
            for step in self._steps:
                done.append(step)  # undone also when it fails or is cancelled half-way
                await step.do()
        except BaseException as exc:
            left = await asyncio.shield(self._undo(done)) if done else ""
            await asyncio.shield(self.rollback())
            if isinstance(exc, PododError) and left:
                exc.message += left
            raise
        self._done = True
        left = ""
        try:
            try:
                await self._tx.commit()
            except BaseException:
                left = await asyncio.shield(self._undo(done)) if done else ""
                if left:
                    log.error("the commit failed%s", left)
                raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError) as exc:
            refused = sql_error(exc)
            if refused is None:
                raise
            taken = f" (backup {backup_id} was taken but not needed)" if backup_id else ""
            raise type(refused)(f"{refused.message}{taken}{left}") from None
        finally:
            await self._release()
        if self.touched & {"domain", "alias_domain"} and self.database is not None and \
                self.database.domains_changed is not None:
            self.database.domains_changed()

    async def _release(self) -> None:
        """Back to the pool it came from (closed meanwhile if the tunnel's server went
        down: then there is nothing to give back)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if pool.is_closing():
            self.conn.terminate()
            return
        await pool.release(self.conn)


_BULK_DETAILS = {"quota", "active", "goto"}
_NO_DETAIL: dict[str, Any] = {}  # shared by the bulk inserts without details; never changed

Image = tuple[str, str, dict[str, Any], dict[str, Any] | None]


class Images:
    """A unit of work's before images, in order: (table, action, key, row before) per
    touched row, None for a row it inserts. A bulk insert's rows are kept as their keys
    only and made into images when read: 300 000 images of an import as tuples and dicts
    would hold 80 MB until the commit."""

    def __init__(self) -> None:
        self._parts: list[Image | tuple[str, str, list[Any]]] = []
        self._count = 0

    def append(self, image: Image) -> None:
        self._parts.append(image)
        self._count += 1

    def inserted(self, table: str, key_column: str, keys: list[Any]) -> None:
        self._parts.append((table, key_column, keys))
        self._count += len(keys)

    def __len__(self) -> int:
        return self._count

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Images):
            return list(self) == list(other)
        return isinstance(other, list) and list(self) == other

    __hash__ = None  # type: ignore[assignment]

    def __iter__(self) -> Iterator[Image]:
        for part in self._parts:
            if len(part) == 3:
                table, column, keys = part
                for key in keys:
                    yield (table, "insert", {column: key}, None)
            else:
                yield part


class _NowSql:
    """Marker: set the column to the database's now()."""


_now_sql = _NowSql()
