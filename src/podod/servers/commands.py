"""``server list|show|add|remove|reconnect|commands`` and the ``servers`` component."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import pydantic

from podod.bus.context import CommandContext, Reply, Table
from podod.bus.shapes import BOOL, INT, NULL, NUM, STR, arr, nullable, obj, one_of
from podod.bus.spec import Arg, Opt
from podod.durations import format_duration
from podod.errors import Conflict, NotFound, ValidationError
from podod.plugins import Registry
from podod.servers.hostkeys import key_status, keyscan_hint, known_hosts_path
from podod.servers.local import CONNECTED, LocalServer, utc
from podod.servers.manager import ServerManager
from podod.servers.settings import ServerConfig
from podod.settings_base import format_validation_error

_TUNNEL = re.compile(r"([^:]+):(\[[^\]]+\]|[^:\[\]]+):([^:]+)(?::([^:]+))?")
_KEY = re.compile(r"[a-z_]+(\[\d+\])?(\.[a-z_]+)?")
_FLAGS = {"name": "NAME", "host": "--host", "port": "--port", "user": "--user",
          "key_file": "--key-file", "known_hosts": "--known-hosts", "services": "--services",
          "mail_log": "--mail-log", "tunnels": "--tunnel"}
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


def manager_of(ctx: CommandContext) -> ServerManager:
    manager = ctx.runtime.component("servers")
    if not isinstance(manager, ServerManager):
        raise NotFound("the server connections are not running (see 'status')")
    return manager


def _ms(seconds: float | None) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds is not None else "-"


def _state_text(s: dict[str, Any]) -> str:
    if s["state"] == "disconnected":
        if s.get("attempting"):
            return "disconnected (trying now)"
        if s.get("next_attempt_in") is not None:
            return (f"disconnected (attempt {s['failed_attempts'] + 1} in "
                    f"{s['next_attempt_in']:.1f} s)")
    return str(s["state"])


def parse_tunnel(spec: str) -> dict[str, Any]:
    """``name:remote_host:remote_port[:local_port]`` (an IPv6 host in brackets)."""
    match = _TUNNEL.fullmatch(spec.strip())
    if match is None:
        raise ValidationError(f"server add: --tunnel '{spec}' is not "
                              "NAME:REMOTE_HOST:REMOTE_PORT[:LOCAL_PORT] (for example "
                              "postgres:127.0.0.1:5432)")
    name, host, remote, local = match.groups()
    out: dict[str, Any] = {"name": name, "remote_host": host}
    for key, value in (("remote_port", remote), ("local_port", local)):
        if value is None:
            continue
        if not (value.isascii() and value.isdigit() and len(value) <= 5):  # not '²', not 1e9
            raise ValidationError(f"server add: --tunnel '{spec}': {key.replace('_', ' ')} "
                                  f"'{value}' is not a port number")
        out[key] = int(value)
    return out


def _validation_sentence(exc: pydantic.ValidationError, tunnels: list[dict[str, Any]]) -> str:
    """The first problem, named by the option the admin typed."""
    line = format_validation_error("server add", exc).splitlines()[0]
    key, sep, message = line.removeprefix("server add: ").partition(": ")
    if not sep or not _KEY.fullmatch(key):
        return line
    tunnel = re.fullmatch(r"tunnels\[(\d+)\](?:\.(\w+))?", key)
    if tunnel is not None:
        name = tunnels[int(tunnel[1])].get("name", "?")
        field = (tunnel[2] or "").replace("_", " ")
        return f"server add: --tunnel {name}: {field + ' ' if field else ''}{message}"
    flag = _FLAGS.get(key.split("[")[0], "--" + key.replace("_", "-"))
    return f"server add: {flag} {message}"


def _check_key(path: Path | None) -> str:
    """Refuse a key podod could not use; return what will be used."""
    if path is None:
        ssh = Path("~", ".ssh").expanduser()
        found = [ssh / n for n in DEFAULT_KEYS if (ssh / n).is_file()]
        if not found:
            raise ValidationError(f"server add: --key-file is needed: podod's user has no "
                                  f"default key in {ssh}")
        path = found[0]
    if not path.is_absolute():
        raise ValidationError(f"server add: --key-file must be an absolute path, not '{path}'")
    import asyncssh  # only for a remote server: never at start-up (docs/architecture.md)

    try:
        asyncssh.read_private_key(str(path))
    except FileNotFoundError:
        raise ValidationError(f"server add: the key file {path} does not exist") from None
    except PermissionError:
        raise ValidationError(f"server add: the key file {path} cannot be read by podod "
                              "(permission denied)") from None
    except IsADirectoryError:
        raise ValidationError(f"server add: the key file {path} is a folder") from None
    except OSError as exc:
        raise ValidationError(f"server add: the key file {path} cannot be read "
                              f"({exc.strerror})") from None
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        if "assphrase" in str(exc):
            raise ValidationError(f"server add: the key file {path} is protected by a "
                                  "passphrase; give podod a key without one (or configure "
                                  "the server in podod.yaml with key_passphrase_file)") from None
        raise ValidationError(f"server add: the key file {path} is not a private key podod "
                              "can use") from None
    return str(path)


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


async def _resolve(host: str, port: int) -> None:
    try:
        await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM), 10)
    except (OSError, TimeoutError) as exc:
        reason = getattr(exc, "strerror", None) or "no answer"
        raise ValidationError(f"server add: the host name {host} cannot be resolved "
                              f"({reason})") from None


async def validate_new_server(manager: ServerManager, name: str, values: dict[str, Any],
                              *, command: str = "server add"
                              ) -> tuple[ServerConfig, list[str]]:
    """Everything ``server add`` checks, sandbox or real; returns the config and notes.
    ``server update`` checks its new settings the same way (the name is its own)."""
    replacing = command != "server add"
    if not replacing and manager.source_of(name) is not None:
        raise Conflict(f"{command}: a server named {name} exists already")
    tunnels = [parse_tunnel(t) for t in values.pop("tunnels", [])]
    for key in ("key_file", "known_hosts"):
        value = values.get(key)
        if value is not None and not os.path.isabs(value):
            raise ValidationError(f"{command}: {_FLAGS[key]} must be an absolute path, "
                                  f"not '{value}'")
    data = {"name": name, **{k: v for k, v in values.items() if v is not None},
            "tunnels": tunnels}
    try:
        config = ServerConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(_validation_sentence(exc, tunnels).replace(
            "server add:", f"{command}:", 1)) from None
    notes = []
    key = _check_key(Path(config.key_file) if config.key_file else None)
    if config.key_file is None:
        notes.append(f"no --key-file: podod will log in with {key}")
    hosts = known_hosts_path(config)
    if config.known_hosts is not None and not hosts.is_file():
        raise ValidationError(f"{command}: the known_hosts file {hosts} does not exist")
    await _resolve(config.host or "", config.port)
    status = key_status(config)
    if status == "unreadable":
        raise ValidationError(f"{command}: the known_hosts file {hosts} cannot be read by "
                              "podod")
    if status in ("unknown", "no-file"):
        notes.append(f"{hosts} has no host key for {config.address} yet: podod will refuse "
                     f"to connect until you add it after checking its fingerprint "
                     f"({keyscan_hint(config)})")
    taken = {port: f"{s['name']}'s tunnel {t['name']}"
             for s in manager.statuses() for t in s["tunnels"]
             if (port := t.get("local_port")) and not s["local"]
             and not (replacing and s["name"] == name)}
    for tunnel in config.tunnels:
        if not tunnel.local_port:
            continue
        if tunnel.local_port in taken:
            raise Conflict(f"{command}: local port {tunnel.local_port} of tunnel "
                           f"{tunnel.name} is used by {taken[tunnel.local_port]}")
        if _port_in_use(tunnel.local_port) and not replacing:
            raise Conflict(f"{command}: local port {tunnel.local_port} of tunnel "
                           f"{tunnel.name} is already in use on this machine")
    return config, notes


def _show_rows(s: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = [
        ["name", s["name"]],
        ["from", "podod.yaml" if s["source"] == "config" else
         f"server add by {s.get('added_by', '?')} at {utc(s['added_at'])}"
         if s.get("added_at") else "server add"],
        ["address", s["address"]],
    ]
    if not s["local"]:
        rows += [["user", s["user"]], ["key file", s["key_file"] or "podod's default keys"],
                 ["known_hosts", s["known_hosts"]]]
    rows += [["state", _state_text(s)], ["since", s["since_text"]]]
    if not s["local"]:
        error = s["last_error"] or "none"
        if s["last_error"] and s["last_error_at"]:
            error = f"{error} (at {utc(s['last_error_at'])})"
        rows += [["last error", error], ["round trip", _ms(s["rtt_seconds"])],
                 ["reconnects", s["reconnects"]],
                 ["commands", f"{s['commands_running']} running (at most "
                              f"{s['max_commands']})"]]
    for t in s["tunnels"]:
        state = "open" if t["open"] else f"closed{': ' + t['error'] if t['error'] else ''}"
        rows.append([f"tunnel {t['name']}", f"{t['local']} -> {t['remote']} ({state})"])
    rows += [["services", ", ".join(s["services"]) or "none"],
             ["mail log", s["mail_log"] or "not followed"]]
    return rows


_TUNNEL_REPLY = obj({"name": STR, "local": STR, "local_port": nullable(INT), "remote": STR,
               "open": BOOL, "error": nullable(STR), "stopped": BOOL}, optional=("stopped",))
TUNNEL_STATUS_REPLY = arr(obj({"server": STR, "name": STR, "local": STR,
                               "local_port": nullable(INT), "remote": STR, "open": BOOL,
                               "error": nullable(STR), "stopped": BOOL}),
                          "one object per tunnel of the server")
SERVER_REPLY = obj({
    "name": STR, "source": STR, "local": BOOL, "state": STR, "since": NUM, "since_text": STR,
    "host": nullable(STR), "port": nullable(INT), "address": STR, "user": nullable(STR),
    "key_file": nullable(STR), "known_hosts": nullable(STR), "rtt_seconds": nullable(NUM),
    "reconnects": INT, "last_error": nullable(STR), "last_error_at": nullable(NUM),
    "failed_attempts": INT, "attempting": BOOL, "next_attempt_in": nullable(NUM),
    "commands_running": nullable(INT), "max_commands": INT, "tunnels": arr(_TUNNEL_REPLY),
    "services": arr(STR), "mail_log": nullable(STR), "added_by": STR, "added_at": NUM},
    optional=("attempting", "added_by", "added_at"),
    description="a server and the state of its connection (times: Unix seconds)")
SERVER_CONFIG = obj({"name": STR, "host": nullable(STR), "port": INT},
                    optional=("host", "port"),
                    description="the server's settings as they would be stored (sandbox)")
ALLOWLIST = arr(obj({"command": STR, "purpose": STR, "plugin": STR}))


def setup(registry: Registry) -> None:
    registry.component("servers", ServerManager)

    @registry.command(
        "server list", "List the managed servers and the state of their connections",
        examples=["server list"], reply=arr(SERVER_REPLY))
    async def server_list(ctx: CommandContext) -> Reply:
        statuses = manager_of(ctx).statuses()
        rows = [[s["name"], _state_text(s), format_duration(time.time() - s["since"]) + " ago",
                 s["address"], _ms(s["rtt_seconds"]), s["reconnects"],
                 s["last_error"] if s["state"] not in (CONNECTED, "local") else ""]
                for s in statuses]
        message = f"{len(statuses)} servers" if statuses else \
            "no servers yet: add one with 'server add' or in podod.yaml"
        return Reply(message=message, data=statuses, table=Table(
            ["name", "state", "since", "address", "round trip", "reconnects", "last error"],
            rows, title="servers"))

    @registry.command(
        "server show", "Show one server: connection, errors, round trip, tunnels",
        params=[Arg("name", "the server's name", metavar="NAME")],
        examples=["server show mx1"], reply=SERVER_REPLY)
    async def server_show(ctx: CommandContext, name: str) -> Reply:
        s = manager_of(ctx).status(name)
        return Reply(message=f"server {name}: {_state_text(s)}", data=s,
                     table=Table(["item", "value"], _show_rows(s), title=f"server {name}"))

    @registry.command(
        "server add", "Add a server, persist it and connect to it",
        params=[
            Arg("name", "a short name: lower-case letters, digits, '.', '_' or '-'",
                metavar="NAME"),
            Opt("host", "host name or address of its SSH server", required=True,
                metavar="HOST"),
            Opt("port", "SSH port (default 22)", kind="int"),
            Opt("user", "the SSH user podod logs in as (default podod; use a dedicated "
                        "non-root user)", metavar="USER"),
            Opt("key_file", "absolute path of the private key podod logs in with (default: "
                            "podod's ~/.ssh/id_*)", metavar="PATH"),
            Opt("known_hosts", "absolute path of the known_hosts file holding its host key "
                               "(default: podod's ~/.ssh/known_hosts)", metavar="PATH"),
            Opt("services", "systemd units to watch, e.g. postfix,dovecot", kind="list"),
            Opt("mail_log", "the mail log to follow: a file path, or 'journal'",
                metavar="PATH|journal"),
            Opt("tunnel", "a local port forward NAME:REMOTE_HOST:REMOTE_PORT[:LOCAL_PORT]; "
                          "repeat the option for more", kind="list", metavar="SPEC"),
        ],
        permission="admin", mutating=True, reply=one_of(SERVER_REPLY, SERVER_CONFIG),
        description="The sandbox run checks everything (the name is free, the host resolves, "
                    "the key file is a readable private key, the known_hosts file, the "
                    "tunnels' ports) and shows the plan; with --execute-real the server is "
                    "stored in the state database and connected at once. Its host key must "
                    "be in the known_hosts file: podod never trusts a key on first use.",
        examples=["server add mx2 --host mx2.example.org --key-file /etc/podod/ssh/id_ed25519 "
                  "--known-hosts /etc/podod/ssh/known_hosts --services postfix,dovecot "
                  "--mail-log /var/log/mail.log --tunnel postgres:127.0.0.1:5432"])
    async def server_add(ctx: CommandContext, name: str, host: str, port: int | None,
                         user: str | None, key_file: str | None, known_hosts: str | None,
                         services: list[str] | None, mail_log: str | None,
                         tunnel: list[str] | None) -> Reply:
        manager = manager_of(ctx)
        config, notes = await validate_new_server(manager, name, {
            "host": host, "port": port, "user": user, "key_file": key_file,
            "known_hosts": known_hosts, "services": services, "mail_log": mail_log,
            "tunnels": tunnel or []})
        detail: dict[str, Any] = {"address": config.address, "user": config.user}
        if config.tunnels:
            detail["tunnels"] = ", ".join(
                f"{t.name}={t.remote_host}:{t.remote_port}" for t in config.tunnels)
        ctx.record("insert", "server", name, **detail)
        data = config.model_dump(mode="json", exclude={"key_passphrase"})
        if ctx.sandbox:  # the sandbox stops here: nothing stored, nothing connected
            return Reply(message=f"would add server {name} ({config.address} as "
                                 f"{config.user}) and connect to it", data=data, notes=notes)
        connection = await manager.add(config, ctx.actor.name)
        if connection.state == CONNECTED:
            rtt = None if isinstance(connection, LocalServer) else connection.rtt
            outcome = f"connected (round trip {_ms(rtt)})"
        else:
            assert not isinstance(connection, LocalServer)
            reason = connection.last_error or "the first attempt is still under way"
            outcome = (f"not connected yet: {reason}; podod keeps trying (see 'server show "
                       f"{name}')")
        status = manager.status(name)
        for t in status["tunnels"]:
            notes.append(f"tunnel {t['name']}: {t['local']} -> {t['remote']}")
        return Reply(message=f"added server {name}; {outcome}", data=status, notes=notes)

    @registry.command(
        "server update", "Change a server added with 'server add' and reconnect it",
        params=[
            Arg("name", "the server's name", metavar="NAME"),
            Opt("host", "host name or address of its SSH server", metavar="HOST"),
            Opt("port", "SSH port", kind="int"),
            Opt("user", "the SSH user podod logs in as", metavar="USER"),
            Opt("key_file", "absolute path of the private key podod logs in with",
                metavar="PATH"),
            Opt("known_hosts", "absolute path of the known_hosts file holding its host key",
                metavar="PATH"),
            Opt("services", "systemd units to watch (replaces the list)", kind="list"),
            Opt("mail_log", "the mail log to follow: a file path, or 'journal'",
                metavar="PATH|journal"),
            Opt("tunnel", "the local port forwards NAME:REMOTE_HOST:REMOTE_PORT[:LOCAL_PORT] "
                          "(replaces them all; repeat the option for more)", kind="list",
                metavar="SPEC"),
        ],
        permission="admin", mutating=True, reply=one_of(SERVER_REPLY, SERVER_CONFIG),
        description="Only the options given change. The new settings are checked as "
                    "'server add' checks them; for real, the server is stored with them and "
                    "its connection is closed and opened again. Servers listed in podod.yaml "
                    "are changed there (and podod reloaded).",
        examples=["server update mx2 --host 192.0.2.25",
                  "server update mx2 --services postfix,dovecot,rspamd"])
    async def server_update(ctx: CommandContext, name: str, host: str | None,
                            port: int | None, user: str | None, key_file: str | None,
                            known_hosts: str | None, services: list[str] | None,
                            mail_log: str | None, tunnel: list[str] | None) -> Reply:
        manager = manager_of(ctx)
        source = manager.source_of(name)
        if source is None:
            manager.connection(name)  # raises NotFound with the list of servers
        if name not in manager.added:
            raise Conflict(f"server {name} is configured in podod.yaml; change it there and "
                           "reload podod (systemctl reload podod)")
        old = manager.added[name].config
        given = {"host": host, "port": port, "user": user, "key_file": key_file,
                 "known_hosts": known_hosts, "services": services, "mail_log": mail_log}
        if all(v is None for v in given.values()) and tunnel is None:
            raise ValidationError("server update: nothing to change (give --host, --port, "
                                  "--user, --key-file, --known-hosts, --services, --mail-log "
                                  "or --tunnel)")
        current = old.model_dump(mode="json", exclude={"key_passphrase", "name", "tunnels"})
        values = {**current, **{k: v for k, v in given.items() if v is not None}}
        specs = tunnel if tunnel is not None else [
            f"{t.name}:{t.remote_host}:{t.remote_port}" + (f":{t.local_port}"
                                                            if t.local_port else "")
            for t in old.tunnels]
        config, notes = await validate_new_server(manager, name, {**values, "tunnels": specs},
                                                  command="server update")
        before = old.model_dump(mode="json", exclude={"key_passphrase"})
        after = config.model_dump(mode="json", exclude={"key_passphrase"})
        changed = {k: after[k] for k in after if after[k] != before.get(k)}
        if not changed:
            return Reply(message=f"server {name} has these settings already; nothing to do",
                         data=after)
        ctx.record("update", "server", name, **{k: str(v) for k, v in changed.items()})
        if ctx.sandbox:
            return Reply(message=f"would change server {name} ({', '.join(changed)}) and "
                                 "reconnect it", data=after, notes=notes)
        await manager.replace(config, ctx.actor.name)
        return Reply(message=f"changed server {name} ({', '.join(changed)}); reconnecting",
                     data=manager.status(name), notes=notes)

    @registry.command(
        "server remove", "Forget a server added with 'server add' and close its connection",
        params=[Arg("name", "the server's name", metavar="NAME")],
        permission="admin", mutating=True, reply=NULL,
        description="Servers listed in podod.yaml stay configured: remove them from the file "
                    "and reload podod instead.",
        examples=["server remove mx2"])
    async def server_remove(ctx: CommandContext, name: str) -> Reply:
        manager = manager_of(ctx)
        source = manager.source_of(name)
        if source is None:
            manager.connection(name)  # raises NotFound with the list of servers
        if source == "config" and name not in manager.added:
            raise Conflict(f"server {name} is configured in podod.yaml; remove it there and "
                           "reload podod (systemctl reload podod)")
        mail = ctx.runtime.config.mail
        for db_name, database in mail.all_databases().items():
            if database.via_server == name:
                raise Conflict(f"server {name} carries the tunnel of mail database "
                               f"{db_name} ({mail.option(db_name)}.via_server); change that "
                               "first" if mail.databases else
                               f"server {name} carries the mail database's tunnel "
                               "(mail.database.via_server); change that first")
        config = manager.added[name].config
        ctx.record("delete", "server", name, address=config.address)
        if ctx.sandbox:  # the sandbox stops here
            return Reply(message=f"would remove server {name} and close its connection")
        return Reply(message=await manager.remove(name))

    def _tunnels(ctx: CommandContext, server: str, tunnel: str | None) -> Any:
        connection = manager_of(ctx).connection(server)
        tunnels = getattr(connection, "tunnels", None)
        if not isinstance(tunnels, dict):
            raise NotFound(f"server {server} is local: it has no SSH tunnels")
        if tunnel is not None and tunnel not in tunnels:
            names = ", ".join(tunnels) or "none"
            raise NotFound(f"server {server} has no tunnel named '{tunnel}' (its tunnels: "
                           f"{names})")
        return connection

    def _tunnel_rows(server: str, connection: Any) -> list[dict[str, Any]]:
        return [{"server": server, **t.describe()} for t in connection.tunnels.values()]

    @registry.command(
        "server tunnel status", "Show a server's SSH tunnels: local end, far end, open or not",
        params=[Arg("server", "the server's name", metavar="SERVER"),
                Opt("tunnel", "only this tunnel", metavar="NAME")],
        examples=["server tunnel status db1"], reply=TUNNEL_STATUS_REPLY)
    async def tunnel_status(ctx: CommandContext, server: str, tunnel: str | None) -> Reply:
        connection = _tunnels(ctx, server, tunnel)
        rows = [r for r in _tunnel_rows(server, connection)
                if tunnel is None or r["name"] == tunnel]
        return Reply(message=f"{len(rows)} tunnel{'s' if len(rows) != 1 else ''} of {server}",
                     data=rows, table=Table(
                         ["tunnel", "local", "remote", "state"],
                         [[r["name"], r["local"], r["remote"],
                           "stopped" if r["stopped"] else "open" if r["open"]
                           else f"closed: {r['error'] or 'not connected'}"] for r in rows],
                         title=f"tunnels of {server}"))

    @registry.command(
        "server tunnel stop", "Close one of a server's SSH tunnels and keep it closed",
        params=[Arg("server", "the server's name", metavar="SERVER"),
                Arg("tunnel", "the tunnel's name", metavar="TUNNEL")],
        permission="admin", mutating=True, reply=NULL,
        description="It stays closed across reconnects until 'server tunnel start'. The tunnel the "
                    "mail database is reached through (mail.database.via_server/tunnel) is "
                    "refused: podod would lose its database.",
        examples=["server tunnel stop db1 replica"])
    async def tunnel_stop(ctx: CommandContext, server: str, tunnel: str) -> Reply:
        connection = _tunnels(ctx, server, tunnel)
        mail = ctx.runtime.config.mail
        for db_name, database in mail.all_databases().items():
            if database.via_server == server and (database.tunnel or "postgres") == tunnel:
                raise Conflict(f"the mail database{' ' + db_name if mail.databases else ''} "
                               f"is reached through the tunnel {tunnel} of {server} "
                               f"({mail.option(db_name)}.via_server); it stays open")
        ctx.record("stop", "tunnel", f"{server}/{tunnel}")
        if ctx.sandbox:
            return Reply(message=f"would stop the tunnel {tunnel} of {server}")
        connection.stop_tunnel(tunnel)
        again = ctx.command_ref(f"server tunnel start {server} {tunnel}")
        return Reply(message=f"tunnel {tunnel} of {server} stopped; '{again}' opens it again")

    @registry.command(
        "server tunnel start", "Open one of a server's SSH tunnels (again) now",
        params=[Arg("server", "the server's name", metavar="SERVER"),
                Arg("tunnel", "the tunnel's name", metavar="TUNNEL")],
        permission="admin", mutating=True, reply=NULL,
        description="Opens a tunnel stopped with 'server tunnel stop', or one that failed to open, "
                    "on its local port; it is opened on every later connect too.",
        examples=["server tunnel start db1 replica"])
    async def tunnel_start(ctx: CommandContext, server: str, tunnel: str) -> Reply:
        connection = _tunnels(ctx, server, tunnel)
        ctx.record("start", "tunnel", f"{server}/{tunnel}")
        if ctx.sandbox:
            return Reply(message=f"would start the tunnel {tunnel} of {server}")
        if await connection.start_tunnel(tunnel):
            host, port = connection.tunnel_address(tunnel)
            return Reply(message=f"tunnel {tunnel} of {server} open on {host}:{port}")
        state = connection.tunnels[tunnel].error or f"server {server} is not connected"
        return Reply(message=f"tunnel {tunnel} of {server} will open when it can: {state}")

    @registry.command(
        "server reconnect", "Try to connect to a disconnected server now, without waiting",
        params=[Arg("name", "the server's name", metavar="NAME")], permission="admin",
        examples=["server reconnect mx1"], reply=NULL)
    async def server_reconnect(ctx: CommandContext, name: str) -> Reply:
        connection = manager_of(ctx).connection(name)
        if connection.state in (CONNECTED, "local"):
            return Reply(message=f"server {name} is connected; nothing to do")
        connection.reconnect_now()
        return Reply(message=f"server {name}: trying to connect now (see 'server show {name}')")

    @registry.command(
        "server commands", "Show the allow-list: every command podod may run on a server",
        examples=["server commands"], reply=ALLOWLIST)
    async def server_commands(ctx: CommandContext) -> Reply:
        entries = ctx.runtime.registry.allowlist.describe()
        rows = [[e["command"], e["purpose"], e["plugin"]] for e in entries]
        return Reply(message=f"{len(entries)} allow-listed commands and scripts; nothing else "
                             "runs on a server", data=entries,
                     table=Table(["command (arguments are regular expressions)", "purpose",
                                  "declared by"], rows, title="allow-list"))
