"""What the mail commands share: the database, lookups with plain-sentence errors, units."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from podod.bus.context import CommandContext
from podod.bus.paging import Page, fetch_page, merge_pages
from podod.bus.spec import Opt, Param
from podod.errors import Conflict, NotFound, PododError, Unavailable, UsageError, ValidationError
from podod.mail.database import MailDatabase, sql_error
from podod.mail.databases import MailDatabases

MB = 1024 * 1024
MAX_QUOTA_MB = 1_000_000_000  # a petabyte: beyond any mailbox, and bytes still fit a bigint
MAX_COUNT = 2**31 - 1  # domain.mailboxes and domain.aliases are integer columns


def databases(ctx: CommandContext) -> MailDatabases:
    """The ``maildb`` component: every configured mail database and the domain map."""
    found = ctx.runtime.component("maildb")
    if found is None:
        raise Unavailable("no mail database is configured (mail.database.dsn or "
                          "mail.databases in podod.yaml)")
    assert isinstance(found, MailDatabases)
    return found


async def maildb(ctx: CommandContext, domain: str | None = None) -> MailDatabase:
    """The database holding ``domain`` (one sentence for a domain in two databases or in
    none); without a domain, the only database (with several: a bug, said as one)."""
    every = databases(ctx)
    if domain is not None:
        return await every.locate(domain)
    only = every.only()
    if only is None:
        raise UsageError(f"{ctx.spec.name}: say which mail database with --on NAME (one of "
                         f"{', '.join(every.names)})")
    return only


async def unit_for(ctx: CommandContext, domain: str) -> Any:
    """The command's unit of work, bound to the database of ``domain``: the first thing a
    changing mail command does once it knows its domain."""
    uow = ctx.unit
    await uow.bind(await databases(ctx).locate_for_change(domain))
    return uow


@asynccontextmanager
async def reader(ctx: CommandContext, domain: str | None = None,
                 database: MailDatabase | None = None) -> AsyncIterator[asyncpg.Connection]:
    """A connection for read-only commands: to ``database``, or to the database of
    ``domain``, or to the only database."""
    if database is None:
        database = await maildb(ctx, domain)
    pool = await database.pool()
    try:
        async with pool.acquire() as conn:
            yield conn
    except (OSError, TimeoutError) as exc:
        raise database.unreachable(exc) from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        refused = sql_error(exc)
        if refused is None:
            raise
        raise refused from None


async def unit_on(ctx: CommandContext, domain: str, on: str | None) -> Any:
    """The unit of work of ``domain create DOMAIN --on NAME``: bound to that database (or the
    only one); a domain another database holds already is refused."""
    every = databases(ctx)
    database = every.chosen(on, f"{ctx.spec.name} {domain}")
    if every.several:
        held = await every.held_now(domain)
        if held:
            raise Conflict(f"the domain {domain} already exists (in mail database "
                           f"{' and '.join(held)})")
    uow = ctx.unit
    await uow.bind(database)
    return uow


async def not_elsewhere(ctx: CommandContext, domain: str, database: MailDatabase) -> None:
    """Refuse ``domain`` when another mail database holds it (an alias domain must be in
    its target's database, where that database's Postfix reads it)."""
    every = databases(ctx)
    if not every.several:
        return
    other = await every.held_now(domain, skip=database.name)
    if other:
        raise Conflict(f"the domain {domain} is in mail database {' and '.join(other)}, not "
                       f"in {database.name}; move it first ('domain move {domain} --to "
                       f"{database.name}'); nothing was changed")


_T = TypeVar("_T")


async def each_database(ctx: CommandContext, on: str | None,
                        read: Callable[[Any], Awaitable[_T]]
                        ) -> tuple[list[tuple[str, _T]], list[str]]:
    """``read(conn)`` on every mail database (or the one ``--on`` names) at once: the
    answers by database name, and a note for each database that did not answer (a listing
    shows what answers, docs/databases.md); when none answers, its sentence is raised."""
    chosen = databases(ctx).selected(on)

    async def one(database: MailDatabase) -> _T:
        async with reader(ctx, database=database) as conn:
            return await read(conn)

    answers = await asyncio.gather(*(one(d) for d in chosen), return_exceptions=True)
    found: list[tuple[str, _T]] = []
    notes: list[str] = []
    failed: PododError | None = None
    for database, answer in zip(chosen, answers, strict=True):
        if isinstance(answer, PododError):
            failed = failed or answer
            notes.append(f"mail database {database.name} did not answer, so none of its "
                         f"rows are shown: {answer.message}")
        elif isinstance(answer, BaseException):
            raise answer
        else:
            found.append((database.name, answer))
    if not found and failed is not None:
        raise failed
    return found, notes


def serves(listed: list[str] | None, database: MailDatabase | None) -> bool:
    """Whether a maildir server or SOGo whose ``databases`` setting is ``listed`` (None:
    all) holds the mailboxes of ``database``."""
    return listed is None or database is None or database.name in listed


def not_served(what: str, key: str, database: MailDatabase) -> str:
    """The reason in a refusal: the mailboxes of ``database`` are not on ``what``."""
    return (f"the mailboxes of mail database {database.name} are not on {what} (mail.{key}."
            "databases does not list it)")


def several(ctx: CommandContext) -> bool:
    """More than one mail database: listings show which one holds each row."""
    found = ctx.runtime.component("maildb")
    return isinstance(found, MailDatabases) and found.several


def on_option() -> Param:
    return Opt("on", "only the mail database of this name (mail.databases)", metavar="NAME")


async def list_page(ctx: CommandContext, on: str | None, page: Page, **query: Any
                    ) -> tuple[list[dict[str, Any]], int, str, list[str]]:
    """One page of a listing over every mail database: each database's page read at once
    (keyset paging per database, in byte order so the pages merge exactly), merged in the
    listing's order; rows carry ``database`` when there are several. The notes name the
    databases that did not answer."""
    if not several(ctx):  # one database: read as always (--on may only name it)
        database = databases(ctx).get(on) if on is not None else None
        async with reader(ctx, database=database) as db:
            rows, more, last = await fetch_page(db, page, **query)
        return rows, more, last, []

    async def read(db: Any) -> tuple[list[Any], int, str]:
        return await fetch_page(db, page, collate=True, keep_sort=True, **query)

    found, notes = await each_database(ctx, on, read)
    rows, more, last = await merge_pages(page, found, key=query["key"],
                                         descending=query.get("descending", False))
    return rows, more, last, notes


async def domain_row(db: Any, domain: str, *, lock: bool = False) -> dict[str, Any]:
    """The domain's row; with ``lock`` it stays locked (``FOR UPDATE``) until the unit of
    work ends, so that two commands checking the domain's limits at the same time take
    turns: the second one counts what the first one added."""
    row = await db.fetchrow("SELECT * FROM domain WHERE domain = $1"
                            + (" FOR UPDATE" if lock else ""), domain)
    if row is None:
        raise NotFound(f"the domain {domain} does not exist (create it with "
                       f"'domain create {domain}')")
    return dict(row)


def password_expiry(domain: dict[str, Any]) -> datetime:
    """``mailbox.password_expiry`` for a password set now, as PostfixAdmin sets it (its
    password_expiration feature, on by default in 3.3): now plus the domain's
    ``password_expiry`` days. PostfixAdmin's Dovecot query refuses a login after that time
    unless the domain's value is 0, so a mailbox podod creates or gives a new password must
    not look expired to it (the column's default is 2000-01-01)."""
    days = domain.get("password_expiry") or 0
    return datetime.now(UTC) + timedelta(days=min(max(int(days), 0), 36500))


# -- the domain's limits, with PostfixAdmin's meanings ----------------------------------------
# domain.mailboxes and domain.aliases: 0 unlimited, -1 none allowed, N at most N.
# domain.maxquota (MB, one mailbox): 0 unlimited, -1 mailbox quotas switched off (mailboxes
# get none), N every mailbox needs a quota of 1..N MB.
# domain.quota (MB, all mailboxes together): 0 or -1 no total, N the mailboxes' quotas may add
# up to N MB, and none may be unlimited.
# Every command that adds a mailbox or an alias or changes a quota locks the domain's row
# first (domain_row(..., lock=True)) and checks in the same transaction.

MAILBOX_COUNT = "SELECT count(*) FROM mailbox WHERE domain = $1"
# A mailbox's own alias row is not an alias, also when it forwards a copy elsewhere.
ALIAS_COUNT = ("SELECT count(*) FROM alias a WHERE a.domain = $1 AND NOT EXISTS "
               "(SELECT 1 FROM mailbox m WHERE m.username = a.address)")


async def check_room(db: Any, domain: dict[str, Any], kind: str) -> None:
    """Refuse one more mailbox (``kind`` "mailboxes") or alias ("aliases") beyond the
    domain's limit; ``domain`` must have been read with ``lock=True``."""
    limit = int(domain[kind])
    name = domain["domain"]
    if domain.get("backupmx"):
        raise ValidationError(f"the domain {name} is a backup MX (its mail is relayed, not "
                              f"delivered here), so it has no {kind}; 'domain update {name} "
                              "--backup-mx no' makes it a mailbox domain")
    if limit == 0:
        return
    if limit < 0:
        raise ValidationError(f"the domain {name} may have no {kind} (its limit is -1, "
                              f"switched off; 'domain update {name} --max-{kind} N' "
                              "allows some)")
    count = await db.fetchval(MAILBOX_COUNT if kind == "mailboxes" else ALIAS_COUNT, name)
    if count >= limit:
        one = {"mailboxes": "mailbox", "aliases": "alias"}[kind]
        raise ValidationError(f"the domain {name} already has its maximum of {limit} "
                              f"{one if limit == 1 else kind}")


def _total(domain: dict[str, Any]) -> int:
    """The domain's total quota in MB, 0 when there is none (0 or -1)."""
    return max(0, int(domain["quota"]))


async def allotted(db: Any, domain: str, exclude: str | None = None) -> int:
    """The bytes of quota the domain's mailboxes (but ``exclude``) have together."""
    used = await db.fetchval(
        "SELECT coalesce(sum(quota), 0) FROM mailbox WHERE domain = $1 AND username <> "
        "coalesce($2, '')", domain, exclude)
    return int(used)


async def default_quota(db: Any, domain: dict[str, Any]) -> int:
    """The quota in bytes of a new mailbox created without --quota-mb: the domain's largest
    (PostfixAdmin's default), at most what is left of a total quota; unlimited only when the
    domain has neither limit."""
    name, largest, total = domain["domain"], int(domain["maxquota"]), _total(domain)
    if largest < 0:
        return 0
    if not total:
        return largest * MB
    left = max(0, total * MB - await allotted(db, name))
    if left < MB:
        raise ValidationError(f"the domain {name} has no quota left (all {total} MB are "
                              "allotted to its mailboxes); lower a mailbox's quota or raise "
                              f"the domain's with 'domain update {name} --quota-mb N'")
    quota = min(largest * MB, left) if largest else left
    return quota - quota % MB


async def check_quota(db: Any, domain: dict[str, Any], quota_bytes: int,
                      exclude: str | None = None) -> None:
    """Refuse a mailbox quota (bytes; 0 unlimited) the domain's limits do not allow;
    ``exclude`` is the mailbox whose quota is being changed."""
    name, largest, total = domain["domain"], int(domain["maxquota"]), _total(domain)
    if largest < 0:
        if quota_bytes:
            raise ValidationError(f"mailbox quotas are switched off for {name} (its largest "
                                  "mailbox quota is -1), so --quota-mb must be left out")
        if total:
            raise ValidationError(f"the domain {name} has a total quota of {total} MB but "
                                  "mailbox quotas switched off (-1); give it a largest "
                                  f"mailbox quota first ('domain update {name} "
                                  "--max-quota-mb N')")
        return
    if quota_bytes == 0 and (largest or total):
        limit = (f"at most {largest} MB" if largest else
                 f"a share of its {total} MB total")
        raise ValidationError(f"mailboxes of {name} need a quota of {limit}; unlimited "
                              "(--quota-mb 0) is not allowed")
    if largest and quota_bytes > largest * MB:
        raise ValidationError(f"a mailbox of {name} may have at most {largest} MB, not "
                              f"{quota_bytes // MB} MB")
    if total:
        used = await allotted(db, name, exclude)
        if used + quota_bytes > total * MB:
            free = max(0, total * MB - used) // MB
            raise ValidationError(f"the domain {name} has {free} MB of its {total} MB quota "
                                  f"left, not {quota_bytes // MB} MB")


async def is_alias_domain(db: Any, domain: str) -> str | None:
    value = await db.fetchval(
        "SELECT target_domain FROM alias_domain WHERE alias_domain = $1", domain)
    return str(value) if value is not None else None


def plain_text(option: str, value: str | None, limit: int = 255) -> None:
    """A name or description as the database column and SOGo's address book take it."""
    if value is None:
        return
    if len(value) > limit:
        raise ValidationError(f"{option} may have at most {limit} characters, not {len(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError(f"{option} must not contain control characters such as a line "
                              "break or a tab")


def visible_domains(ctx: CommandContext, asked: str | None) -> list[str] | None:
    """The domains a listing may show: None for all (admins and viewers); a domain-admin
    sees only the domains granted to them, and asking for another one is refused."""
    if ctx.actor.role != "domain-admin":
        return [asked] if asked else None
    if asked:
        ctx.require_domain(asked)
        return [asked]
    return list(ctx.actor.domains)


def require_view(ctx: CommandContext, domain: str) -> None:
    """A domain-admin sees only the domains granted to them (as in PostfixAdmin)."""
    if ctx.actor.role == "domain-admin":
        ctx.require_domain(domain)


def non_negative(name: str, value: int | None) -> None:
    if value is not None and value < 0:
        raise ValidationError(f"{name} must not be negative")


def yes(value: bool) -> str:
    return "yes" if value else "no"


def size(value_bytes: int) -> str:
    """Usage as people read it (1024-based, like the quotas in MB). Called once per row of
    a listing: no loop (dividing by a power of two is exact, so this equals dividing by
    1024 step by step)."""
    if value_bytes < 1024:
        return f"{int(value_bytes)} B"
    if value_bytes < 1 << 20:
        return f"{value_bytes / 1024:.1f} KB"
    if value_bytes < 1 << 30:
        return f"{value_bytes / (1 << 20):.1f} MB"
    return f"{value_bytes / (1 << 30):.1f} GB"


def mb(value_bytes: int) -> str:
    return "unlimited" if not value_bytes else f"{value_bytes // MB} MB"
