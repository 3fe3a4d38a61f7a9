"""``domain create|list|show|update|delete`` and ``domain-alias create|list|delete``."""

from __future__ import annotations

from typing import Any

from podod.bus.context import CommandContext, Reply, Table
from podod.bus.paging import (
    Page,
    Sort,
    page_message,
    page_note,
    page_options,
)
from podod.bus.shapes import BOOL, INT, NULL, STR, WHOLE_TEXT, arr, nullable, obj
from podod.bus.spec import Arg, Opt
from podod.errors import Conflict, NotFound, ValidationError
from podod.mail.addresses import normalize_domain
from podod.mail.commands.common import (
    ALIAS_COUNT,
    MAILBOX_COUNT,
    MAX_COUNT,
    MAX_QUOTA_MB,
    MB,
    domain_row,
    each_database,
    is_alias_domain,
    list_page,
    not_elsewhere,
    on_option,
    plain_text,
    reader,
    require_view,
    several,
    unit_for,
    unit_on,
    yes,
)
from podod.mail.schema import TEXT_COLUMNS
from podod.mail.transports import check_transport
from podod.plugins import Registry
from podod.servers.services import domain_changed

LIMITS = [
    Opt("description", "a description"),
    Opt("quota_mb", "total quota of all mailboxes in MB (0: unlimited, -1: none, switched "
        "off)", kind="size", minimum=-1, maximum=MAX_QUOTA_MB),
    Opt("max_quota_mb", "largest quota of one mailbox in MB (0: unlimited, -1: mailbox "
        "quotas switched off)", kind="size", minimum=-1, maximum=MAX_QUOTA_MB),
    Opt("max_mailboxes", "how many mailboxes (0: unlimited, -1: none)", kind="int",
        minimum=-1, maximum=MAX_COUNT),
    Opt("max_aliases", "how many aliases (0: unlimited, -1: none)", kind="int", minimum=-1,
        maximum=MAX_COUNT),
]


TRANSPORT = Opt("transport", "Postfix transport for the domain (transport_maps), e.g. "
                "relay:[mx.example.net]:25, smtp:[10.0.0.5], lmtp:inet:10.0.0.6:24, local, "
                "virtual; default: no entry")
RELAY_CREATE = [TRANSPORT, Opt("backup_mx", "a backup MX: Postfix relays its mail "
                               "(relay_domains) and holds no mailboxes for it", kind="flag")]
RELAY_UPDATE = [TRANSPORT, Opt("backup_mx", "be a backup MX (relayed, no mailboxes) or not",
                               kind="bool")]


def _relay(transport: str | None, backup_mx: bool | None) -> dict[str, Any]:
    """domain.transport and domain.backupmx, as PostfixAdmin keeps them."""
    values: dict[str, Any] = {}
    if transport is not None:
        values["transport"] = check_transport(transport)
    if backup_mx is not None:
        values["backupmx"] = backup_mx
    return values


async def _may_relay(uow: Any, name: str) -> None:
    """A backup MX holds no mailboxes or aliases: mail for it is relayed, not delivered."""
    used = await uow.fetchval("SELECT (SELECT count(*) FROM mailbox WHERE domain = $1) + "
                              "(SELECT count(*) FROM alias WHERE domain = $1)", name)
    if used:
        raise ValidationError(f"the domain {name} has mailboxes or aliases, which a backup MX "
                              "domain cannot have (its mail is relayed, not delivered here); "
                              "delete them first")


def _transport_shown(row: dict[str, Any]) -> str:
    transport = row.get("transport") or ""
    return transport + (" (backup MX)" if row.get("backupmx") else "")


