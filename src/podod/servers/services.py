"""Service control on the managed servers and the after-actions that make a change take
effect (docs/services.md).

``service status|reload|restart SERVER SERVICE`` run ``systemctl`` through the server's
runner (SSH, or locally for ``local: true``); reload and restart go through ``sudo -n``
when ``servers[].control.sudo`` is on (the default), as the server's login user. Only the
services of :data:`VERBS` (Debian's unit names) and only the verbs each supports can be
asked for, and each server narrows them further with ``control.services``.

After-actions are declared by the commands that need them (a password change, a
mailbox's deletion or deactivation: :func:`credentials_changed`; a quota change:
:func:`quota_changed`) and switched on per server (``control.flush_auth_cache``,
``control.recalc_quota``, ``control.sogo_memcached``). The bus runs them after the commit,
outside the command's time limit: a failure is a note in the reply, an
``AfterActionFailed`` event and ``podod_after_actions_total{result="failed"}``, and the
committed change stands.

:func:`sudoers_lines` renders, from the same patterns, the sudoers line that admits exactly
these commands (sudo 1.9.10+ reads ``^...$`` arguments as regular expressions).
"""

from __future__ import annotations

import asyncio
import getpass
import re
import shlex
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from podod.errors import PermissionDenied, PododError, ValidationError
from podod.servers.runner import CommandFailed, CommandResult, failed
from podod.servers.settings import SERVICE_NAMES, ControlSettings, ServerConfig

if TYPE_CHECKING:
    from podod.bus.context import CommandContext

SYSTEMCTL = "/usr/bin/systemctl"
DOVEADM = "/usr/bin/doveadm"
# What each service supports: SOGo's and memcached's Debian units have no reload.
VERBS: dict[str, tuple[str, ...]] = {
    "postfix": ("reload", "restart"),
    "dovecot": ("reload", "restart"),
    "sogo": ("restart",),
    "nginx": ("reload", "restart"),
    "memcached": ("restart",),
}
assert tuple(VERBS) == SERVICE_NAMES
STATUS_PROPERTIES = "ActiveState,SubState,LoadState,MainPID,ActiveEnterTimestamp"
# A user name doveadm and memcached are given: no leading '-', nothing a shell, a regex or
# sudoers reads specially (sudoers needs ',', ':', '=' and '\\' escaped: none allowed).
USER = r"[A-Za-z0-9_][A-Za-z0-9._+@-]*"
_USER = re.compile(USER)
PATH = r"/[A-Za-z0-9_.+@/-]+"
RESTART_TIMEOUT = 120.0  # SOGo and a busy Dovecot take a while to stop
MEMCACHED_TIMEOUT = 5.0


def _ere(path: str) -> str:
    return re.sub(r"([.+])", r"\\\1", path)


def sudo_wrap(control: ControlSettings, argv: list[str]) -> list[str]:
    return ["sudo", "-n", *argv] if control.sudo else argv


def systemctl_argv(verb: str, service: str) -> list[str]:
    return [SYSTEMCTL, verb, service]


def status_argv(service: str) -> list[str]:
    return [SYSTEMCTL, "show", f"--property={STATUS_PROPERTIES}", service]


def doveadm_argv(control: ControlSettings, *args: str) -> list[str]:
    conf = ["-c", control.doveadm_config] if control.doveadm_config else []
    return [DOVEADM, *conf, *args]


def allow(register: Callable[..., None]) -> None:
    """Every shape on the allow-list (``registry.remote_command``), with and without sudo;
    a server's settings then pick one."""
    reloadable = "|".join(s for s, verbs in VERBS.items() if "reload" in verbs)
    services = "|".join(VERBS)
    shapes: list[tuple[list[str], str]] = [
        ([SYSTEMCTL, "reload", f"({reloadable})"], "reload a mail service (service reload)"),
        ([SYSTEMCTL, "restart", f"({services})"], "restart a mail service (service restart)"),
    ]
    for conf in ([], ["-c", PATH]):
        shapes += [
            ([DOVEADM, *conf, "auth", "cache", "flush", USER],
             "flush a user from Dovecot's auth cache (after a password change or deletion)"),
            ([DOVEADM, *conf, "auth", "cache", "flush"],
             "flush Dovecot's whole auth cache (after a domain is deleted or switched off)"),
            ([DOVEADM, *conf, "quota", "recalc", "-u", USER],
             "recalculate a user's quota usage (after a quota change)"),
            ([DOVEADM, *conf, "kick", USER],
             "end a user's Dovecot sessions (after a mailbox's rename)"),
        ]
    for argv, purpose in shapes:
        register(*argv, purpose=purpose)
        register("sudo", "-n", *argv, purpose=f"{purpose}, through sudo")
    register(SYSTEMCTL, "show", re.escape(f"--property={STATUS_PROPERTIES}"), f"({services})",
             purpose="a mail service's state (service status)")


