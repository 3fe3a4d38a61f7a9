"""The backup gate: before a real change commits, back up what it touches, verify the
backup, record it in the catalog; any failure aborts the change with nothing changed.

A change's backup costs what the change touches, not what the database holds: a folder
``<backup dir>/<id>/`` (mode 0700, files 0600) with

- ``rows.json``     the touched rows as they were before the change (``before``: table,
                    action, key, row — ``null`` for rows the change inserts) and as they
                    were right after it (``after``, read inside the change's own
                    transaction before it commits; ``null`` for rows it deletes), so a
                    restore can tell what changed since
- ``manifest.json`` id, time, actor, origin, command, tables, changes, and the SHA-256 of
                    every other file
- ``SHA256SUMS``    sha256sum-compatible checksums of all files, manifest included

It is written into a temporary folder, fsynced, renamed into place, then every file is read
back, re-hashed and ``rows.json`` compared with what was meant to be written; only then is
it recorded in the catalog and the change committed.

A **full** backup (``backup take``, or every ``backup.full_every``) copies the whole mail
database instead: ``tables/<t>.json`` for every mail table, read in one consistent snapshot,
and a ``pg_dump -Fc`` (``dump.pgc``) when ``backup.pg_dump`` is on. Its cost grows with the
database, so it is never taken per change.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podod.durable import fsync_dir, write_new
from podod.errors import BackupFailed, NotFound, PododError, Unavailable, ValidationError
from podod.mail.database import connect_kwargs
from podod.mail.schema import PRIMARY_KEYS

if TYPE_CHECKING:
    from podod.bus.context import CommandContext
    from podod.runtime import Runtime

log = logging.getLogger(__name__)

PG_DUMP_TIMEOUT = 600.0  # seconds; a mail database dumps in seconds, a stuck one must not hang

MIGRATIONS = [
    """
    CREATE TABLE backups (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        actor TEXT NOT NULL,
        command TEXT NOT NULL,
        tables TEXT NOT NULL,
        changes INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        manifest_sha256 TEXT NOT NULL,
        path TEXT NOT NULL
    )
    """,
]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_files(folder: Path, files: dict[str, bytes]) -> dict[str, str]:
    sums = {}
    for name, data in files.items():
        write_new(folder / name, data)
        sums[name] = hashlib.sha256(data).hexdigest()
    return sums


def _inside(folder: Path, name: str) -> Path | None:
    """``folder/name`` if it stays inside the folder (a damaged list could say '../x')."""
    path = folder / name
    if name.startswith("/") or ".." in Path(name).parts:
        return None
    return path


def _new_id(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + \
        secrets.token_hex(3)


def _read_back(folder: Path, files: dict[str, bytes]) -> list[str]:
    """Every file read back: its checksums hold, and each file holds what was written."""
    problems = verify_folder(folder)
    for name, data in files.items():
        if not problems and not _same(folder / name, data):
            problems.append(f"{name} reads back different from what was written")
    return problems


def _same(path: Path, data: bytes) -> bool:
    """The file holds exactly ``data``, compared a block at a time (a bulk change's rows
    are hundreds of MB: never a second copy in memory)."""
    view = memoryview(data)
    offset = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            if view[offset:offset + len(block)] != block:
                return False
            offset += len(block)
    return offset == len(view)


def _size_and_manifest(folder: Path) -> tuple[int, str]:
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return size, sha256_file(folder / "manifest.json")


def verify_folder(folder: Path) -> list[str]:
    """Problems with a backup folder; empty when every checksum in SHA256SUMS matches."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return ["SHA256SUMS is missing"]
    problems = []
    for line in sums.read_text(errors="replace").splitlines():
        expected, _, name = line.partition("  ")
        path = _inside(folder, name)
        if path is None:
            problems.append(f"SHA256SUMS names a file outside the backup ({name})")
        elif not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != expected:
            problems.append(f"{name} does not match its checksum")
    return problems