def _limits(description: str | None, quota_mb: int | None, max_quota_mb: int | None,
            max_mailboxes: int | None, max_aliases: int | None) -> dict[str, Any]:
    for name, value in (("--quota-mb", quota_mb), ("--max-quota-mb", max_quota_mb),
                        ("--max-mailboxes", max_mailboxes), ("--max-aliases", max_aliases)):
        if value is not None and value < -1:
            raise ValidationError(f"{name} must be -1 (none), 0 (unlimited) or more")
    plain_text("--description", description)
    values: dict[str, Any] = {}
    if description is not None:
        values["description"] = description
    if quota_mb is not None:
        values["quota"] = quota_mb
    if max_quota_mb is not None:
        values["maxquota"] = max_quota_mb
    if max_mailboxes is not None:
        values["mailboxes"] = max_mailboxes
    if max_aliases is not None:
        values["aliases"] = max_aliases
    return values


def _consistent(values: dict[str, Any], current: dict[str, Any]) -> None:
    """The total and the largest mailbox quota as they would be together."""
    total = values.get("quota", current.get("quota", 0))
    largest = values.get("maxquota", current.get("maxquota", 0))
    if total > 0 and largest > total:
        raise ValidationError(f"the largest mailbox quota ({largest} MB) cannot be larger "
                              f"than the domain's total quota ({total} MB)")
    if total > 0 and largest < 0:
        raise ValidationError("a domain with a total quota needs mailbox quotas: "
                              "--max-quota-mb -1 (switched off) and a total --quota-mb "
                              "cannot go together")


async def _fits(uow: Any, name: str, values: dict[str, Any]) -> None:
    """Refuse new limits below what the domain already uses (the domain row is locked):
    a limit podod sets always holds."""
    what = {"mailboxes": (MAILBOX_COUNT, "mailbox", "--max-mailboxes"),
            "aliases": (ALIAS_COUNT, "alias", "--max-aliases")}
    for column, (query, one, option) in what.items():
        limit = values.get(column)
        if limit is None or limit == 0:
            continue
        count = await uow.fetchval(query, name)
        if count > max(limit, 0):
            allowed = "none" if limit < 0 else f"at most {limit}"
            word = column
            raise ValidationError(f"the domain {name} has {_n(count, one, 'es')}, so {option} "
                                  f"{limit} ({allowed}) would not hold; delete {word} first "
                                  f"or give at least {count}")
    largest = values.get("maxquota")
    if largest:
        if largest > 0:
            over = await uow.fetchval(
                "SELECT count(*) FROM mailbox WHERE domain = $1 AND (quota = 0 OR quota > $2)",
                name, largest * MB)
        else:
            over = await uow.fetchval(
                "SELECT count(*) FROM mailbox WHERE domain = $1 AND quota <> 0", name)
        if over:
            why = (f"an unlimited quota or one above {largest} MB" if largest > 0
                   else "a quota")
            raise ValidationError(f"{_n(over, 'mailbox', 'es')} of {name} "
                                  f"{'has' if over == 1 else 'have'} {why}, so --max-quota-mb "
                                  f"{largest} would not hold; change their quotas first")
    total = values.get("quota")
    if total is not None and total > 0:
        row = await uow.fetchrow(
            "SELECT coalesce(sum(quota), 0) AS allotted, count(*) FILTER (WHERE quota = 0) "
            "AS unlimited FROM mailbox WHERE domain = $1", name)
        if row["unlimited"]:
            raise ValidationError(f"{_n(row['unlimited'], 'mailbox', 'es')} of {name} "
                                  f"{'has' if row['unlimited'] == 1 else 'have'} an unlimited "
                                  f"quota, so --quota-mb {total} would not hold; give "
                                  f"{'it' if row['unlimited'] == 1 else 'them'} a quota first")
        if row["allotted"] > total * MB:
            raise ValidationError(f"the mailboxes of {name} have {row['allotted'] // MB} MB "
                                  f"of quota allotted, so --quota-mb {total} would not hold; "
                                  "lower their quotas first or give at least "
                                  f"{-(-row['allotted'] // MB)}")


# What ``domain list --sort`` orders by (the first: the key), as domain columns.
DOMAIN_SORTS: dict[str, Sort] = {
    "domain": Sort(), "description": Sort("d.description"), "quota": Sort("d.quota", "int"),
    "active": Sort("d.active", "bool"), "created": Sort("d.created", "time"),
    "modified": Sort("d.modified", "time")}
