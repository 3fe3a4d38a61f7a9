"""``domain move DOMAIN --to NAME``: a domain with its mailboxes, aliases, alias domains and
quota rows from one mail database to another, in one change on both (docs/databases.md).

The rows are read and locked in the source, copied into the target (one COPY per table),
counted there, then deleted from the source; both transactions commit only after the backup
of both sides is verified, the target first. A stop before the target's commit changes
nothing; a stop between the two commits leaves the domain in both databases, which every
change refuses until ``domain move`` is run again: it then finds the same rows in the
target and only deletes the source's copy.
"""

from __future__ import annotations

from typing import Any

from podod.bus.context import CommandContext, Reply, Table
from podod.bus.shapes import INT, STR, obj
from podod.bus.spec import Arg, Opt
from podod.errors import Conflict, NotFound, ValidationError
from podod.mail.addresses import normalize_domain
from podod.mail.commands.common import databases
from podod.mail.schema import PRIMARY_KEYS
from podod.plugins import Registry

# Inserted in this order (a domain before what refers to it), deleted in the reverse.
TABLES = ("domain", "alias_domain", "mailbox", "alias", "quota2")
_WHAT = {"domain": "domain rows", "alias_domain": "alias domains", "mailbox": "mailboxes",
         "alias": "alias rows", "quota2": "quota rows"}

MOVE_REPLY = obj({"domain": STR, "from": STR, "to": STR, "resumed": {"type": "boolean"},
                  **{t: INT for t in TABLES}},
                 description="the rows moved per table (alias rows include the mailboxes' "
                             "own); resumed: the target already held the copy (a move "
                             "stopped between its two commits), only the source's was "
                             "deleted")


