"""SOGo's side of a mailbox (docs/sogo.md): ``sogo-tool`` on the SOGo server.

Everything runs through the server manager's runner of ``mail.sogo.server`` (over SSH), or
on this machine when no server is named, as allow-listed commands whose every argument is
pinned by a regular expression: an address is a mailbox address (``ADDRESS``), a backup
folder is ``<backup_dir>/<podod backup id>``, the only preference podod reads or writes is
``Vacation``. With ``run_as`` (default ``sogo``, sogo-tool refuses to run as root) each
command is prefixed by ``sudo -n -u sogo``, and ``environment`` by ``/usr/bin/env
NAME=VALUE``; :func:`sudoers_rule` renders the sudoers line that admits exactly these
commands, from the same patterns.

What podod does with it:

- ``user delete``: ``sogo-tool backup`` of the user before the deletion commits, named
  ``<backup_dir>/<backup id>/`` after it, then ``sogo-tool remove`` (profile, folders,
  ACLs); the explicit step ``sogo restore ADDRESS --backup ID`` brings them back
  (``sogo-tool restore``).
- ``user rename`` (another module): :func:`rename_sogo_user` runs ``sogo-tool rename-user``.
- ``user vacation``: SOGo's ``Vacation`` user default, written with ``sogo-tool
  user-preferences set ... -p CREDENTIALS``, so SOGo itself writes the user's Sieve script
  over ManageSieve (podod.mail.commands.vacation).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from podod.errors import NotFound, PododError, Unavailable, ValidationError
from podod.mail.maildirs import ere_escape
from podod.mail.settings import SogoSettings
from podod.servers.runner import (
    CommandFailed,
    CommandResult,
    LocalRunner,
    Runner,
    ServerUnreachable,
)

if TYPE_CHECKING:
    from podod.bus.context import CommandContext
    from podod.config import Config
    from podod.runtime import Runtime

log = logging.getLogger(__name__)

# A mailbox address as podod makes them (normalize_mailbox): valid as a Python regex and as a
# POSIX ERE (sudoers); nothing a shell or sudoers would read specially.
ADDRESS = r"[a-z0-9_][a-z0-9._+-]*@[a-z0-9][a-z0-9.-]*"
BACKUP_ID = r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}"
_BACKUP_ID = re.compile(BACKUP_ID)
# The one user default podod writes: {"Vacation": {...}} as one line of JSON (json.dumps
# escapes line breaks and control characters, so the value never holds a raw one).
VACATION_VALUE = r'[{]"Vacation":[{][^\n\r]*[}][}]'
VACATION_VALUE_ERE = r'[{]"Vacation":[{].*[}][}]'
LOCAL_SERVER = "this machine"
MKDIR = "/usr/bin/mkdir"
MV = "/usr/bin/mv"
ENV = "/usr/bin/env"
SUDOERS_SPECIAL = re.compile(r"([,:=])")  # escaped with a backslash inside a sudoers rule
# sogo-tool prints its memcached set-up on stderr with every run: not a reason.
_NOISE = re.compile(r"\[SOGoCache\]|^\s*$")


@dataclass(frozen=True)
class SogoLayout:
    """The command shapes of one configuration."""

    settings: SogoSettings

    @property
    def run_as(self) -> str | None:
        return self.settings.run_as

    def tool_prefix(self) -> list[str]:
        env = [f"{k}={v}" for k, v in sorted(self.settings.environment.items())]
        return ([ENV, *env] if env else []) + [self.settings.tool]

    def backup_path(self, backup_id: str) -> str:
        return f"{self.settings.backup_dir}/{backup_id}"

    def shapes(self) -> list[tuple[list[str], list[str], str]]:
        """(program and fixed words, one regex per argument, purpose) of every command,
        without sudo. ``VACATION`` stands for the value's pattern (Python and ERE differ)."""
        tool = self.tool_prefix()
        folder = f"{ere_escape(self.settings.backup_dir)}/{BACKUP_ID}"
        shapes = [
            ([MKDIR], ["-p", "-m", "0700", "--", folder],
             "make the folder of a SOGo backup (user delete)"),
            ([MV], ["-T", "--", folder, folder],
             "name a SOGo backup after podod's backup id (user delete)"),
            (tool, ["backup", folder, ADDRESS],
             "back up a user's SOGo data before it is removed (user delete)"),
            (tool, ["remove", ADDRESS],
             "remove a deleted user's SOGo data: profile, folders, ACLs (user delete)"),
            (tool, ["restore", "-l", folder, ADDRESS],
             "list what a SOGo backup holds (sogo restore)"),
            (tool, ["restore", "-F", "ALL", folder, ADDRESS],
             "restore a user's SOGo folders from a backup (sogo restore)"),
            (tool, ["restore", "-p", folder, ADDRESS],
             "restore a user's SOGo preferences from a backup (sogo restore)"),
            (tool, ["rename-user", ADDRESS, ADDRESS],
             "move a user's SOGo data to the new address (user rename)"),
            (tool, ["user-preferences", "get", "defaults", ADDRESS, "Vacation"],
             "read a user's vacation message (user vacation show)"),
        ]
        credentials = self.settings.sieve_credentials_file
        if credentials is not None:
            shapes.append((tool, ["user-preferences", "set", "defaults", ADDRESS, "-p",
                                  ere_escape(credentials), "Vacation", "VACATION"],
                           "write a user's vacation message; SOGo writes the Sieve script "
                           "(user vacation set|clear)"))
        return shapes

    def wrap(self, argv: list[str]) -> list[str]:
        return ["sudo", "-n", "-u", self.run_as, *argv] if self.run_as else argv

    def allow(self, register: Callable[..., None]) -> None:
        """Declare every command on the allow-list (``registry.remote_command``)."""
        for fixed, args, purpose in self.shapes():
            pinned = [re.escape(word) for word in fixed[1:]]
            patterns = [VACATION_VALUE if a == "VACATION" else a for a in args]
            if self.run_as:
                register("sudo", "-n", "-u", re.escape(self.run_as), re.escape(fixed[0]),
                         *pinned, *patterns, purpose=f"{purpose}, as {self.run_as}")
            else:
                register(fixed[0], *pinned, *patterns, purpose=purpose)

    def by_hand(self, *argvs: list[str]) -> str:
        prefix = ["sudo", "-u", self.run_as] if self.run_as else []
        return " && ".join(shlex.join(prefix + argv) for argv in argvs)