COUNTS = """
SELECT d.*,
  (SELECT count(*) FROM mailbox m WHERE m.domain = d.domain) AS mailbox_count,
  (SELECT count(*) FROM alias a WHERE a.domain = d.domain AND NOT EXISTS
      (SELECT 1 FROM mailbox m WHERE m.username = a.address)) AS alias_count,
  (SELECT coalesce(sum(quota), 0) FROM mailbox m WHERE m.domain = d.domain) AS quota_used,
  (SELECT target_domain FROM alias_domain ad WHERE ad.alias_domain = d.domain) AS alias_of
FROM domain d
"""


def _n(count: int, word: str, plural: str) -> str:
    return f"{count} {word}{'' if count == 1 else plural}"


def _of(n: int) -> str:
    return "unlimited" if not n else "none" if n < 0 else str(n)


def _quota(mb_: int) -> str:
    return "unlimited" if not mb_ else "switched off" if mb_ < 0 else f"{mb_} MB"


_DOMAIN = {"domain": STR, "description": STR, "aliases": INT, "mailboxes": INT,
           "maxquota": INT, "quota": INT, "transport": nullable(STR), "backupmx": BOOL,
           "created": STR, "modified": STR, "active": BOOL, "password_expiry": INT,
           "mailbox_count": INT, "alias_count": INT, "quota_used": WHOLE_TEXT,
           "alias_of": nullable(STR)}
LIST_REPLY = arr(obj({**_DOMAIN, "database": STR}, optional=("database",)),
                 "one object per domain: its row (limits in MB; 0 unlimited, "
                 "-1 none) and its usage (quota_used in bytes)")
SHOW_REPLY = obj({**_DOMAIN, "alias_domains": arr(STR)})
ALIAS_LIST_REPLY = arr(obj({"alias_domain": STR, "target_domain": STR, "active": BOOL,
                            "database": STR}, optional=("database",)))
DELETE_REPLY = obj({"rows": INT, "mailbox": INT, "alias": INT, "alias_domain": INT,
                    "quota2": INT}, description="rows deleted, in all and per table")


