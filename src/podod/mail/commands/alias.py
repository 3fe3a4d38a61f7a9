"""``alias create|list|show|update|delete``: forwardings, distribution lists, catch-alls."""

from __future__ import annotations

from typing import Any

from podod.bus.context import CommandContext, Reply, Table
from podod.bus.spec import Arg, Opt
from podod.errors import Conflict, NotFound, ValidationError
from podod.mail.addresses import normalize_address, normalize_domain
from podod.mail.commands.common import (
    check_room,
    domain_row,
    is_alias_domain,
    reader,
    require_view,
    visible_domains,
    yes,
)
from podod.plugins import Registry


def parse_targets(raw: list[str] | None) -> list[str]:
    out: list[str] = []
    for item in raw or []:
        target = normalize_address(item)
        if target not in out:
            out.append(target)
    return out


async def check_targets(db: Any, address: str, targets: list[str]) -> None:
    """Self-references, unknown local recipients and loops are refused."""
    if not targets:
        raise ValidationError(f"the alias {address} needs at least one target (--to)")
    for target in targets:
        if target == address:
            raise ValidationError(f"the alias {address} cannot forward to itself")
        domain = target.split("@")[1]
        if not await db.fetchval("SELECT 1 FROM domain WHERE domain=$1", domain):
            continue  # a remote target is fine
        real = await is_alias_domain(db, domain)
        local = target if real is None else f"{target.split('@')[0]}@{real}"
        exists = await db.fetchval(
            "SELECT 1 FROM mailbox WHERE username=$1 UNION ALL "
            "SELECT 1 FROM alias WHERE address=$1 OR address=$2 LIMIT 1",
            local, "@" + local.split("@")[1])
        if not exists:
            raise ValidationError(f"the target {target} is in the local domain {domain} but "
                                  "no mailbox or alias has that address")
    # Loop check over the alias graph as it would be after this change.
    rows = await db.fetch("SELECT address, goto FROM alias WHERE address <> goto")
    graph = {r["address"]: [g.strip() for g in r["goto"].split(",") if g.strip()]
             for r in rows}
    graph[address] = targets
    stack, seen = [(t, [address, t]) for t in targets], set()
    while stack:
        node, path = stack.pop()
        if node == address:
            raise ValidationError(f"the alias {address} would create a loop: "
                                  f"{' → '.join(path)}")
        if node in seen:
            continue
        seen.add(node)
        stack.extend((n, [*path, n]) for n in graph.get(node, []))


async def _alias(db: Any, address: str) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM alias WHERE address=$1", address)
    if row is None:
        raise NotFound(f"there is no alias {address}")
    return dict(row)


def setup(registry: Registry) -> None:
    @registry.command(
        "alias create", "Create an alias (a forwarding, a distribution list or a catch-all)",
        params=[Arg("address", "the alias address, or @domain for a catch-all"),
                Opt("to", "where mail goes: one or more addresses", kind="list",
                    required=True),
                Opt("inactive", "create it switched off", kind="flag")],
        permission="domain-admin", mutating=True, unit="maildb",
        examples=["alias create sales@example.com --to alice@example.com,bob@example.com",
                  "alias create @example.com --to postmaster@example.com"])
    async def alias_create(ctx: CommandContext, address: str, to: list[str],
                           inactive: bool) -> Reply:
        addr = normalize_address(address, allow_catchall=True)
        domain_name = addr.split("@")[1]
        ctx.require_domain(domain_name)
        uow = ctx.unit
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
        targets = parse_targets(to)
        await check_targets(uow, addr, targets)
        await uow.insert("alias", {"address": addr, "goto": ",".join(targets),
                                   "domain": domain_name, "active": not inactive})
        kind = "catch-all" if addr.startswith("@") else "alias"
        return Reply(message=f"{kind} {addr} → {', '.join(targets)}")

    @registry.command(
        "alias list", "List aliases (not the mailboxes' own alias rows)",
        params=[Opt("domain", "only this domain"),
                Opt("search", "only aliases whose address or targets contain this")])
    async def alias_list(ctx: CommandContext, domain: str | None, search: str | None
                         ) -> Reply:
        domains = visible_domains(ctx, normalize_domain(domain) if domain else None)
        async with reader(ctx) as db:
            rows = [dict(r) for r in await db.fetch(
                "SELECT address, goto, domain, active FROM alias WHERE address <> goto AND "
                "($1::text[] IS NULL OR domain = ANY($1::text[])) AND ($2::text IS NULL OR "
                "strpos(address, lower($2)) > 0 OR strpos(lower(goto), lower($2)) > 0) "
                "ORDER BY address", domains, search)]
        return Reply(message=f"{len(rows)} aliases", data=rows, table=Table(
            ["alias", "goes to", "active"],
            [[r["address"], r["goto"].replace(",", ", "), yes(r["active"])] for r in rows],
            title="aliases"))

    @registry.command("alias show", "Show one alias",
                      params=[Arg("address", "the alias")])
    async def alias_show(ctx: CommandContext, address: str) -> Reply:
        addr = normalize_address(address, allow_catchall=True)
        require_view(ctx, addr.split("@")[1])
        async with reader(ctx) as db:
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
        permission="domain-admin", mutating=True, unit="maildb")
    async def alias_update(ctx: CommandContext, address: str, add: list[str] | None,
                           remove: list[str] | None, set: list[str] | None,
                           active: bool | None) -> Reply:
        addr = normalize_address(address, allow_catchall=True)
        ctx.require_domain(addr.split("@")[1])
        uow = ctx.unit
        row = await _alias(uow, addr)
        current = [t.strip() for t in row["goto"].split(",") if t.strip()]
        if set is not None and (add or remove):
            raise ValidationError("alias update: --set replaces all targets; do not combine "
                                  "it with --add or --remove")
        targets = parse_targets(set) if set is not None else list(current)
        for target in parse_targets(add):
            if target not in targets:
                targets.append(target)
        for target in parse_targets(remove):
            if target not in targets:
                raise ValidationError(f"{target} is not a target of {addr}")
            targets.remove(target)
        values: dict[str, Any] = {}
        if targets != current:
            is_mailbox = await uow.fetchval("SELECT 1 FROM mailbox WHERE username=$1", addr)
            if is_mailbox:  # a mailbox's own row: keep delivering to it unless asked not to
                await check_targets(uow, addr, [t for t in targets if t != addr] or [addr])
            else:
                await check_targets(uow, addr, targets)
            values["goto"] = ",".join(targets)
        if active is not None:
            values["active"] = active
        if not values:
            raise ValidationError("alias update: nothing to change")
        await uow.update("alias", {"address": addr}, values)
        return Reply(message=f"alias {addr} → {', '.join(targets)}")

    @registry.command("alias delete", "Delete an alias",
                      params=[Arg("address", "the alias")],
                      permission="domain-admin", mutating=True, unit="maildb")
    async def alias_delete(ctx: CommandContext, address: str) -> Reply:
        addr = normalize_address(address, allow_catchall=True)
        ctx.require_domain(addr.split("@")[1])
        uow = ctx.unit
        await _alias(uow, addr)
        if await uow.fetchval("SELECT 1 FROM mailbox WHERE username=$1", addr):
            raise Conflict(f"{addr} is a mailbox's own alias row; delete the mailbox with "
                           f"'user delete {addr}'")
        await uow.delete("alias", {"address": addr})
        verb = "deleted" if ctx.execute_real else "would be deleted"
        return Reply(message=f"alias {addr} {verb}")
