"""``maildir list|purge|sudoers`` and ``user restore-maildir``: the maildir trash on the
mail server (docs/mail.md, "Maildirs")."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from podod.bus.context import CommandContext, Reply, Table
from podod.bus.shapes import NULL, NUM, STR, arr, nullable, obj
from podod.bus.spec import Arg, Opt
from podod.errors import Conflict, NotFound, PododError, Unavailable, ValidationError
from podod.mail.addresses import normalize_address, normalize_domain
from podod.mail.commands.common import reader
from podod.mail.maildirs import MaildirManager, TrashEntry, split_maildir, sudoers_rule
from podod.plugins import Registry


def maildirs_of(ctx: CommandContext) -> MaildirManager:
    manager = ctx.runtime.component("maildirs")
    if not isinstance(manager, MaildirManager):
        raise Unavailable("the maildir component is not running (see the daemon's log)")
    return manager


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _row(entry: TrashEntry, days: int, now: float) -> dict[str, object]:
    return {"entry": entry.entry, "path": entry.path, "address": entry.address,
            "moved_at": entry.moved_at, "age_days": round(entry.age_days(now), 2),
            "purge_at": entry.moved_at + days * 86400 if days else None}


TRASH_REPLY = arr(obj({"entry": STR, "path": STR, "address": STR, "moved_at": NUM,
                       "age_days": NUM, "purge_at": nullable(NUM)}),
                  "one object per maildir in the trash (times: Unix seconds)")


def setup(registry: Registry) -> None:
    registry.component("maildirs", MaildirManager)

    @registry.command(
        "maildir list", "List the maildirs in the trash on the maildir server",
        params=[Opt("domain", "only this domain", kind="domain")], permission="admin",
        reply=TRASH_REPLY,
        description="Deleted mailboxes' maildirs wait here (user delete --remove-maildir) "
                    "until they are purged, mail.maildir.trash_days after the move.")
    async def maildir_list(ctx: CommandContext, domain: str | None) -> Reply:
        manager = maildirs_of(ctx)
        ops = manager.ops("maildir list")
        days = manager.settings.trash_days
        now = time.time()
        only = normalize_domain(domain) if domain is not None else None
        entries = [e for e in await ops.entries() if only is None or e.domain == only]
        data = [_row(e, days, now) for e in entries]
        rows = [[e.entry, e.address, _utc(e.moved_at),
                 _utc(e.moved_at + days * 86400) if days else "never"] for e in entries]
        where = f"{manager.layout().trash} on {ops.server}"
        return Reply(message=f"{len(entries)} maildirs in the trash ({where})", data=data,
                     table=Table(["entry", "mailbox", "moved (UTC)", "purged (UTC)"], rows,
                                 title=f"maildir trash {where}"))

    @registry.command(
        "maildir purge", "Delete maildirs that have been in the trash long enough",
        params=[Opt("older_than", "purge entries moved at least this many days ago "
                    "(default: mail.maildir.trash_days; 0: everything)", kind="int",
                    minimum=0, maximum=100_000)],
        permission="admin", mutating=True, timeout=3600, reply=TRASH_REPLY,
        description="podod runs this itself every mail.maildir.purge_interval. A purged "
                    "maildir is gone for good: restore its mailbox before that.")
    async def maildir_purge(ctx: CommandContext, older_than: int | None) -> Reply:
        manager = maildirs_of(ctx)
        days = older_than if older_than is not None else manager.settings.trash_days
        if days < 0:
            raise ValidationError("--older-than must not be negative")
        if older_than is None and not days:
            raise ValidationError("mail.maildir.trash_days is 0 (keep the trash for ever), so "
                                  "nothing is purged; give --older-than DAYS to purge anyway")
        ops = manager.ops("maildir purge")
        now = time.time()
        due = [e for e in await ops.entries() if e.age_days(now) >= days]
        for entry in due:
            ctx.record("delete", "maildir", entry.entry, server=ops.server)
        if ctx.sandbox:
            return Reply(message=f"{len(due)} maildirs in the trash on {ops.server} are at "
                                 f"least {days} days old and would be purged",
                         data=[_row(e, days, now) for e in due])
        done, problems = [], []
        for count, entry in enumerate(due):
            await ctx.progress(f"purging {entry.entry} on {ops.server}", count, len(due))
            try:
                await ops.purge(entry)
            except PododError as exc:
                problems.append(f"{entry.entry}: {exc.message}")
                ctx.changes[:] = [c for c in ctx.changes if c.key != entry.entry]
                continue
            done.append(entry)
        data = [_row(e, days, now) for e in done]
        if problems:
            return Reply(ok=False, code="partial", exit_code=1, data=data,
                         message=f"purged {len(done)} of {len(due)} "
                                 f"{'maildir' if len(due) == 1 else 'maildirs'} on {ops.server}; "
                                 f"not purged: {'; '.join(problems)}")
        word = "maildir" if len(done) == 1 else "maildirs"
        return Reply(message=f"purged {len(done)} {word} from the trash on {ops.server}",
                     data=data)

    @registry.command(
        "maildir sudoers", "Show the sudoers line the maildir server needs",
        permission="admin", reply=obj({"rule": STR, "server": nullable(STR)}),
        description="Put it into /etc/sudoers.d/podod on the maildir server (visudo -f): it "
                    "lets podod's SSH user run exactly the maildir commands, as "
                    "mail.maildir.run_as.")
    async def maildir_sudoers(ctx: CommandContext) -> Reply:
        manager = maildirs_of(ctx)
        rule = sudoers_rule(manager.layout(), manager.login_user())
        return Reply(message=rule, data={"rule": rule, "server": manager.settings.server})

    @registry.command(
        "user restore-maildir", "Move a mailbox's maildir back from the trash",
        params=[Arg("address", "the mailbox (restored first, e.g. with backup restore)",
                    kind="address"),
                Opt("entry", "which trash entry (DOMAIN/NAME-STAMP from 'maildir list'; "
                    "default: the newest of this mailbox)")],
        permission="domain-admin", mutating=True, reply=NULL,
        examples=["user restore-maildir alice@example.com --execute-real"])
    async def user_restore_maildir(ctx: CommandContext, address: str,
                                   entry: str | None) -> Reply:
        username = normalize_address(address)
        ctx.require_domain(username.split("@")[1])
        async with reader(ctx, username.split("@")[1]) as db:
            maildir = await db.fetchval("SELECT maildir FROM mailbox WHERE username = $1",
                                        username)
        if maildir is None:
            raise NotFound(f"there is no mailbox {username}; restore it first (backup restore "
                           "ID of its deletion), then its maildir")
        domain, name = split_maildir(maildir, username)
        manager = maildirs_of(ctx)
        ops = manager.ops("user restore-maildir")
        layout = ops.layout
        if entry is not None:
            chosen = layout.entry_named(entry)
            if (chosen.domain, chosen.name) != (domain, name):
                raise ValidationError(f"the trash entry {chosen.entry} is not the maildir "
                                      f"{maildir} of {username}")
            found = [e for e in await ops.entries() if e.path == chosen.path]
        else:
            found = [e for e in await ops.entries() if (e.domain, e.name) == (domain, name)]
        if not found:
            raise NotFound(f"no maildir of {username} ({domain}/{name}) is in the trash on "
                           f"{ops.server}" + (" under that name" if entry else ""))
        chosen = found[-1]
        home = layout.home(domain, name)
        if await ops.exists(home):
            raise Conflict(f"{home} exists on {ops.server} already (Dovecot makes it when mail "
                           "arrives or the user logs in); nothing was changed: move it aside "
                           f"or merge the trash entry {chosen.path} into it by hand")
        ctx.record("move", "maildir", chosen.entry, to=home, server=ops.server)
        if ctx.sandbox:
            return Reply(message=f"the maildir of {username} would be moved back from "
                                 f"{chosen.path} to {home} on {ops.server}")
        await ops.restore(chosen)
        return Reply(message=f"the maildir of {username} is back: {chosen.path} → {home} on "
                             f"{ops.server}")
