"""``user create|list|show|update|reset-password|delete``: mailboxes."""

from __future__ import annotations

import time
from typing import Any

from podod.bus.context import CommandContext, Reply, Table
from podod.bus.spec import Arg, Opt
from podod.errors import Conflict, NotFound, PododError, UsageError, ValidationError
from podod.mail.addresses import normalize_address, normalize_domain
from podod.mail.commands.common import (
    MAX_QUOTA_MB,
    MB,
    domain_row,
    is_alias_domain,
    mb,
    non_negative,
    plain_text,
    reader,
    require_view,
    size,
    visible_domains,
    yes,
)
from podod.mail.passwords import check_policy, generate_password, hash_async
from podod.plugins import Registry

PASSWORD_OPTS = [
    Opt("password_stdin", "read the password from standard input (podoctl prompts on a "
        "terminal)", kind="flag"),
    Opt("generate_password", "generate a strong password, shown once to you", kind="flag"),
]


async def _password(ctx: CommandContext, password_stdin: bool, generate_password_: bool
                    ) -> tuple[str, str | None]:
    """(hash, generated password or None)."""
    settings = ctx.runtime.config.mail.passwords
    if password_stdin == generate_password_:
        raise UsageError(f"{ctx.spec.name}: give either --password-stdin or "
                         "--generate-password")
    if generate_password_:
        password = generate_password(settings.generated_length)
        generated: str | None = password
    else:
        password = ctx.request.stdin or ""
        generated = None
        if not password:
            raise ValidationError("no password was given on standard input")
        check_policy(password, settings.min_length, settings.scheme)
    return await hash_async(password, settings.scheme, settings.rounds), generated


async def _mailbox(db: Any, address: str) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM mailbox WHERE username = $1", address)
    if row is None:
        raise NotFound(f"there is no mailbox {address}")
    return dict(row)


async def _check_quota(db: Any, domain: dict[str, Any], quota_bytes: int,
                       exclude: str | None = None) -> None:
    if domain["maxquota"] and quota_bytes > domain["maxquota"] * MB:
        raise ValidationError(f"a mailbox of {domain['domain']} may have at most "
                              f"{domain['maxquota']} MB, not {quota_bytes // MB} MB")
    if domain["maxquota"] and quota_bytes == 0:
        raise ValidationError(f"mailboxes of {domain['domain']} need a quota of at most "
                              f"{domain['maxquota']} MB (unlimited is not allowed)")
    if domain["quota"]:
        used = await db.fetchval(
            "SELECT coalesce(sum(quota), 0) FROM mailbox WHERE domain = $1 AND username <> "
            "coalesce($2, '')", domain["domain"], exclude)
        if used + quota_bytes > domain["quota"] * MB:
            free = max(0, domain["quota"] * MB - used) // MB
            raise ValidationError(f"the domain {domain['domain']} has {free} MB of its "
                                  f"{domain['quota']} MB quota left, not {quota_bytes // MB} MB")


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if k in ("created", "modified", "token_validity", "password_expiry")
                else v) for k, v in row.items() if k not in ("password", "token")}


