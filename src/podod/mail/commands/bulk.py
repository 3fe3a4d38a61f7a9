"""``user|alias|domain import`` and ``export``: many rows at once, from and to CSV.

An import reads the whole file (the command's data input: podoctl sends the file, chat an
attachment, the API a ``text/csv`` body; the daemon never opens a client's path), checks
every row before anything is written (the file alone in a worker thread, then against the
database), hashes the passwords on every core (the ``hashing`` pool) before its
transaction opens, then writes all rows in that one transaction with bulk COPYs. The bus
rolls it back in the sandbox, or commits it after the one verified backup of the backup
gate: a kill of the daemon at any moment leaves all of the import or none of it. A row
already in the database exactly as the file has it is skipped and named, so the same file
can be imported again. docs/import.md describes the files.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from podod.bus.context import CommandContext, Reply, Secret, Table
from podod.bus.shapes import INT, STR, arr, obj
from podod.bus.spec import Opt
from podod.errors import Unavailable, ValidationError
from podod.mail import csvio
from podod.mail.addresses import normalize_domain
from podod.mail.commands.common import (
    MB,
    databases,
    each_database,
    on_option,
    password_expiry,
    reader,
    visible_domains,
)
from podod.mail.csvio import Bad, Kind, Options, Record
from podod.mail.database import MailDatabase
from podod.mail.databases import duplicate
from podod.mail.passwords import (
    check_policy,
    default_pool,
    generate_password,
    hash_password,
    verify_password,
)
from podod.plugins import Registry

IMPORT_TIMEOUT = 6 * 3600.0  # 100 000 passwords at 70 000 rounds take hours on two cores
EXPORT_TIMEOUT = 600.0
WRITE_CHUNK = 2000  # rows per COPY: progress between them, and little held per COPY
FIRST_ROWS = 10  # keys named in a reply's summary
_NOUN = {"user": ("mailbox", "mailboxes"), "alias": ("alias", "aliases"),
         "domain": ("domain", "domains")}

BAD_ROW = obj({"line": INT, "key": STR, "reason": STR})
IMPORT_REPLY = obj({
    "rows": INT, "imported": INT, "skipped": INT, "bad": arr(BAD_ROW),
    "bad_count": INT, "first": arr(STR), "skipped_keys": arr(STR)},
    description="rows: data rows in the file; imported: rows written (or, in the sandbox, "
                "that would be); skipped: rows already in the database as the file has them; "
                "bad: rows not imported, with their line and why (at most 1000 listed, "
                "bad_count counts all); first: the first keys imported")
EXPORT_REPLY = obj({"rows": INT, "csv": STR, "columns": arr(STR)},
                   description="the CSV text, as the import reads it back")


def _n(count: int, kind: Kind) -> str:
    one, many = _NOUN[kind]
    return f"{count} {one if count == 1 else many}"


class Plan:
    """What an import does with each good row: insert (``new``) or skip (``skipped``,
    already there as the file has it); rows that cannot be imported go to ``bad``."""

    def __init__(self) -> None:
        self.new: list[Record] = []
        self.skipped: list[Record] = []
        self.verify: list[tuple[Record, str]] = []  # (row, stored hash): same password?
        self.bad: list[Bad] = []


# -- checks against the database -------------------------------------------------------------

async def _domains(db: Any, names: set[str], lock: bool) -> dict[str, dict[str, Any]]:
    """The domains' rows; with ``lock`` locked until the transaction ends, in one order
    (concurrent imports and creates take turns, so limits hold)."""
    rows = await db.fetch("SELECT * FROM domain WHERE domain = ANY($1::text[]) ORDER BY domain"
                          + (" FOR UPDATE" if lock else ""), sorted(names))
    return {r["domain"]: dict(r) for r in rows}


async def _alias_domains(db: Any, names: set[str]) -> dict[str, str]:
    rows = await db.fetch("SELECT alias_domain, target_domain FROM alias_domain "
                          "WHERE alias_domain = ANY($1::text[])", sorted(names))
    return {r["alias_domain"]: r["target_domain"] for r in rows}


def _where(ctx: CommandContext, record: Record, domains: dict[str, dict[str, Any]],
           alias_of: dict[str, str], kind: Kind) -> str | None:
    """Why a row's domain does not take it, or None."""
    if record.domain not in domains:
        return (f"the domain {record.domain} does not exist (import or create it first)")
    if not ctx.actor.may_manage(record.domain):
        return f"{ctx.actor.name} may not manage the domain {record.domain}"
    if record.domain in alias_of:
        return (f"{record.domain} is an alias domain of {alias_of[record.domain]}; put the "
                f"{_NOUN[kind][0]} in {alias_of[record.domain]}")
    return None


