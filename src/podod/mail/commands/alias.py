"""``alias create|list|show|update|delete``: forwardings, distribution lists, catch-alls."""

from __future__ import annotations

import asyncio
from typing import Any

from podod.bus.context import Actor, CommandContext, Reply, Table
from podod.bus.paging import (
    INLINE_ROWS,
    Page,
    Sort,
    off_loop,
    page_message,
    page_note,
    page_options,
)
from podod.bus.shapes import BOOL, NULL, STR, arr, obj
from podod.bus.spec import Arg, Opt
from podod.errors import Conflict, NotFound, ValidationError
from podod.mail.addresses import normalize_address, normalize_domain
from podod.mail.commands.common import (
    check_room,
    domain_row,
    is_alias_domain,
    list_page,
    on_option,
    reader,
    require_view,
    several,
    unit_for,
    visible_domains,
    yes,
)
from podod.plugins import Registry

# Normalising an address costs about 20 µs (IDNA for its domain); a list longer than this
# is normalised in a worker thread, so that one request at the target limit (or a configured
# limit of many thousands) never holds the event loop, and with it every other request and
# systemd's watchdog, for its whole length.
_INLINE_TARGETS = 64


def _normalize_all(items: list[str]) -> list[str]:
    domains: dict[str, str] = {}  # each domain once through IDNA
    return list(dict.fromkeys(normalize_address(item, domains=domains) for item in items))


def too_many(limit: int, what: str) -> ValidationError:
    return ValidationError(f"an alias may have at most {limit} targets "
                           f"(mail.max_alias_targets), and {what}; nothing was changed")


async def parse_targets(ctx: CommandContext, raw: list[str] | None, option: str,
                        limit: int | None = None) -> list[str]:
    """Targets as stored: normalised, each once, in the order given. More than
    ``mail.max_alias_targets`` different ones are refused before any is looked at."""
    items = list(dict.fromkeys(raw or []))  # repeats once, in linear time
    limit = limit if limit is not None else ctx.runtime.config.mail.max_alias_targets
    if len(items) > limit:
        raise too_many(limit, f"{option} gives {len(items)}")
    if len(items) > _INLINE_TARGETS:
        return await asyncio.to_thread(_normalize_all, items)
    return _normalize_all(items)


async def check_targets(db: Any, actor: Actor, address: str, targets: list[str]) -> None:
    """Self-references, unknown local recipients and loops are refused, with one query for
    all targets (and one per level of the alias graph), however many there are.

    A domain-admin's target in a local domain whose mailboxes they do not manage is taken as
    it is, like an external address: saying whether it exists would tell them another
    domain's addresses."""
    if not targets:
        raise ValidationError(f"the alias {address} needs at least one target (--to)")
    if address in targets:
        raise ValidationError(f"the alias {address} cannot forward to itself")
    local = {r["domain"]: r["target_domain"] or r["domain"] for r in await db.fetch(
        "SELECT d.domain, ad.target_domain FROM domain d LEFT JOIN alias_domain ad "
        "ON ad.alias_domain = d.domain WHERE d.domain = ANY($1::text[])",
        list({t.rpartition("@")[2] for t in targets}))}
    wanted: dict[str, str] = {}  # target → the address that must exist (alias domains resolved)
    for target in targets:
        name, _, domain = target.rpartition("@")
        real = local.get(domain)
        if real is not None and actor.may_manage(real):
            wanted[target] = f"{name}@{real}"
    if wanted:
        keys = {*wanted.values(), *("@" + a.rpartition("@")[2] for a in wanted.values())}
        found = {r["address"] for r in await db.fetch(
            "SELECT username AS address FROM mailbox WHERE username = ANY($1::text[]) UNION "
            "SELECT address FROM alias WHERE address = ANY($1::text[])", list(keys))}
        for target, must in wanted.items():
            if must not in found and "@" + must.rpartition("@")[2] not in found:
                raise ValidationError(f"the target {target} is in the local domain "
                                      f"{target.rpartition('@')[2]} but no mailbox or alias "
                                      "has that address")
    await _check_loops(db, actor, address, targets)