def setup(registry: Registry) -> None:
    @registry.command(
        "user create", "Create a mailbox",
        params=[Arg("address", "the mailbox address, e.g. alice@example.com"),
                Opt("name", "the person's full name", default=""),
                Opt("quota_mb", "mailbox quota in MB (default: the domain's largest, or "
                    "unlimited)", kind="int", minimum=0, maximum=MAX_QUOTA_MB),
                *PASSWORD_OPTS,
                Opt("inactive", "create it switched off", kind="flag")],
        permission="domain-admin", mutating=True, unit="maildb", reads_stdin=True,
        examples=['user create alice@example.com --name "Alice Doe" --quota-mb 2048 '
                  "--generate-password"])
    async def user_create(ctx: CommandContext, address: str, name: str, quota_mb: int | None,
                          password_stdin: bool, generate_password: bool,
                          inactive: bool) -> Reply:
        username = normalize_address(address)
        local, domain_name = username.split("@")
        ctx.require_domain(domain_name)
        non_negative("--quota-mb", quota_mb)
        plain_text("--name", name)
        uow = ctx.unit
        domain = await domain_row(uow, domain_name)
        if await is_alias_domain(uow, domain_name):
            raise ValidationError(f"{domain_name} is an alias domain; create the mailbox in "
                                  "its target domain")
        if await uow.fetchval("SELECT 1 FROM mailbox WHERE username = $1", username):
            raise Conflict(f"the mailbox {username} already exists")
        if await uow.fetchval("SELECT 1 FROM alias WHERE address = $1", username):
            raise Conflict(f"{username} is already an alias; delete the alias first")
        if domain["mailboxes"]:
            count = await uow.fetchval("SELECT count(*) FROM mailbox WHERE domain=$1",
                                       domain_name)
            if count >= domain["mailboxes"]:
                raise ValidationError(f"the domain {domain_name} already has its maximum of "
                                      f"{domain['mailboxes']} mailboxes")
        quota = (quota_mb if quota_mb is not None else domain["maxquota"]) * MB
        await _check_quota(uow, domain, quota)
        digest, generated = await _password(ctx, password_stdin, generate_password)
        await uow.insert("mailbox", {
            "username": username, "password": digest, "name": name,
            "maildir": f"{domain_name}/{local}/", "quota": quota, "local_part": local,
            "domain": domain_name, "active": not inactive})
        await uow.insert("alias", {"address": username, "goto": username,
                                   "domain": domain_name, "active": not inactive})
        if not await uow.fetchval("SELECT 1 FROM quota2 WHERE username = $1", username):
            # A new mailbox starts with its usage known (0): Dovecot's quota dict would
            # otherwise recalculate a missing row on the first deliveries, and concurrent
            # recalculations lose counts. A row left by a mailbox deleted outside podod is
            # kept: its maildir may still be there.
            await uow.insert("quota2", {"username": username, "bytes": 0, "messages": 0})
        verb = "created" if ctx.execute_real else "would be created"
        return Reply(message=f"mailbox {username} {verb} (quota {mb(quota)})",
                     data={"username": username, "quota": quota},
                     secret=generated if ctx.execute_real else None,
                     notes=[] if ctx.execute_real or not generated else
                     ["A password will be generated and shown once when this runs for real."])

    @registry.command(
        "user list", "List mailboxes",
        params=[Opt("domain", "only this domain"),
                Opt("search", "only addresses or names containing this text"),
                Opt("limit", "at most this many", kind="int", default=100000, minimum=1,
                    maximum=10_000_000)])
    async def user_list(ctx: CommandContext, domain: str | None, search: str | None,
                        limit: int) -> Reply:
        domains = visible_domains(ctx, normalize_domain(domain) if domain else None)
        async with reader(ctx) as db:
            rows = await db.fetch(
                "SELECT m.username, m.name, m.quota, m.active, m.domain, "
                "coalesce(q.bytes, 0) AS used, coalesce(q.messages, 0) AS messages "
                "FROM mailbox m "
                "LEFT JOIN quota2 q ON q.username = m.username "
                "WHERE ($1::text[] IS NULL OR m.domain = ANY($1::text[])) AND "
                "($2::text IS NULL OR strpos(m.username, lower($2)) > 0 OR "
                "strpos(lower(m.name), lower($2)) > 0) ORDER BY m.username LIMIT $3",
                domains, search, limit)
        data = [dict(r) for r in rows]
        table = [[r["username"], r["name"], mb(r["quota"]), size(r["used"]), r["messages"],
                  yes(r["active"])] for r in data]
        return Reply(message=f"{len(data)} mailboxes", data=data, table=Table(
            ["address", "name", "quota", "used", "messages", "active"], table,
            title="mailboxes"))

    @registry.command("user show", "Show one mailbox", params=[Arg("address", "the mailbox")])
    async def user_show(ctx: CommandContext, address: str) -> Reply:
        username = normalize_address(address)
        require_view(ctx, username.split("@")[1])
        async with reader(ctx) as db:
            row = await _mailbox(db, username)
            usage = await db.fetchrow("SELECT bytes, messages FROM quota2 WHERE username=$1",
                                      username)
            forwards = await db.fetchval("SELECT goto FROM alias WHERE address=$1", username)
        used = usage["bytes"] if usage else 0
        messages = usage["messages"] if usage else 0
        rows = [["address", username], ["name", row["name"]], ["active", yes(row["active"])],
                ["quota", mb(row["quota"])],
                ["used", f"{size(used)}, {messages} messages" + (
                    f" ({100 * used / row['quota']:.0f} % of the quota)" if row["quota"] else "")],
                ["maildir", row["maildir"]], ["delivers to", forwards or "-"],
                ["password scheme", str(row["password"]).split("}")[0].lstrip("{") or "-"],
                ["created", str(row["created"])[:19]], ["modified", str(row["modified"])[:19]]]
        return Reply(message=f"mailbox {username}",
                     data={**_public(row), "used": used, "messages": messages},
                     table=Table(["item", "value"], rows, title=f"mailbox {username}"))

    @registry.command(
        "user update", "Change a mailbox's name, quota or active flag",
        params=[Arg("address", "the mailbox"), Opt("name", "the full name"),
                Opt("quota_mb", "quota in MB (0: unlimited)", kind="int", minimum=0,
                    maximum=MAX_QUOTA_MB),
                Opt("active", "switch the mailbox on or off", kind="bool")],
        permission="domain-admin", mutating=True, unit="maildb")
    async def user_update(ctx: CommandContext, address: str, name: str | None,
                          quota_mb: int | None, active: bool | None) -> Reply:
        username = normalize_address(address)
        domain_name = username.split("@")[1]
        ctx.require_domain(domain_name)
        non_negative("--quota-mb", quota_mb)
        plain_text("--name", name)
        uow = ctx.unit
        await _mailbox(uow, username)
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = name
        if quota_mb is not None:
            await _check_quota(uow, await domain_row(uow, domain_name), quota_mb * MB,
                               exclude=username)
            values["quota"] = quota_mb * MB
        if active is not None:
            values["active"] = active
        if not values:
            raise ValidationError("user update: nothing to change (give --name, --quota-mb "
                                  "or --active)")
        await uow.update("mailbox", {"username": username}, values)
        if active is not None:
            await uow.update("alias", {"address": username, "goto": username},
                             {"active": active})
        return Reply(message=f"mailbox {username} "
                             f"{'updated' if ctx.execute_real else 'would be updated'}")

    @registry.command(
        "user reset-password", "Set a new password for a mailbox",
        params=[Arg("address", "the mailbox"), *PASSWORD_OPTS],
        permission="domain-admin", mutating=True, unit="maildb", reads_stdin=True,
        examples=["user reset-password alice@example.com --generate-password",
                  "podoctl user reset-password alice@example.com --password-stdin"])
    async def user_reset_password(ctx: CommandContext, address: str, password_stdin: bool,
                                  generate_password: bool) -> Reply:
        username = normalize_address(address)
        ctx.require_domain(username.split("@")[1])
        uow = ctx.unit
        await _mailbox(uow, username)
        digest, generated = await _password(ctx, password_stdin, generate_password)
        await uow.update("mailbox", {"username": username}, {"password": digest})
        return Reply(message=f"password of {username} "
                             f"{'changed' if ctx.execute_real else 'would be changed'}",
                     secret=generated if ctx.execute_real else None)

    @registry.command(
        "user delete", "Delete a mailbox and its alias row",
        params=[Arg("address", "the mailbox"),
                Opt("remove_maildir", "afterwards, move the maildir into the trash on "
                    "mail.maildir.server (purged after mail.maildir.trash_days)",
                    kind="flag")],
        permission="domain-admin", mutating=True, unit="maildb",
        description="The maildir stays on the mail server unless --remove-maildir is given; "
                    "then it is moved into the maildir trash once the deletion is committed, "
                    "and 'user restore-maildir' brings it back after a backup restore.")
    async def user_delete(ctx: CommandContext, address: str, remove_maildir: bool) -> Reply:
        username = normalize_address(address)
        ctx.require_domain(username.split("@")[1])
        uow = ctx.unit
        row = await _mailbox(uow, username)
        notes: list[str] = []
        if remove_maildir:
            _remove_maildir_after(ctx, username, row["maildir"], notes)
        await uow.delete("alias", {"address": username})
        await uow.delete("quota2", {"username": username})
        await uow.delete("mailbox", {"username": username})
        if not remove_maildir:
            notes.append(f"The maildir {row['maildir']} stays on the mail server.")
        forwarding = [r["address"] for r in await uow.fetch(
            "SELECT address FROM alias WHERE strpos(',' || replace(goto, ' ', '') || ',', "
            "',' || $1 || ',') > 0 ORDER BY address", username)]
        if forwarding:
            notes.append(f"Aliases that still forward to {username}: "
                         f"{', '.join(forwarding)} (update or delete them).")
        return Reply(message=f"mailbox {username} "
                             f"{'deleted' if ctx.execute_real else 'would be deleted'}",
                     notes=notes)


