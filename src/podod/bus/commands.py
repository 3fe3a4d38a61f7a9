"""The bus's own commands: status, help, audit list|verify, confirm."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from podod.bus import binding, grammar
from podod.bus.authz import authorize, may_run
from podod.bus.context import CommandContext, Reply, Table
from podod.bus.paging import Page, page_message, page_note, page_options
from podod.bus.shapes import ANY, BOOL, INT, NUM, STR, arr, nullable, obj, one_of
from podod.bus.spec import Arg, Opt
from podod.durations import format_duration
from podod.errors import UsageError
from podod.plugins import Registry

AUDIT_PAGE = 20  # audit records shown without --limit


def _ts(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


STATUS_REPLY = obj({
    "version": STR, "uptime_seconds": NUM, "started_at": STR, "config": STR, "state_dir": STR,
    "commands": INT,
    "plugins": arr(obj({"name": STR, "source": STR, "loaded": BOOL, "error": nullable(STR)})),
    "servers": arr(obj({"name": STR, "state": STR}, optional=("state",)))})
_OVERVIEW_ENTRY = obj({"command": STR, "summary": STR, "mutating": BOOL,
                       "input_schema": {"type": "object"}, "reply_schema": {"type": "object"}})
COMMAND_HELP = obj({
    "command": STR, "usage": STR, "summary": STR, "description": STR, "permission": STR,
    "mutating": BOOL, "examples": arr(STR),
    "params": arr(obj({"name": STR, "flag": nullable(STR), "positional": BOOL, "kind": STR,
                       "required": BOOL, "help": STR, "default": ANY, "choices": arr(STR),
                       "minimum": nullable(INT), "maximum": nullable(INT)})),
    "input_schema": {"type": "object"}, "reply_schema": {"type": "object"}},
    description="one command: its usage, parameters and the JSON Schemas of its input and "
                "reply")
HELP_REPLY = one_of(arr(_OVERVIEW_ENTRY, "the commands under the topic, each with its "
                                         "schemas"), COMMAND_HELP)
AUDIT_LIST_REPLY = arr(obj({
    "id": INT, "ts": NUM, "request_id": STR, "actor": STR, "origin": STR, "command": STR,
    "args": STR, "execute_real": INT, "outcome": STR, "message": STR, "duration_ms": NUM,
    "backup_id": nullable(STR), "prev_hash": STR, "hash": STR, "scheme": STR,
    "key_id": nullable(STR)}), "audit records, newest first (ts: Unix seconds; args: JSON)")
AUDIT_VERIFY_REPLY = obj({"intact": BOOL, "records": INT, "unsigned": INT, "signed": INT,
                          "key_id": STR, "head": nullable(INT), "problems": arr(STR)})


def setup(registry: Registry) -> None:
    @registry.command("status", "Show the daemon's version, uptime, plugins and servers",
                      timeout=30, reply=STATUS_REPLY)
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
                Arg("more", "", required=False, metavar="..."),
                Arg("last", "", required=False, metavar="...")],  # api account 2fa enable
        examples=["help", "help user", "help user create"], reply=HELP_REPLY,
    )
    async def help_(ctx: CommandContext, topic: str | None, verb: str | None,
                    more: str | None, last: str | None) -> Reply:
        commands = ctx.runtime.registry.commands
        words = " ".join(w for w in (topic, verb, more, last) if w).lower()
        if words in commands:
            spec = commands[words]
            authorize(ctx.actor, spec)  # as '--help': help of what one may not run is refused
            return Reply(message=grammar.command_help(spec), data=grammar.help_data(spec))
        commands = {n: s for n, s in commands.items() if may_run(ctx.actor, s)}
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
                     data=[{"command": n, "summary": s, "mutating": n in mutating,
                            "input_schema": binding.input_schema(commands[n]),
                            "reply_schema": binding.reply_schema(commands[n])}
                           for n, s in entries])

    @registry.command(
        "audit list", "Show the most recent audit records",
        params=[*page_options("records", "id", default=AUDIT_PAGE, cursor="before"),
                Opt("actor", "only this actor (e.g. unix:alice)"),
                Opt("command", "only commands starting with this (e.g. 'user')"),
                Opt("since", "only records newer than this (e.g. 24h)", kind="duration")],
        permission="admin", reply=AUDIT_LIST_REPLY,
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
        permission="admin", reply=AUDIT_VERIFY_REPLY,
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