def _room(domain: dict[str, Any], column: str, count: int, kind: Kind) -> str | None:
    limit = int(domain[column])
    if domain.get("backupmx"):
        return (f"the domain {domain['domain']} is a backup MX (its mail is relayed, not "
                f"delivered here), so it has no {_NOUN[kind][1]}")
    if limit < 0:
        return f"the domain {domain['domain']} may have no {_NOUN[kind][1]} (its limit is -1)"
    if limit and count >= limit:
        return (f"the domain {domain['domain']} would have more than its maximum of "
                f"{_n(limit, kind)} (counting the rows above this one)")
    return None


def _quota(domain: dict[str, Any], wanted: int | None, allotted: int) -> int:
    """The row's quota in bytes under the domain's limits (as user create's), counting the
    quota of every mailbox already there and of the file's rows above; raises RowError."""
    name, largest, total = domain["domain"], int(domain["maxquota"]), max(0, int(domain["quota"]))
    if largest < 0:
        if wanted:
            raise csvio.RowError(f"mailbox quotas are switched off for {name} (its largest "
                                 "mailbox quota is -1); leave quota empty")
        return 0
    if wanted is None:
        if not total:
            return largest * MB
        left = total * MB - allotted
        if left < MB:
            raise csvio.RowError(f"the domain {name} has no quota left for this mailbox (its "
                                 f"{total} MB are allotted, counting the rows above)")
        quota = min(largest * MB, left) if largest else left
        return quota - quota % MB
    if wanted == 0 and (largest or total):
        raise csvio.RowError(f"mailboxes of {name} need a quota; unlimited is not allowed")
    if largest and wanted > largest * MB:
        raise csvio.RowError(f"a mailbox of {name} may have at most {largest} MB, not "
                             f"{wanted // MB} MB")
    if total and allotted + wanted > total * MB:
        free = max(0, total * MB - allotted) // MB
        raise csvio.RowError(f"the domain {name} has {free} MB of its {total} MB quota left "
                             f"(counting the rows above), not {wanted // MB} MB")
    return wanted


async def check_users(ctx: CommandContext, db: Any, records: list[Record], lock: bool
                      ) -> Plan:
    plan = Plan()
    names = {r.domain for r in records}
    domains = await _domains(db, names, lock)
    alias_of = await _alias_domains(db, names)
    usage = {r["domain"]: (int(r["n"]), int(r["q"])) for r in await db.fetch(
        "SELECT domain, count(*) AS n, coalesce(sum(quota), 0) AS q FROM mailbox "
        "WHERE domain = ANY($1::text[]) GROUP BY domain", sorted(names))}
    keys = [r.key for r in records]
    mailboxes = {r["username"]: dict(r) for r in await db.fetch(
        "SELECT username, name, quota, active, password FROM mailbox "
        "WHERE username = ANY($1::text[])", keys)}
    aliases = {r["address"] for r in await db.fetch(
        "SELECT address FROM alias WHERE address = ANY($1::text[])", keys)}
    counts = {d: usage.get(d, (0, 0))[0] for d in names}
    allotted = {d: usage.get(d, (0, 0))[1] for d in names}
    for record in records:
        why = _where(ctx, record, domains, alias_of, "user")
        if why is not None:
            plan.bad.append(Bad(record.line, record.key, why))
            continue
        values = record.values
        old = mailboxes.get(record.key)
        if old is not None:
            differ: list[str] = [c for c in ("name", "active")
                                 if c in values and values[c] != old[c]]
            if values.get("quota") is not None and values["quota"] != old["quota"]:
                differ.append("quota")
            if "password_hash" in values and values["password_hash"] != old["password"]:
                differ.append("password")
            if differ:
                plan.bad.append(Bad(record.line, record.key, f"the mailbox {record.key} "
                                    f"already exists with another {', '.join(differ)}"))
            elif "password" in values:
                plan.verify.append((record, str(old["password"])))
            else:
                plan.skipped.append(record)
            continue
        if record.key in aliases:
            plan.bad.append(Bad(record.line, record.key, f"{record.key} is already an alias; "
                                "delete the alias first"))
            continue
        domain = domains[record.domain]
        why = _room(domain, "mailboxes", counts[record.domain], "user")
        if why is not None:
            plan.bad.append(Bad(record.line, record.key, why))
            continue
        try:
            quota = _quota(domain, values.get("quota"), allotted[record.domain])
        except csvio.RowError as exc:
            plan.bad.append(Bad(record.line, record.key, str(exc)))
            continue
        values["quota_bytes"] = quota
        counts[record.domain] += 1
        allotted[record.domain] += quota
        plan.new.append(record)
    return plan