async def _check_loops(db: Any, actor: Actor, address: str, targets: list[str]) -> None:
    """Walk the alias graph as it would be after this change, breadth first from the
    targets: each alias is read once, with one query per level."""
    parent = dict.fromkeys(targets, address)
    frontier = list(targets)
    while frontier:
        rows = await db.fetch("SELECT address, goto FROM alias WHERE address = ANY($1::text[]) "
                              "AND address <> goto", frontier)
        frontier = []
        for row in rows:
            for node in (g.strip() for g in row["goto"].split(",")):
                if node == address:
                    raise _loop(actor, address, parent, row["address"])
                if node and node not in parent:
                    parent[node] = row["address"]
                    frontier.append(node)


def _loop(actor: Actor, address: str, parent: dict[str, str], last: str) -> ValidationError:
    chain = []
    node = last
    while node != address:
        chain.append(node)
        node = parent[node]
    chain.reverse()
    # A domain-admin sees the target they gave and their own domains' addresses; another
    # domain's aliases on the way stay unnamed.
    path, hidden = [address, chain[0]], False
    for node in chain[1:]:
        if actor.may_manage(node.rpartition("@")[2]):
            path.append(node)
        elif path[-1] != "…":
            path.append("…")
            hidden = True
    note = " (… stands for addresses of domains you do not manage)" if hidden else ""
    return ValidationError(f"the alias {address} would create a loop: "
                           f"{' → '.join([*path, address])}{note}")


def _alias_rows(rows: list[Any]) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    data = [dict(r) for r in rows]
    return data, [[r["address"], r["goto"].replace(",", ", "), yes(r["active"]),
                   *([r["database"]] if "database" in r else [])] for r in data]


async def _alias(db: Any, address: str) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM alias WHERE address=$1", address)
    if row is None:
        raise NotFound(f"there is no alias {address}")
    return dict(row)


_ALIAS = {"address": STR, "goto": STR, "domain": STR, "active": BOOL}
# What ``alias list --sort`` orders by (the first: the key), as alias columns.
ALIAS_SORTS: dict[str, Sort] = {
    "address": Sort(), "goto": Sort("goto"), "domain": Sort("domain"),
    "active": Sort("active", "bool"), "created": Sort("created", "time"),
    "modified": Sort("modified", "time")}
LIST_REPLY = arr(obj({**_ALIAS, "database": STR}, optional=("database",)),
                 "one object per alias; goto: the targets, comma-separated; database: which "
                 "mail database holds it (only when there are several)")
SHOW_REPLY = obj({**_ALIAS, "targets": arr(STR), "created": STR, "modified": STR})