def sudoers_rule(layout: SogoLayout, login_user: str) -> str:
    """The sudoers line that lets ``login_user`` run exactly podod's SOGo commands as
    ``run_as`` (sudo 1.9.10+ reads ``^...$`` arguments as regular expressions; ``,:=``
    are escaped as sudoers wants)."""
    if not layout.run_as:
        raise ValidationError("mail.sogo.run_as is null: podod runs sogo-tool as its login "
                              "user itself, without sudo")
    commands = []
    for fixed, args, _purpose in layout.shapes():
        words = [re.escape(w).replace("\\-", "-").replace("\\/", "/") for w in fixed[1:]]
        patterns = [VACATION_VALUE_ERE if a == "VACATION" else a for a in args]
        joined = SUDOERS_SPECIAL.sub(r"\\\1", " ".join([*words, *patterns]))
        commands.append(f"{fixed[0]} ^{joined}$")
    return f"{login_user} ALL=({layout.run_as}) NOPASSWD: " + ", ".join(commands)


def check_address(address: str) -> str:
    if not re.fullmatch(ADDRESS, address):
        raise ValidationError(f"podod passes only mailbox addresses of lower-case letters, "
                              f"digits and '._+-' to sogo-tool, not '{address}'; nothing was "
                              "changed")
    return address


def _reason(result: CommandResult) -> str:
    lines = [line for line in (result.stderr + "\n" + result.stdout).splitlines()
             if not _NOISE.search(line)]
    text = lines[-1].strip() if lines else f"exit status {result.exit_status}"
    # sogo-tool prefixes its messages with a date, the program and its pid.
    return re.sub(r"^\d{4}-\d\d-\d\d [\d:.]+ sogo-tool\[\d+:\d+\] ", "", text)[:300]