def sudoers_line(config: ServerConfig, login_user: str) -> str:
    """The sudoers line that lets ``login_user`` run exactly this server's service and
    after-action commands as root, or one sentence when the server needs none."""
    control = config.control
    if not control.sudo:
        raise ValidationError(f"servers[{config.name}].control.sudo is false: podod runs the "
                              "service commands as its login user itself, without sudo")
    commands = []
    reload = [s for s in control.services if "reload" in VERBS[s]]
    if reload:
        commands.append(f"{SYSTEMCTL} ^reload ({'|'.join(reload)})$")
    if control.services:
        commands.append(f"{SYSTEMCTL} ^restart ({'|'.join(control.services)})$")
    conf = f"-c {_ere(control.doveadm_config)} " if control.doveadm_config else ""
    if control.flush_auth_cache:
        commands.append(f"{DOVEADM} ^{conf}auth cache flush( {USER})?$")
    if control.recalc_quota:
        commands.append(f"{DOVEADM} ^{conf}quota recalc -u {USER}$")
    if control.kick_sessions:
        commands.append(f"{DOVEADM} ^{conf}kick {USER}$")
    if not commands:
        raise ValidationError(f"server {config.name} allows no service and no after-action "
                              "(control.services is empty), so it needs no sudoers line")
    return f"{login_user} ALL=(root) NOPASSWD: " + ", ".join(commands)


def login_user(config: ServerConfig) -> str:
    return getpass.getuser() if config.local else config.user


def check_service(config: ServerConfig, service: str, verb: str) -> None:
    """Refuse, in one sentence, a service podod does not control, one this server does not
    allow, or a verb the service does not support."""
    if service not in VERBS:
        raise ValidationError(f"podod does not control the service '{service}' (it controls "
                              f"{', '.join(VERBS)})")
    if service not in config.control.services:
        allowed = ", ".join(config.control.services) or "none"
        raise PermissionDenied(f"controlling {service} is not allowed on {config.name} "
                               f"(servers[].control.services: {allowed})")
    if verb not in ("status", *VERBS[service]):
        raise ValidationError(f"{service} cannot be {verb}ed (its unit has no {verb}); use "
                              f"'service restart {config.name} {service}'")


