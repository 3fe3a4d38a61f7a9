"""What the mail commands share: the database, lookups with plain-sentence errors, units."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from podod.bus.context import CommandContext
from podod.errors import NotFound, Unavailable, ValidationError
from podod.mail.database import MailDatabase, sql_error

MB = 1024 * 1024
MAX_QUOTA_MB = 1_000_000_000  # a petabyte: beyond any mailbox, and bytes still fit a bigint
MAX_COUNT = 2**31 - 1  # domain.mailboxes and domain.aliases are integer columns


def maildb(ctx: CommandContext) -> MailDatabase:
    database = ctx.runtime.component("maildb")
    if database is None:
        raise Unavailable("no mail database is configured (mail.database.dsn in podod.yaml)")
    assert isinstance(database, MailDatabase)
    return database


@asynccontextmanager
async def reader(ctx: CommandContext) -> AsyncIterator[asyncpg.Connection]:
    """A connection for read-only commands."""
    database = maildb(ctx)
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


async def domain_row(db: Any, domain: str) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM domain WHERE domain = $1", domain)
    if row is None:
        raise NotFound(f"the domain {domain} does not exist (create it with "
                       f"'domain create {domain}')")
    return dict(row)


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
    """Usage as people read it (1024-based, like the quotas in MB)."""
    value = float(value_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def mb(value_bytes: int) -> str:
    return "unlimited" if not value_bytes else f"{value_bytes // MB} MB"
