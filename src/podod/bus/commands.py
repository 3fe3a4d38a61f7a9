"""The bus's own commands: status, help, audit list|verify, confirm."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from podod.bus import grammar
from podod.bus.context import CommandContext, Reply, Table
from podod.bus.paging import Page, page_message, page_note, page_options
from podod.bus.spec import Arg, Opt
from podod.durations import format_duration
from podod.errors import UsageError
from podod.plugins import Registry

AUDIT_PAGE = 20  # audit records shown without --limit


def _ts(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def setup(registry: Registry) -> None:
    @registry.command("status", "Show the daemon's version, uptime, plugins and servers")
    async def status(ctx: CommandContext) -> Reply:
        rt = ctx.runtime
        uptime = time.time() - rt.started_at
        plugins = [
            {"name": p.name, "source": p.source, "loaded": p.loaded, "error": p.error}
            for p in rt.registry.plugins.values()
        ]
        servers_component = rt.component("servers")
        if servers_component is not None and hasattr(servers_component, "summary"):
            servers: list[dict[str, Any]] = servers_component.summary()
        else:
            servers = [{"name": s.name, "state": "local" if s.local else "not monitored"}
                       for s in rt.config.servers]
        data = {
            "version": rt.version, "uptime_seconds": round(uptime, 1),
            "started_at": _ts(rt.started_at), "config": str(rt.config_path or "(built in)"),
            "state_dir": str(rt.config.state_dir), "commands": len(rt.registry.commands),
            "plugins": plugins, "servers": servers,
        }
        # A plugin that failed to load, or whose component failed to start.
        failed = [p for p in plugins if not p["loaded"] or p["error"]]
        rows: list[list[Any]] = [
            ["version", rt.version], ["uptime", format_duration(uptime)],
            ["config", data["config"]], ["state dir", data["state_dir"]],
            ["plugins", ", ".join(str(p["name"]) for p in plugins if p["loaded"]) or "none"],
        ]
        if failed:
            rows.append(["failed",
                         "; ".join(f"{p['name']}: {p['error']}" for p in failed)])
        rows.append(["servers", ", ".join(
            f"{s['name']} ({s.get('state', '?')})" for s in servers) or "none configured"])
        return Reply(message=f"podod {rt.version} is running", data=data,
                     table=Table(["item", "value"], rows, title="podod status"))

    @registry.command(
        "help", "List the commands, or explain one",
        params=[Arg("topic", "a command or a noun, e.g. 'user create' or 'user'",
                    required=False, metavar="COMMAND"),
                Arg("verb", "", required=False, metavar="VERB"),
                Arg("more", "", required=False, metavar="...")],
        examples=["help", "help user", "help user create"],
    )
    async def help_(ctx: CommandContext, topic: str | None, verb: str | None,
                    more: str | None) -> Reply:
        commands = ctx.runtime.registry.commands
        words = " ".join(w for w in (topic, verb, more) if w).lower()
        if words in commands:
            spec = commands[words]
            return Reply(message=grammar.command_help(spec), data=grammar.help_data(spec))
        entries = grammar.overview(commands, words)
        if not entries:
            raise UsageError(f"no command or topic '{words}'; try 'help' for the list")
        mutating = {n for n, s in commands.items() if s.mutating}
        lines = ["Commands (changes are sandbox dry runs unless --execute-real is given):"]
        width = max(len(n) for n, _ in entries)
        lines += [f"  {n.ljust(width)}  {s}{' *' if n in mutating else ''}"
                  for n, s in entries]
        lines.append("'*' marks commands that change data. 'help COMMAND' explains one.")
        return Reply(message="\n".join(lines),
                     data=[{"command": n, "summary": s, "mutating": n in mutating}
                           for n, s in entries])

    @registry.command(
        "audit list", "Show the most recent audit records",
        params=[*page_options("records", "id", default=AUDIT_PAGE, cursor="before"),
                Opt("actor", "only this actor (e.g. unix:alice)"),
                Opt("command", "only commands starting with this (e.g. 'user')"),
                Opt("since", "only records newer than this (e.g. 24h)", kind="duration")],
        permission="admin",
    )
    async def audit_list(ctx: CommandContext, limit: int | None, before: str | None,
                         all: bool, actor: str | None, command: str | None,
                         since: float | None) -> Reply:
        bus = ctx.runtime.bus
        assert bus is not None
        page = Page.of("audit list", limit, before, all, default=AUDIT_PAGE, option="before")
        if before is not None and not (before.isascii() and before.isdigit()
                                       and len(before) < 19):
            raise UsageError(f"audit list: --before must be a record id (a whole number), "
                             f"not {before!r}")
        since_ts = time.time() - since if since else None
        records, more = await bus.audit.page(page.limit, actor, command, since_ts,
                                             int(before) if before is not None else None)
        rows = [[r["id"], _ts(r["ts"]), r["actor"], r["origin"], r["command"],
                 "real" if r["execute_real"] else "-", r["outcome"],
                 f"{r['duration_ms']:.0f} ms", r["backup_id"] or ""] for r in records]
        notes, paged = page_note(ctx, page, more, str(records[-1]["id"]) if records else "",
                                 "records")
        return Reply(message=page_message(len(records), more, "audit record", "audit records"),
                     data=records, notes=notes, page=paged,
                     table=Table(["id", "time (UTC)", "actor", "origin", "command", "real",
                                  "outcome", "took", "backup"], rows, title="audit log"))

    @registry.command(
        "audit verify", "Check that no audit record was altered or removed",
        permission="admin",
        description="Checks every record's hash chain (SHA-256 for records written before "
                    "the audit key existed, HMAC-SHA256 with the audit key after), and that "
                    "the log still reaches the newest record the head file names. The reply "
                    "says what was checked and what that proves; exits 1 naming the first "
                    "problem.")
    async def audit_verify(ctx: CommandContext) -> Reply:
        bus = ctx.runtime.bus
        assert bus is not None
        verdict = await bus.audit.verify()
        reply = Reply(ok=verdict.intact, message=verdict.message, data=verdict.data)
        if not verdict.intact:
            reply.code = "audit-broken"
            reply.exit_code = 1
        return reply

    @registry.command(
        "confirm", "Apply a change planned by an earlier sandbox run, for real",
        params=[Arg("plan", "the plan id the sandbox run printed", metavar="PLAN")],
        description="A sandbox run of a changing command prints a plan id, valid for a "
                    "few minutes and only for the person who asked. 'confirm PLAN' runs "
                    "exactly that request again with --execute-real.",
    )
    async def confirm(ctx: CommandContext, plan: str) -> Reply:
        bus = ctx.runtime.bus
        assert bus is not None
        return await bus.confirm(ctx.request, plan, ctx.progress)