async def _existing_targets(db: Any, addresses: set[str]) -> set[str]:
    found = await db.fetch(
        "SELECT username AS a FROM mailbox WHERE username = ANY($1::text[]) UNION "
        "SELECT address FROM alias WHERE address = ANY($1::text[])", sorted(addresses))
    return {r["a"] for r in found}


async def _alias_graph(db: Any, start: set[str], limit: int = 100_000) -> dict[str, list[str]]:
    """The aliases in the database reachable from ``start``, one query per level."""
    graph: dict[str, list[str]] = {}
    frontier = set(start)
    while frontier and len(graph) < limit:
        rows = await db.fetch("SELECT address, goto FROM alias WHERE address = ANY($1::text[]) "
                              "AND address <> goto", sorted(frontier))
        frontier = set()
        for row in rows:
            nodes = [g.strip() for g in row["goto"].split(",") if g.strip()]
            graph[row["address"]] = nodes
            frontier.update(n for n in nodes if n not in graph)
        frontier -= graph.keys()
    return graph


def _loops(graph: dict[str, list[str]], starts: list[str]) -> dict[str, list[str]]:
    """For each start that lies on a cycle of ``graph``: the cycle (iterative, linear)."""
    state: dict[str, int] = {}  # 1 on the path, 2 finished
    on_cycle: dict[str, list[str]] = {}
    for root in starts:
        if state.get(root):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                path.append(node)
            nexts = graph.get(node, [])
            if index < len(nexts):
                stack.append((node, index + 1))
                child = nexts[index]
                if state.get(child) == 1:
                    cycle = [*path[path.index(child):], child]
                    for member in cycle[:-1]:
                        on_cycle.setdefault(member, cycle)
                elif not state.get(child):
                    stack.append((child, 0))
            else:
                state[node] = 2
                path.pop()
    return on_cycle


async def check_aliases(ctx: CommandContext, db: Any, records: list[Record], lock: bool
                        ) -> Plan:
    plan = Plan()
    names = {r.domain for r in records}
    domains = await _domains(db, names, lock)
    alias_of = await _alias_domains(db, names)
    counts = {r["domain"]: int(r["n"]) for r in await db.fetch(
        "SELECT a.domain, count(*) AS n FROM alias a WHERE a.domain = ANY($1::text[]) AND NOT "
        "EXISTS (SELECT 1 FROM mailbox m WHERE m.username = a.address) GROUP BY a.domain",
        sorted(names))}
    keys = [r.key for r in records]
    mailboxes = {r["username"] for r in await db.fetch(
        "SELECT username FROM mailbox WHERE username = ANY($1::text[])", keys)}
    aliases = {r["address"]: dict(r) for r in await db.fetch(
        "SELECT address, goto, active FROM alias WHERE address = ANY($1::text[])", keys)}
    # Local targets must exist: in the database, or as an alias of this file.
    target_domains = {t.rpartition("@")[2] for r in records for t in r.values["targets"]}
    local = {r["domain"]: r["target_domain"] or r["domain"] for r in await db.fetch(
        "SELECT d.domain, ad.target_domain FROM domain d LEFT JOIN alias_domain ad "
        "ON ad.alias_domain = d.domain WHERE d.domain = ANY($1::text[])",
        sorted(target_domains))}
    wanted: set[str] = set()
    for record in records:
        for target in record.values["targets"]:
            name, _, domain = target.rpartition("@")
            real = local.get(domain)
            if real is not None and ctx.actor.may_manage(real):
                wanted.update((f"{name}@{real}", f"@{real}"))
    found = await _existing_targets(db, wanted) | {r.key for r in records}
    candidates: list[Record] = []
    for record in records:
        why = _where(ctx, record, domains, alias_of, "alias")
        if why is None and record.key in mailboxes:
            why = f"{record.key} is a mailbox (its own alias row is kept by user commands)"
        if why is None:
            for target in record.values["targets"]:
                name, _, domain = target.rpartition("@")
                real = local.get(domain)
                if real is None or not ctx.actor.may_manage(real):
                    continue
                if f"{name}@{real}" not in found and f"@{real}" not in found:
                    why = (f"the target {target} is in the local domain {domain} but no "
                           "mailbox or alias has that address")
                    break
        if why is not None:
            plan.bad.append(Bad(record.line, record.key, why))
            continue
        old = aliases.get(record.key)
        if old is not None:
            same = (set(g.strip() for g in old["goto"].split(",")) ==
                    set(record.values["targets"]) and
                    old["active"] == record.values.get("active", old["active"]))
            if same:
                plan.skipped.append(record)
            else:
                plan.bad.append(Bad(record.line, record.key, f"the alias {record.key} already "
                                    "exists with other targets or another active flag"))
            continue
        candidates.append(record)
    # Loops through the file's new aliases and the database's.
    graph = await _alias_graph(db, {t for r in candidates for t in r.values["targets"]})
    for record in candidates:
        graph[record.key] = record.values["targets"]
    cycles = _loops(graph, [r.key for r in candidates])
    for record in candidates:
        cycle = cycles.get(record.key)
        if cycle is not None:
            start = cycle.index(record.key)
            turned = [*cycle[start:-1], *cycle[:start], record.key]
            plan.bad.append(Bad(record.line, record.key, "the alias would create a loop: "
                                + " → ".join(turned)))
            continue
        # The domain's limit last, counting the rows above that are imported.
        why = _room(domains[record.domain], "aliases", counts.get(record.domain, 0), "alias")
        if why is not None:
            plan.bad.append(Bad(record.line, record.key, why))
            continue
        counts[record.domain] = counts.get(record.domain, 0) + 1
        plan.new.append(record)
    plan.bad.sort(key=lambda b: b.line)
    return plan


