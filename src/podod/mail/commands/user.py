"""``user create|list|show|update|reset-password|delete``: mailboxes."""

from __future__ import annotations

import time
from typing import Any

from podod.bus.context import CommandContext, Reply, Secret, Table
from podod.bus.paging import (
    INLINE_ROWS,
    Page,
    Sort,
    off_loop,
    page_message,
    page_note,
    page_options,
)
from podod.bus.scope import domain_scope, visible
from podod.bus.shapes import BOOL, INT, NULL, STR, arr, obj
from podod.bus.spec import Arg, Opt
from podod.errors import (
    Conflict,
    NotFound,
    PododError,
    Unavailable,
    UsageError,
    ValidationError,
)
from podod.mail.addresses import normalize_address, normalize_domain, normalize_mailbox
from podod.mail.commands.common import (
    MAX_QUOTA_MB,
    MB,
    check_quota,
    check_room,
    default_quota,
    domain_row,
    is_alias_domain,
    list_page,
    mb,
    non_negative,
    not_served,
    on_option,
    password_expiry,
    plain_text,
    reader,
    require_view,
    serves,
    several,
    size,
    unit_for,
    visible_domains,
    yes,
)
from podod.mail.passwords import check_policy, generate_password, hash_async
from podod.mail.sogo import remove_on_delete
from podod.plugins import Registry
from podod.servers.services import credentials_changed, quota_changed

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



def _shown(ctx: CommandContext, generated: str | None) -> list[Secret]:
    """A generated password, shown once, and only when it was really set."""
    if generated is None or not ctx.execute_real:
        return []
    return [Secret("Generated password", generated)]

def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if k in ("created", "modified", "token_validity", "password_expiry")
                else v) for k, v in row.items() if k not in ("password", "token")}


_MAILBOX = {"username": STR, "name": STR, "quota": INT, "active": BOOL, "domain": STR,
            "used": INT, "messages": INT}
# What ``user list --sort`` orders by (the first: the key), as mailbox columns.
USER_SORTS: dict[str, Sort] = {
    "address": Sort(), "name": Sort("m.name"), "quota": Sort("m.quota", "int"),
    "domain": Sort("m.domain"), "active": Sort("m.active", "bool"),
    "created": Sort("m.created", "time"), "modified": Sort("m.modified", "time")}
LIST_REPLY = arr(obj({**_MAILBOX, "database": STR}, optional=("database",)),
                 "one object per mailbox; quota and used in bytes; database: which mail "
                 "database holds it (only when there are several)")
SHOW_REPLY = obj({**_MAILBOX, "maildir": STR, "local_part": STR, "created": STR,
                  "modified": STR, "phone": STR, "email_other": STR},
                 description="the mailbox row (no password hash), quota and used in bytes")
CREATE_REPLY = obj({"username": STR, "quota": INT}, description="quota in bytes")