def _remove_maildir_after(ctx: CommandContext, username: str, maildir: str,
                          notes: list[str]) -> None:
    """Check everything the move needs now (nothing is changed if something is missing),
    then plan it as an after-action: it runs only once the deletion is committed."""
    from podod.mail.commands.maildir import maildirs_of
    from podod.mail.maildirs import split_maildir

    domain, name = split_maildir(maildir, username)
    manager = maildirs_of(ctx)
    ops = manager.ops("--remove-maildir")
    layout, server = ops.layout, ops.server
    when = time.time()
    home, target = layout.home(domain, name), layout.entry_path(domain, name, when)
    by_hand = layout.by_hand(["mkdir", "-p", "--", f"{layout.trash}/{domain}"],
                             ["mv", "-T", "--", home, target])
    days = manager.settings.trash_days
    kept = f"for {days} days" if days else "until you purge it"
    if ctx.sandbox:
        notes.append(f"Would move the maildir {home} into the trash ({target}) on {server} "
                     f"once the deletion is committed; it stays there {kept}.")

    async def move() -> None:
        try:
            moved = await ops.move_to_trash(domain, name, when)
        except PododError as exc:
            raise PododError(f"{exc.message}; the mailbox is deleted, so move its maildir by "
                             f"hand on {server}: {by_hand}") from None
        if moved is None:
            notes.append(f"There was no maildir {home} on {server} (the mailbox never received "
                         "mail nor logged in): nothing was moved.")
            return
        notes.append(f"The maildir stays in the trash {kept}; to undo: podoctl backup restore "
                     f"{ctx.backup_id} --execute-real, then podoctl user restore-maildir "
                     f"{username} --execute-real")

    ctx.after(f"move maildir {home} to {target} on {server}", move)
