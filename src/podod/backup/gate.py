"""The backup gate: before a real change commits, back up what it touches, verify the
backup, record it in the catalog; any failure aborts the change with nothing changed.

A backup is a folder ``<backup dir>/<id>/`` (mode 0700, files 0600):

- ``rows.json``     the touched rows as they were before the change (``before_images``:
                    table, action, key, row — ``null`` for rows the change inserts)
- ``tables/<t>.json`` the committed contents of every touched table, read through a
                    separate connection (the change's own transaction is not committed, so
                    that connection sees the state before it)
- ``dump.pgc``      optionally a full ``pg_dump -Fc`` (``backup.pg_dump: true``)
- ``manifest.json`` id, time, actor, origin, command, tables, changes, and the SHA-256 of
                    every other file
- ``SHA256SUMS``    sha256sum-compatible checksums of all files, manifest included

It is written into a temporary folder, fsynced, renamed into place, then every file is read
back and re-hashed; only then is it recorded in the catalog and the change committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podod.errors import BackupFailed, NotFound

if TYPE_CHECKING:
    from podod.bus.context import CommandContext
    from podod.runtime import Runtime

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


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_folder(folder: Path) -> list[str]:
    """Problems with a backup folder; empty when every checksum matches."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return ["SHA256SUMS is missing"]
    problems = []
    for line in sums.read_text().splitlines():
        expected, _, name = line.partition("  ")
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != expected:
            problems.append(f"{name} does not match its checksum")
    return problems


class BackupGate:
    """The ``backup`` component."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def directory(self) -> Path:
        configured = self.runtime.config.backup.dir
        return Path(configured) if configured else Path(self.runtime.config.state_dir) / "backups"

    async def start(self) -> None:
        await self.runtime.state.migrate("backup", MIGRATIONS)
        await self.prune()

    async def stop(self) -> None:
        return None

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
            return await self._take(uow, ctx)
        except BackupFailed:
            raise
        except Exception as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise BackupFailed(f"the backup could not be taken ({reason}); nothing was "
                               "changed") from None

    async def _take(self, uow: Any, ctx: CommandContext) -> str:
        created = time.time()
        backup_id = datetime.fromtimestamp(created, UTC).strftime("%Y%m%dT%H%M%SZ") + \
            "-" + secrets.token_hex(3)
        tables = sorted(uow.touched)
        pool = await uow.database.pool()
        snapshots: dict[str, str] = {}
        async with pool.acquire() as reader:
            for table in tables:
                snapshots[table] = await reader.fetchval(
                    f"SELECT coalesce(json_agg(t), '[]'::json)::text FROM {table} t")
        dump: bytes | None = None
        settings = self.runtime.config.backup
        if settings.pg_dump:
            dump = await self._pg_dump()
        rows = json.dumps([{"table": t, "action": a, "key": k, "before": b}
                           for t, a, k, b in uow.before_images], default=str, indent=1)
        manifest = {
            "id": backup_id, "created": created, "actor": ctx.actor.name,
            "origin": ctx.request.origin, "command": ctx.spec.name,
            "request_id": ctx.request.id, "tables": tables,
            "changes": [asdict(c) for c in uow.changes()],
        }
        folder = await asyncio.to_thread(
            self._write_folder, backup_id, manifest, rows, snapshots, dump)
        problems = await asyncio.to_thread(verify_folder, folder)
        if problems:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise BackupFailed(f"the backup could not be verified ({'; '.join(problems)}); "
                               "nothing was changed")
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        manifest_sha = sha256_file(folder / "manifest.json")

        def record(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO backups VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (backup_id, created, ctx.actor.name, ctx.spec.name,
                          ",".join(tables), len(uow.before_images), size, manifest_sha,
                          str(folder)))

        await self.runtime.state.run(record)
        return backup_id

    def _write_folder(self, backup_id: str, manifest: dict[str, Any], rows: str,
                      snapshots: dict[str, str], dump: bytes | None) -> Path:
        base = self.directory
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = base / f".tmp-{backup_id}"
        final = base / backup_id
        temp.mkdir(mode=0o700)
        try:
            files: dict[str, bytes] = {"rows.json": rows.encode()}
            for table, text in snapshots.items():
                files[f"tables/{table}.json"] = text.encode()
            if dump is not None:
                files["dump.pgc"] = dump
            (temp / "tables").mkdir(mode=0o700)
            sums = {}
            for name, data in files.items():
                _write(temp / name, data)
                sums[name] = hashlib.sha256(data).hexdigest()
            manifest = {**manifest, "files": sums}
            data = json.dumps(manifest, indent=1, default=str).encode()
            _write(temp / "manifest.json", data)
            sums["manifest.json"] = hashlib.sha256(data).hexdigest()
            _write(temp / "SHA256SUMS",
                   "".join(f"{h}  {n}\n" for n, h in sorted(sums.items())).encode())
            os.rename(temp, final)
            dir_fd = os.open(base, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return final

    async def _pg_dump(self) -> bytes:
        settings = self.runtime.config.mail.database
        env = dict(os.environ)
        if settings.password is not None:
            env["PGPASSWORD"] = settings.password.get_secret_value()
        proc = await asyncio.create_subprocess_exec(
            self.runtime.config.backup.pg_dump_path, "-Fc", "--dbname", settings.dsn or "",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        out, err = await asyncio.wait_for(proc.communicate(), 600)
        if proc.returncode != 0:
            raise BackupFailed("the backup could not be taken (pg_dump: "
                               f"{err.decode(errors='replace').strip()[:200]}); nothing was "
                               "changed")
        return out

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
        value = await self.runtime.state.run(
            lambda c: c.execute("SELECT max(created) FROM backups").fetchone()[0])
        return float(value) if value is not None else None

    async def verify(self, backup_id: str) -> list[str]:
        entry = await self.get(backup_id)
        folder = Path(entry["path"])
        if not folder.is_dir():
            return [f"the folder {folder} is missing"]
        problems = await asyncio.to_thread(verify_folder, folder)
        if not problems and sha256_file(folder / "manifest.json") != entry["manifest_sha256"]:
            problems.append("manifest.json differs from the one in the catalog")
        return problems

    async def load_rows(self, backup_id: str) -> list[dict[str, Any]]:
        entry = await self.get(backup_id)
        problems = await self.verify(backup_id)
        if problems:
            raise BackupFailed(f"backup {backup_id} is damaged ({'; '.join(problems)}); "
                               "it cannot be restored")
        data = json.loads((Path(entry["path"]) / "rows.json").read_text())
        return list(data)