def setup(registry: Registry) -> None:
    @registry.command(
        "user create", "Create a mailbox",
        params=[Arg("address", "the mailbox address, e.g. alice@example.com", kind="address"),
                Opt("name", "the person's full name", default=""),
                Opt("quota_mb", "mailbox quota in MB, 0: unlimited (default: the domain's "
                    "largest, at most what is left of its total; unlimited only when the "
                    "domain has neither)", kind="size", minimum=0, maximum=MAX_QUOTA_MB),
                *PASSWORD_OPTS,
                Opt("inactive", "create it switched off", kind="flag"),
                Opt("reuse_maildir", "create it although an old maildir of this address is "
                    "still on the mail server: the new mailbox gets that mail", kind="flag")],
        permission="domain-admin", mutating=True, unit="maildb", stdin="secret",
        stdin_option="password_stdin", reply=CREATE_REPLY,
        description="An address whose old maildir is still on mail.maildir.server (its "
                    "mailbox was deleted without --remove-maildir) is refused unless "
                    "--reuse-maildir: the new owner would read the old owner's mail.",
        examples=['user create alice@example.com --name "Alice Doe" --quota-mb 2048 '
                  "--generate-password"])
    async def user_create(ctx: CommandContext, address: str, name: str, quota_mb: int | None,
                          password_stdin: bool, generate_password: bool,
                          inactive: bool, reuse_maildir: bool) -> Reply:
        username = normalize_mailbox(address)
        local, domain_name = username.split("@")
        ctx.require_domain(domain_name)
        non_negative("--quota-mb", quota_mb)
        plain_text("--name", name)
        uow = await unit_for(ctx, domain_name)
        await domain_row(uow, domain_name)
        if await is_alias_domain(uow, domain_name):
            raise ValidationError(f"{domain_name} is an alias domain; create the mailbox in "
                                  "its target domain")

        async def taken() -> None:
            if await uow.fetchval("SELECT 1 FROM mailbox WHERE username = $1", username):
                raise Conflict(f"the mailbox {username} already exists")
            if await uow.fetchval("SELECT 1 FROM alias WHERE address = $1", username):
                raise Conflict(f"{username} is already an alias; delete the alias first")

        await taken()
        maildir = f"{domain_name}/{local}/"
        # Before the lock: it asks the mail server, which may take a while.
        notes = await _old_maildir(ctx, username, maildir, reuse_maildir)
        # Locked until the unit of work ends: concurrent creates in this domain take turns,
        # so its limits hold (and the same address sent twice is refused in words).
        domain = await domain_row(uow, domain_name, lock=True)
        await taken()
        await check_room(uow, domain, "mailboxes")
        if quota_mb is None:
            quota = await default_quota(uow, domain)
        else:
            quota = quota_mb * MB
        await check_quota(uow, domain, quota)
        digest, generated = await _password(ctx, password_stdin, generate_password)
        await uow.insert("mailbox", {
            "username": username, "password": digest, "name": name,
            "maildir": maildir, "quota": quota, "local_part": local,
            "domain": domain_name, "active": not inactive,
            "password_expiry": password_expiry(domain)})
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
                     secrets=_shown(ctx, generated),
                     notes=notes + ([] if ctx.execute_real or not generated else
                     ["A password will be generated and shown once when this runs for real."]))

    @registry.command(
        "user list", "List mailboxes",
        params=[Opt("domain", "only this domain", kind="domain"),
                Opt("search", "only addresses or names containing this text"),
                *page_options("mailboxes", "address", sorts=USER_SORTS), on_option()],
        examples=["user list --domain example.com",
                  "user list --domain example.com --after bob@example.com",
                  "user list --sort -quota --limit 10",
                  "podoctl --json user list --all"],
        reply=LIST_REPLY)
    async def user_list(ctx: CommandContext, domain: str | None, search: str | None,
                        sort: str | None, limit: int | None, after: str | None, all: bool,
                        on: str | None = None) -> Reply:
        page = Page.of("user list", limit, after, all, sort=sort, sorts=USER_SORTS)
        domains = visible_domains(ctx, normalize_domain(domain) if domain else None)
        rows, more, last, notes = await list_page(
                ctx, on, page, key="m.username",
                select="SELECT m.username, m.name, m.quota, m.active, m.domain, "
                       "coalesce(q.bytes, 0) AS used, coalesce(q.messages, 0) AS messages "
                       "FROM mailbox m LEFT JOIN quota2 q ON q.username = m.username",
                count="SELECT count(*) FROM mailbox m",
                where="($1::text[] IS NULL OR m.domain = ANY($1::text[])) AND "
                      "($2::text IS NULL OR strpos(m.username, lower($2)) > 0 OR "
                      "strpos(lower(m.name), lower($2)) > 0)",
                args=[domains, search])
        data, table = await off_loop(len(rows) > INLINE_ROWS, _user_rows, rows)
        more_notes, paged = page_note(ctx, page, more, last, "mailboxes")
        return Reply(message=page_message(len(data), more, "mailbox", "mailboxes"),
                     data=data, notes=notes + more_notes, page=paged, table=Table(
            ["address", "name", "quota", "used", "messages", "active",
             *(["database"] if several(ctx) else [])], table, title="mailboxes"))

    @registry.command("user show", "Show one mailbox",
                      params=[Arg("address", "the mailbox", kind="address")], reply=SHOW_REPLY)
    async def user_show(ctx: CommandContext, address: str) -> Reply:
        username = normalize_address(address)
        require_view(ctx, username.split("@")[1])
        async with reader(ctx, username.split("@")[1]) as db:
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
        params=[Arg("address", "the mailbox", kind="address"), Opt("name", "the full name"),
                Opt("quota_mb", "quota in MB (0: unlimited, if the domain has no quota limit)",
                    kind="size", minimum=0,
                    maximum=MAX_QUOTA_MB),
                Opt("active", "switch the mailbox on or off", kind="bool")],
        permission="domain-admin", mutating=True, unit="maildb", reply=NULL)
    async def user_update(ctx: CommandContext, address: str, name: str | None,
                          quota_mb: int | None, active: bool | None) -> Reply:
        username = normalize_address(address)
        domain_name = username.split("@")[1]
        ctx.require_domain(domain_name)
        non_negative("--quota-mb", quota_mb)
        plain_text("--name", name)
        uow = await unit_for(ctx, domain_name)
        await _mailbox(uow, username)
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = name
        if quota_mb is not None:
            domain = await domain_row(uow, domain_name, lock=True)
            await check_quota(uow, domain, quota_mb * MB, exclude=username)
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
        notes: list[str] = []
        if active is False:  # a switched-off mailbox must not log in from a cache
            notes += credentials_changed(ctx, username, "switched off")
        if quota_mb is not None:
            notes += quota_changed(ctx, username)
        return Reply(message=f"mailbox {username} "
                             f"{'updated' if ctx.execute_real else 'would be updated'}",
                     notes=notes)

    @registry.command(
        "user reset-password", "Set a new password for a mailbox",
        params=[Arg("address", "the mailbox", kind="address"), *PASSWORD_OPTS],
        permission="domain-admin", mutating=True, unit="maildb", stdin="secret",
        stdin_option="password_stdin", reply=NULL,
        examples=["user reset-password alice@example.com --generate-password",
                  "podoctl user reset-password alice@example.com --password-stdin"])
    async def user_reset_password(ctx: CommandContext, address: str, password_stdin: bool,
                                  generate_password: bool) -> Reply:
        username = normalize_address(address)
        ctx.require_domain(username.split("@")[1])
        uow = await unit_for(ctx, username.split("@")[1])
        await _mailbox(uow, username)
        digest, generated = await _password(ctx, password_stdin, generate_password)
        domain = await domain_row(uow, username.split("@")[1])
        await uow.update("mailbox", {"username": username},
                         {"password": digest, "password_expiry": password_expiry(domain)})
        return Reply(message=f"password of {username} "
                             f"{'changed' if ctx.execute_real else 'would be changed'}",
                     secrets=_shown(ctx, generated),
                     notes=credentials_changed(ctx, username, "password change"))

    @registry.command(
        "user delete", "Delete a mailbox and its alias row",
        params=[Arg("address", "the mailbox", kind="address"),
                Opt("remove_maildir", "afterwards, move the maildir into the trash on "
                    "mail.maildir.server (purged after mail.maildir.trash_days)",
                    kind="flag")],
        permission="domain-admin", mutating=True, unit="maildb", reply=NULL,
        description="The maildir stays on the mail server unless --remove-maildir is given; "
                    "then it is moved into the maildir trash once the deletion is committed, "
                    "and 'user restore-maildir' brings it back after a backup restore. With "
                    "mail.sogo, SOGo's data of the user (profile, folders, ACLs) is backed up "
                    "and removed once the deletion is committed; 'sogo restore' brings it "
                    "back.")
    async def user_delete(ctx: CommandContext, address: str, remove_maildir: bool) -> Reply:
        username = normalize_address(address)
        ctx.require_domain(username.split("@")[1])
        uow = await unit_for(ctx, username.split("@")[1])
        row = await _mailbox(uow, username)
        notes: list[str] = []
        if remove_maildir:
            _remove_maildir_after(ctx, username, row["maildir"], notes)
        await remove_on_delete(ctx, username, notes)  # SOGo's data, when podod manages SOGo
        await uow.delete("alias", {"address": username})
        await uow.delete("quota2", {"username": username})
        await uow.delete("mailbox", {"username": username})
        notes += credentials_changed(ctx, username, "mailbox deleted", profile=True)
        if not remove_maildir:
            notes.append(f"The maildir {row['maildir']} stays on the mail server.")
        forwarding = [r["address"] for r in await uow.fetch(
            "SELECT address FROM alias WHERE strpos(',' || replace(goto, ' ', '') || ',', "
            "',' || $1 || ',') > 0 ORDER BY address", username)]
        scope = domain_scope(ctx.actor)
        shown = [a for a in forwarding if visible(scope, a, address=True)]
        hidden = len(forwarding) - len(shown)
        if shown:
            notes.append(f"Aliases that still forward to {username}: "
                         f"{', '.join(shown)} (update or delete them).")
        if hidden:  # a domain-admin does not learn other domains' addresses
            many = hidden != 1
            notes.append(f"{hidden} {'aliases' if many else 'alias'} of other domains still "
                         f"forward{'' if many else 's'} to {username} (an admin can see "
                         "which).")
        return Reply(message=f"mailbox {username} "
                             f"{'deleted' if ctx.execute_real else 'would be deleted'}",
                     notes=notes)