def verify_backup(folder: Path, manifest_sha256: str) -> list[str]:
    """The whole chain of trust: the catalog holds the manifest's hash, the manifest holds
    every file's hash. SHA256SUMS alone is not enough: whoever can rewrite a file can
    rewrite SHA256SUMS to match, but not the catalog in state.db."""
    problems = verify_folder(folder)
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return problems if "manifest.json is missing" in problems else \
            [*problems, "manifest.json is missing"]
    if sha256_file(manifest) != manifest_sha256:
        return [*problems, "manifest.json differs from the one in the catalog"]
    try:
        files = json.loads(manifest.read_text())["files"]
        assert isinstance(files, dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        return [*problems, "manifest.json cannot be read"]
    for name, expected in files.items():
        if any(p.startswith(f"{name} ") for p in problems):
            continue  # already reported through SHA256SUMS
        path = _inside(folder, str(name))
        if path is None or not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != expected:
            problems.append(f"{name} does not match its checksum in manifest.json")
    return problems


async def current_rows(db: Any, keys: list[tuple[str, str]]
                       ) -> dict[tuple[str, str], dict[str, Any]]:
    """The rows with these (table, primary key) as ``db`` sees them, in PostgreSQL's JSON
    form (as ``to_json``); one query per table."""
    by_table: dict[str, list[str]] = {}
    for table, value in keys:
        by_table.setdefault(table, []).append(value)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for table, values in by_table.items():
        column = PRIMARY_KEYS[table]
        for record in await db.fetch(
                f"SELECT {column}::text AS k, to_json(t)::text AS j FROM {table} t "
                f"WHERE {column}::text = ANY($1::text[])", sorted(set(values))):
            rows[(table, record["k"])] = json.loads(record["j"])
    return rows


Image = tuple[str, str, dict[str, Any], dict[str, Any] | None]
# Touched rows read back per block, so a bulk import's 300 000 after images are never all in
# memory at once.
AFTER_BLOCK = 10_000


async def after_images(uow: Any, images: list[Image]) -> dict[tuple[str, str], str]:
    """These touched rows as the change leaves them, read inside its own transaction before
    it commits (a row it deleted is absent), as PostgreSQL's JSON text: written into
    rows.json as it is, never parsed."""
    by_table: dict[str, set[str]] = {}
    for table, _a, key, _b in images:
        by_table.setdefault(table, set()).add(str(next(iter(key.values()))))
    rows: dict[tuple[str, str], str] = {}
    for table, values in by_table.items():
        column = PRIMARY_KEYS[table]
        for record in await uow.fetch(
                f"SELECT {column}::text AS k, to_json(t)::text AS j FROM {table} t "
                f"WHERE {column}::text = ANY($1::text[])", sorted(values)):
            rows[(table, record["k"])] = record["j"]
    return rows


def legs_of(uow: Any) -> list[Any]:
    """The units of work of a change, one per mail database it touches."""
    legs = getattr(uow, "legs", None)
    return list(legs()) if callable(legs) else [uow]


def database_of(leg: Any) -> str | None:
    """The name a change's rows.json gives each row's database: only when several mail
    databases are configured (a one-database backup reads as before)."""
    database = getattr(leg, "database", None)
    return str(database.name) if database is not None and getattr(
        database, "several", False) else None


def _blocks(uow: Any) -> Iterator[tuple[Any, str | None, list[Image]]]:
    """A change's before images in blocks, each with its unit of work and database name."""
    for leg in legs_of(uow):
        name = database_of(leg)
        images = iter(leg.before_images)
        while block := list(islice(images, AFTER_BLOCK)):
            yield leg, name, block


async def write_change_rows(uow: Any, rows_file: RowsFile) -> str:
    """Write rows.json of a change block by block: each block's after images are read,
    appended and written (in a worker thread, one trip per block: a change of one row makes
    one trip) and dropped, so a bulk import's 300 000 rows (100 MB of JSON) are never in
    memory at once. A change on two databases (a domain move) holds the rows of both, each
    with its ``database``. Returns the file's SHA-256 as written; the read-back compares the
    file with it."""
    blocks = _blocks(uow)
    current = next(blocks, None)
    first = True
    while True:
        leg, name, block = current if current is not None else (uow, None, [])
        after = await after_images(leg, block) if block else {}
        following = next(blocks, None)
        # Never left running while the folder is removed: a cancelled request waits for
        # the block's write to end (a closed descriptor could be some other file's by then).
        trip = asyncio.ensure_future(asyncio.to_thread(rows_file.write, block, after, first,
                                                       following is None, name))
        try:
            await asyncio.shield(trip)
        except asyncio.CancelledError:
            await asyncio.gather(trip, return_exceptions=True)
            raise
        if following is None:
            return rows_file.digest.hexdigest()
        current, first = following, False


class RowsFile:
    """rows.json being written: created (mode 0600, never over a file) in the folder that
    ``make_folder`` makes at the first block, fsynced after the last."""

    def __init__(self, make_folder: Any) -> None:
        self.make_folder = make_folder
        self.folder: Path | None = None
        self.fd: int | None = None
        self.digest = hashlib.sha256()

    def write(self, images: list[Image], after: dict[tuple[str, str], str], first: bool,
              last: bool, database: str | None = None) -> None:
        if self.fd is None:
            self.folder = self.make_folder()
            self.fd = os.open(self.folder / "rows.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                              0o600)
        out = bytearray(b"[" if first else b"")
        _append_rows(out, images, after, not first, database)
        if last:
            out += b"\n]"
        self.digest.update(out)
        view = memoryview(out)
        while view:
            view = view[os.write(self.fd, view):]
        if last:
            os.fsync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# A change's manifest lists its changes up to this many (rows.json holds every row).
MANIFEST_CHANGES = 1000


def _append_rows(out: bytearray, images: list[Image], after: dict[tuple[str, str], str],
                 more: bool, database: str | None = None) -> None:
    """Append rows.json lines: each touched row before and after (the after image is
    PostgreSQL's JSON text, put in as it is), one row per line."""
    encode = json.JSONEncoder(default=str).encode
    where = {"database": database} if database is not None else {}
    for index, (table, action, key, before) in enumerate(images):
        head = encode({**where, "table": table, "action": action, "key": key,
                       "before": before})
        raw = after.get((table, str(next(iter(key.values())))))
        out += f'{"," if index or more else ""}\n{head[:-1]}, "after": {raw or "null"}}}'.encode()


def _rows_json(rows: list[dict[str, Any]]) -> bytes:
    """A JSON list, one element per line (readable with less, written at C speed)."""
    encode = json.JSONEncoder(default=str).encode
    return ("[\n" + ",\n".join(encode(row) for row in rows) + "\n]").encode()


SCHEDULED = "backup take (backup.full_every)"  # the catalog's command of a scheduled one


class BackupGate:
    """The ``backup`` component."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._last_success: float | None = None
        self._last_loaded = False
        self._full_lock = asyncio.Lock()
        self._schedule: asyncio.Task[None] | None = None
        self._pruning: asyncio.Task[None] | None = None

    @property
    def directory(self) -> Path:
        configured = self.runtime.config.backup.dir
        return Path(configured) if configured else Path(self.runtime.config.state_dir) / "backups"

    async def start(self) -> None:
        await self.runtime.state.migrate("backup", MIGRATIONS)
        await self.prune()
        interval = self.runtime.config.backup.full_every
        if interval:
            self._schedule = asyncio.create_task(self._every(interval), name="full-backups")

    async def stop(self) -> None:
        task, self._schedule = self._schedule, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._pruning is not None:
            await asyncio.gather(self._pruning, return_exceptions=True)

    async def reload(self, config: Any) -> None:
        await self.stop()
        interval = config.backup.full_every
        if interval:
            self._schedule = asyncio.create_task(self._every(interval), name="full-backups")

    async def prune(self) -> int:
        """Drop backups older than ``backup.keep_days`` (never the newest 10)."""
        cutoff = time.time() - self.runtime.config.backup.keep_days * 86400

        def old(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return [(r[0], r[1]) for r in conn.execute(
                "SELECT id, path FROM backups WHERE created < ? AND id NOT IN "
                "(SELECT id FROM backups ORDER BY created DESC LIMIT 10)", (cutoff,))]

        rows = await self.runtime.state.run(old)
        for backup_id, path in rows:
            await asyncio.to_thread(shutil.rmtree, path, True)
            await self.runtime.state.run(
                lambda c, i=backup_id: c.execute("DELETE FROM backups WHERE id=?", (i,)))
        return len(rows)

    async def take(self, uow: Any, ctx: CommandContext) -> str:
        try:
            backup_id = await self._take(uow, ctx)
        except BackupFailed:
            raise
        except Exception as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            if getattr(exc, "filename", None):
                reason = f"{reason}: {exc.filename}"  # type: ignore[attr-defined]
            raise BackupFailed(f"the backup could not be taken ({reason}); nothing was "
                               "changed") from None
        self._last_success = time.time()
        self._prune_soon()
        return backup_id

    def _prune_soon(self) -> None:
        """Retention after a new backup, in the background: the change it belongs to
        commits without waiting for it."""
        if self._pruning is not None and not self._pruning.done():
            return

        async def prune() -> None:
            try:
                await self.prune()
            except Exception:  # retention must never undo a verified backup's change
                log.exception("pruning old backups failed")

        self._pruning = asyncio.create_task(prune(), name="backup-prune")

    async def _take(self, uow: Any, ctx: CommandContext) -> str:
        created = time.time()
        backup_id = _new_id(created)
        legs = legs_of(uow)
        tables = sorted(set().union(*(leg.touched for leg in legs)))
        # default=str: timestamps become text, as PostgreSQL's to_json writes them closely
        # enough for json_populate_record to read them back (a restore does). One row per
        # line through the C encoder, in a worker thread: a bulk import's 300 000 rows
        # would hold the event loop for seconds in the indenting (pure-Python) encoder.
        # rows.json goes to disk block by block as it is made (never whole in memory).
        rows_file = RowsFile(lambda: self._make_temp(backup_id, False))
        try:
            sums = {"rows.json": await write_change_rows(uow, rows_file)}
            rows_file.close()
            assert rows_file.folder is not None
            changes = uow.changes()
            manifest: dict[str, Any] = {
                "id": backup_id, "kind": "change", "created": created,
                "actor": ctx.actor.name, "origin": ctx.request.origin,
                "command": ctx.spec.name, "request_id": ctx.request.id, "tables": tables,
                "changes": [asdict(c) for c in changes[:MANIFEST_CHANGES]], "pg_dump": False,
            }
            if len(changes) > MANIFEST_CHANGES:
                manifest["changes_total"] = len(changes)
            names = [n for n in (database_of(leg) for leg in legs) if n is not None]
            if names:
                manifest["databases"] = names
            del changes
            folder, problems, size, manifest_sha = await asyncio.to_thread(
                self._seal_checked, rows_file.folder, backup_id, manifest, sums)
        except BaseException:
            rows_file.close()
            if rows_file.folder is not None:
                await asyncio.to_thread(shutil.rmtree, rows_file.folder, True)
            raise
        return await self._catalog(backup_id, created, ctx.actor.name, ctx.spec.name,
                                   tables, sum(len(leg.before_images) for leg in legs), folder,
                                   problems, size,
                                   manifest_sha)

    async def _store(self, backup_id: str, created: float, actor: str, command: str,
                     tables: list[str], count: int, files: dict[str, bytes],
                     manifest: dict[str, Any], dump: bool = False,
                     dumps: list[tuple[Any, str]] | None = None) -> str:
        """Write, seal, read back and verify, then catalog one backup folder. Without a
        dump all the file work is one trip to a worker thread: on a busy machine each trip
        costs milliseconds of a change's time."""
        if not dump:
            folder, problems, size, manifest_sha = await asyncio.to_thread(
                self._write_sealed, backup_id, files, manifest)
        else:
            temp = await asyncio.to_thread(self._make_temp, backup_id,
                                           any(n.startswith("tables/") for n in files))
            try:
                sums = await asyncio.to_thread(_write_files, temp, files)
                for database, name in dumps or []:
                    sums[name] = await self._pg_dump(temp / name, database.settings)
                folder = await asyncio.to_thread(self._seal, temp, backup_id, manifest, sums)
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, temp, True)
                raise
            problems = await asyncio.to_thread(_read_back, folder, files)
            for _database, name in dumps or []:
                if not problems:
                    problems = await self._check_dump(folder / name)
            size, manifest_sha = await asyncio.to_thread(_size_and_manifest, folder)
        return await self._catalog(backup_id, created, actor, command, tables, count, folder,
                                   problems, size, manifest_sha)

    async def _catalog(self, backup_id: str, created: float, actor: str, command: str,
                       tables: list[str], count: int, folder: Path, problems: list[str],
                       size: int, manifest_sha: str) -> str:
        """Catalog a written backup folder, or remove it when its read-back found problems
        (BackupFailed, nothing changed)."""

        def record(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO backups VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (backup_id, created, actor, command, ",".join(tables), count, size,
                          manifest_sha, str(folder)))

        try:
            if problems:
                raise BackupFailed(f"the backup could not be verified ({'; '.join(problems)})"
                                   "; nothing was changed")
            await self.runtime.state.run(record)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise
        return backup_id

    async def take_full(self, actor: str, command: str = "backup take") -> dict[str, Any]:
        """A copy of the whole mail database: every mail table in one snapshot (and a
        pg_dump when ``backup.pg_dump``); its catalog entry. Failures are one sentence."""
        async with self._full_lock:
            try:
                backup_id = await self._take_full(actor, command)
            except BackupFailed as exc:
                raise BackupFailed(exc.message.replace("; nothing was changed", "").replace(
                    "the backup could not", "the full backup could not")) from None
            except PododError:
                raise
            except Exception as exc:
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                raise BackupFailed(f"the full backup could not be taken ({reason})") from None
        self._last_success = time.time()
        self._prune_soon()
        return await self.get(backup_id)

    async def _take_full(self, actor: str, command: str) -> str:
        created = time.time()
        backup_id = _new_id(created)
        every = self.runtime.component("maildb")
        if every is None:
            raise Unavailable("no mail database is configured (mail.database.dsn in "
                              "podod.yaml)")
        members = list(every.members.values())
        several = len(members) > 1 or bool(self.runtime.config.mail.databases)
        files: dict[str, bytes] = {}
        counts: dict[str, int] = {}
        for database in members:
            # One file per table, per database when there are several (tables/NAME.table.json)
            prefix = f"tables/{database.name}." if several else "tables/"
            pool = await database.pool()
            # One snapshot for all tables: the copy is consistent across them.
            async with pool.acquire() as reader, reader.transaction(
                    isolation="repeatable_read", readonly=True):
                for table, column in sorted(PRIMARY_KEYS.items()):
                    text = await reader.fetchval(
                        f"SELECT coalesce(json_agg(t ORDER BY t.{column}), '[]'::json)::text "
                        f"FROM {table} t")
                    # tens of MB at 100 000 mailboxes: encoded beside the event loop
                    files[f"{prefix}{table}.json"] = await asyncio.to_thread(text.encode)
                    counted = await reader.fetchval(f"SELECT count(*) FROM {table}")
                    counts[f"{database.name}.{table}" if several else table] = counted
        tables = sorted(PRIMARY_KEYS)
        dump = bool(self.runtime.config.backup.pg_dump)
        manifest: dict[str, Any] = {
            "id": backup_id, "kind": "full", "created": created, "actor": actor,
            "origin": "daemon", "command": command, "tables": tables, "rows": counts,
            "changes": [], "pg_dump": dump,
        }
        if several:
            manifest["databases"] = [d.name for d in members]
        return await self._store(backup_id, created, actor, command, tables,
                                 sum(counts.values()), files, manifest, dump=dump,
                                 dumps=[(d, f"dump-{d.name}.pgc" if several else "dump.pgc")
                                        for d in members])

    async def _every(self, interval: float) -> None:
        """Take a full backup whenever the newest one is ``interval`` old."""
        for _ in range(120):  # the mail database's component starts after this one
            if self.runtime.component("maildb") is not None:
                break
            await asyncio.sleep(0.5)
        while True:
            newest = await self.runtime.state.run(lambda c: c.execute(
                "SELECT max(created) FROM backups WHERE command IN (?, ?)",
                (SCHEDULED, "backup take")).fetchone()[0])  # a full backup of either kind
            due = (float(newest) + interval) if newest is not None else time.time()
            await asyncio.sleep(max(0.0, due - time.time()))
            try:
                entry = await self.take_full("podod", SCHEDULED)
                log.info("full backup %s taken (%s rows, %s bytes)", entry["id"],
                         entry["changes"], entry["bytes"])
            except PododError as exc:
                log.error("%s; trying again in %.0f s", exc.message, min(interval, 300.0))
                await asyncio.sleep(min(interval, 300.0))

    def _write_sealed(self, backup_id: str, files: dict[str, bytes], manifest: dict[str, Any]
                      ) -> tuple[Path, list[str], int, str]:
        """In a worker thread: write, seal and read back a folder without a dump; its path,
        problems, size and the manifest's SHA-256."""
        temp = self._make_temp(backup_id, any(n.startswith("tables/") for n in files))
        try:
            folder = self._seal(temp, backup_id, manifest, _write_files(temp, files))
        except BaseException:
            shutil.rmtree(temp, True)
            raise
        return (folder, _read_back(folder, files), *_size_and_manifest(folder))

    def _seal_checked(self, temp: Path, backup_id: str, manifest: dict[str, Any],
                      sums: dict[str, str]) -> tuple[Path, list[str], int, str]:
        """In a worker thread: seal a folder whose files are written (``sums``: their
        SHA-256 as written) and read it back; its path, problems, size and the manifest's
        SHA-256."""
        folder = self._seal(temp, backup_id, manifest, sums)
        return (folder, verify_folder(folder), *_size_and_manifest(folder))

    def _make_temp(self, backup_id: str, tables: bool) -> Path:
        base = self.directory
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = base / f".tmp-{backup_id}"
        temp.mkdir(mode=0o700)
        if tables:
            (temp / "tables").mkdir(mode=0o700)
        return temp

    def _seal(self, temp: Path, backup_id: str, manifest: dict[str, Any],
              sums: dict[str, str]) -> Path:
        """Write the manifest and SHA256SUMS, then rename the folder into place."""
        manifest = {**manifest, "files": sums}
        # A bulk change lists thousands of changes: those one per line at C speed.
        data = (json.dumps({k: v for k, v in manifest.items() if k != "changes"}, indent=1,
                           default=str)[:-2] + ',\n "changes": ' + _rows_json(
                               manifest.get("changes", [])).decode() + "\n}").encode()
        write_new(temp / "manifest.json", data)
        sums = {**sums, "manifest.json": hashlib.sha256(data).hexdigest()}
        write_new(temp / "SHA256SUMS",
               "".join(f"{h}  {n}\n" for n, h in sorted(sums.items())).encode())
        final = temp.parent / backup_id
        os.rename(temp, final)
        fsync_dir(temp.parent)
        return final

    def _pg_env(self, settings: Any = None) -> tuple[str, dict[str, str]]:
        """The DSN (through the SSH tunnel when configured) and an environment that carries
        the password (never on the command line, where ps would show it)."""
        kwargs = connect_kwargs(settings or self.runtime.config.mail.database, self.runtime)
        env = dict(os.environ)
        if kwargs.get("password") is not None:
            env["PGPASSWORD"] = str(kwargs["password"])
        return str(kwargs["dsn"]), env

    async def _pg_dump(self, target: Path, settings: Any = None) -> str:
        """A full ``pg_dump -Fc`` of a mail database into ``target``; its SHA-256."""
        program = self.runtime.config.backup.pg_dump_path
        dsn, env = self._pg_env(settings)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    program, "--format=custom", "--no-password", "--dbname", dsn,
                    stdout=fd, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
                    env=env)
            except OSError as exc:
                raise BackupFailed(f"the backup could not be taken (pg_dump cannot run: "
                                   f"{program}: {exc.strerror}); nothing was changed") from None
            try:
                _, err = await asyncio.wait_for(proc.communicate(), PG_DUMP_TIMEOUT)
            except BaseException:  # timeout or cancellation: do not leave pg_dump running
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                raise
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        if proc.returncode != 0:
            text = err.decode(errors="replace").strip().splitlines()
            reason = text[-1] if text else f"exit status {proc.returncode}"
            raise BackupFailed(f"the backup could not be taken (pg_dump: {reason[:200]}); "
                               "nothing was changed")
        return await asyncio.to_thread(sha256_file, target)

    async def _check_dump(self, path: Path) -> list[str]:
        """Read the dump back with ``pg_restore --list``: it must hold the mail tables."""
        program = str(Path(self.runtime.config.backup.pg_dump_path).with_name("pg_restore"))
        try:
            proc = await asyncio.create_subprocess_exec(
                program, "--list", str(path), stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
        except OSError as exc:
            return [f"pg_restore cannot run ({program}: {exc.strerror})"]
        out, err = await asyncio.wait_for(proc.communicate(), PG_DUMP_TIMEOUT)
        if proc.returncode != 0:
            return [f"dump.pgc cannot be read by pg_restore "
                    f"({err.decode(errors='replace').strip()[:200]})"]
        listing = out.decode(errors="replace")
        missing = [t for t in ("domain", "mailbox", "alias")
                   if not re.search(rf"TABLE DATA \S+ {t} ", listing)]
        return [f"dump.pgc holds no data of table {t}" for t in missing]

    # -- catalog ---------------------------------------------------------------------------

    async def entries(self, limit: int = 50) -> list[dict[str, Any]]:
        return await self.runtime.state.run(lambda c: [dict(r) for r in c.execute(
            "SELECT * FROM backups ORDER BY created DESC LIMIT ?", (limit,))])

    async def get(self, backup_id: str) -> dict[str, Any]:
        row = await self.runtime.state.run(lambda c: c.execute(
            "SELECT * FROM backups WHERE id=?", (backup_id,)).fetchone())
        if row is None:
            raise NotFound(f"there is no backup {backup_id} (see 'backup list')")
        return dict(row)

    async def last_success(self) -> float | None:
        """When the newest verified backup was taken: read from the catalog once, then kept
        up to date by :meth:`take` (/metrics asks on every scrape)."""
        if not self._last_loaded:
            value = await self.runtime.state.run(
                lambda c: c.execute("SELECT max(created) FROM backups").fetchone()[0])
            if value is not None:
                self._last_success = max(float(value), self._last_success or 0.0)
            self._last_loaded = True
        return self._last_success

    async def verify(self, backup_id: str) -> list[str]:
        entry = await self.get(backup_id)
        folder = Path(entry["path"])
        if not folder.is_dir():
            return [f"the folder {folder} is missing"]
        return await asyncio.to_thread(verify_backup, folder, entry["manifest_sha256"])

    async def load_rows(self, backup_id: str) -> list[dict[str, Any]]:
        entry = await self.get(backup_id)
        problems = await self.verify(backup_id)
        if problems:
            raise BackupFailed(f"backup {backup_id} is damaged ({'; '.join(problems)}); "
                               "it cannot be restored")
        rows_file = Path(entry["path"]) / "rows.json"
        if not rows_file.is_file():  # verified above: a full backup, which has no rows.json
            raise ValidationError(f"backup {backup_id} is a full copy of the mail database, "
                                  "not the backup of one change; restore it with pg_restore "
                                  "or from its tables/*.json (docs/backup.md); nothing was "
                                  "changed")
        data = json.loads(rows_file.read_text())
        for item in data:  # verified above; still, nothing unexpected reaches SQL text
            key = item.get("key") if isinstance(item, dict) else None
            if not (isinstance(key, dict) and len(key) == 1 and
                    PRIMARY_KEYS.get(item.get("table")) in key and
                    item.get("action") in ("insert", "update", "delete")):
                raise BackupFailed(f"backup {backup_id} holds a row podod did not write "
                                   f"({str(item)[:80]}); it cannot be restored")
        return list(data)