_DOMAIN_COMPARED = ("description", "mailboxes", "aliases", "maxquota", "quota", "transport",
                    "backupmx", "active", "password_expiry")


async def check_domains(ctx: CommandContext, db: Any, records: list[Record], lock: bool
                        ) -> Plan:
    plan = Plan()
    existing = await _domains(db, {r.key for r in records}, lock)
    for record in records:
        old = existing.get(record.key)
        if old is None:
            plan.new.append(record)
            continue
        differ = [c for c in _DOMAIN_COMPARED
                  if c in record.values and record.values[c] != old[c]]
        if differ:
            plan.bad.append(Bad(record.line, record.key, f"the domain {record.key} already "
                                f"exists with another {', '.join(differ)}"))
        else:
            plan.skipped.append(record)
    return plan


CheckDb = Callable[[CommandContext, Any, list[Record], bool], Awaitable[Plan]]
CHECKS: dict[Kind, CheckDb] = {"user": check_users, "alias": check_aliases,
                               "domain": check_domains}


# -- passwords -----------------------------------------------------------------------------

def _hash_job(password: str, scheme: str, rounds: int) -> str:
    return hash_password(password, scheme, rounds)


def _verify_job(password: str, stored: str) -> bool:
    return verify_password(password, stored)


async def _in_pool(ctx: CommandContext, jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]],
                   label: str) -> list[Any]:
    """Run blocking jobs in the hashing pool, every worker busy, at most a few per worker
    queued (memory stays flat for 100 000 rows); results (or the exception) in order."""
    pool = default_pool()
    executor = pool.executor()
    loop = asyncio.get_running_loop()
    results: list[Any] = [None] * len(jobs)
    window = max(2, pool.workers * 4)
    pending: dict[asyncio.Future[Any], int] = {}
    next_job = 0
    done = 0
    last = 0.0
    while next_job < len(jobs) or pending:
        while next_job < len(jobs) and len(pending) < window:
            func, args = jobs[next_job]
            pending[loop.run_in_executor(executor, func, *args)] = next_job
            next_job += 1
        finished, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for future in finished:
            index = pending.pop(future)
            exc = future.exception()
            results[index] = exc if exc is not None else future.result()
            done += 1
        now = time.monotonic()
        if now - last > 0.25 or done == len(jobs):
            last = now
            await ctx.progress(label, done, len(jobs))
    return results