def _user_rows(rows: list[Any]) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """The reply's data and table rows of a listing's rows (asyncpg records, or dicts of
    several databases' merged page, which are the listing's own and are not copied again).
    Per row only what differs is computed: most mailboxes share a few quotas."""
    data = rows if rows and isinstance(rows[0], dict) else [dict(r) for r in rows]
    quotas: dict[int, str] = {}
    table: list[list[Any]] = []
    add = table.append
    for r in data:
        quota = r["quota"]
        shown = quotas.get(quota)
        if shown is None:
            shown = quotas[quota] = mb(quota)
        row = [r["username"], r["name"], shown, size(r["used"]), r["messages"],
               "yes" if r["active"] else "no"]
        if "database" in r:
            row.append(r["database"])
        add(row)
    return data, table


async def _old_maildir(ctx: CommandContext, username: str, maildir: str,
                       reuse: bool) -> list[str]:
    """Refuse a new mailbox whose maildir is still on the mail server (a mailbox of that
    address was deleted without --remove-maildir: Dovecot would hand its mail to the new
    owner), and one podod cannot check, unless ``reuse``; the notes for the reply."""
    from podod.mail.commands.maildir import maildirs_of
    from podod.mail.maildirs import split_maildir

    settings = ctx.runtime.config.mail.maildir
    if not settings.check_on_create:
        return []
    how = ("give --reuse-maildir to create it anyway, or set mail.maildir.check_on_create: "
           "false if the maildirs are not podod's to check; nothing was changed")
    if settings.server is None:
        if reuse:
            return ["podod did not check for an old maildir (mail.maildir.server is not "
                    "set): if there is one, this mailbox gets its mail."]
        raise ValidationError(f"podod cannot check whether an old maildir {maildir} of "
                              f"{username} is still on the mail server, whose mail the new "
                              "mailbox would get (mail.maildir.server is not set); set it, or "
                              f"{how}")
    if not serves(settings.databases, ctx.unit.database):
        return []  # this database's maildirs are on another server (mail.maildir.databases)
    try:
        domain, name = split_maildir(maildir, username)
        ops = maildirs_of(ctx).ops("user create")
        home = ops.layout.home(domain, name)
        exists = await ops.exists(home)
    except PododError as exc:
        if reuse:
            return [f"podod could not check for an old maildir ({exc.message}): if there is "
                    "one, this mailbox gets its mail."]
        why = exc.message.removesuffix("; nothing was changed")
        raise Unavailable(f"podod cannot check whether an old maildir of {username} is still "
                          f"on the mail server ({why}); {how}") from None
    if not exists:
        return []
    if not reuse:
        raise Conflict(f"the old maildir {home} of a deleted mailbox {username} is still on "
                       f"{ops.server}, and the new mailbox would get its mail; move it away "
                       "first, or give --reuse-maildir if that mail is meant for the new "
                       "owner; nothing was changed")
    verb = "will be" if ctx.sandbox else "is"
    return [f"The old maildir {home} on {ops.server} {verb} reused: its mail becomes "
            f"{username}'s. Run 'doveadm quota recalc -u {username}' there so its usage "
            "counts."]


def _remove_maildir_after(ctx: CommandContext, username: str, maildir: str,
                          notes: list[str]) -> None:
    """Check everything the move needs now (nothing is changed if something is missing),
    then plan it as an after-action: it runs only once the deletion is committed."""
    from podod.mail.commands.maildir import maildirs_of
    from podod.mail.maildirs import split_maildir

    domain, name = split_maildir(maildir, username)
    manager = maildirs_of(ctx)
    if not serves(manager.settings.databases, ctx.unit.database):
        reason = not_served("mail.maildir.server", "maildir", ctx.unit.database)
        raise ValidationError(f"--remove-maildir: {reason}; delete the mailbox without it and "
                              "remove the maildir on its server by hand; nothing was changed")
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
        restore = ctx.command_ref(f"backup restore {ctx.backup_id} --execute-real")
        maildir = ctx.command_ref(f"user restore-maildir {username} --execute-real")
        notes.append(f"The maildir stays in the trash {kept}; to undo: {restore}, then "
                     f"{maildir}")

    ctx.after(f"move maildir {home} to {target} on {server}", move, kind="maildir_move")
