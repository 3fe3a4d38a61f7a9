"""``sogo sudoers`` and ``sogo restore``: SOGo's data of the mailboxes (docs/sogo.md)."""

from __future__ import annotations

from podod.bus.context import CommandContext, Reply
from podod.bus.shapes import STR, arr, nullable, obj
from podod.bus.spec import Arg, Opt
from podod.errors import NotFound, UsageError
from podod.mail.addresses import normalize_address
from podod.mail.commands.common import reader
from podod.mail.sogo import SogoLayout, SogoManager, restore_user, sogo_of, sudoers_rule
from podod.plugins import Registry


def setup(registry: Registry) -> None:
    registry.component("sogo", SogoManager)

    @registry.command(
        "sogo sudoers", "Show the sudoers line the SOGo server needs",
        permission="admin", reply=obj({"rule": STR, "server": nullable(STR)}),
        description="Put it into /etc/sudoers.d/podod on the SOGo server (visudo -f): it "
                    "lets podod's SSH user run exactly podod's sogo-tool commands (and the "
                    "mkdir of a SOGo backup) as mail.sogo.run_as.")
    async def sogo_sudoers(ctx: CommandContext) -> Reply:
        manager = sogo_of(ctx.runtime)
        settings = manager.settings
        if settings is None:
            raise UsageError("there is no mail.sogo section in podod.yaml, so podod runs no "
                             "SOGo commands (see docs/sogo.md)")
        rule = sudoers_rule(SogoLayout(settings), manager.login_user())
        return Reply(message=rule, data={"rule": rule, "server": settings.server})

    @registry.command(
        "sogo restore", "Bring back a deleted user's SOGo data from its backup",
        params=[Arg("address", "the mailbox (restored first, with backup restore)",
                    kind="address"),
                Opt("backup", "the backup id of the deletion (backup list; the reply of "
                    "backup restore names it)", required=True)],
        permission="domain-admin", mutating=True,
        reply=obj({"server": STR, "folders": arr(STR, "the folders restored")}),
        examples=["sogo restore alice@example.com --backup 20261207T101500Z-a1b2c3 "
                  "--execute-real"],
        description="user delete backs up a user's SOGo data (sogo-tool backup) into "
                    "mail.sogo.backup_dir/<backup id> before it removes it; this puts the "
                    "folders, their ACLs and the preferences back (sogo-tool restore).")
    async def sogo_restore(ctx: CommandContext, address: str, backup: str) -> Reply:
        username = normalize_address(address)
        ctx.require_domain(username.split("@")[1])
        async with reader(ctx, username.split("@")[1]) as db:
            exists = await db.fetchval("SELECT 1 FROM mailbox WHERE username = $1", username)
        if not exists:
            raise NotFound(f"there is no mailbox {username}; restore it first (backup restore "
                           f"{backup}), then its SOGo data")
        ctx.record("restore", "sogo user", username, backup=backup)
        server, folders = await restore_user(ctx, username, backup)
        shown = ", ".join(folders) or "no folders"
        verb = "are back" if ctx.execute_real else "would come back"
        return Reply(message=f"SOGo's data of {username} on {server} {verb} from backup "
                             f"{backup} (preferences; {shown})",
                     data={"server": server, "folders": folders})