async def _passwords(ctx: CommandContext, plan: Plan, generate: bool
                     ) -> dict[str, str]:
    """Hash every new row's password (generating the missing ones) and check the passwords
    of rows already there; returns the generated passwords by address."""
    settings = ctx.runtime.config.mail.passwords
    generated: dict[str, str] = {}
    jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
    targets: list[tuple[str, Record, str]] = []
    for record, stored in plan.verify:
        jobs.append((_verify_job, (record.values["password"], stored)))
        targets.append(("verify", record, ""))
    for record in plan.new:
        if "password_hash" in record.values:
            record.values["digest"] = record.values["password_hash"]
            continue
        password = record.values.get("password")
        if password is None:
            password = generate_password(settings.generated_length)
            generated[record.key] = password
        jobs.append((_hash_job, (password, settings.scheme, settings.rounds)))
        targets.append(("hash", record, password))
    if not jobs:
        return generated
    results = await _in_pool(ctx, jobs, "hashing passwords")
    failed: set[str] = set()
    for (what, record, _password), result in zip(targets, results, strict=True):
        if what == "verify":
            if result is True:
                plan.skipped.append(record)
            else:
                plan.bad.append(Bad(record.line, record.key, f"the mailbox {record.key} "
                                    "already exists with another password"))
            continue
        if isinstance(result, BaseException):
            reason = getattr(result, "message", None) or str(result) or type(result).__name__
            plan.bad.append(Bad(record.line, record.key, reason))
            failed.add(record.key)
            generated.pop(record.key, None)
            continue
        record.values["digest"] = result
    if failed:
        plan.new = [r for r in plan.new if r.key not in failed]
    plan.verify = []
    plan.bad.sort(key=lambda b: b.line)
    return generated


# -- writing -------------------------------------------------------------------------------

async def _write(ctx: CommandContext, kind: Kind, records: list[Record],
                 domains: dict[str, dict[str, Any]]) -> None:
    uow = ctx.unit
    now: datetime = await uow.fetchval("SELECT now()")
    total = len(records)
    for start in range(0, total, WRITE_CHUNK):
        chunk = records[start:start + WRITE_CHUNK]
        if kind == "user":
            mailboxes, aliases = [], []
            for r in chunk:
                v = r.values
                created, modified = v.get("created", now), v.get("modified", now)
                local = r.key.rpartition("@")[0]
                mailboxes.append({
                    "username": r.key, "password": v["digest"], "name": v.get("name", ""),
                    "maildir": v.get("maildir", f"{r.domain}/{local}/"),
                    "quota": v["quota_bytes"], "local_part": local, "domain": r.domain,
                    "created": created, "modified": modified, "active": v.get("active", True),
                    "phone": v.get("phone", ""), "email_other": v.get("email_other", ""),
                    "password_expiry": v.get("password_expiry",
                                             password_expiry(domains[r.domain]))})
                aliases.append({"address": r.key, "goto": r.key, "domain": r.domain,
                                "created": created, "modified": modified,
                                "active": v.get("active", True)})
            await uow.insert_many("mailbox", mailboxes)
            await uow.insert_many("alias", aliases)
            # A join on the chunk's names, one index probe each: '= ANY($1)' was planned as
            # a scan comparing every row with the whole chunk after a large import.
            kept = {row["username"] for row in await uow.fetch(
                "SELECT q.username FROM unnest($1::text[]) AS n(name) "
                "JOIN quota2 q ON q.username = n.name", [r.key for r in chunk])}
            # A row a mailbox deleted elsewhere left is kept (its maildir may still be
            # there), as user create keeps it.
            await uow.insert_many("quota2", [{"username": r.key, "bytes": 0, "messages": 0}
                                             for r in chunk if r.key not in kept])
        elif kind == "alias":
            await uow.insert_many("alias", [{
                "address": r.key, "goto": ",".join(r.values["targets"]), "domain": r.domain,
                "created": r.values.get("created", now), "modified": r.values.get("modified", now),
                "active": r.values.get("active", True)} for r in chunk])
        else:
            await uow.insert_many("domain", [{
                "domain": r.key, "description": r.values.get("description", ""),
                "aliases": r.values.get("aliases", 0), "mailboxes": r.values.get("mailboxes", 0),
                "maxquota": r.values.get("maxquota", 0), "quota": r.values.get("quota", 0),
                "transport": r.values.get("transport"), "backupmx": r.values.get("backupmx", False),
                "created": r.values.get("created", now), "modified": r.values.get("modified", now),
                "active": r.values.get("active", True),
                "password_expiry": r.values.get("password_expiry", 0)} for r in chunk])
        for r in chunk:  # written: only the key is needed from here on (the reply)
            r.values = {}
        await ctx.progress("writing rows", min(start + WRITE_CHUNK, total), total)


def _bad_reply(kind: Kind, rows: int, bad: list[Bad], data: dict[str, Any]) -> Reply:
    shown = bad[:csvio.MAX_BAD_SHOWN]
    more = f" ({len(bad) - len(shown)} more not listed)" if len(bad) > len(shown) else ""
    return Reply(ok=False, code="invalid", status="invalid", exit_code=2,
                 message=f"{len(bad)} of {rows} rows cannot be imported (listed with their "
                         f"lines){more}; nothing was imported (--on-error skip imports the "
                         "good rows)",
                 data=data, table=Table(["line", _key_name(kind), "reason"],
                                        [b.as_list() for b in shown], title="bad rows"))


