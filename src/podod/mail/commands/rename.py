"""``user rename OLD NEW [--keep-alias]``: a mailbox's new address (docs/mail.md, "Renaming a
mailbox").

One transaction of the mail database carries the mailbox row (new username, local part,
domain and maildir; password, quota, name and creation time kept), its own alias row, every
alias that forwards to it and its ``quota2`` row. Rows whose primary key changes are
inserted under the new key and deleted under the old one, so the change's backup restores
them like any other. The maildir moves on the maildir server after the backup, just before
the COMMIT (:meth:`MailUnitOfWork.with_commit`), and back if the commit fails: a committed
rename never points at a maildir that is elsewhere, and a failed one leaves the old maildir
where the old row says.
"""

from __future__ import annotations

import asyncio
from typing import Any

from podod.bus.context import CommandContext, Reply
from podod.bus.scope import domain_scope, visible
from podod.bus.shapes import BOOL, INT, STR, obj
from podod.bus.spec import Arg, Opt
from podod.errors import Conflict, NotFound, PododError, ValidationError
from podod.mail.addresses import normalize_address, normalize_mailbox
from podod.mail.commands.common import (
    check_quota,
    check_room,
    databases,
    domain_row,
    is_alias_domain,
    maildb,
    mb,
    not_served,
    serves,
    unit_for,
)
from podod.mail.maildirs import MaildirOps, split_maildir
from podod.mail.sogo import rename_sogo_user, sogo_of
from podod.plugins import Registry
from podod.servers.services import credentials_changed, sessions_ended

# PostfixAdmin's tables keyed by a mailbox's address that podod's schema does not have and
# podod does not carry to a new address: a row of the old address there refuses the rename
# (PostfixAdmin's vacation replies, app passwords, fetchmail jobs, its old quota table,
# TOTP exceptions). ``log`` is history and stays as it was.
FOREIGN_TABLES: dict[str, tuple[str, str]] = {
    "vacation": ("email", "a vacation reply"),
    "vacation_notification": ("on_vacation", "vacation notifications"),
    "mailbox_app_password": ("username", "app passwords"),
    "fetchmail": ("mailbox", "fetchmail jobs"),
    "quota": ("username", "usage rows of the old quota table"),
    "totp_exception_address": ("username", "TOTP exception addresses"),
}
# The aliases that name an address as one of their targets (goto is comma-separated).
FORWARDING = ("SELECT * FROM alias WHERE address <> $1 AND strpos(',' || "
              "replace(lower(goto), ' ', '') || ',', ',' || $1 || ',') > 0 "
              "ORDER BY address FOR UPDATE")

RENAME_REPLY = obj({"old": STR, "new": STR, "aliases": INT, "maildir_moved": BOOL,
                    "keep_alias": BOOL},
                   description="aliases: how many forwarding aliases now name the new "
                               "address; maildir_moved: false when there was no maildir yet")


def replace_target(goto: str, old: str, new: str) -> str:
    """``goto`` with the element ``old`` (compared without spaces and case) replaced by
    ``new`` in its place, or dropped where ``new`` is a target already; every other element
    stays as it was, in its order."""
    items = goto.split(",")
    has_new = any(item.strip().lower() == new for item in items)
    out: list[str] = []
    for item in items:
        if item.strip().lower() == old:
            if has_new:
                continue
            out.append(new)
            has_new = True
        else:
            out.append(item)
    return ",".join(out)


