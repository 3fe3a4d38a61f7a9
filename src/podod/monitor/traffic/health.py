"""``monitoring errors`` and ``monitoring security``: what went wrong with mail and who was
refused, from what podod already collects (the mail-log counts of the traffic store, the
collectors' failures, the audit log); the REST API serves them at /api/monitoring/errors and
/api/monitoring/security."""

from __future__ import annotations

import time
from typing import Any

from podod.bus.context import CommandContext, Reply, Table
from podod.bus.shapes import INT, STR, arr, nullable, obj
from podod.bus.spec import Opt
from podod.durations import format_duration
from podod.monitor.traffic import report as reports
from podod.monitor.traffic.commands import _servers, _since
from podod.plugins import Registry

_COUNTS = {"type": "object", "additionalProperties": INT}
ERRORS_REPLY = obj({
    "since": STR, "traffic_counted": {"type": "boolean"},
    "deferred": INT, "deferrals": INT, "bounced": INT, "expired": INT,
    "failed_deliveries": arr(obj({"transport": STR, "status": STR, "count": INT})),
    "collector_errors": arr(obj({"collector": STR, "server": STR, "count": INT}))},
    description="mail that was not delivered (deferred at least once, deferral lines, "
                "bounced, expired; deliveries by transport that did not succeed) and failed "
                "collector runs since podod started")
SECURITY_REPLY = obj({
    "since": STR, "traffic_counted": {"type": "boolean"},
    "sasl_auth_failures": INT, "rejected": INT,
    "rejects": arr(obj({"reason": STR, "code": STR, "count": INT})),
    "dovecot_auth_failures": _COUNTS, "dovecot_auth_rejects": _COUNTS,
    "refused_requests": arr(obj({"actor": STR, "origin": STR, "outcome": STR, "count": INT,
                                 "last": nullable(STR)}))},
    description="SASL authentication failures and rejected mail (Postfix), failed logins "
                "(Dovecot), and requests podod itself refused (unknown callers, missing "
                "permission, rate limits), by actor")
REFUSED = ("unauthenticated", "forbidden", "rate-limited")


async def _tally(ctx: CommandContext, server: str | None, start: int
                 ) -> dict[str, Any] | None:
    traffic = ctx.runtime.component("traffic")
    if traffic is None:
        return None
    servers = _servers(ctx, server)
    await traffic.flush_all()
    tally = await traffic.store.run(traffic.store.tally, servers, start)
    report: dict[str, Any] = reports.build(tally, zone=traffic.zone, since=start, top=0)
    return report


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def setup(registry: Registry) -> None:
    @registry.command(
        "monitoring errors", "Mail that was not delivered, and failed collector runs",
        params=[Opt("server", "only this server (default: all together)", metavar="NAME"),
                Opt("since", "how far back", kind="duration", default=86400.0)],
        reply=ERRORS_REPLY, examples=["monitoring errors --since 7d"],
        description="From the mail logs podod follows (traffic): messages deferred at least "
                    "once, deferral lines, bounces, expired messages and deliveries by "
                    "transport that were not sent; and the collectors' failed runs since "
                    "podod started. Without traffic counting, the mail part is zero and "
                    "traffic_counted false.")
    async def monitoring_errors(ctx: CommandContext, server: str | None,
                                since: float) -> Reply:
        start = _since(since)
        report = await _tally(ctx, server, start)
        live = ctx.runtime.component("live")
        errors = dict(live.state.collector_errors) if live is not None else {}
        collector_errors = [{"collector": c, "server": s, "count": n}
                            for (c, s), n in sorted(errors.items())
                            if server is None or s == server]
        failed = [d for d in (report or {}).get("deliveries", []) if d["status"] != "sent"]
        data = {"since": _iso(start), "traffic_counted": report is not None,
                **{k: int((report or {}).get(k, 0))
                   for k in ("deferred", "deferrals", "bounced", "expired")},
                "failed_deliveries": failed, "collector_errors": collector_errors}
        rows = [[k, data[k]] for k in ("deferred", "deferrals", "bounced", "expired")]
        rows += [[f"{d['transport']} {d['status']}", d["count"]] for d in failed]
        rows += [[f"collector {e['collector']} on {e['server']}", e["count"]]
                 for e in collector_errors]
        notes = [] if report is not None else [
            "mail traffic is not being counted (traffic.enabled): only collector errors"]
        return Reply(message=f"in the last {format_duration(since)}: {data['deferred']} "
                             f"deferred, {data['bounced']} bounced, {data['expired']} expired; "
                             f"{sum(e['count'] for e in collector_errors)} failed collector "
                             "runs", data=data, notes=notes,
                     table=Table(["what", "count"], rows, title="errors"))

    @registry.command(
        "monitoring security", "Failed logins, rejected mail and requests podod refused",
        params=[Opt("server", "only this server's mail logs (default: all together)",
                    metavar="NAME"),
                Opt("since", "how far back", kind="duration", default=86400.0)],
        permission="admin", reply=SECURITY_REPLY, examples=["monitoring security --since 7d"],
        description="SASL authentication failures and rejects by reason and reply code "
                    "(Postfix), failed logins by protocol and auth rejects by reason "
                    "(Dovecot), from the mail logs podod follows; and the requests podod "
                    "refused (unknown caller, missing permission, rate limit) from its audit "
                    "log, by actor and frontend.")
    async def monitoring_security(ctx: CommandContext, server: str | None,
                                  since: float) -> Reply:
        start = _since(since)
        report = await _tally(ctx, server, start)

        def refused(conn: Any) -> list[dict[str, Any]]:
            marks = ",".join("?" * len(REFUSED))
            return [{"actor": r[0], "origin": r[1], "outcome": r[2], "count": int(r[3]),
                     "last": _iso(r[4]) if r[4] else None} for r in conn.execute(
                f"SELECT actor, origin, outcome, count(*), max(ts) FROM audit "
                f"WHERE ts >= ? AND outcome IN ({marks}) GROUP BY actor, origin, outcome "
                "ORDER BY count(*) DESC, actor LIMIT 100", [start, *REFUSED])]

        requests = await ctx.runtime.state.run(refused)
        dovecot = (report or {}).get("dovecot", {})
        data = {"since": _iso(start), "traffic_counted": report is not None,
                "sasl_auth_failures": int((report or {}).get("sasl_auth_failures", 0)),
                "rejected": int((report or {}).get("rejected", 0)),
                "rejects": (report or {}).get("rejects", []),
                "dovecot_auth_failures": dovecot.get("auth_failures", {}),
                "dovecot_auth_rejects": dovecot.get("auth_rejects", {}),
                "refused_requests": requests}
        rows = [["SASL authentication failures", data["sasl_auth_failures"]],
                ["rejected messages", data["rejected"]]]
        rows += [[f"reject {r['reason']} {r['code']}", r["count"]] for r in data["rejects"]]
        rows += [[f"Dovecot {p} failed logins", n]
                 for p, n in data["dovecot_auth_failures"].items()]
        rows += [[f"refused {r['outcome']}: {r['actor']} via {r['origin']}", r["count"]]
                 for r in requests]
        notes = [] if report is not None else [
            "mail traffic is not being counted (traffic.enabled): only podod's refusals"]
        return Reply(message=f"in the last {format_duration(since)}: "
                             f"{data['sasl_auth_failures']} SASL failures, "
                             f"{data['rejected']} rejected, "
                             f"{sum(r['count'] for r in requests)} refused podod requests",
                     data=data, notes=notes,
                     table=Table(["what", "count"], rows, title="security"))