def setup(registry: Registry) -> None:
    @registry.command(
        "domain create", "Create a virtual mail domain",
        params=[Arg("domain", "the domain, e.g. example.com", kind="domain"), *LIMITS,
                Opt("inactive", "create it switched off", kind="flag"), *RELAY_CREATE,
                Opt("on", "the mail database to create it in (mail.databases; needed when "
                    "there are several)", metavar="NAME")],
        permission="admin", mutating=True, unit="maildb", reply=obj({"domain": STR}),
        examples=["domain create example.com --max-mailboxes 50 --quota-mb 10240",
                  "domain create backup.example --backup-mx",
                  "domain create hub.example --transport relay:[10.0.0.5]:25"])
    async def domain_create(ctx: CommandContext, domain: str, description: str | None,
                            quota_mb: int | None, max_quota_mb: int | None,
                            max_mailboxes: int | None, max_aliases: int | None,
                            inactive: bool, transport: str | None = None,
                            backup_mx: bool = False, on: str | None = None) -> Reply:
        name = normalize_domain(domain)
        uow = await unit_on(ctx, name, on)
        if await uow.fetchval("SELECT 1 FROM domain WHERE domain = $1", name):
            raise Conflict(f"the domain {name} already exists")
        limits = _limits(description, quota_mb, max_quota_mb, max_mailboxes, max_aliases)
        _consistent(limits, {})
        row = {"domain": name, "description": "", **limits, "active": not inactive,
               **_relay(transport, backup_mx or None)}
        await uow.insert("domain", row)
        return Reply(message=f"domain {name} created" if ctx.execute_real
                     else f"domain {name} would be created", data={"domain": name})

    @registry.command("domain list", "List the mail domains",
                      params=[Opt("search", "only domains containing this text"),
                              *page_options("domains", "domain", sorts=DOMAIN_SORTS),
                              on_option()],
                      reply=LIST_REPLY)
    async def domain_list(ctx: CommandContext, search: str | None, sort: str | None,
                          limit: int | None, after: str | None, all: bool,
                          on: str | None = None) -> Reply:
        page = Page.of("domain list", limit, after, all, sort=sort, sorts=DOMAIN_SORTS)
        shown = list(ctx.actor.domains) if ctx.actor.role == "domain-admin" else None
        found, more, last, down = await list_page(
                ctx, on, page, key="d.domain", select=COUNTS,
                count="SELECT count(*) FROM domain d",
                where="($1::text IS NULL OR strpos(d.domain, $1) > 0) AND "
                      "($2::text[] IS NULL OR d.domain = ANY($2::text[]))",
                args=[search.lower() if search else None, shown])
        rows = [dict(r) for r in found]
        table = [[r["domain"], r["description"],
                  f"{r['mailbox_count']}/{_of(r['mailboxes'])}",
                  f"{r['alias_count']}/{_of(r['aliases'])}",
                  _quota(r["quota"]),
                  r["alias_of"] or "", _transport_shown(r), yes(r["active"]),
                  *([r["database"]] if "database" in r else [])] for r in rows]
        data = [{k: (str(v) if k in ("created", "modified") else v) for k, v in r.items()}
                for r in rows]
        notes, paged = page_note(ctx, page, more, last, "domains")
        return Reply(message=page_message(len(rows), more, "domain", "domains"), data=data,
                     notes=down + notes, page=paged, table=Table(
            ["domain", "description", "mailboxes", "aliases", "quota", "alias of",
             "transport", "active", *(["database"] if several(ctx) else [])],
            table, title="domains"))

    @registry.command("domain show", "Show one domain, its limits and usage",
                      params=[Arg("domain", "the domain", kind="domain")],
                      reply=SHOW_REPLY)
    async def domain_show(ctx: CommandContext, domain: str) -> Reply:
        name = normalize_domain(domain)
        require_view(ctx, name)
        async with reader(ctx, name) as db:
            row = await db.fetchrow(COUNTS + " WHERE d.domain = $1", name)
            if row is None:
                raise NotFound(f"the domain {name} does not exist")
            aliases = [r["alias_domain"] for r in await db.fetch(
                "SELECT alias_domain FROM alias_domain WHERE target_domain = $1 "
                "ORDER BY 1", name)]
        r = dict(row)
        rows = [["domain", name], ["description", r["description"]],
                ["active", yes(r["active"])],
                ["mailboxes", f"{r['mailbox_count']} of {_of(r['mailboxes'])}"],
                ["aliases", f"{r['alias_count']} of {_of(r['aliases'])}"],
                ["quota", f"{r['quota_used'] // MB} MB allotted of {_quota(r['quota'])}"],
                ["largest mailbox", _quota(r["maxquota"])],
                ["alias domains", ", ".join(aliases) or "none"],
                ["alias of", r["alias_of"] or "-"],
                ["transport", r["transport"] or "default (no transport_maps entry)"],
                ["backup MX", yes(r["backupmx"])],
                ["created", str(r["created"])[:19]]]
        data = {k: (str(v) if k in ("created", "modified") else v) for k, v in r.items()}
        data["alias_domains"] = aliases
        return Reply(message=f"domain {name}", data=data,
                     table=Table(["item", "value"], rows, title=f"domain {name}"))

    @registry.command(
        "domain update", "Change a domain's description, limits, transport or active flag",
        params=[Arg("domain", "the domain", kind="domain"), *LIMITS,
                Opt("active", "switch the domain on or off", kind="bool"), *RELAY_UPDATE],
        permission="admin", mutating=True, unit="maildb", reply=NULL)
    async def domain_update(ctx: CommandContext, domain: str, description: str | None,
                            quota_mb: int | None, max_quota_mb: int | None,
                            max_mailboxes: int | None, max_aliases: int | None,
                            active: bool | None, transport: str | None = None,
                            backup_mx: bool | None = None) -> Reply:
        name = normalize_domain(domain)
        uow = await unit_for(ctx, name)
        values = _limits(description, quota_mb, max_quota_mb, max_mailboxes, max_aliases)
        if active is not None:
            values["active"] = active
        values.update(_relay(transport, backup_mx))
        if not values:
            raise ValidationError("domain update: nothing to change (give an option such as "
                                  "--description or --active)")
        # Locked: no mailbox or alias can be added while the new limits are checked.
        current = await domain_row(uow, name, lock=True)
        if "quota" in values or "maxquota" in values:
            _consistent(values, current)
        await _fits(uow, name, values)
        if values.get("backupmx") and not current["backupmx"]:
            await _may_relay(uow, name)
        await uow.update("domain", {"domain": name}, values)
        notes: list[str] = []
        if active is False:  # its mailboxes must not log in from a cache
            users = [r["username"] for r in await uow.fetch(
                "SELECT username FROM mailbox WHERE domain=$1", name)]
            notes = domain_changed(ctx, name, users, "switched off:")
        return Reply(message=f"domain {name} "
                             f"{'updated' if ctx.execute_real else 'would be updated'}",
                     notes=notes)

    @registry.command(
        "domain delete", "Delete a domain (refused while it has mailboxes or aliases)",
        params=[Arg("domain", "the domain", kind="domain"),
                Opt("cascade", "also delete its mailboxes, aliases and alias domains",
                    kind="flag")],
        permission="admin", mutating=True, unit="maildb", reply=DELETE_REPLY,
        description="Maildirs on the mail servers are not removed.")
    async def domain_delete(ctx: CommandContext, domain: str, cascade: bool) -> Reply:
        name = normalize_domain(domain)
        uow = await unit_for(ctx, name)
        await domain_row(uow, name)
        mailboxes = await uow.fetchval("SELECT count(*) FROM mailbox WHERE domain=$1", name)
        aliases = await uow.fetchval(
            "SELECT count(*) FROM alias WHERE domain=$1 AND address <> goto", name)
        alias_domains = await uow.fetchval(
            "SELECT count(*) FROM alias_domain WHERE target_domain=$1 AND alias_domain<>$1",
            name)
        if (mailboxes or aliases or alias_domains) and not cascade:
            raise Conflict(f"the domain {name} still has {_n(mailboxes, 'mailbox', 'es')}, "
                           f"{_n(aliases, 'alias', 'es')} and "
                           f"{_n(alias_domains, 'alias domain', 's')}; delete them first or "
                           "add --cascade")
        counts = {"mailbox": 0, "alias": 0, "alias_domain": 0, "quota2": 0}
        counts["alias_domain"] += len(await uow.delete("alias_domain", {"alias_domain": name}))
        for row in await uow.fetch(
                "SELECT alias_domain FROM alias_domain WHERE target_domain=$1", name):
            counts["alias_domain"] += len(await uow.delete(
                "alias_domain", {"alias_domain": row["alias_domain"]}))
        users = [r["username"] for r in await uow.fetch(
            "SELECT username FROM mailbox WHERE domain=$1", name)]
        for username in users:
            counts["quota2"] += len(await uow.delete("quota2", {"username": username}))
        counts["alias"] = len(await uow.delete("alias", {"domain": name}))
        counts["mailbox"] = len(await uow.delete("mailbox", {"domain": name}))
        await uow.delete("domain", {"domain": name})
        total = sum(counts.values()) + 1
        detail = ", ".join(f"{n} {t}" for t, n in counts.items() if n)
        verb = "deleted" if ctx.execute_real else "would be deleted"
        return Reply(message=f"domain {name} {verb}: {total} rows "
                             f"({detail or 'the domain only'})",
                     data={"rows": total, **counts},
                     notes=domain_changed(ctx, name, users, "mailboxes deleted with")
                     if users else [])

    @registry.command(
        "domain-alias create", "Make one domain an alias of another (old.example → example.com)",
        params=[Arg("alias_domain", "the alias domain", kind="domain", metavar="ALIAS_DOMAIN"),
                Opt("to", "the target domain", kind="domain", required=True, metavar="DOMAIN")],
        permission="admin", mutating=True, unit="maildb", reply=NULL,
        description="Mail to user@ALIAS_DOMAIN is delivered to user@DOMAIN. The alias "
                    "domain is created as a domain if it does not exist yet.",
        examples=["domain-alias create old.example --to example.com"])
    async def domain_alias_create(ctx: CommandContext, alias_domain: str, to: str) -> Reply:
        alias = normalize_domain(alias_domain)
        target = normalize_domain(to)
        if alias == target:
            raise ValidationError(f"a domain cannot be an alias of itself ({alias})")
        uow = await unit_for(ctx, target)
        await not_elsewhere(ctx, alias, uow.database)
        if alias == target:
            raise ValidationError(f"a domain cannot be an alias of itself ({alias})")
        await domain_row(uow, target)
        if await is_alias_domain(uow, target):
            raise ValidationError(f"{target} is itself an alias domain; point {alias} at "
                                  "the real domain")
        if await is_alias_domain(uow, alias):
            raise Conflict(f"{alias} is already an alias domain")
        existing = await uow.fetchrow("SELECT * FROM domain WHERE domain = $1", alias)
        if existing is None:
            description = f"alias domain of {target}"  # cut to fit for a long target
            await uow.insert("domain", {"domain": alias, "description": description[
                :TEXT_COLUMNS["domain"]["description"]]})
        else:
            used = await uow.fetchval(
                "SELECT (SELECT count(*) FROM mailbox WHERE domain=$1) + "
                "(SELECT count(*) FROM alias WHERE domain=$1)", alias)
            if used:
                raise Conflict(f"{alias} has its own mailboxes or aliases; it cannot become "
                               "an alias domain")
        await uow.insert("alias_domain", {"alias_domain": alias, "target_domain": target})
        return Reply(message=f"{alias} → {target}")

    @registry.command("domain-alias list", "List the alias domains",
                      params=[Opt("to", "only the alias domains of this target domain",
                                  kind="domain"), on_option()],
                      reply=ALIAS_LIST_REPLY)
    async def domain_alias_list(ctx: CommandContext, to: str | None,
                                on: str | None = None) -> Reply:
        target = normalize_domain(to) if to else None

        async def read(db: Any) -> list[dict[str, Any]]:
            return [dict(r) for r in await db.fetch(
                "SELECT alias_domain, target_domain, active FROM alias_domain "
                "WHERE $1::text IS NULL OR target_domain = $1 ORDER BY 1", target)]

        found, down = await each_database(ctx, on, read)
        marked = several(ctx)
        rows = [{**r, "database": n} if marked else r for n, part in found for r in part]
        if len(found) > 1:
            rows.sort(key=lambda r: str(r["alias_domain"]))
        if ctx.actor.role == "domain-admin":
            rows = [r for r in rows if ctx.actor.may_manage(r["target_domain"])]
        return Reply(message=f"{len(rows)} alias domains", data=rows, notes=down, table=Table(
            ["alias domain", "target", "active", *(["database"] if marked else [])],
            [[r["alias_domain"], r["target_domain"], yes(r["active"]),
              *([r["database"]] if marked else [])] for r in rows],
            title="alias domains"))

    @registry.command(
        "domain-alias delete", "Stop a domain being an alias (and delete its domain row)",
        params=[Arg("alias_domain", "the alias domain", kind="domain", metavar="ALIAS_DOMAIN")],
        permission="admin", mutating=True, unit="maildb", reply=NULL)
    async def domain_alias_delete(ctx: CommandContext, alias_domain: str) -> Reply:
        alias = normalize_domain(alias_domain)
        uow = await unit_for(ctx, alias)
        if not await is_alias_domain(uow, alias):
            raise NotFound(f"{alias} is not an alias domain")
        await uow.delete("alias_domain", {"alias_domain": alias})
        row = await uow.fetchrow("SELECT description FROM domain WHERE domain=$1", alias)
        if row is not None and str(row["description"]).startswith("alias domain of "):
            await uow.delete("domain", {"domain": alias})
        return Reply(message=f"{alias} is no longer an alias domain" if ctx.execute_real
                     else f"{alias} would no longer be an alias domain")