def setup(registry: Registry) -> None:
    @registry.command(
        "user rename", "Give a mailbox a new address (its mail, password and aliases go along)",
        params=[Arg("address", "the mailbox's current address", kind="address"),
                Arg("new_address", "its new address (in a domain you manage)",
                    kind="address"),
                Opt("keep_alias", "keep the old address as an alias to the new one (it counts "
                    "against the old domain's alias limit)", kind="flag")],
        permission="domain-admin", mutating=True, unit="maildb", reply=RENAME_REPLY,
        description="Changes the mailbox row, its own alias row, every alias that forwards "
                    "to it and its quota2 row in one transaction, and moves its maildir on "
                    "mail.maildir.server just before the commit (back again if the commit "
                    "fails). Afterwards the old address no longer exists, unless "
                    "--keep-alias.",
        examples=["user rename alice@example.com alice.doe@example.com",
                  "user rename alice@example.com alice@example.org --keep-alias"])
    async def user_rename(ctx: CommandContext, address: str, new_address: str,
                          keep_alias: bool) -> Reply:
        old = normalize_address(address)
        new = normalize_mailbox(new_address)
        if new == old:
            raise ValidationError(f"{old} is the mailbox's address already; nothing to rename")
        old_domain, (new_local, new_domain) = old.split("@")[1], new.split("@")
        ctx.require_domain(old_domain)
        ctx.require_domain(new_domain)
        uow = await unit_for(ctx, old_domain)
        if new_domain != old_domain and databases(ctx).several:
            there = await databases(ctx).locate(new_domain)
            if there is not uow.database:
                raise Conflict(f"{new_domain} is in mail database {there.name} and {old} in "
                               f"{uow.database.name}; a mailbox cannot be renamed across "
                               "mail databases (move one of the domains first with 'domain "
                               "move'); nothing was changed")
        row = await _mailbox(uow, old)
        await domain_row(uow, new_domain)
        if await is_alias_domain(uow, new_domain):
            raise ValidationError(f"{new_domain} is an alias domain (its addresses are those "
                                  "of its target domain); rename into the target domain")
        await _not_taken(uow, new)
        await _nothing_left_behind(uow, old)
        old_home, new_home = _maildirs(row, old, new_domain, new_local)
        # Before the locks: the maildir server may take a while to answer.
        ops = _ops(ctx)
        home_from, home_to = ops.layout.home(*old_home), ops.layout.home(*new_home)
        if await ops.exists(home_to):
            raise Conflict(f"a maildir {home_to} is already on {ops.server} (left by a "
                           f"deleted mailbox {new}?), and {old}'s mail would be mixed with "
                           "it; move it aside first; nothing was changed")
        has_maildir = await ops.exists(home_from)
        # Both domains locked (in one order, so two renames never wait for each other), and
        # everything checked again under the locks: their limits hold for concurrent changes.
        domains = {name: await domain_row(uow, name, lock=True)
                   for name in sorted({old_domain, new_domain})}
        await _not_taken(uow, new)
        row = await _mailbox(uow, old, lock=True)
        if new_domain != old_domain:
            await check_room(uow, domains[new_domain], "mailboxes")
            try:
                await check_quota(uow, domains[new_domain], int(row["quota"]))
            except ValidationError as exc:
                raise ValidationError(f"the quota of {old} ({mb(int(row['quota']))}) does not "
                                      f"fit the domain {new_domain}: {exc.message}; change "
                                      "one of them first") from None
        if keep_alias:
            await check_room(uow, domains[old_domain], "aliases")
        notes: list[str] = []
        updated = await _rows(ctx, row, old, new, new_local, new_domain, keep_alias, notes)
        _move_with_commit(ctx, ops, old, new, old_home, new_home, has_maildir, notes)
        for user in (old, new):  # the old login must not live on in a cache; the new one
            notes += credentials_changed(ctx, user, "mailbox renamed",  # may be cached unknown
                                         profile=user == old)  # SOGo's cached preferences
        notes += sessions_ended(ctx, old, "mailbox renamed")
        sogo = sogo_of(ctx.runtime).settings
        if sogo is not None and serves(sogo.databases, uow.database):
            # After the caches forgot the old login: sogo-tool rename-user moves the user's
            # SOGo profile, folders and ACLs to the new name (docs/sogo.md).
            notes.append(f"SOGo's data of {old} (settings, folders, ACLs) is renamed with it "
                         "(sogo-tool rename-user).")
            ctx.after(f"rename the SOGo user {old} to {new}",
                      lambda: rename_sogo_user(ctx, old, new), kind="sogo_rename")
        verb = "renamed" if ctx.execute_real else "would be renamed"
        return Reply(message=f"mailbox {old} {verb} to {new}", notes=notes,
                     data={"old": old, "new": new, "aliases": updated,
                           "maildir_moved": has_maildir, "keep_alias": keep_alias})