def setup(registry: Registry) -> None:
    @registry.command(
        "alias create", "Create an alias (a forwarding, a distribution list or a catch-all)",
        params=[Arg("address", "the alias address, or @domain for a catch-all"),
                Opt("to", "where mail goes: one or more addresses", kind="list",
                    required=True),
                Opt("inactive", "create it switched off", kind="flag")],
        permission="domain-admin", mutating=True, unit="maildb", reply=NULL,
        examples=["alias create sales@example.com --to alice@example.com,bob@example.com",
                  "alias create @example.com --to postmaster@example.com"])
    async def alias_create(ctx: CommandContext, address: str, to: list[str],
                           inactive: bool) -> Reply:
        addr = normalize_address(address, allow_catchall=True)
        domain_name = addr.split("@")[1]
        ctx.require_domain(domain_name)
        uow = await unit_for(ctx, domain_name)
        await domain_row(uow, domain_name)
        if await is_alias_domain(uow, domain_name):
            raise ValidationError(f"{domain_name} is an alias domain; create the alias in "
                                  "its target domain")
        if await uow.fetchval("SELECT 1 FROM alias WHERE address=$1", addr):
            raise Conflict(f"the alias {addr} already exists")
        if await uow.fetchval("SELECT 1 FROM mailbox WHERE username=$1", addr):
            raise Conflict(f"{addr} is a mailbox; use 'alias update {addr} --add ...' to "
                           "forward its mail")
        # Locked until the unit of work ends, so the domain's alias limit holds also for
        # creates sent at the same time.
        await check_room(uow, await domain_row(uow, domain_name, lock=True), "aliases")
        targets = await parse_targets(ctx, to, "--to")
        await check_targets(uow, ctx.actor, addr, targets)
        await uow.insert("alias", {"address": addr, "goto": ",".join(targets),
                                   "domain": domain_name, "active": not inactive})
        kind = "catch-all" if addr.startswith("@") else "alias"
        return Reply(message=f"{kind} {addr} → {', '.join(targets)}")

    @registry.command(
        "alias list", "List aliases (not the mailboxes' own alias rows)",
        params=[Opt("domain", "only this domain", kind="domain"),
                Opt("search", "only aliases whose address or targets contain this"),
                *page_options("aliases", "address", sorts=ALIAS_SORTS), on_option()],
        reply=LIST_REPLY)
    async def alias_list(ctx: CommandContext, domain: str | None, search: str | None,
                         sort: str | None, limit: int | None, after: str | None, all: bool,
                         on: str | None = None) -> Reply:
        page = Page.of("alias list", limit, after, all, sort=sort, sorts=ALIAS_SORTS)
        domains = visible_domains(ctx, normalize_domain(domain) if domain else None)
        rows, more, last, down = await list_page(
                ctx, on, page, key="address",
                select="SELECT address, goto, domain, active FROM alias",
                count="SELECT count(*) FROM alias",
                where="address <> goto AND ($1::text[] IS NULL OR domain = ANY($1::text[])) "
                      "AND ($2::text IS NULL OR strpos(address, lower($2)) > 0 OR "
                      "strpos(lower(goto), lower($2)) > 0)",
                args=[domains, search])
        data, table = await off_loop(len(rows) > INLINE_ROWS, _alias_rows, rows)
        notes, paged = page_note(ctx, page, more, last, "aliases")
        return Reply(message=page_message(len(data), more, "alias", "aliases"), data=data,
                     notes=down + notes, page=paged,
                     table=Table(["alias", "goes to", "active",
                                  *(["database"] if several(ctx) else [])], table,
                                 title="aliases"))

    @registry.command(
        "user aliases", "List the aliases that deliver to a mailbox (not its own alias row)",
        params=[Arg("address", "the mailbox", kind="address"),
                *page_options("aliases", "address")],
        examples=["user aliases alice@example.com"], reply=LIST_REPLY,
        description="Every alias whose targets name the address, catch-alls included; a "
                    "domain-admin sees only the aliases of their own domains.")
    async def user_aliases(ctx: CommandContext, address: str, limit: int | None,
                           after: str | None, all: bool) -> Reply:
        page = Page.of("user aliases", limit, after, all)
        username = normalize_address(address)
        require_view(ctx, username.split("@")[1])
        domains = visible_domains(ctx, None)
        async with reader(ctx, username.split("@")[1]) as db:
            if not await db.fetchval("SELECT 1 FROM mailbox WHERE username=$1", username):
                raise NotFound(f"there is no mailbox {username}")
        # Aliases of every database may deliver to it.
        rows, more, last, down = await list_page(
                ctx, None, page, key="address",
                select="SELECT address, goto, domain, active FROM alias",
                count="SELECT count(*) FROM alias",
                where="address <> $1 AND strpos(',' || replace(goto, ' ', '') || ',', "
                      "',' || $1 || ',') > 0 AND ($2::text[] IS NULL OR "
                      "domain = ANY($2::text[]))",
                args=[username, domains])
        data, table = await off_loop(len(rows) > INLINE_ROWS, _alias_rows, rows)
        notes, paged = page_note(ctx, page, more, last, "aliases")
        return Reply(message=page_message(len(data), more, "alias", "aliases") +
                     f" deliver to {username}", data=data, notes=down + notes, page=paged,
                     table=Table(["alias", "goes to", "active",
                                  *(["database"] if several(ctx) else [])], table,
                                 title=f"aliases of {username}"))

    @registry.command("alias show", "Show one alias",
                      params=[Arg("address", "the alias")], reply=SHOW_REPLY)
    async def alias_show(ctx: CommandContext, address: str) -> Reply:
        addr = normalize_address(address, allow_catchall=True)
        require_view(ctx, addr.split("@")[1])
        async with reader(ctx, addr.split("@")[1]) as db:
            row = await _alias(db, addr)
        targets = row["goto"].split(",")
        data = {**row, "targets": targets, "created": str(row["created"]),
                "modified": str(row["modified"])}
        return Reply(message=f"alias {addr}", data=data, table=Table(
            ["item", "value"], [["alias", addr], ["goes to", ", ".join(targets)],
                                ["active", yes(row["active"])]], title=f"alias {addr}"))

    @registry.command(
        "alias update", "Add, remove or replace an alias's targets, or switch it on or off",
        params=[Arg("address", "the alias"),
                Opt("add", "targets to add", kind="list"),
                Opt("remove", "targets to remove", kind="list"),
                Opt("set", "replace all targets", kind="list"),
                Opt("active", "switch it on or off", kind="bool")],
        permission="domain-admin", mutating=True, unit="maildb", reply=NULL)
    async def alias_update(ctx: CommandContext, address: str, add: list[str] | None,
                           remove: list[str] | None, set: list[str] | None,
                           active: bool | None) -> Reply:
        addr = normalize_address(address, allow_catchall=True)
        ctx.require_domain(addr.split("@")[1])
        uow = await unit_for(ctx, addr.split("@")[1])
        row = await _alias(uow, addr)
        current = [t.strip() for t in row["goto"].split(",") if t.strip()]
        limit = ctx.runtime.config.mail.max_alias_targets
        if set is not None and (add or remove):
            raise ValidationError("alias update: --set replaces all targets; do not combine "
                                  "it with --add or --remove")
        # An ordered dict: adding and removing stay linear however many targets there are.
        chosen = dict.fromkeys(await parse_targets(ctx, set, "--set") if set is not None
                               else current)
        chosen.update(dict.fromkeys(await parse_targets(ctx, add, "--add")))
        for target in await parse_targets(ctx, remove, "--remove",
                                          max(len(current), limit)):
            if target not in chosen:
                raise ValidationError(f"{target} is not a target of {addr}")
            del chosen[target]
        targets = list(chosen)
        if len(targets) > limit and len(targets) > len(current):
            # One that holds more already (made before the limit, or by another tool) may
            # shrink, not grow.
            raise too_many(limit, f"{addr} would have {len(targets)}")
        values: dict[str, Any] = {}
        if targets != current:
            is_mailbox = await uow.fetchval("SELECT 1 FROM mailbox WHERE username=$1", addr)
            if is_mailbox:  # a mailbox's own row: keep delivering to it unless asked not to
                others = [t for t in targets if t != addr]
                if others or not targets:
                    await check_targets(uow, ctx.actor, addr, others)
            else:
                await check_targets(uow, ctx.actor, addr, targets)
            values["goto"] = ",".join(targets)
        if active is not None:
            values["active"] = active
        if not values:
            raise ValidationError("alias update: nothing to change")
        await uow.update("alias", {"address": addr}, values)
        return Reply(message=f"alias {addr} → {', '.join(targets)}")

    @registry.command("alias delete", "Delete an alias",
                      params=[Arg("address", "the alias")],
                      permission="domain-admin", mutating=True, unit="maildb", reply=NULL)
    async def alias_delete(ctx: CommandContext, address: str) -> Reply:
        addr = normalize_address(address, allow_catchall=True)
        ctx.require_domain(addr.split("@")[1])
        uow = await unit_for(ctx, addr.split("@")[1])
        await _alias(uow, addr)
        if await uow.fetchval("SELECT 1 FROM mailbox WHERE username=$1", addr):
            raise Conflict(f"{addr} is a mailbox's own alias row; delete the mailbox with "
                           f"'user delete {addr}'")
        await uow.delete("alias", {"address": addr})
        verb = "deleted" if ctx.execute_real else "would be deleted"
        return Reply(message=f"alias {addr} {verb}")