class SogoOps:
    """sogo-tool on one server."""

    def __init__(self, layout: SogoLayout, runner: Runner, server: str) -> None:
        self.layout = layout
        self.runner = runner
        self.server = server

    @property
    def settings(self) -> SogoSettings:
        return self.layout.settings

    async def _run(self, args: list[str], *, tool: bool = True) -> CommandResult:
        argv = self.layout.wrap((self.layout.tool_prefix() if tool else []) + args)
        return await self.runner.run(argv, timeout=self.settings.timeout)

    async def _check(self, args: list[str], *, tool: bool = True) -> CommandResult:
        result = await self._run(args, tool=tool)
        if not result.ok:
            shown = "sogo-tool " + " ".join(args[:2]) if tool else args[0]
            raise CommandFailed(f"'{shown}' failed on {self.server}: {_reason(result)}")
        return result

    async def rename_backup(self, old_id: str, new_id: str) -> None:
        await self._check([MV, "-T", "--", self.layout.backup_path(old_id),
                           self.layout.backup_path(new_id)], tool=False)

    async def backup(self, address: str, backup_id: str) -> str:
        folder = self.layout.backup_path(backup_id)
        await self._check([MKDIR, "-p", "-m", "0700", "--", folder], tool=False)
        await self._check(["backup", folder, check_address(address)])
        return folder

    async def remove(self, address: str) -> None:
        await self._check(["remove", check_address(address)])

    async def backed_up_folders(self, address: str, backup_id: str) -> list[str]:
        """The folders a backup holds for ``address`` (``sogo-tool restore -l``), or one
        sentence when there is no such backup."""
        folder = self.layout.backup_path(backup_id)
        result = await self._run(["restore", "-l", folder, check_address(address)])
        if not result.ok:
            raise NotFound(f"there is no SOGo backup of {address} in {folder} on {self.server} "
                           f"({_reason(result)}); nothing was changed")
        found = []
        listing = False
        for line in (result.stderr + "\n" + result.stdout).splitlines():
            text = re.sub(r"^\d{4}-\d\d-\d\d [\d:.]+ sogo-tool\[\d+:\d+\] ", "", line)
            if "Restorable folders" in text:
                listing = True
            elif listing and text.startswith("  ") and text.strip():
                found.append(text.strip())
        return found

    async def restore(self, address: str, backup_id: str) -> None:
        folder = self.layout.backup_path(backup_id)
        await self._check(["restore", "-F", "ALL", folder, check_address(address)])
        await self._check(["restore", "-p", folder, address])

    async def rename(self, old: str, new: str) -> None:
        await self._check(["rename-user", check_address(old), check_address(new)])

    async def vacation(self, address: str) -> dict[str, Any] | None:
        """The user's ``Vacation`` default as SOGo stores it, None when there is none."""
        result = await self._run(["user-preferences", "get", "defaults",
                                  check_address(address), "Vacation"])
        if not result.ok:
            if "not found" in _reason(result):
                return None
            raise CommandFailed(f"'sogo-tool user-preferences get' failed on {self.server}: "
                                f"{_reason(result)}")
        for line in result.stdout.splitlines():
            if line.startswith("Vacation: "):
                try:
                    value = json.loads(line[len("Vacation: "):])
                except ValueError:
                    break
                return value if isinstance(value, dict) else None
        raise CommandFailed(f"sogo-tool on {self.server} answered something podod cannot read "
                            "for the Vacation default")

    async def set_vacation(self, address: str, value: dict[str, Any]) -> None:
        """Write the ``Vacation`` default with the sieve credentials: SOGo writes (or
        removes) the user's Sieve script over ManageSieve itself."""
        credentials = self.settings.sieve_credentials_file
        if credentials is None:
            raise ValidationError(sieve_missing())
        text = json.dumps({"Vacation": value}, ensure_ascii=False, separators=(",", ":"))
        await self._check(["user-preferences", "set", "defaults", check_address(address),
                           "-p", credentials, "Vacation", text])


def sieve_missing() -> str:
    return ("user vacation needs mail.sogo.sieve_credentials_file in podod.yaml (the Dovecot "
            "master user SOGo writes Sieve scripts with, see docs/sogo.md); nothing was changed")