def _key_name(kind: Kind) -> str:
    return csvio.KEY[kind]


def _data(parsed_rows: int, imported: list[Record], skipped: list[Record],
          bad: list[Bad]) -> dict[str, Any]:
    return {"rows": parsed_rows, "imported": len(imported), "skipped": len(skipped),
            "bad": [{"line": b.line, "key": b.key, "reason": b.reason}
                    for b in bad[:csvio.MAX_BAD_SHOWN]],
            "bad_count": len(bad), "first": [r.key for r in imported[:FIRST_ROWS]],
            "skipped_keys": [r.key for r in skipped[:csvio.MAX_BAD_SHOWN]]}


async def _import_database(ctx: CommandContext, kind: Kind, records: list[Record],
                           on: str | None) -> MailDatabase:
    """The one mail database an import writes to: ``--on`` (a domain import with several
    databases needs it), or the database of the file's domains, which must all be in one
    (an import is one transaction; docs/databases.md)."""
    every = databases(ctx)
    if kind == "domain" and every.several:
        chosen = every.chosen(on, f"{kind} import")
        await every.refresh()
        elsewhere = sorted({r.domain for r in records
                            if any(n != chosen.name for n in every.mapped(r.domain))})
        if elsewhere:
            listed = ", ".join(elsewhere[:3]) + (f" and {len(elsewhere) - 3} more"
                                                 if len(elsewhere) > 3 else "")
            raise ValidationError(f"domain import: {listed} "
                                  f"{'is' if len(elsewhere) == 1 else 'are'} in another mail "
                                  f"database than {chosen.name} already (a domain lives in "
                                  "one; 'domain move' moves it); nothing was changed")
        return chosen
    if kind == "domain" or not every.several:
        return every.chosen(on, f"{kind} import")
    where: dict[str, set[str]] = {}
    for domain in sorted({r.domain for r in records}):
        held = await every.holders(domain)
        if len(held) > 1:
            raise duplicate(domain, held)
        if held:
            where.setdefault(held[0], set()).add(domain)
    if on is not None:
        every.get(on)
        where.setdefault(on, set())
    if len(where) > 1:
        listed = "; ".join(f"{n}: {', '.join(sorted(d)[:3])}" for n, d in sorted(where.items())
                           if d)
        raise ValidationError(f"{kind} import: the file's domains are in several mail "
                              f"databases ({listed}); import one file per database; nothing "
                              "was changed")
    if not where:
        return every.chosen(on, f"{kind} import")
    return every.get(next(iter(where)))


async def run_import(ctx: CommandContext, kind: Kind, domain: str | None,
                     generate_passwords: bool, on_error: str, on: str | None = None) -> Reply:
    data = ctx.request.stdin
    if not data or not data.strip():
        raise ValidationError(f"no CSV was given: {kind} import reads the file as its data "
                              "input (podoctl: the file's path, or standard input)")
    mail = ctx.runtime.config.mail
    scope = normalize_domain(domain) if domain else None
    if scope is not None:
        ctx.require_domain(scope)
    options = Options(domain=scope, generate=generate_passwords,
                      max_targets=mail.max_alias_targets,
                      min_length=mail.passwords.min_length, scheme=mail.passwords.scheme,
                      policy=check_policy)
    await ctx.progress("reading the file", None, None)
    parsed = await asyncio.to_thread(csvio.read, kind, data, options)
    await ctx.progress("checking rows against the database", 0, parsed.rows)
    database = await _import_database(ctx, kind, parsed.records, on)
    async with reader(ctx, database=database) as db:
        plan = await CHECKS[kind](ctx, db, parsed.records, False)
        found = list(plan.bad)
        # An alias may forward to another alias of the file that turned out bad: check the
        # rest again until no row depends on a refused one (each round refuses one more).
        while kind == "alias" and plan.bad:
            kept = sorted(plan.new + plan.skipped, key=lambda r: r.line)
            plan = await CHECKS[kind](ctx, db, kept, False)
            found += plan.bad
        plan.bad = found
    await ctx.progress("checking rows against the database", parsed.rows, parsed.rows)
    bad = sorted(parsed.bad + plan.bad, key=lambda b: b.line)
    if bad and on_error == "stop":
        return _bad_reply(kind, parsed.rows, bad, _data(parsed.rows, [], plan.skipped, bad))
    generated: dict[str, str] = {}
    if kind == "user":
        before = len(plan.bad)
        generated = await _passwords(ctx, plan, generate_passwords)
        bad = sorted(bad + plan.bad[before:], key=lambda b: b.line)
        if bad and on_error == "stop":
            return _bad_reply(kind, parsed.rows, bad, _data(parsed.rows, [], plan.skipped, bad))
    await ctx.progress("checking rows again, inside the transaction", 0, parsed.rows)
    # The transaction opens here: the domains are locked and every new row checked once
    # more (a row created meanwhile by someone else is refused, never duplicated).
    uow = ctx.unit
    await uow.bind(database)
    again = await CHECKS[kind](ctx, uow, plan.new, True)
    await ctx.progress("checking rows again, inside the transaction", parsed.rows, parsed.rows)
    for record, _stored in again.verify:  # an identical mailbox was created meanwhile
        again.bad.append(Bad(record.line, record.key, f"the mailbox {record.key} was created "
                             "by another change meanwhile"))
    for record in again.skipped:
        again.bad.append(Bad(record.line, record.key, f"{record.key} was created by another "
                             "change meanwhile"))
    if again.bad:
        bad = sorted(bad + again.bad, key=lambda b: b.line)
        if on_error == "stop":
            return _bad_reply(kind, parsed.rows, bad, _data(parsed.rows, [], plan.skipped, bad))
    new = again.new
    for refused in again.bad:
        generated.pop(refused.key, None)
    domains = await _domains(uow, {r.domain for r in new}, False) if kind == "user" else {}
    if new:
        await _write(ctx, kind, new, domains)
    return _reply(ctx, kind, parsed.rows, new, plan.skipped, bad, generated)


