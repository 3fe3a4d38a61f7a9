"""``backup list|show|verify|restore``, and the ``backup`` component (the gate)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from podod.backup.gate import BackupGate, current_rows
from podod.bus.context import CommandContext, Reply, Table
from podod.bus.shapes import INT, NULL, NUM, STR, arr, obj
from podod.bus.spec import Arg, Opt
from podod.errors import BackupFailed, Conflict, UsageError, ValidationError
from podod.mail.database import TIMESTAMP_COLUMNS
from podod.mail.sogo import restore_notes
from podod.plugins import Registry


def _ts(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def gate_of(ctx: CommandContext) -> BackupGate:
    gate = ctx.runtime.component("backup")
    assert isinstance(gate, BackupGate)
    return gate


_BACKUP = {"id": STR, "created": NUM, "actor": STR, "command": STR, "tables": STR,
           "changes": INT, "bytes": INT, "manifest_sha256": STR, "path": STR}
LIST_REPLY = arr(obj(_BACKUP), "backups, newest first (created: Unix seconds)")
SHOW_REPLY = obj({**_BACKUP, "problems": arr(STR, "why it does not verify (empty: it does)"),
                  "manifest": {"type": "object"}})


def setup(registry: Registry) -> None:
    registry.component("backup", BackupGate)

    @registry.gate("backup")
    async def backup(ctx: CommandContext) -> str | None:
        """The first pre-change gate: a real change of a unit of work (the mail database)
        is backed up and the backup verified before the bus commits it."""
        if ctx.unit is None or not hasattr(ctx.unit, "before_images"):
            return None  # nothing this gate can back up (the command changes no rows)
        gate = ctx.runtime.component("backup")
        if gate is None:
            raise BackupFailed("the backup could not be taken (no backup gate is running); "
                               "nothing was changed")
        backup_id: str = await gate.take(ctx.unit, ctx)
        return backup_id

    @registry.command("backup list", "List the backups taken before real changes",
                      params=[Opt("limit", "how many", kind="int", default=20, minimum=1,
                                  maximum=100_000)],
                      permission="admin", reply=LIST_REPLY)
    async def backup_list(ctx: CommandContext, limit: int) -> Reply:
        entries = await gate_of(ctx).entries(limit)
        rows = [[e["id"], _ts(e["created"]), e["actor"], e["command"], e["tables"],
                 e["changes"], e["bytes"]] for e in entries]
        return Reply(message=f"{len(entries)} backups", data=entries, table=Table(
            ["id", "time (UTC)", "actor", "command", "tables", "rows", "bytes"], rows,
            title="backups"))

    @registry.command(
        "backup take", "Take a full backup of the mail database now",
        permission="admin", reply=obj(_BACKUP, description="the full backup's catalog entry"),
        description="Copies every mail table whole (tables/<table>.json, one consistent "
                    "snapshot) and, with backup.pg_dump, a pg_dump of the database. A real "
                    "change backs up only the rows it touches; full backups are taken on "
                    "request and every backup.full_every.")
    async def backup_take(ctx: CommandContext) -> Reply:
        entry = await gate_of(ctx).take_full(ctx.actor.name)
        return Reply(message=f"full backup {entry['id']} taken: {entry['changes']} rows of "
                             f"{entry['tables'].count(',') + 1} tables, {entry['bytes']} bytes",
                     data=entry)

    @registry.command("backup show", "Show one backup: what it holds and whether it verifies",
                      params=[Arg("id", "the backup id", metavar="ID")], permission="admin",
                      reply=SHOW_REPLY)
    async def backup_show(ctx: CommandContext, id: str) -> Reply:
        gate = gate_of(ctx)
        entry = await gate.get(id)
        problems = await gate.verify(id)
        manifest: dict[str, Any] = {}
        path = Path(entry["path"]) / "manifest.json"
        if path.is_file() and not any(p.startswith("manifest.json") for p in problems):
            try:
                manifest = json.loads(path.read_text())
            except ValueError:
                manifest = {}
        rows = [["id", id], ["time (UTC)", _ts(entry["created"])], ["actor", entry["actor"]],
                ["command", entry["command"]], ["tables", entry["tables"]],
                ["rows", entry["changes"]], ["bytes", entry["bytes"]],
                ["folder", entry["path"]],
                ["verifies", "yes" if not problems else "NO: " + "; ".join(problems)]]
        if manifest.get("pg_dump"):
            dump = Path(entry["path"]) / "dump.pgc"
            size = dump.stat().st_size if dump.is_file() else 0
            rows.append(["pg_dump", f"dump.pgc, {size} bytes (restore it with pg_restore)"])
        for change in manifest.get("changes", []):
            rows.append(["change", f"{change['action']} {change['target']} {change['key']}"])
        return Reply(message=f"backup {id}", data={**entry, "problems": problems,
                                                   "manifest": manifest},
                     table=Table(["item", "value"], rows, title=f"backup {id}"))

    @registry.command("backup verify", "Re-check the checksums of one backup or of all",
                      params=[Arg("id", "the backup id", required=False, metavar="ID"),
                              Opt("all", "verify every backup", kind="flag")],
                      permission="admin", timeout=3600, reply=obj({"verified": arr(STR)}))
    async def backup_verify(ctx: CommandContext, id: str | None, all: bool) -> Reply:
        gate = gate_of(ctx)
        if not id and not all:
            raise UsageError("backup verify: give a backup ID or --all")
        ids = [e["id"] for e in await gate.entries(100000)] if all else [str(id)]
        bad = {}
        for done, backup_id in enumerate(ids):
            if len(ids) > 1:
                await ctx.progress(f"verifying backup {backup_id}", done, len(ids))
            problems = await gate.verify(backup_id)
            if problems:
                bad[backup_id] = problems
        if bad:
            text = "; ".join(f"{k}: {', '.join(v)}" for k, v in bad.items())
            return Reply(ok=False, code="backup-damaged", exit_code=1,
                         message=f"{len(bad)} of {len(ids)} backups do not verify: {text}",
                         data=bad)
        return Reply(message=f"{len(ids)} backup{'s' if len(ids) != 1 else ''} verified",
                     data={"verified": ids})

    @registry.command(
        "backup restore", "Put back the rows a change touched, as they were before it",
        params=[Arg("id", "the backup id", metavar="ID"),
                Opt("overwrite_later_changes", "restore even rows that changed again since "
                    "the backup (listed when it refuses)", kind="flag")],
        permission="admin", mutating=True, unit="maildb", reply=NULL,
        description="Rows the change inserted are deleted; rows it updated or deleted are "
                    "written back. Rows that changed again since the change (another update, "
                    "a new password, a row created again) are listed and the restore is "
                    "refused unless --overwrite-later-changes. Like every change, a restore "
                    "is a sandbox dry run unless --execute-real, and a real restore is "
                    "itself backed up first.",
    )
    async def backup_restore(ctx: CommandContext, id: str,
                             overwrite_later_changes: bool) -> Reply:
        rows = await gate_of(ctx).load_rows(id)
        # The unit of each database the backup's rows are in (a domain move's: two).
        legs: dict[str | None, Any] = {}
        for item in rows:
            name = item.get("database")
            if name not in legs:
                legs[name] = await _leg(ctx, name)
        later: list[str] | None = []
        for name, leg in legs.items():
            found = await later_changes(leg, [r for r in rows if r.get("database") == name])
            later = None if found is None or later is None else later + found
        notes = []
        if later is None and not overwrite_later_changes:
            raise Conflict(f"backup {id} holds no rows as they were right after its change "
                           "(it was taken by an older podod), so changes made since cannot be "
                           "told apart; nothing was changed; add --overwrite-later-changes to "
                           "restore it anyway")
        if later:
            listed = "; ".join(later[:LISTED]) + \
                (f"; and {len(later) - LISTED} more" if len(later) > LISTED else "")
            if not overwrite_later_changes:
                raise Conflict(f"since backup {id} was taken, {_rows(len(later))} changed "
                               f"again ({listed}); restoring would undo that, so nothing was "
                               "changed; add --overwrite-later-changes to restore anyway")
            notes.append(f"Overwrites what changed since the backup: {listed}.")
        for item in reversed(rows):
            uow = legs[item.get("database")]
            table, action, key, before = item["table"], item["action"], item["key"], \
                item["before"]
            (column, value), = key.items()
            current = await uow.fetchrow(
                f"SELECT to_json(t)::text AS j FROM {table} t WHERE {column} = $1", value)
            if action == "insert":
                if current is not None:
                    await uow.delete(table, {column: value})
                continue
            typed = await uow.fetchrow(
                f"SELECT * FROM json_populate_record(NULL::{table}, $1::json)",
                json.dumps(before))
            if typed is None:
                raise ValidationError(f"backup {id} holds a row of {table} that cannot be read")
            values = dict(typed)
            if current is None:
                await uow.insert(table, values)
            else:
                now = json.loads(current["j"])
                values.pop(column)
                values.pop("created", None)
                if {k: str(v) for k, v in now.items() if k in values} != \
                        {k: str(v) for k, v in values.items()}:
                    await uow.update(table, {column: value}, values)
        notes += restore_notes(ctx, id, rows)  # SOGo's data of mailboxes that come back
        return Reply(message=f"restore of backup {id}: {len(ctx.unit.changes())} rows",
                     notes=notes)


async def _leg(ctx: CommandContext, name: str | None) -> Any:
    """The unit of work for a backup's rows of database ``name`` (None: a backup taken with
    one database, restored into the only one)."""
    from podod.mail.commands.common import databases

    every = databases(ctx)
    if name is None:
        database = every.only()
        if database is None:
            raise ValidationError("this backup was taken when there was one mail database and "
                                  "names none; with several, restore it by hand (docs/"
                                  "databases.md); nothing was changed")
    else:
        database = every.get(name)
    return await ctx.unit.leg(database)


LISTED = 5  # later changes named in a refusal; the rest are counted
# Set with the changes themselves (password_expiry with every new password), not changes.
UNCOMPARED = frozenset(TIMESTAMP_COLUMNS)


def _rows(count: int) -> str:
    return f"{count} row{'' if count == 1 else 's'}"


async def later_changes(db: Any, rows: list[dict[str, Any]]) -> list[str] | None:
    """What changed since the backup's change, as 'mailbox x@y.org: password, quota': the
    current rows against the rows right after the change (column names, never values).
    None for a backup without those rows (taken before podod recorded them)."""
    after: dict[tuple[str, str], dict[str, Any] | None] = {}
    existed: dict[tuple[str, str], bool] = {}  # before the change: what a restore puts back
    for item in rows:
        if "after" not in item:
            return None
        (_column, value), = item["key"].items()
        after[(item["table"], str(value))] = item["after"]
        existed.setdefault((item["table"], str(value)), item["before"] is not None)
    now = await current_rows(db, list(after))
    found = []
    for (table, value), then in after.items():
        current = now.get((table, value))
        if then is None and current is None:
            continue
        if then is None:
            found.append(f"{table} {value}: created again")
        elif current is None:
            if existed[(table, value)]:  # a row the change inserted, gone since: no matter
                found.append(f"{table} {value}: deleted")
        else:
            columns = [c for c in [*then, *(c for c in current if c not in then)]
                       if c not in UNCOMPARED and then.get(c) != current.get(c)]
            if columns:
                found.append(f"{table} {value}: {', '.join(columns)}")
    return found