class SogoManager:
    """The ``sogo`` component: declares the SOGo commands on the allow-list (their patterns
    depend on the configuration) and hands out :class:`SogoOps`."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._local: LocalRunner | None = None

    @property
    def settings(self) -> SogoSettings | None:
        return self.runtime.config.mail.sogo

    async def start(self) -> None:
        self._apply()
        settings = self.settings
        servers = self.runtime.component("servers")
        if settings is not None and settings.server is not None and servers is not None \
                and settings.server not in servers.names():
            log.error("mail.sogo.server names the server '%s', which podod does not manage; "
                      "the SOGo steps of user delete and user vacation will refuse to run",
                      settings.server)

    async def reload(self, config: Config) -> None:
        self._apply()

    async def stop(self) -> None:
        return None

    def _apply(self) -> None:
        self._local = None  # a reload may change the timeout
        if self.settings is not None:
            SogoLayout(self.settings).allow(self.runtime.registry.remote_command)

    def ops(self, why: str) -> SogoOps:
        """sogo-tool on the SOGo server, or one sentence saying what is missing (not
        configured, unknown server, server down)."""
        settings = self.settings
        if settings is None:
            raise ValidationError(f"{why} needs a mail.sogo section in podod.yaml (how podod "
                                  "reaches sogo-tool, see docs/sogo.md); nothing was changed")
        layout = SogoLayout(settings)
        if settings.server is None:
            if self._local is None:
                self._local = LocalRunner(LOCAL_SERVER, self.runtime.registry.allowlist,
                                          timeout=settings.timeout)
            return SogoOps(layout, self._local, LOCAL_SERVER)
        servers = self.runtime.component("servers")
        if servers is None:
            raise Unavailable("the server connections are not running, so SOGo cannot be "
                              "reached; nothing was changed")
        try:
            connection = servers.connection(settings.server)
        except NotFound:
            known = ", ".join(sorted(servers.names())) or "none"
            raise ValidationError(f"mail.sogo.server names the server '{settings.server}', "
                                  f"which podod does not manage (servers: {known}); nothing "
                                  "was changed") from None
        if not servers.is_connected(settings.server):
            raise ServerUnreachable(f"{why}: {connection.not_connected_sentence()}; nothing "
                                    "was changed")
        return SogoOps(layout, servers.runner(settings.server), settings.server)

    def cache_dropped(self) -> bool:
        """Whether ``user delete`` drops a deleted user's entries from SOGo's memcached
        (``control.sogo_memcached`` of the SOGo server), so a restore need not wait."""
        settings = self.settings
        servers = self.runtime.component("servers")
        if settings is None or settings.server is None or servers is None:
            return False
        try:
            return bool(servers.get(settings.server).control.sogo_memcached)
        except NotFound:
            return False

    def login_user(self) -> str:
        """Who runs sogo-tool on the SOGo server (for the sudoers rule)."""
        settings = self.settings
        if settings is None or settings.server is None:
            import getpass

            return getpass.getuser()
        config = self.runtime.component("servers").get(settings.server)
        if config.local:
            import getpass

            return getpass.getuser()
        return str(config.user)


def sogo_of(runtime: Any) -> SogoManager:
    manager = runtime.component("sogo")
    if not isinstance(manager, SogoManager):
        raise Unavailable("the SOGo component is not running (see the daemon's log)")
    return manager


def _runtime(runtime_or_ctx: Any) -> Any:
    return getattr(runtime_or_ctx, "runtime", runtime_or_ctx)


async def rename_sogo_user(runtime_or_ctx: Runtime | CommandContext, old: str,
                           new: str) -> str | None:
    """Move ``old``'s SOGo data (profile with its settings, folders, ACLs) to ``new`` with
    ``sogo-tool rename-user``; call it once the mailbox is renamed in the mail database.
    Returns a sentence for the reply, or None when podod does not manage SOGo
    (no ``mail.sogo``). Raises a PododError (one sentence with the by-hand command) when
    sogo-tool fails."""
    manager = sogo_of(_runtime(runtime_or_ctx))
    if manager.settings is None:
        return None
    check_address(old)
    check_address(new)
    ops = manager.ops("renaming the SOGo user")
    try:
        await ops.rename(old, new)
    except PododError as exc:
        by_hand = ops.layout.by_hand([*ops.layout.tool_prefix(), "rename-user", old, new])
        raise PododError(f"{exc.message}; run it by hand on {ops.server}: {by_hand}") from None
    return f"SOGo's data of {old} (settings, folders, ACLs) now belongs to {new}."


def _backup_stamp(backup_id: str) -> float | None:
    try:
        when = datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return when.timestamp()


def new_backup_id() -> str:
    """A SOGo backup folder's name before podod's backup id is known: the same shape."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