async def domain_rows(db: Any, name: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of ``name`` podod writes, locked: its domain row and its alias domains'
    (with their alias_domain rows), mailboxes, aliases (the mailboxes' own included) and
    quota2 rows."""
    aliased = [str(r["alias_domain"]) for r in await db.fetch(
        "SELECT alias_domain FROM alias_domain WHERE target_domain = $1 AND alias_domain <> $1 "
        "ORDER BY 1 FOR UPDATE", name)]
    names = [name, *aliased]
    return {
        "domain": [dict(r) for r in await db.fetch(
            "SELECT * FROM domain WHERE domain = ANY($1::text[]) ORDER BY domain FOR UPDATE",
            names)],
        "alias_domain": [dict(r) for r in await db.fetch(
            "SELECT * FROM alias_domain WHERE alias_domain = ANY($1::text[]) "
            "ORDER BY alias_domain FOR UPDATE", names)],
        "mailbox": [dict(r) for r in await db.fetch(
            "SELECT * FROM mailbox WHERE domain = ANY($1::text[]) ORDER BY username "
            "FOR UPDATE", names)],
        "alias": [dict(r) for r in await db.fetch(
            "SELECT * FROM alias WHERE domain = ANY($1::text[]) ORDER BY address FOR UPDATE",
            names)],
        "quota2": [dict(r) for r in await db.fetch(
            "SELECT q.* FROM quota2 q JOIN mailbox m ON m.username = q.username "
            "WHERE m.domain = ANY($1::text[]) ORDER BY q.username FOR UPDATE OF q", names)],
    }


def _keys(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    return {t: [str(r[PRIMARY_KEYS[t]]) for r in rows[t]] for t in TABLES}


async def _columns(db: Any, table: str) -> set[str]:
    return {str(r["column_name"]) for r in await db.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = $1", table)}


def setup(registry: Registry) -> None:
    @registry.command(
        "domain move", "Move a domain with its mailboxes, aliases and quota rows to another "
        "mail database",
        params=[Arg("domain", "the domain", kind="domain"),
                Opt("to", "the mail database to move it to (mail.databases)", required=True,
                    metavar="NAME")],
        permission="admin", mutating=True, unit="maildb", reply=MOVE_REPLY,
        timeout=3600,
        description="Both databases are backed up before the change; the target commits "
                    "first, so a stop in between leaves the domain in both (refused by every "
                    "change) and running the move again finishes it. Maildirs are not "
                    "moved: the reply says when that is the operator's job.",
        examples=["domain move example.com --to mx2"])
    async def domain_move(ctx: CommandContext, domain: str, to: str) -> Reply:
        name = normalize_domain(domain)
        every = databases(ctx)
        target_db = every.get(to)
        await every.refresh()
        held = await every.holders(name)
        if not held:
            raise NotFound(f"the domain {name} does not exist in any mail database")
        if held == (target_db.name,):
            raise Conflict(f"the domain {name} is in mail database {target_db.name} already; "
                           "nothing was changed")
        others = [n for n in held if n != target_db.name]
        if len(others) > 1:
            raise Conflict(f"the domain {name} is in {' and '.join(held)}; move needs it in "
                           "one database besides the target; nothing was changed")
        source_db = every.get(others[0])
        resumed = target_db.name in held
        uow = ctx.unit
        source = await uow.leg(source_db)
        target = await uow.leg(target_db)
        owner = await source.fetchval(
            "SELECT target_domain FROM alias_domain WHERE alias_domain = $1 AND "
            "target_domain <> $1", name)
        if owner is not None:
            raise ValidationError(f"{name} is an alias domain of {owner}; move {owner} (its "
                                  "alias domains go with it); nothing was changed")
        rows = await domain_rows(source, name)
        keys = _keys(rows)
        there = await domain_rows(target, name) if resumed else None
        if there is not None and _keys(there) != keys:
            raise Conflict(f"the domain {name} is in {source_db.name} and {target_db.name} "
                           "with different rows (not a move stopped half-way); decide which "
                           "copy is right and delete the other ('domain delete' works on "
                           "neither while both exist: use SQL, see docs/databases.md); "
                           "nothing was changed")
        if not resumed:
            for table in TABLES:
                if not keys[table]:
                    continue
                column = PRIMARY_KEYS[table]
                taken = await target.fetch(
                    f"SELECT {column}::text AS k FROM {table} WHERE {column}::text = "
                    "ANY($1::text[]) LIMIT 3", keys[table])
                if taken:
                    listed = ", ".join(str(r["k"]) for r in taken)
                    raise Conflict(f"mail database {target_db.name} already has {table} "
                                   f"rows of {name} ({listed}); nothing was changed")
                missing = set(rows[table][0]) - await _columns(target, table)
                if missing:
                    raise ValidationError(
                        f"mail database {target_db.name} lacks the column"
                        f"{'s' if len(missing) > 1 else ''} {', '.join(sorted(missing))} of "
                        f"{table} that {source_db.name} has (an older or different schema: "
                        f"'podod db check --on {target_db.name}'); nothing was changed")
            for table in TABLES:
                await target.insert_many(table, rows[table])
            for table in TABLES:  # what the target holds now, inside its transaction
                column = PRIMARY_KEYS[table]
                count = await target.fetchval(
                    f"SELECT count(*) FROM {table} WHERE {column}::text = ANY($1::text[])",
                    keys[table])
                if count != len(keys[table]):
                    raise Conflict(f"the copy of {name} in {target_db.name} holds {count} "
                                   f"{table} rows, not {len(keys[table])}; nothing was changed")
        for table in reversed(TABLES):
            await source.delete_many(table, PRIMARY_KEYS[table], keys[table])
        counts = {t: len(keys[t]) for t in TABLES}
        verb = "moved" if ctx.execute_real else "would move"
        summary = ", ".join(f"{counts[t]} {_WHAT[t]}" for t in TABLES)
        notes = [f"Maildirs are not moved: the maildirs of {name} stay where they are. If "
                 f"{target_db.name}'s Dovecot reads another maildir server than "
                 f"{source_db.name}'s, copying {name}'s folder there is the operator's job "
                 "(docs/databases.md)."]
        if resumed:
            notes.insert(0, f"{target_db.name} already held the same rows of {name} (a move "
                            f"stopped between its two commits): only {source_db.name}'s "
                            "copy is deleted.")
        return Reply(
            message=f"domain {name} {verb} from {source_db.name} to {target_db.name}: "
                    f"{summary}",
            data={"domain": name, "from": source_db.name, "to": target_db.name,
                  "resumed": resumed, **counts},
            notes=notes,
            table=Table(["rows", "count"], [[_WHAT[t], counts[t]] for t in TABLES],
                        title=f"domain move {name}: {source_db.name} → {target_db.name}"))
