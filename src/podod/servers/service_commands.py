"""``service status|reload|restart|sudoers`` and ``server tunnel restart`` (docs/services.md).

Admin only. ``service reload`` and ``service restart`` interrupt a service, so they are
changing commands: the sandbox says which command would run where, ``--execute-real`` runs
it. Every request is audited by the bus like any other.
"""

from __future__ import annotations

from podod.bus.context import CommandContext, Reply, Table
from podod.bus.shapes import BOOL, INT, NULL, STR, arr, nullable, obj
from podod.bus.spec import Arg, Opt, Param
from podod.errors import NotFound, PododError, ValidationError
from podod.plugins import Registry
from podod.servers.commands import manager_of
from podod.servers.runner import CommandFailed, failed
from podod.servers.services import (
    RESTART_TIMEOUT,
    VERBS,
    allow,
    brief,
    check_service,
    login_user,
    parse_status,
    refused,
    shown,
    status_argv,
    sudo_wrap,
    sudoers_line,
    systemctl_argv,
)

SERVICES = list(VERBS)
STATUS_REPLY = obj({"server": STR, "service": STR, "active": STR, "sub": STR, "load": STR,
                    "pid": nullable(INT), "since": STR})
SUDOERS_REPLY = arr(obj({"server": STR, "user": STR, "rule": nullable(STR),
                         "note": nullable(STR)}))
TUNNEL_REPLY = arr(obj({"name": STR, "local": STR, "local_port": nullable(INT), "remote": STR,
                        "open": BOOL, "error": nullable(STR)}))


def _params() -> list[Param]:
    return [Arg("server", "the server's name (server list)", metavar="SERVER"),
            Arg("service", "the service", kind="choice", choices=tuple(SERVICES),
                metavar="SERVICE")]


def setup(registry: Registry) -> None:
    allow(registry.remote_command)

    @registry.command(
        "service status", "Show whether a mail service runs on a server (systemctl show)",
        params=_params(), permission="admin", reply=STATUS_REPLY,
        examples=["service status mx1 dovecot"])
    async def service_status(ctx: CommandContext, server: str, service: str) -> Reply:
        manager = manager_of(ctx)
        config = manager.get(server)
        check_service(config, service, "status")
        result = await manager.runner(server).run(status_argv(service))
        if not result.ok:
            raise failed(result, server)
        props = parse_status(result.stdout)
        pid = int(props["MainPID"]) if props.get("MainPID", "").isdigit() else None
        data = {"server": server, "service": service,
                "active": props.get("ActiveState", "unknown"),
                "sub": props.get("SubState", ""), "load": props.get("LoadState", ""),
                "pid": pid or None, "since": props.get("ActiveEnterTimestamp", "")}
        rows: list[list[object]] = [
                ["active", f"{data['active']} ({data['sub']})"], ["loaded", data["load"]],
                ["main pid", str(pid or "-")], ["since", data["since"] or "-"]]
        return Reply(message=f"{service} on {server}: {data['active']} ({data['sub']})",
                     data=data, table=Table(["item", "value"], rows,
                                            title=f"{service} on {server}"))

    async def control(ctx: CommandContext, verb: str, server: str, service: str) -> Reply:
        manager = manager_of(ctx)
        config = manager.get(server)
        check_service(config, service, verb)
        argv = sudo_wrap(config.control, systemctl_argv(verb, service))
        ctx.record(verb, "service", f"{service}@{server}", command=shown(argv))
        if ctx.sandbox:
            return Reply(message=f"would {verb} {service} on {server} ({shown(argv)})")
        result = await manager.runner(server).run(argv, timeout=RESTART_TIMEOUT)
        if not result.ok:
            error = refused(result, server)
            raise CommandFailed(f"{service} on {server} was not {verb}ed: {error.message}")
        output = brief(result)
        return Reply(message=f"{service} {verb}ed on {server}",
                     notes=[f"output: {output}"] if output else [])

    @registry.command(
        "service reload", "Reload a mail service on a server (systemctl reload, via sudo)",
        params=_params(), permission="admin", mutating=True, reply=NULL,
        description="postfix, dovecot and nginx can be reloaded; sogo and memcached only "
                    "restarted. docs/services.md says which change needs which.",
        examples=["service reload mx1 dovecot --execute-real"])
    async def service_reload(ctx: CommandContext, server: str, service: str) -> Reply:
        return await control(ctx, "reload", server, service)

    @registry.command(
        "service restart", "Restart a mail service on a server (systemctl restart, via sudo)",
        params=_params(), permission="admin", mutating=True, reply=NULL,
        timeout=RESTART_TIMEOUT + 30,
        description="A restart drops the service's open connections (IMAP sessions, SMTP "
                    "deliveries in progress are retried by the sender).",
        examples=["service restart mx1 sogo --execute-real"])
    async def service_restart(ctx: CommandContext, server: str, service: str) -> Reply:
        return await control(ctx, "restart", server, service)

    @registry.command(
        "service sudoers", "Show the sudoers lines the service commands and after-actions need",
        params=[Arg("server", "only this server", required=False, metavar="SERVER")],
        permission="admin", reply=SUDOERS_REPLY,
        description="Put each line into /etc/sudoers.d/podod on its server (visudo -f): it "
                    "lets podod's login user run exactly these commands as root.")
    async def service_sudoers(ctx: CommandContext, server: str | None) -> Reply:
        manager = manager_of(ctx)
        configs = [manager.get(server)] if server is not None else manager.configs()
        if not configs:
            raise NotFound("podod manages no server (servers: in podod.yaml)")
        data, lines = [], []
        for config in configs:
            user = login_user(config)
            try:
                rule: str | None = sudoers_line(config, user)
                note = None
                lines.append(f"# {config.name}\n{rule}")
            except ValidationError as exc:
                rule, note = None, exc.message
                lines.append(f"# {config.name}: {note}")
            data.append({"server": config.name, "user": user, "rule": rule, "note": note})
        return Reply(message="\n".join(lines), data=data)

    @registry.command(
        "server tunnel restart", "Close a server's SSH tunnels and open them again",
        params=[Arg("server", "the server's name", metavar="SERVER"),
                Opt("tunnel", "only this tunnel (default: all of them)")],
        permission="admin", reply=TUNNEL_REPLY,
        description="Each tunnel keeps its local port. Connections through it (the mail "
                    "database's pool) are cut and open again on their next use.",
        examples=["server tunnel restart mx1", "server tunnel restart mx1 --tunnel postgres"])
    async def server_tunnel_restart(ctx: CommandContext, server: str,
                                    tunnel: str | None) -> Reply:
        manager = manager_of(ctx)
        connection = manager.connection(server)
        config = connection.config
        if not config.tunnels:
            raise ValidationError(f"server {server} has no tunnels")
        names = [t.name for t in config.tunnels]
        if tunnel is not None:
            if tunnel not in names:
                raise NotFound(f"server {server} has no tunnel named '{tunnel}' (its tunnels: "
                               f"{', '.join(names)})")
            names = [tunnel]
        described = await connection.restart_tunnels(names)
        broken = [d for d in described if not d["open"]]
        rows = [[d["name"], d["local"], d["remote"], "open" if d["open"] else d["error"]]
                for d in described]
        table = Table(["tunnel", "local", "remote", "state"], rows, title=f"tunnels of {server}")
        if broken:
            raise PododError(f"tunnel {broken[0]['name']} of {server} did not open again: "
                             f"{broken[0]['error']}", code="failed")
        return Reply(message=f"{len(described)} tunnel{'s' if len(described) != 1 else ''} "
                             f"of {server} restarted, on the same local ports",
                     data=described, table=table)