async def _mailbox(db: Any, address: str, *, lock: bool = False) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM mailbox WHERE username = $1"
                            + (" FOR UPDATE" if lock else ""), address)
    if row is None:
        raise NotFound(f"there is no mailbox {address}")
    return dict(row)


async def _not_taken(db: Any, new: str) -> None:
    if await db.fetchval("SELECT 1 FROM mailbox WHERE username = $1", new):
        raise Conflict(f"the mailbox {new} exists already; nothing was changed")
    if await db.fetchval("SELECT 1 FROM alias WHERE address = $1", new):
        raise Conflict(f"{new} is an alias already; delete the alias first (or rename onto "
                       "another address); nothing was changed")


async def _nothing_left_behind(db: Any, old: str) -> None:
    """Refuse when a PostfixAdmin table podod does not carry holds a row of ``old``."""
    present = {r["relname"] for r in await db.fetch(
        "SELECT relname::text FROM pg_class WHERE relname = ANY($1::text[]) AND relkind IN "
        "('r', 'p') AND pg_table_is_visible(oid)", list(FOREIGN_TABLES))}
    for table in sorted(present):
        column, what = FOREIGN_TABLES[table]
        if await db.fetchval(f"SELECT count(*) FROM {table} WHERE lower({column}) = $1", old):
            raise Conflict(f"{old} has {what} in PostfixAdmin's table {table}, which podod "
                           "does not carry to a new address; remove them first (and set them "
                           "up again for the new address); nothing was changed")


def _maildirs(row: dict[str, Any], old: str, new_domain: str, new_local: str
              ) -> tuple[tuple[str, str], tuple[str, str]]:
    """(domain, name) of the maildir now and after the rename (PostfixAdmin's layout)."""
    try:
        return split_maildir(row["maildir"], old), (new_domain, new_local)
    except ValidationError:
        raise ValidationError(f"the maildir '{row['maildir']}' of {old} is not DOMAIN/NAME/, "
                              "so podod will not move it; nothing was changed") from None


def _ops(ctx: CommandContext) -> MaildirOps:
    from podod.mail.commands.maildir import maildirs_of

    manager = maildirs_of(ctx)
    database = ctx.unit.database
    if not serves(manager.settings.databases, database):
        raise ValidationError(f"{not_served('mail.maildir.server', 'maildir', database)}, so "
                              "podod cannot move this mailbox's maildir with it; nothing was "
                              "changed")
    return manager.ops("user rename (it moves the maildir)")


async def _rows(ctx: CommandContext, row: dict[str, Any], old: str, new: str, new_local: str,
                new_domain: str, keep_alias: bool, notes: list[str]) -> int:
    """Change the rows; how many forwarding aliases now name ``new``."""
    uow = ctx.unit
    # A password-recovery token was issued to the old address: it does not come along.
    moved = {k: v for k, v in row.items() if k not in ("modified", "token", "token_validity")}
    moved.update(username=new, local_part=new_local, domain=new_domain,
                 maildir=f"{new_domain}/{new_local}/")
    await uow.insert("mailbox", moved)
    await uow.delete("mailbox", {"username": old})
    own = await uow.fetchrow("SELECT * FROM alias WHERE address = $1 FOR UPDATE", old)
    if own is not None:
        await uow.insert("alias", {"address": new, "goto": replace_target(own["goto"], old, new),
                                   "domain": new_domain, "active": own["active"]})
        if keep_alias:
            await uow.update("alias", {"address": old}, {"goto": new})
        else:
            await uow.delete("alias", {"address": old})
    elif keep_alias:
        await uow.insert("alias", {"address": old, "goto": new, "domain": row["domain"],
                                   "active": True})
    forwarding = [dict(r) for r in await uow.fetch(FORWARDING, old)]
    forwarding = [r for r in forwarding if r["address"] != new]
    scope = domain_scope(ctx.actor)
    hidden = [r for r in forwarding if not visible(scope, r["address"], address=True)]
    if hidden and not keep_alias:
        many = len(hidden) != 1
        raise Conflict(f"{len(hidden)} {'aliases' if many else 'alias'} of domains you do not "
                       f"manage forward{'' if many else 's'} to {old}; rename it with "
                       "--keep-alias (they keep delivering through the old address), or ask "
                       "an admin; nothing was changed")
    shown = [r for r in forwarding if r not in hidden]
    await uow.update_each("alias", "goto", {a["address"]: replace_target(a["goto"], old, new)
                                            for a in shown})
    if hidden:
        many = len(hidden) != 1
        notes.append(f"{len(hidden)} {'aliases' if many else 'alias'} of other domains "
                     f"forward{'' if many else 's'} to {old} and keep doing so through the "
                     "alias it becomes (an admin can see which).")
    usage = await uow.fetchrow("SELECT * FROM quota2 WHERE username = $1 FOR UPDATE", old)
    # A row of the new address is left over from a mailbox deleted outside podod: its
    # counts are not this mailbox's.
    await uow.delete("quota2", {"username": new})
    if usage is not None:
        await uow.insert("quota2", {**dict(usage), "username": new})
        await uow.delete("quota2", {"username": old})
    return len(shown)


