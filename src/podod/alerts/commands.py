"""``alerts list|history|rules|silences|silence|unsilence|maintenance``, the ``alerts``
component and the built-in notifiers.

Silences and one-off maintenance windows change what podod does, so they are sandboxed
unless ``--execute-real`` and audited like every other change; they suppress notifications,
never evaluation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from podod.alerts import notifiers, quota, store
from podod.alerts.component import AlertsComponent, factory
from podod.alerts.matchers import Matcher, MatcherError, describe, parse_text
from podod.alerts.silences import Silence
from podod.bus.context import CommandContext, Reply, Table
from podod.bus.shapes import BOOL, INT, NULL, NUM, STR, arr, nullable, obj
from podod.bus.spec import Arg, Opt
from podod.durations import format_duration
from podod.errors import NotFound, Unavailable, UsageError, ValidationError
from podod.plugins import Registry

MAX_SILENCE = 90 * 86400.0


def _ts(value: float | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def component_of(ctx: CommandContext) -> AlertsComponent:
    component = ctx.runtime.component("alerts")
    if not isinstance(component, AlertsComponent):
        raise Unavailable("alerting is switched off (alerts.enabled: false in podod.yaml)")
    return component


def known_servers(ctx: CommandContext) -> set[str]:
    names = {s.name for s in ctx.runtime.config.servers}
    servers = ctx.runtime.component("servers")
    if servers is not None and hasattr(servers, "summary"):
        names.update(str(s.get("name")) for s in servers.summary())
    return names


def _duration(command: str, seconds: float | None) -> float:
    if seconds is None:
        raise UsageError(f"{command}: --for is required (e.g. --for 2h)")
    if seconds <= 0 or seconds > MAX_SILENCE:
        raise UsageError(f"{command}: --for must be longer than 0s and at most 90d")
    return float(seconds)


_ALERT = obj({"fingerprint": STR, "rule": STR, "server": STR, "state": STR, "severity": STR,
               "value": nullable(NUM), "since": nullable(NUM),
               "labels": {"type": "object", "additionalProperties": STR},
               "summary": STR, "muted": nullable(STR), "stale": BOOL})
SILENCE = obj({"id": STR, "kind": STR, "matchers": STR, "starts": NUM, "ends": NUM,
               "reason": STR, "created_by": STR, "ended_by": nullable(STR)})
WINDOW = obj({"name": STR, "schedule": STR, "timezone": STR, "duration": NUM,
              "servers": arr(STR), "active_until": nullable(NUM), "next_start": nullable(NUM),
              "reason": STR})
LIST_REPLY = obj({"alerts": arr(_ALERT), "silences": arr(SILENCE), "maintenance": arr(WINDOW)},
                 optional=("silences", "maintenance"),
                 description="the alerts (times: Unix seconds); with --all also the active "
                             "silences and maintenance windows")
HISTORY_REPLY = arr(obj({"id": INT, "ts": NUM, "event": STR, "rule": STR, "server": STR,
                         "fingerprint": STR, "severity": STR, "value": nullable(NUM),
                         "detail": STR}), "history entries, newest first")
RULES_REPLY = arr(obj({"name": STR, "condition": STR, "for": NUM, "keep_firing_for": NUM,
                       "severity": STR, "source": STR, "firing": INT}))
SILENCES_REPLY = obj({"silences": arr(SILENCE), "windows": arr(WINDOW)})
CREATE_REPLY = obj({"matchers": STR, "ends": NUM, "matching": arr(STR)},
                   description="the silence (the sandbox: what it matches and when it would "
                               "end); matching: fingerprints of the alerts it matches now")


def _may_see(ctx: CommandContext, domain: str | None) -> bool:
    """An alert about a domain (the quota warnings name its mailboxes) is shown to a
    domain-admin only for the domains granted to them, as /api/events does."""
    return domain is None or ctx.actor.role != "domain-admin" or ctx.actor.may_manage(domain)


def _domain_rules(ctx: CommandContext, comp: AlertsComponent) -> set[str]:
    """The rules whose series carry a ``domain`` label."""
    series = ctx.runtime.registry.series
    return {r.name for r in comp.engine.rules
            if r.series in series and "domain" in series[r.series].labels}


def setup(registry: Registry) -> None:
    registry.component("alerts", factory)
    notifiers.setup(registry)
    quota.setup(registry)

    @registry.command(
        "alerts list", "Show the firing alerts (and with --all the pending ones, silences "
                       "and maintenance windows)",
        params=[Opt("all", "also pending alerts, silences and maintenance windows",
                    kind="flag"),
                Opt("server", "only this server")],
        examples=["alerts list", "alerts list --all --server mx1"], reply=LIST_REPLY,
    )
    async def alerts_list(ctx: CommandContext, all: bool, server: str | None) -> Reply:
        comp = component_of(ctx)
        items = [a for a in comp.engine.listing(include_pending=all)
                 if _may_see(ctx, a["labels"].get("domain"))]
        if server:
            items = [a for a in items if a["server"] == server]
            if not items and server not in known_servers(ctx) | {"podod"}:
                raise NotFound(f"there is no server '{server}' (see 'server list')")
        rows = [[a["state"] + (" (stale)" if a["stale"] else ""), a["severity"], a["server"],
                 a["rule"], _ts(a["since"]), a["summary"], a["muted"] or ""] for a in items]
        firing = sum(1 for a in items if a["state"] == "firing")
        message = f"{firing} firing" + (f", {len(items) - firing} pending" if all else "")
        data: dict[str, Any] = {"alerts": items}
        notes: list[str] = []
        if all:
            now = comp.clock.now()
            data["silences"] = [s.to_dict() for s in comp.engine.silences.values()
                                if s.ends > now]
            data["maintenance"] = comp.engine.active_windows()
            for s in data["silences"]:
                notes.append(f"{s['kind']} {s['id']}: {s['matchers']} until "
                             f"{_ts(s['ends'])} ({s['reason']})")
            for w in data["maintenance"]:
                state = f"ACTIVE until {_ts(w['active_until'])}" if w["active_until"] else \
                    f"next {_ts(w['next_start'])}"
                notes.append(f"maintenance window {w['name']} ({w['schedule']} "
                             f"{w['timezone']}, {format_duration(w['duration'])}): {state}")
        return Reply(message=message, data=data, notes=notes, table=Table(
            ["state", "severity", "server", "rule", "since (UTC)", "summary", "muted"], rows,
            title=f"alerts: {message}"))

    @registry.command(
        "alerts history", "Show what fired, resolved, was notified or silenced",
        params=[Opt("since", "how far back", kind="duration", default=86400.0),
                Opt("server", "only this server"), Opt("rule", "only this rule"),
                Opt("limit", "at most this many entries", kind="int", default=200)],
        examples=["alerts history --since 7d --server mx1"], reply=HISTORY_REPLY,
    )
    async def alerts_history(ctx: CommandContext, since: float, server: str | None,
                             rule: str | None, limit: int) -> Reply:
        if limit < 1 or limit > 100_000:
            raise UsageError("alerts history: --limit must be between 1 and 100000")
        comp = component_of(ctx)
        await comp.engine.persist()
        start = comp.clock.now() - since
        rows = await ctx.runtime.state.run(store.history, start, limit, server, rule)
        if ctx.actor.role == "domain-admin":  # the history has no labels to tell the domain
            scoped = _domain_rules(ctx, comp)
            rows = [r for r in rows if r["rule"] not in scoped]
        if not rows:  # a typo must not look like a quiet history (removed ones have one)
            if rule and rule not in {r.name for r in comp.engine.rules} | {"SilenceExpiring"}:
                raise NotFound(f"there is no alert rule '{rule}' (see 'alerts rules')")
            if server and server not in known_servers(ctx) | {"podod"}:
                raise NotFound(f"there is no server '{server}' (see 'server list')")
        table = [[_ts(r["ts"]), r["event"], r["server"], r["rule"], r["severity"],
                  "" if r["value"] is None else f"{r['value']:g}", r["detail"]] for r in rows]
        return Reply(message=f"{len(rows)} entries since {_ts(start)} UTC", data=rows,
                     table=Table(["time (UTC)", "event", "server", "rule", "severity",
                                  "value", "detail"], table, title="alert history"))

    @registry.command("alerts rules", "List the loaded alert rules and what they check",
                      reply=RULES_REPLY)
    async def alerts_rules(ctx: CommandContext) -> Reply:
        comp = component_of(ctx)
        counts: dict[str, int] = {}
        for (rule, _sev, _server), n in comp.engine.firing_counts().items():
            counts[rule] = counts.get(rule, 0) + n
        data: list[dict[str, Any]] = []
        for r in comp.engine.rules:
            data.append({"name": r.name, "condition": r.condition, "for": r.for_,
                         "keep_firing_for": r.keep_firing_for, "severity": r.severity,
                         "source": r.source, "firing": counts.get(r.name, 0)})
        rows = [[d["name"], d["severity"], d["condition"], format_duration(d["for"]),
                 d["firing"], d["source"]] for d in data]
        return Reply(message=f"{len(data)} rules", data=data, table=Table(
            ["rule", "severity", "condition", "for", "firing", "file"], rows,
            title="alert rules"))

    @registry.command(
        "alerts silences", "List silences and maintenance windows",
        params=[Opt("all", "also expired and ended ones (the last 200)", kind="flag")],
        reply=SILENCES_REPLY,
    )
    async def alerts_silences(ctx: CommandContext, all: bool) -> Reply:
        comp = component_of(ctx)
        now = comp.clock.now()
        if all:
            raw = await ctx.runtime.state.run(store.all_silences, 200)
            items = [Silence.from_row(r) for r in raw]
        else:
            items = sorted((s for s in comp.engine.silences.values() if s.ends > now),
                           key=lambda s: s.starts)
        rows = []
        for s in items:
            state = "ended" if s.ended_at else ("active" if s.active(now) else
                                                 "expired" if s.ends <= now else "future")
            rows.append([s.id, s.kind, state, s.description, _ts(s.starts), _ts(s.ends),
                         s.created_by, s.reason])
        windows = comp.engine.active_windows()
        for w in windows:
            state = "active" if w["active_until"] else "scheduled"
            rows.append([w["name"], "window", state, ",".join(w["servers"]) or "all servers",
                         _ts(w["active_until"] or w["next_start"]), w["schedule"] + " " +
                         w["timezone"], "config", w["reason"]])
        return Reply(message=f"{len(items)} silences, {len(windows)} recurring windows",
                     data={"silences": [s.to_dict() for s in items], "windows": windows},
                     table=Table(["id", "kind", "state", "matches", "starts / next (UTC)",
                                  "ends (UTC)", "by", "reason"], rows, title="silences"))

    @registry.command(
        "alerts silence", "Mute notifications for matching alerts for a while",
        params=[Arg("rule", "the rule to silence (its alertname)", required=False,
                    metavar="RULE"),
                Opt("match", "label matchers, e.g. server=mx1,severity=~warning|critical",
                    kind="list", metavar="K=V,..."),
                Opt("server", "only this server"),
                Opt("for_", "how long, e.g. 2h", kind="duration", required=True),
                Opt("reason", "why (shown in reminders, the history and the audit log)",
                    required=True)],
        permission="admin", mutating=True, reply=CREATE_REPLY,
        description="A silence suppresses notifications about matching alerts; they are "
                    "still evaluated, listed and recorded. A reminder is sent "
                    "alerts.silence_reminder before it ends.",
        examples=["alerts silence QueueTooLarge --server mx1 --for 2h --reason 'migration'",
                  "alerts silence --match severity=warning --for 30m --reason 'noise'"],
    )
    async def alerts_silence(ctx: CommandContext, rule: str | None, match: list[str] | None,
                             server: str | None, for_: float | None,
                             reason: str | None) -> Reply:
        comp = component_of(ctx)
        duration = _duration("alerts silence", for_)
        if not reason or not reason.strip():
            raise UsageError("alerts silence: --reason is required (say why, for the others)")
        matchers: list[Matcher] = []
        if rule:
            names = {r.name for r in comp.engine.rules}
            if rule not in names and rule != "SilenceExpiring":
                raise NotFound(f"there is no alert rule '{rule}' (see 'alerts rules')")
            matchers.append(Matcher.make("alertname", "=", rule))
        if server:
            if server not in known_servers(ctx):
                raise NotFound(f"there is no server '{server}' (see 'server list')")
            matchers.append(Matcher.make("server", "=", server))
        for text in match or []:
            try:
                matcher = parse_text(text)
            except MatcherError as exc:
                raise ValidationError(f"alerts silence: --match {exc}") from None
            if matcher.label == "alertname" and matcher.op == "=" and \
                    matcher.value not in {r.name for r in comp.engine.rules} | \
                    {"SilenceExpiring"}:
                raise NotFound(f"there is no alert rule '{matcher.value}' (see 'alerts "
                               "rules')")
            matchers.append(matcher)
        if not matchers:
            raise UsageError("alerts silence: say what to silence: a RULE, --server or "
                             "--match (a silence of everything is not allowed)")
        return await _create(ctx, comp, "silence", tuple(matchers), duration, reason.strip())

    @registry.command(
        "alerts maintenance", "Start a one-off maintenance window for a server now",
        params=[Opt("server", "the server under maintenance", required=True),
                Opt("for_", "how long, e.g. 2h", kind="duration", required=True),
                Opt("reason", "what is being done", required=True)],
        permission="admin", mutating=True, reply=CREATE_REPLY,
        description="Suppresses every notification about the server until the window ends "
                    "(recurring windows are configured under alerts.maintenance).",
        examples=["alerts maintenance --server mx1 --for 2h --reason 'kernel update'"],
    )
    async def alerts_maintenance(ctx: CommandContext, server: str, for_: float | None,
                                 reason: str | None) -> Reply:
        comp = component_of(ctx)
        duration = _duration("alerts maintenance", for_)
        if not reason or not reason.strip():
            raise UsageError("alerts maintenance: --reason is required")
        if server not in known_servers(ctx):
            raise NotFound(f"there is no server '{server}' (see 'server list')")
        return await _create(ctx, comp, "maintenance",
                             (Matcher.make("server", "=", server),), duration, reason.strip())

    @registry.command(
        "alerts unsilence", "End a silence or a one-off maintenance window now",
        params=[Arg("id", "the silence id (see 'alerts silences')", metavar="ID")],
        permission="admin", mutating=True, reply=NULL,
    )
    async def alerts_unsilence(ctx: CommandContext, id: str) -> Reply:
        comp = component_of(ctx)
        silence = comp.engine.silences.get(id.strip().lower())
        if silence is None:
            raise NotFound(f"there is no active silence {id} (see 'alerts silences')")
        ctx.record("end", silence.kind, silence.id, matches=silence.description)
        if ctx.sandbox:
            return Reply(message=f"would end {silence.kind} {silence.id} "
                                 f"({silence.description})")
        now = comp.clock.now()
        await ctx.runtime.state.run(store.end_silence, silence.id, ctx.actor.name, now)
        comp.engine.end_silence(silence.id, ctx.actor.name)
        await comp.engine.persist()
        return Reply(message=f"ended {silence.kind} {silence.id} ({silence.description})")


async def _create(ctx: CommandContext, comp: AlertsComponent, kind: str,
                  matchers: tuple[Matcher, ...], duration: float, reason: str) -> Reply:
    now = comp.clock.now()
    silence = Silence.new("maintenance" if kind == "maintenance" else "silence", matchers,
                          now, now + duration, reason, ctx.actor.name)
    hits = [a for a in comp.engine.listing() if silence.matches(a["labels"])]
    what = f"{describe(matchers)} for {format_duration(duration)}"
    ctx.record("insert", kind, describe(matchers), until=_ts(silence.ends) + " UTC",
               reason=reason)
    affected = f"{len(hits)} alert{'s' if len(hits) != 1 else ''} firing or pending match " \
               "it now"
    if ctx.sandbox:
        return Reply(message=f"would {kind} {what}; {affected}",
                     data={"matchers": describe(matchers), "ends": silence.ends,
                           "matching": [a["fingerprint"] for a in hits]})
    await ctx.runtime.state.run(store.insert_silence, silence.row())
    comp.engine.add_silence(silence)
    await comp.engine.persist()
    return Reply(message=f"{kind} {silence.id}: {what} (until {_ts(silence.ends)} UTC); "
                         f"{affected}",
                 data={**silence.to_dict(), "matching": [a["fingerprint"] for a in hits]})