async def remove_on_delete(ctx: CommandContext, username: str, notes: list[str]) -> None:
    """The SOGo step of ``user delete`` (without ``mail.sogo``: nothing). The sandbox
    only checks that SOGo can be reached and says what will happen. A real run backs the
    user's SOGo data up now, while the mailbox still exists (sogo-tool backup looks the
    user up in the user source, i.e. the mail database; a failed backup refuses the
    deletion, nothing changed); once the deletion is committed, the backup folder is named
    after podod's backup id and the data is removed (sogo-tool remove works on SOGo's own
    tables, also for a user the user source no longer knows)."""
    manager = ctx.runtime.component("sogo")
    if not isinstance(manager, SogoManager) or manager.settings is None:
        return
    database = getattr(ctx.unit, "database", None)
    if manager.settings.databases is not None and database is not None and \
            database.name not in manager.settings.databases:
        notes.append(f"SOGo's data of {username} is left alone: the mailboxes of mail "
                     f"database {database.name} are not on the SOGo of mail.sogo (mail.sogo."
                     "databases does not list it).")
        return
    if not re.fullmatch(ADDRESS, username):  # e.g. an apostrophe from another tool
        notes.append(f"podod passes only mailbox addresses of lower-case letters, digits and "
                     f"'._+-' to sogo-tool, so SOGo's data of {username} is left alone "
                     "(remove it by hand with sogo-tool remove).")
        return
    ops = manager.ops("removing the user's SOGo data")
    if ctx.sandbox:
        notes.append(f"Would back up SOGo's data of {username} (profile, folders, ACLs) on "
                     f"{ops.server} and remove it once the deletion is committed.")
        return
    pending = new_backup_id()
    try:
        await ops.backup(username, pending)
    except PododError as exc:
        raise CommandFailed(f"{exc.message}; SOGo's data of {username} could not be backed "
                            "up, so the mailbox was not deleted; nothing was changed") from None
    by_hand = ops.layout.by_hand([*ops.layout.tool_prefix(), "remove", username])

    async def remove() -> None:
        backup_id = pending
        if ctx.backup_id and _BACKUP_ID.fullmatch(ctx.backup_id):
            try:
                await ops.rename_backup(pending, ctx.backup_id)
                backup_id = ctx.backup_id
            except PododError as exc:
                notes.append(f"The SOGo backup stays in {ops.layout.backup_path(pending)} "
                             f"({exc.message}).")
        folder = ops.layout.backup_path(backup_id)
        try:
            await ops.remove(username)
        except PododError as exc:
            raise PododError(f"{exc.message}; the mailbox is deleted and SOGo's data of "
                             f"{username} is backed up in {folder} on {ops.server}, but not "
                             f"removed: {by_hand}") from None
        undo = ctx.command_ref(f"backup restore {ctx.backup_id} --execute-real") \
            if ctx.backup_id else "restore the mailbox"
        sogo = ctx.command_ref(f"sogo restore {username} --backup {backup_id} --execute-real")
        notes.append(f"SOGo's data of {username} was backed up to {folder} on {ops.server} "
                     f"and removed; to undo: {undo}, then {sogo}")

    ctx.after(f"remove SOGo's data of {username} on {ops.server}", remove,
              kind="sogo_remove")


async def restore_user(ctx: CommandContext, address: str, backup_id: str
                       ) -> tuple[str, list[str]]:
    """``sogo restore``: (server, folders restored). Refuses, with one sentence, a backup
    id of another shape, a backup taken less than ``cache_seconds`` ago (SOGo's cache still
    holds the deleted profile, and would swallow the restored preferences), and a backup
    that holds nothing for ``address``."""
    manager = sogo_of(ctx.runtime)
    ops = manager.ops("sogo restore")
    settings = ops.settings
    check_address(address)
    if not _BACKUP_ID.fullmatch(backup_id):
        raise ValidationError(f"'{backup_id}' is not a backup id (YYYYMMDDTHHMMSSZ-xxxxxx, as "
                              "'backup list' shows them)")
    taken = _backup_stamp(backup_id)
    ready = (taken or 0) + settings.cache_seconds
    if time.time() < ready and not manager.cache_dropped():
        at = datetime.fromtimestamp(ready, UTC).strftime("%H:%M:%S UTC")
        raise ValidationError(f"SOGo may still keep the deleted profile of {address} in its "
                              f"cache until {at} (mail.sogo.cache_seconds, SOGo's "
                              "SOGoCacheCleanupInterval), and would drop restored preferences; "
                              "run this again then (control.sogo_memcached of the SOGo server "
                              "lets podod drop it at once); nothing was changed")
    folders = await ops.backed_up_folders(address, backup_id)
    if ctx.sandbox:
        return ops.server, folders
    await ops.restore(address, backup_id)
    return ops.server, folders


def restore_notes(ctx: CommandContext, backup_id: str, rows: list[dict[str, Any]]
                  ) -> list[str]:
    """For ``backup restore``: the explicit SOGo step for every mailbox the backup brings
    back (it was deleted by the change), when podod manages SOGo."""
    manager = ctx.runtime.component("sogo")
    if not isinstance(manager, SogoManager) or manager.settings is None:
        return []
    back = [item["key"].get("username") for item in rows
            if item.get("table") == "mailbox" and item.get("action") == "delete"]
    notes = []
    for address in back:
        if isinstance(address, str) and re.fullmatch(ADDRESS, address):
            step = ctx.command_ref(f"sogo restore {address} --backup {backup_id} "
                                   "--execute-real")
            notes.append(f"SOGo's data of {address} comes back with a separate step: {step}")
    return notes