def _reply(ctx: CommandContext, kind: Kind, rows: int, new: list[Record],
           skipped: list[Record], bad: list[Bad], generated: dict[str, str]) -> Reply:
    verb = "imported" if ctx.execute_real else "would be imported"
    parts = [f"{_n(len(new), kind)} {verb}"]
    if skipped:
        parts.append(f"{len(skipped)} already there as the file has them (skipped)")
    if bad:
        parts.append(f"{len(bad)} bad rows skipped (--on-error skip)")
    notes = []
    if skipped:
        names = ", ".join(r.key for r in skipped[:FIRST_ROWS])
        more = f" and {len(skipped) - FIRST_ROWS} more" if len(skipped) > FIRST_ROWS else ""
        notes.append(f"Skipped, already in the database as the file has them: {names}{more}.")
        if kind == "user" and any("password" not in r.values and "password_hash" not in
                                  r.values for r in skipped):
            notes.append("Skipped rows get no generated password: if an earlier run that "
                         "did not finish created them, give them one with user "
                         "reset-password.")
    if generated and not ctx.execute_real:
        notes.append(f"{len(generated)} passwords will be generated when this runs for real "
                     "(podoctl writes them to --passwords-out).")
    secrets = ([Secret(f"password of {address}", password)
                for address, password in generated.items()] if ctx.execute_real else [])
    table = None
    if bad:
        shown = bad[:csvio.MAX_BAD_SHOWN]
        table = Table(["line", _key_name(kind), "reason"], [b.as_list() for b in shown],
                      title="bad rows (not imported)")
    return Reply(message=f"{kind} import: " + "; ".join(parts) + f" ({rows} rows in the file)",
                 data=_data(rows, new, skipped, bad), table=table, notes=notes,
                 secrets=secrets)


# -- export --------------------------------------------------------------------------------

_EXPORT_SQL = {
    "user": "SELECT username, name, quota, password, active, maildir, phone, email_other, "
            "password_expiry, created, modified FROM mailbox "
            "WHERE ($1::text[] IS NULL OR domain = ANY($1::text[])) ORDER BY username",
    "alias": "SELECT a.address, a.goto, a.active, a.created, a.modified FROM alias a "
             "WHERE ($1::text[] IS NULL OR a.domain = ANY($1::text[])) AND NOT EXISTS "
             "(SELECT 1 FROM mailbox m WHERE m.username = a.address) ORDER BY a.address",
    "domain": "SELECT domain, description, mailboxes, aliases, maxquota, quota, transport, "
              "backupmx, active, password_expiry, created, modified FROM domain "
              "WHERE ($1::text[] IS NULL OR domain = ANY($1::text[])) AND domain <> 'ALL' "
              "ORDER BY domain",
}
EXPORT_COLUMNS: dict[Kind, tuple[str, ...]] = {
    "user": ("address", "name", "quota", "password_hash", "active", "maildir", "phone",
             "email_other", "password_expiry", "created", "modified"),
    "alias": ("address", "targets", "active", "created", "modified"),
    "domain": ("domain", "description", "mailboxes", "aliases", "maxquota", "quota",
               "transport", "backupmx", "active", "password_expiry", "created", "modified"),
}