def parse_status(stdout: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def refused(result: CommandResult, server: str) -> CommandFailed:
    """``failed`` with a hint when sudo itself refused (the sudoers line is missing)."""
    error = failed(result, server)
    if result.stderr.lstrip().startswith("sudo:"):
        error.message += (f" (the sudoers line it needs: podoctl service sudoers {server}; "
                          "docs/services.md)")
    return error


def brief(result: CommandResult) -> str:
    """A command's output in a few words, for a reply's note (bounded, one line)."""
    text = " ".join((result.stdout or result.stderr).split())
    return text[:200] + ("..." if len(text) > 200 else "")


# -- after-actions -------------------------------------------------------------------------------

def _servers(ctx: CommandContext) -> Any:
    return ctx.runtime.component("servers")


def _configs(ctx: CommandContext) -> list[ServerConfig]:
    servers = _servers(ctx)
    return list(servers.configs()) if servers is not None else []


def _doveadm_action(ctx: CommandContext, config: ServerConfig, args: list[str],
                    description: str, kind: str) -> None:
    name = config.name

    async def run() -> str | None:
        servers = _servers(ctx)
        if servers is None:
            raise PododError("the server connections are not running")
        runner = servers.runner(name)
        control = servers.get(name).control  # as configured now (a reload may have come)
        result = await runner.run(sudo_wrap(control, doveadm_argv(control, *args)))
        if not result.ok:
            raise refused(result, name)
        return brief(result) or None

    ctx.after(description, run, kind=kind)


# SOGo's memcached keys per user: its attributes and checked password; with the profile
# (a deleted user's), also its defaults and settings, which SOGo would otherwise keep serving
# (and writing to a profile row that no longer exists) until they expire.
SOGO_CREDENTIALS = ("attributes",)
SOGO_PROFILE = ("attributes", "defaults", "settings")


def _memcached_action(ctx: CommandContext, config: ServerConfig, users: list[str],
                      description: str, suffixes: tuple[str, ...] = SOGO_CREDENTIALS) -> None:
    name = config.name
    keys = [f"{user}+{suffix}" for user in users for suffix in suffixes]

    async def run() -> str | None:
        servers = _servers(ctx)
        target = servers.get(name).control.sogo_memcached if servers is not None else None
        if target is None:
            raise PododError(f"servers[{name}].control.sogo_memcached is no longer set")
        if target.startswith("tunnel:"):
            host, port = servers.tunnel_address(name, target[7:])
        else:
            host, _, text = target.rpartition(":")
            host, port = host.strip("[]"), int(text)
        limit = MEMCACHED_TIMEOUT + len(keys) / 1000
        answers = await asyncio.wait_for(_memcached_delete(host, port, keys), limit)
        odd = [a for a in answers if a not in ("DELETED", "NOT_FOUND")]
        if odd or len(answers) != len(keys):
            shown = odd[0] if odd else "too few answers"
            raise PododError(f"memcached at {host}:{port} answered {shown[:80]!r}")
        deleted = answers.count("DELETED")
        if len(keys) == 1:
            return f"{keys[0]} {'deleted' if deleted else 'was not cached'}"
        if len(users) == 1:
            return f"{deleted} of {len(keys)} entries deleted"
        return f"{deleted} of {len(keys)} users' entries deleted"

    ctx.after(description, run, kind="sogo_memcached")


async def _memcached_delete(host: str, port: int, keys: list[str]) -> list[str]:
    """One ``delete KEY`` per key on one connection (pipelined); memcached's answers."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        raise PododError(f"memcached at {host}:{port} cannot be reached "
                         f"({exc.strerror or exc})") from None
    answers: list[str] = []
    try:
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            writer.write("".join(f"delete {key}\r\n" for key in chunk).encode())
            await writer.drain()
            for _ in chunk:
                line = await reader.readline()
                if not line:
                    return answers
                answers.append(line.decode("utf-8", "replace").strip())
    finally:
        writer.close()
    return answers


def _safe_user(user: str) -> str | None:
    return user if _USER.fullmatch(user) and len(user) <= 250 else None


def credentials_changed(ctx: CommandContext, user: str, why: str, *,
                        profile: bool = False) -> list[str]:
    """After ``user``'s password changed, or the mailbox was deleted or switched off:
    flush Dovecot's auth cache and SOGo's cached credentials on every server configured to
    (with ``profile``, for a deleted mailbox, SOGo's cached preferences too). Returns the
    notes for the reply (in the sandbox: what a real run will do)."""
    notes: list[str] = []
    for config in _configs(ctx):
        control = config.control
        if control.flush_auth_cache:
            notes += _plan(ctx, user, f"flush {user} from Dovecot's auth cache on {config.name}",
                           partial(_doveadm_action, ctx, config, ["auth", "cache", "flush", user],
                                   f"flush {user} from Dovecot's auth cache on {config.name} "
                                   f"({why})", "flush_auth_cache"))
        if control.sogo_memcached:
            cached = "credentials and profile" if profile else "credentials"
            what = f"delete SOGo's cached {cached} of {user} (memcached of {config.name})"
            notes += _plan(ctx, user, what, partial(
                _memcached_action, ctx, config, [user], what,
                SOGO_PROFILE if profile else SOGO_CREDENTIALS))
    return notes


def domain_changed(ctx: CommandContext, domain: str, users: list[str], why: str) -> list[str]:
    """After a domain's mailboxes were deleted or the domain switched off: flush Dovecot's
    whole auth cache (``doveadm auth cache flush`` with no user; it keeps no index by
    domain) and every one of ``users``' SOGo entries, on every server configured to."""
    notes: list[str] = []
    safe = [u for u in users if _safe_user(u)]
    for config in _configs(ctx):
        control = config.control
        steps: list[tuple[str, Callable[[], None]]] = []
        if control.flush_auth_cache:
            what = f"flush Dovecot's whole auth cache on {config.name}"
            steps.append((what, partial(_doveadm_action, ctx, config, ["auth", "cache", "flush"],
                                        f"{what} ({why} {domain})", "flush_auth_cache")))
        if control.sogo_memcached and safe:
            what = (f"delete SOGo's cached credentials of {len(safe)} users of {domain} "
                    f"(memcached of {config.name})")
            steps.append((what, partial(_memcached_action, ctx, config, safe, what)))
        for what, declare in steps:
            if ctx.sandbox:
                notes.append(f"After the commit podod will {what}.")
            else:
                declare()
        if control.sogo_memcached and len(safe) < len(users):
            notes.append(f"podod cannot delete SOGo's cached credentials of "
                         f"{len(users) - len(safe)} users of {domain} whose addresses have "
                         "characters it does not pass on; they expire by themselves")
    return notes


def quota_changed(ctx: CommandContext, user: str) -> list[str]:
    """After ``user``'s quota changed: flush the auth cache (Dovecot caches the userdb answer
    that carries the quota rule) and ``doveadm quota recalc -u USER`` where configured."""
    notes: list[str] = []
    for config in _configs(ctx):
        if config.control.flush_auth_cache:  # the userdb answer (quota_rule) is cached too
            notes += _plan(ctx, user, f"flush {user} from Dovecot's auth cache on {config.name}",
                           partial(_doveadm_action, ctx, config, ["auth", "cache", "flush", user],
                                   f"flush {user} from Dovecot's auth cache on {config.name} "
                                   "(quota change)", "flush_auth_cache"))
        if config.control.recalc_quota:
            notes += _plan(ctx, user, f"recalculate the quota of {user} on {config.name}",
                           partial(_doveadm_action, ctx, config, ["quota", "recalc", "-u", user],
                                   f"recalculate the quota of {user} on {config.name}",
                                   "recalc_quota"))
    return notes


# doveadm's exit status when nothing matched (DOVEADM_EX_NOTFOUND, EX_NOUSER): for ``kick``,
# the user had no open session.
DOVEADM_NOT_FOUND = 68


def _kick_action(ctx: CommandContext, config: ServerConfig, user: str, why: str) -> None:
    name = config.name

    async def run() -> str | None:
        servers = _servers(ctx)
        if servers is None:
            raise PododError("the server connections are not running")
        control = servers.get(name).control  # as configured now (a reload may have come)
        result = await servers.runner(name).run(
            sudo_wrap(control, doveadm_argv(control, "kick", user)))
        if result.exit_status == DOVEADM_NOT_FOUND and not result.stderr.lstrip().startswith(
                "sudo:"):
            return "no open session"
        if not result.ok:
            raise refused(result, name)
        return brief(result) or None

    ctx.after(f"end the Dovecot sessions of {user} on {name} ({why})", run,
              kind="kick_sessions")


def sessions_ended(ctx: CommandContext, user: str, why: str) -> list[str]:
    """After ``user`` stopped existing under that address (a rename): end its open Dovecot
    sessions (``doveadm kick USER``) on every server configured to, so no IMAP client keeps
    working on the old name. Returns the notes for the reply."""
    notes: list[str] = []
    for config in _configs(ctx):
        if config.control.kick_sessions:
            notes += _plan(ctx, user, f"end the Dovecot sessions of {user} on {config.name}",
                           partial(_kick_action, ctx, config, user, why))
    return notes


def _plan(ctx: CommandContext, user: str, what: str, declare: Callable[[], None]) -> list[str]:
    if _safe_user(user) is None:
        return [f"podod cannot {what}: the address has characters it does not pass to "
                "server commands; do it by hand"]
    if ctx.sandbox:
        return [f"After the commit podod will {what}."]
    declare()
    return []


def shown(argv: list[str]) -> str:
    return shlex.join(argv)
