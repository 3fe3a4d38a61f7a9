"""Maildirs on the mail server: a deleted mailbox's maildir goes into a trash folder (never
straight to ``rm``), comes back with ``user restore-maildir``, and is purged ``trash_days``
later.

Everything runs through the server manager's runner of ``mail.maildir.server`` (over SSH, or
locally for ``local: true``) as allow-listed commands whose every argument is pinned by a
regular expression built from the configured root and trash: a path is always
``<root>/<domain>/<name>`` or ``<trash>/<domain>/<name>-<UTC stamp>``, its segments never
``.``/``..`` and never starting with ``-``. With ``run_as`` (default ``vmail``, the owner of
the maildirs) each command is prefixed by ``sudo -n -u vmail``; :func:`sudoers_rule` renders
the sudoers line that admits exactly these commands, from the same patterns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from podod.bus.context import Actor, Request
from podod.errors import Conflict, NotFound, PododError, Unavailable, ValidationError
from podod.mail.settings import MaildirSettings
from podod.servers.runner import CommandResult, Runner, ServerUnreachable, failed

if TYPE_CHECKING:
    from podod.config import Config
    from podod.runtime import Runtime

log = logging.getLogger(__name__)

# One path segment: valid as a Python regex and as a POSIX ERE (sudoers); no leading '.'
# or '-', no character a shell, a regex or sudoers would read specially.
SEG = r"[A-Za-z0-9_][A-Za-z0-9._+@-]*"
STAMP = r"[0-9]{8}T[0-9]{6}Z"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_MAILDIR = re.compile(rf"({SEG})/({SEG})/?")
# Moving or purging a big maildir that is not a rename (another filesystem) takes a while.
LONG_COMMAND = 120.0
SUDOERS_PROGRAMS = {"test": "/usr/bin/test", "mkdir": "/usr/bin/mkdir", "mv": "/usr/bin/mv",
                    "find": "/usr/bin/find", "rm": "/usr/bin/rm"}


def ere_escape(path: str) -> str:
    """Escape a configured path (letters, digits, ``/._+@-`` only) for a regex/ERE."""
    return re.sub(r"([.+])", r"\\\1", path)


def stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime(STAMP_FORMAT)


def split_maildir(maildir: str, address: str) -> tuple[str, str]:
    """``domain/name/`` (PostfixAdmin's maildir column) → (domain, name), or one sentence."""
    match = _MAILDIR.fullmatch(maildir or "")
    if match is None:
        raise ValidationError(
            f"the maildir '{maildir}' of {address} is not DOMAIN/NAME/ (letters, digits and "
            "'._+@-', not starting with '.' or '-'), so podod will not move it; nothing was "
            "changed (delete without --remove-maildir and move it by hand)")
    return match.group(1), match.group(2)


@dataclass(frozen=True)
class TrashEntry:
    path: str
    domain: str
    name: str
    moved_at: float

    @property
    def entry(self) -> str:
        """How commands name it: ``domain/name-STAMP``."""
        return f"{self.domain}/{self.name}-{stamp(self.moved_at)}"

    @property
    def address(self) -> str:
        """The mailbox it most likely belonged to (maildir ``domain/local/``)."""
        return f"{self.name}@{self.domain}"

    def age_days(self, now: float) -> float:
        return max(0.0, now - self.moved_at) / 86400


@dataclass(frozen=True)
class MaildirLayout:
    """The paths and command shapes of one configuration."""

    root: str
    trash: str
    run_as: str | None

    @classmethod
    def of(cls, settings: MaildirSettings) -> MaildirLayout:
        return cls(settings.root, settings.trash_path, settings.run_as)

    # -- paths -------------------------------------------------------------------------------

    def home(self, domain: str, name: str) -> str:
        return f"{self.root}/{domain}/{name}"

    def entry_path(self, domain: str, name: str, when: float) -> str:
        return f"{self.trash}/{domain}/{name}-{stamp(when)}"

    def parse_entry(self, path: str) -> TrashEntry | None:
        match = re.fullmatch(rf"{ere_escape(self.trash)}/({SEG})/({SEG})-({STAMP})", path)
        if match is None:
            return None
        moved = datetime.strptime(match.group(3), STAMP_FORMAT).replace(tzinfo=UTC)
        return TrashEntry(path, match.group(1), match.group(2), moved.timestamp())

    def entry_named(self, text: str) -> TrashEntry:
        """An entry as ``maildir list`` shows it (``domain/name-STAMP``), or one sentence."""
        entry = self.parse_entry(f"{self.trash}/{text.strip().strip('/')}")
        if entry is None:
            raise ValidationError(f"'{text}' is not a trash entry (DOMAIN/NAME-YYYYMMDDTHHMMSSZ, "
                                  "as 'maildir list' shows them)")
        return entry

    # -- commands ----------------------------------------------------------------------------

    def shapes(self) -> list[tuple[str, list[str], str]]:
        """(program, one regex per argument, purpose) of every command, without sudo."""
        root, trash = ere_escape(self.root), ere_escape(self.trash)
        home = f"{root}/{SEG}/{SEG}"
        entry = f"{trash}/{SEG}/{SEG}-{STAMP}"
        return [
            ("test", ["-d", f"({home}|{trash})"],
             "whether a maildir, or the maildir trash, exists"),
            ("mkdir", ["-p", "--", f"({trash}/{SEG}|{root}/{SEG})"],
             "make a domain's folder in the maildir trash (or in the mail root, to restore)"),
            ("mv", ["-T", "--", home, entry],
             "move a deleted mailbox's maildir into the trash (user delete --remove-maildir)"),
            ("mv", ["-T", "--", entry, home],
             "move a maildir back from the trash (user restore-maildir)"),
            ("mv", ["-T", "--", home, home],
             "move a renamed mailbox's maildir to its new name (user rename)"),
            ("find", [trash, "-mindepth", "2", "-maxdepth", "2", "-type", "d"],
             "list the maildir trash"),
            ("rm", ["-rf", "--", entry],
             "purge a maildir from the trash (maildir purge)"),
        ]

    def wrap(self, argv: list[str]) -> list[str]:
        return ["sudo", "-n", "-u", self.run_as, *argv] if self.run_as else argv

    def allow(self, register: Any) -> None:
        """Declare every command on the allow-list (``registry.remote_command``)."""
        for program, args, purpose in self.shapes():
            if self.run_as:
                register("sudo", "-n", "-u", re.escape(self.run_as), program, *args,
                         purpose=f"{purpose}, as {self.run_as}")
            else:
                register(program, *args, purpose=purpose)

    def by_hand(self, *argvs: list[str]) -> str:
        prefix = ["sudo", "-u", self.run_as] if self.run_as else []
        return " && ".join(shlex.join(prefix + argv) for argv in argvs)


def sudoers_rule(layout: MaildirLayout, login_user: str) -> str:
    """The sudoers line that lets ``login_user`` run exactly podod's maildir commands as
    ``run_as`` (sudo 1.9.10+ reads ``^...$`` arguments as regular expressions)."""
    if not layout.run_as:
        raise ValidationError("mail.maildir.run_as is null: podod runs the maildir commands "
                              "as its login user itself, without sudo")
    commands = []
    for program, args, _purpose in layout.shapes():
        joined = " ".join(args)
        commands.append(f"{SUDOERS_PROGRAMS[program]} ^{joined}$")
    return f"{login_user} ALL=({layout.run_as}) NOPASSWD: " + ", ".join(commands)


class MaildirOps:
    """The remote operations on one server's maildirs."""

    def __init__(self, layout: MaildirLayout, runner: Runner, server: str) -> None:
        self.layout = layout
        self.runner = runner
        self.server = server

    async def _run(self, argv: list[str], *, timeout: float | None = None) -> CommandResult:
        return await self.runner.run(self.layout.wrap(argv), timeout=timeout)

    async def _check(self, argv: list[str], *, timeout: float | None = None) -> CommandResult:
        result = await self._run(argv, timeout=timeout)
        if not result.ok:
            raise failed(result, self.server)
        return result

    async def exists(self, path: str) -> bool:
        """``test -d``: exit 1 without a word means no; sudo's own refusals (also exit 1)
        and anything else say why on stderr and are raised."""
        result = await self._run(["test", "-d", path])
        if result.ok:
            return True
        if result.exit_status == 1 and not result.stderr.strip():
            return False
        raise failed(result, self.server)

    async def move_to_trash(self, domain: str, name: str, when: float) -> str | None:
        """Move ``<root>/domain/name`` to its trash entry; None when there is no maildir."""
        home = self.layout.home(domain, name)
        if not await self.exists(home):
            return None
        target = self.layout.entry_path(domain, name, when)
        await self._check(["mkdir", "-p", "--", f"{self.layout.trash}/{domain}"])
        await self._check(["mv", "-T", "--", home, target], timeout=LONG_COMMAND)
        return target

    async def restore(self, entry: TrashEntry) -> str:
        home = self.layout.home(entry.domain, entry.name)
        await self._check(["mkdir", "-p", "--", f"{self.layout.root}/{entry.domain}"])
        await self._check(["mv", "-T", "--", entry.path, home], timeout=LONG_COMMAND)
        return home

    async def rename(self, old: tuple[str, str], new: tuple[str, str]) -> bool:
        """Move ``<root>/old`` to ``<root>/new`` (each a (domain, name)) for a renamed
        mailbox: False when there is no maildir to move (it never received mail nor logged
        in). A maildir already at the new place is refused, never merged nor replaced (``mv
        -T`` would replace an empty one)."""
        source, target = self.layout.home(*old), self.layout.home(*new)
        if await self.exists(target):
            raise Conflict(f"a maildir {target} is already on {self.server} (move it aside "
                           "first); nothing was changed")
        if not await self.exists(source):
            return False
        await self._check(["mkdir", "-p", "--", f"{self.layout.root}/{new[0]}"])
        await self._check(["mv", "-T", "--", source, target], timeout=LONG_COMMAND)
        return True

    async def entries(self) -> list[TrashEntry]:
        """The trash's entries, oldest first (an empty list when there is no trash yet)."""
        if not await self.exists(self.layout.trash):
            return []
        result = await self._check(["find", self.layout.trash, "-mindepth", "2",
                                    "-maxdepth", "2", "-type", "d"])
        found = [self.layout.parse_entry(line.strip()) for line in result.stdout.splitlines()]
        return sorted((e for e in found if e is not None), key=lambda e: (e.moved_at, e.path))

    async def purge(self, entry: TrashEntry) -> None:
        await self._check(["rm", "-rf", "--", entry.path], timeout=LONG_COMMAND)


class MaildirManager:
    """The ``maildirs`` component: declares the maildir commands on the allow-list (their
    patterns depend on the configured paths), and purges the trash every
    ``purge_interval`` through the command bus (so the purge is audited like any change)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._task: asyncio.Task[None] | None = None
        self._interval = 0.0

    @property
    def settings(self) -> MaildirSettings:
        return self.runtime.config.mail.maildir

    def layout(self) -> MaildirLayout:
        return MaildirLayout.of(self.settings)

    async def start(self) -> None:
        self._apply()
        name = self.settings.server
        servers = self.runtime.component("servers")
        if name is not None and servers is not None and name not in servers.names():
            log.error("mail.maildir.server names the server '%s', which podod does not manage; "
                      "--remove-maildir and the maildir commands will refuse to run", name)

    async def reload(self, config: Config) -> None:
        self._apply()

    async def stop(self) -> None:
        await self._cancel()

    def _apply(self) -> None:
        self.layout().allow(self.runtime.registry.remote_command)
        interval = self.settings.purge_interval if self.settings.server else 0.0
        if interval != self._interval or (interval and self._task is None):
            if self._task is not None:
                self._task.cancel()
                self._task = None
            self._interval = interval
            if interval > 0:
                self._task = asyncio.create_task(self._purge_loop(interval),
                                                 name="maildir-purge")

    async def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- what commands use -------------------------------------------------------------------

    def server(self, why: str) -> str:
        """The maildir server's name, or one sentence saying what is missing."""
        name = self.settings.server
        if name is None:
            raise ValidationError(f"{why} needs mail.maildir.server in podod.yaml (the server "
                                  "that holds the maildirs; see docs/mail.md); nothing was "
                                  "changed")
        servers = self.runtime.component("servers")
        if servers is None:
            raise Unavailable("the server connections are not running, so the maildirs "
                              "cannot be reached; nothing was changed")
        try:
            servers.connection(name)
        except NotFound:
            known = ", ".join(sorted(servers.names())) or "none"
            raise ValidationError(f"mail.maildir.server names the server '{name}', which podod "
                                  f"does not manage (servers: {known}); nothing was "
                                  "changed") from None
        return name

    def ops(self, why: str, *, connected: bool = True) -> MaildirOps:
        """The operations on the maildir server; with ``connected`` refuse at once (one
        sentence: since when and why) when it is down."""
        name = self.server(why)
        servers = self.runtime.component("servers")
        connection = servers.connection(name)
        if connected and not servers.is_connected(name):
            raise ServerUnreachable(f"{why}: {connection.not_connected_sentence()}; nothing was "
                                    "changed")
        return MaildirOps(self.layout(), servers.runner(name), name)

    def login_user(self) -> str:
        """Who runs the commands on the maildir server (for the sudoers rule)."""
        name = self.server("the sudoers rule")
        config = self.runtime.component("servers").get(name)
        if config.local:
            import getpass

            return getpass.getuser()
        return str(config.user)

    # -- the periodic purge ------------------------------------------------------------------

    async def _purge_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.purge_due()
            except asyncio.CancelledError:
                raise
            except PododError as exc:
                log.warning("maildir trash: not purged this time: %s", exc.message)
            except Exception:
                log.exception("maildir trash: the purge failed")

    async def purge_due(self) -> None:
        """Purge the expired entries through the bus (audited as actor ``podod``), when
        there are any; a trash with nothing expired costs one listing, no audit record."""
        days = self.settings.trash_days
        bus = self.runtime.bus
        if not days or bus is None or self.settings.server is None:
            return
        servers = self.runtime.component("servers")
        if servers is None or not servers.is_connected(self.settings.server):
            return  # down: the next round tries again
        now = time.time()
        due = [e for e in await self.ops("the maildir purge").entries()
               if e.age_days(now) >= days]
        if not due:
            return
        reply = await bus.execute(Request(argv=["maildir", "purge"],
                                          actor=Actor("podod", "admin"), origin="schedule",
                                          execute_real=True))
        level = logging.INFO if reply.ok else logging.WARNING
        log.log(level, "maildir trash: %s", reply.message)