def _export_rows(kind: Kind, rows: list[Any]) -> str:
    if kind == "user":
        values = ([r["username"], r["name"], csvio.quota_text(int(r["quota"])), r["password"],
                   r["active"], r["maildir"], r["phone"], r["email_other"],
                   r["password_expiry"], r["created"], r["modified"]] for r in rows)
    elif kind == "alias":
        values = ([r["address"], r["goto"], r["active"], r["created"], r["modified"]]
                  for r in rows)
    else:
        values = (list(r.values()) for r in rows)
    return csvio.write(EXPORT_COLUMNS[kind], values)


async def run_export(ctx: CommandContext, kind: Kind, domain: str | None,
                     on: str | None = None) -> Reply:
    asked = normalize_domain(domain) if domain else None
    domains = visible_domains(ctx, asked)

    async def read(db: Any) -> list[Any]:
        return list(await db.fetch(_EXPORT_SQL[kind], domains))

    found, down = await each_database(ctx, on, read)
    if down:  # an export is a file to import elsewhere: never a silently partial one
        raise Unavailable(f"{kind} export: {down[0]}; nothing was exported (export the "
                          "others with --on NAME)")
    rows = [r for _name, part in found for r in part]
    text = await asyncio.to_thread(_export_rows, kind, rows)
    where = f" of {asked}" if asked else ""
    return Reply(message=f"{_n(len(rows), kind)}{where} exported",
                 data={"rows": len(rows), "csv": text, "columns": list(EXPORT_COLUMNS[kind])})


# -- declarations --------------------------------------------------------------------------

CLIENT_NOTE = ("podoctl: '{name} FILE.csv' sends the file (without FILE: standard input); "
               "--report FILE writes the bad rows there (CSV){extra}. Chat: attach the file; "
               "API: a text/csv body.")


def setup(registry: Registry) -> None:
    kinds: tuple[Kind, ...] = ("user", "alias", "domain")
    for kind in kinds:
        _declare(registry, kind)


def _declare(registry: Registry, kind: Kind) -> None:
    noun = _NOUN[kind][1]
    params = [Opt("domain", f"only {noun} of this domain (a user or alias row may then give "
                  "just the local part)" if kind != "domain" else "only this domain",
                  kind="domain"),
              Opt("on_error", "stop: import nothing if any row is bad (default); skip: "
                  "import the good rows and list the bad ones", kind="choice",
                  choices=("stop", "skip"), default="stop"),
              Opt("on", "the mail database to import into (mail.databases; a domain import "
                  "needs it when there are several)", metavar="NAME")]
    extra = ""
    if kind == "user":
        params.insert(1, Opt("generate_passwords", "rows without a password get a generated "
                             "one, shown once (podoctl writes them to --passwords-out, mode "
                             "0600)", kind="flag"))
        extra = ", --passwords-out FILE the generated passwords (mode 0600)"

    async def do_import(ctx: CommandContext, domain: str | None, on_error: str,
                        generate_passwords: bool = False, on: str | None = None) -> Reply:
        return await run_import(ctx, kind, domain, generate_passwords, on_error, on)

    registry.command(
        f"{kind} import", f"Import {noun} from a CSV file (the command's data input)",
        params=params, permission="admin" if kind == "domain" else "domain-admin",
        mutating=True, unit="maildb", stdin="data", timeout=IMPORT_TIMEOUT,
        reply=IMPORT_REPLY,
        description="Every row is checked before anything is written; the columns are in "
                    "docs/import.md. " + CLIENT_NOTE.format(name=f"{kind} import", extra=extra),
        examples=[f"{kind} import {noun}.csv" + (" --generate-passwords --passwords-out "
                                                 "passwords.csv" if kind == "user" else ""),
                  f"{kind} import {noun}.csv --on-error skip --report bad-rows.csv"],
    )(do_import)

    async def do_export(ctx: CommandContext, domain: str | None,
                        on: str | None = None) -> Reply:
        return await run_export(ctx, kind, domain, on)

    registry.command(
        f"{kind} export", f"Export {noun} as CSV, as {kind} import reads them back",
        params=[Opt("domain", "only this domain", kind="domain"), on_option()],
        permission="admin" if kind == "domain" else "domain-admin", timeout=EXPORT_TIMEOUT,
        reply=EXPORT_REPLY,
        description="Passwords are exported as their hashes. podoctl prints the CSV, or "
                    "writes it to --csv FILE (mode 0600).",
        examples=[f"{kind} export --csv {noun}.csv"])(do_export)