def _move_with_commit(ctx: CommandContext, ops: MaildirOps, old: str, new: str,
                      old_home: tuple[str, str], new_home: tuple[str, str], has_maildir: bool,
                      notes: list[str]) -> None:
    """Plan the maildir's move: with the commit (after the backup), back if it fails; and
    afterwards a look whether mail delivered meanwhile made a new maildir at the old place."""
    server, layout = ops.server, ops.layout
    source, target = layout.home(*old_home), layout.home(*new_home)
    if not has_maildir:
        notes.append(f"There is no maildir {source} on {server} yet (the mailbox never received "
                     "mail nor logged in): nothing to move.")
        return
    ctx.record("move", "maildir", source, to=target, server=server)
    if ctx.sandbox:
        notes.append(f"Would move the maildir {source} to {target} on {server} after the "
                     "backup, just before the commit (and back if the commit fails).")
        return
    back = layout.by_hand(["mv", "-T", "--", target, source])

    async def move() -> None:
        try:
            await ops.rename(old_home, new_home)
        except PododError as exc:
            why = exc.message.removesuffix("; nothing was changed")
            if "sudo:" in why:  # the line installed before rename's move was allow-listed
                why += f"; the sudoers line it needs: {ctx.command_ref('maildir sudoers')}"
            raise type(exc)(f"the maildir {source} could not be moved to {target} on "
                            f"{server} ({why}); nothing was changed") from None

    async def move_back() -> str | None:
        # How far the move got, from the server itself (it may have failed, or been cut
        # off, after mv did its work): moved only when the old place is empty and the new
        # one taken. A maildir that was at the new place before is never moved.
        if await ops.exists(source) or not await ops.exists(target):
            return None
        committed = await _committed(ctx, old, new)
        if committed:
            return f"the rename was committed after all: {new} is the mailbox"
        if committed is None:
            return (f"podod cannot tell whether the rename was committed; the maildir is now "
                    f"{target} on {server}: if 'user show {old}' finds the mailbox, move it "
                    f"back by hand: {back}")
        await ops.rename(new_home, old_home)
        return f"the maildir was moved back to {source}"

    ctx.unit.with_commit(f"move maildir {source} to {target} on {server}", move, move_back)

    async def check_old() -> str | None:
        if await ops.exists(source):
            raise PododError(f"a new maildir {source} appeared on {server} (mail for {old} "
                             f"arrived during the rename); merge its mail into {target} by "
                             "hand")
        return f"{source} → {target}"

    ctx.after(f"check the maildir move of {old} to {new} on {server}", check_old,
              kind="maildir_move")


async def _committed(ctx: CommandContext, old: str, new: str) -> bool | None:
    """Whether the rename is in the database (True), not (False), or unknown (None)."""
    try:
        async with asyncio.timeout(10):
            pool = await (await maildb(ctx, old.split("@")[1])).pool()
            async with pool.acquire() as conn:
                found = {r["username"] for r in await conn.fetch(
                    "SELECT username FROM mailbox WHERE username = ANY($1::text[])",
                    [old, new])}
    except Exception:  # unreachable, or anything else: podod cannot tell
        return None
    if old in found:
        return False
    return True if new in found else None
