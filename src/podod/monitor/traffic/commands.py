"""``traffic report | top | backfill | status``: answers from the traffic store, like
pflogsumm would, and the import of old logs."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from podod.bus.context import CommandContext, Reply, Table
from podod.bus.scope import domain_scope, scope_note, visible
from podod.bus.shapes import INT, NUM, STR, arr, nullable, obj, one_of
from podod.bus.spec import Arg, Opt
from podod.durations import format_duration
from podod.errors import NotFound, Unavailable, ValidationError
from podod.monitor.runners import monitored_servers
from podod.monitor.traffic import report as reports
from podod.monitor.traffic.backfill import backfill
from podod.monitor.traffic.component import Traffic, runner_for
from podod.plugins import Registry

TOP_KINDS = {"senders": "sender", "recipients": "recipient",
             "sender-domains": "sender_domain", "recipient-domains": "recipient_domain"}


def _traffic(ctx: CommandContext) -> Traffic:
    traffic = ctx.runtime.component("traffic")
    if traffic is None:
        raise Unavailable("mail traffic is not being counted (traffic.enabled is false, or "
                          "the traffic component failed to start: see 'status')")
    return traffic


def _servers(ctx: CommandContext, server: str | None) -> list[str] | None:
    if server is None:
        return None
    names = {s.name for s in monitored_servers(ctx.runtime)}
    if server not in names:
        raise NotFound(f"there is no server named '{server}'")
    return [server]


_COUNTS = {"type": "object", "additionalProperties": INT}
_RANKED = arr(one_of(obj({"address": STR, "count": INT}), obj({"domain": STR, "count": INT})))
REPORT_REPLY = obj({
    **{k: INT for k in reports.TOTAL_KEYS},
    "first": nullable(STR), "last": nullable(STR), "by": {"enum": ["day", "hour"]},
    "periods": arr(obj({"start": STR, "label": STR, **{k: INT for k in reports.PERIOD_KEYS}})),
    "rejects": arr(obj({"reason": STR, "code": STR, "count": INT})),
    "deliveries": arr(obj({"transport": STR, "status": STR, "count": INT})),
    "dovecot": obj({"logins": _COUNTS, "auth_failures": _COUNTS, "auth_rejects": _COUNTS}),
    "top_senders": _RANKED, "top_recipients": _RANKED, "top_sender_domains": _RANKED,
    "top_recipient_domains": _RANKED, "servers": arr(STR)},
    description="totals, one row per period (times: ISO 8601 in traffic.timezone), rejects, "
                "deliveries, Dovecot logins and the top lists")
BACKFILL_REPLY = arr(obj({
    "file": STR, "lines": INT, "counted_lines": INT, "already_imported_lines": INT,
    "counted_live_lines": INT, "note": STR, "received": INT, "delivered": INT,
    "deferred": INT, "deferrals": INT, "bounced": INT, "rejected": INT}),
    "one object per file")
STATUS_REPLY = arr(obj({"server": STR, "log": STR, "state": STR, "error": nullable(STR),
                        "since": nullable(NUM), "lines": INT, "last_line_at": nullable(NUM),
                        "offset": nullable(INT), "cursor": nullable(STR)},
                       optional=("since", "lines", "last_line_at", "offset", "cursor")),
                   "one object per followed mail log")
TOP_LISTS = (("sender", "top_senders"), ("recipient", "top_recipients"),
             ("sender_domain", "top_sender_domains"),
             ("recipient_domain", "top_recipient_domains"))


def _top(tally: Any, kind: str, limit: int, start: int,
         scope: frozenset[str] | None) -> list[tuple[str, int]]:
    """The ``limit`` largest of ``kind`` since ``start``; for a domain-admin only addresses
    (or domains) of their domains, ranked among themselves (the candidate lists are
    bounded, traffic.top_candidates, so this stays linear)."""
    if scope is None:
        ranked: list[tuple[str, int]] = tally.top(kind, limit, start)
        return ranked
    address = not kind.endswith("domain")
    return [(item, n) for item, n in tally.top(kind, None, start)
            if visible(scope, item, address=address)][:limit]


def _since(since: float) -> int:
    if since <= 0:
        raise ValidationError("--since must be a positive duration such as 24h or 7d")
    if since > 400 * 86400:
        raise ValidationError("--since can reach back at most 400 days")
    start = time.time() - since
    return int(start - start % 3600)


def setup_commands(registry: Registry) -> None:
    @registry.command(
        "traffic report", "Mail traffic like pflogsumm: totals, per day or hour, rejects",
        params=[Opt("server", "only this server (default: all together)", metavar="NAME"),
                Opt("since", "how far back", kind="duration", default=86400.0),
                Opt("by", "one row per day or per hour", kind="choice",
                    choices=("day", "hour"), default="day"),
                Opt("top", "how many top senders and recipients in the data", kind="int",
                    default=10)],
        description="Received, delivered, deferred (messages deferred at least once), "
                    "deferrals, bounced and rejected messages, with pflogsumm's meanings, "
                    "counted from the mail logs podod follows (and backfilled files). "
                    "Rejects by reason and reply code, deliveries by transport, Dovecot "
                    "logins and failed logins are in the data (--json).",
        examples=["traffic report", "traffic report --server mx1 --since 7d",
                  "traffic report --since 24h --by hour"], reply=REPORT_REPLY,
    )
    async def traffic_report(ctx: CommandContext, server: str | None, since: float, by: str,
                             top: int) -> Reply:
        traffic = _traffic(ctx)
        servers = _servers(ctx, server)
        if not 0 <= top <= 1000:
            raise ValidationError("--top must be between 0 and 1000")
        start = _since(since)
        await traffic.flush_all()
        tally = await traffic.store.run(traffic.store.tally, servers, start)
        report = reports.build(tally, zone=traffic.zone, by=by, since=start, top=top)
        scope = domain_scope(ctx.actor)
        if scope is not None:  # a domain-admin sees their own senders and recipients only
            for kind, name in TOP_LISTS:
                key = "domain" if kind.endswith("domain") else "address"
                report[name] = [{key: item, "count": n}
                                for item, n in _top(tally, kind, top, start, scope)]
        report["servers"] = servers or sorted({s.name for s in monitored_servers(ctx.runtime)})
        where = f"on {server}" if server else "on all servers"
        rows: list[list[Any]] = [[p["label"], *(p[k] for k in reports.PERIOD_KEYS)]
                                 for p in report["periods"]]
        rows.append(["total", *(report[k] for k in reports.PERIOD_KEYS)])
        notes = [f"{report['deferred']} messages were deferred at least once; "
                 f"{report['expired']} expired; {report['forwarded']} forwarded; "
                 f"{report['sasl_auth_failures']} SASL authentication failures."]
        if report["rejects"]:
            notes.append("Rejects: " + ", ".join(
                f"{r['reason']} {r['code']}: {r['count']}" for r in report["rejects"][:8]))
        dovecot = report["dovecot"]
        if dovecot["logins"] or dovecot["auth_failures"]:
            notes.append("Dovecot: " + ", ".join(
                [f"{p} logins {n}" for p, n in dovecot["logins"].items()] +
                [f"{p} failed attempts {n}" for p, n in dovecot["auth_failures"].items()]))
        notes += scope_note(scope)
        return Reply(message=f"Mail traffic {where} in the last {format_duration(since)}: "
                             f"{reports.summary(report)}.",
                     data=report, notes=notes,
                     table=Table(["period", "received", "delivered", "deferred", "bounced",
                                  "rejected"], rows))

    @registry.command(
        "traffic top", "The top senders or recipients (or their domains) by messages",
        params=[Arg("what", "senders, recipients, sender-domains or recipient-domains",
                    kind="choice", choices=tuple(TOP_KINDS), metavar="WHAT"),
                Opt("server", "only this server (default: all together)", metavar="NAME"),
                Opt("since", "how far back", kind="duration", default=86400.0),
                Opt("limit", "how many", kind="int", default=10)],
        description="Senders are counted once per message podod saw arrive (smtpd or "
                    "the sendmail command), recipients once per delivered recipient, as "
                    "pflogsumm counts them. Per hour the largest candidates are kept "
                    "(traffic.top_candidates), so a count is exact for frequent addresses.",
        examples=["traffic top senders", "traffic top recipients --server mx1 --since 7d"],
        reply=arr(one_of(obj({"address": STR, "messages": INT}),
                         obj({"domain": STR, "messages": INT})), "the ranking, largest first"),
    )
    async def traffic_top(ctx: CommandContext, what: str, server: str | None, since: float,
                          limit: int) -> Reply:
        traffic = _traffic(ctx)
        servers = _servers(ctx, server)
        if not 1 <= limit <= 1000:
            raise ValidationError("--limit must be between 1 and 1000")
        start = _since(since)
        await traffic.flush_all()
        tally = await traffic.store.run(traffic.store.tally, servers, start)
        kind = TOP_KINDS[what]
        scope = domain_scope(ctx.actor)
        ranked = _top(tally, kind, limit, start, scope)
        column = "domain" if kind.endswith("domain") else "address"
        data = [{column: item, "messages": n} for item, n in ranked]
        where = f"on {server}" if server else "on all servers"
        return Reply(message=f"Top {what} {where} in the last {format_duration(since)}"
                             + ("" if ranked else ": none"),
                     data=data, notes=scope_note(scope),
                     table=Table(["#", column, "messages"],
                                 [[i + 1, item, n] for i, (item, n) in enumerate(ranked)]))

    @registry.command(
        "traffic backfill", "Count old or rotated mail logs (plain or .gz) into the store",
        params=[Opt("server", "the server the logs come from", metavar="NAME", required=True),
                Arg("files", "absolute paths on that server", kind="list", metavar="FILE...")],
        permission="admin", mutating=True, timeout=7200,
        description="The files are read on the server itself (allow-listed cat / gzip -dc, "
                    "only inside its log folder or traffic.backfill_dirs). Importing a "
                    "file twice adds nothing; lines podod already counted while following "
                    "the log are skipped. The sandbox run shows what would be counted.",
        examples=["traffic backfill --server mx1 /var/log/mail.log.1 "
                  "/var/log/mail.log.2.gz --execute-real"], reply=BACKFILL_REPLY,
    )
    async def traffic_backfill(ctx: CommandContext, server: str, files: list[str]) -> Reply:
        traffic = _traffic(ctx)
        configured = {s.name: s for s in monitored_servers(ctx.runtime)}
        if server not in configured:
            raise NotFound(f"there is no server named '{server}'")
        if not files:
            raise ValidationError("name at least one log file to import")
        runner = runner_for(ctx.runtime, configured[server])
        results = await backfill(traffic, configured[server], runner, files,
                                 sandbox=ctx.sandbox, progress=ctx.progress)
        for r in results:
            if r.counted:
                ctx.record("import", "mail log", r.file, server=server, lines=r.counted,
                           received=r.totals.get("received", 0),
                           delivered=r.totals.get("delivered", 0))
        counted = sum(r.counted for r in results)
        verb = "would count" if ctx.sandbox else "counted"
        rows = [[r.file, r.lines, r.counted, r.skipped_known, r.skipped_live,
                 r.totals.get("received", 0), r.totals.get("delivered", 0),
                 r.totals.get("rejected", 0), r.note] for r in results]
        return Reply(message=f"{server}: {verb} {counted} lines from {len(results)} file(s)",
                     data=[r.as_dict() for r in results],
                     table=Table(["file", "lines", "counted", "imported before",
                                  "counted live", "received", "delivered", "rejected", "note"],
                                 rows))

    @registry.command("traffic status", "Which mail logs podod follows, and how far",
                      reply=STATUS_REPLY)
    async def traffic_status(ctx: CommandContext) -> Reply:
        traffic = _traffic(ctx)
        rows = traffic.status()

        def when(ts: Any) -> str:
            return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""

        table = [[r["server"], r["log"], r["state"], r.get("lines", 0),
                  r.get("offset") if r.get("offset") is not None else (r.get("cursor") or ""),
                  when(r.get("last_line_at")), r.get("error") or ""] for r in rows]
        return Reply(message=f"{len(rows)} mail log(s) configured", data=rows,
                     table=Table(["server", "log", "state", "lines read", "position",
                                  "last line", "last error"], table))
