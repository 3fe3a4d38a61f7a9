"""Commands that read the measurements: ``metrics query|series|status``, ``collector list``
and ``collector cycles``."""

from __future__ import annotations

import difflib
import re
import time
from datetime import UTC, datetime
from typing import Any

from podod.bus.context import CommandContext, Reply, Table
from podod.bus.shapes import BOOL, INT, NUM, STR, arr, nullable, obj
from podod.bus.spec import Arg, Opt
from podod.durations import format_duration
from podod.errors import NotFound, Unavailable, ValidationError
from podod.monitor.query import plan_query
from podod.monitor.store import Store
from podod.plugins import Registry

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _ts(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def _store(ctx: CommandContext) -> Store:
    store = ctx.runtime.component("store")
    if not isinstance(store, Store):
        raise Unavailable("the metrics store is not running")
    return store


def parse_labels(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not _NAME.fullmatch(key.strip()):
            raise ValidationError(f"metrics query: --label must be KEY=VALUE, not '{item}'")
        out[key.strip()] = value
    return out


_LABELS = {"type": "object", "additionalProperties": STR}
QUERY_REPLY = obj({
    "series": STR, "source": {"enum": ["raw", "5m", "1h"]}, "step": nullable(NUM),
    "since": NUM, "until": NUM,
    "results": arr(obj({"server": STR, "labels": _LABELS, "kind": STR,
                        "points": arr(obj({"ts": NUM}))}))},
    description="one result per matching series; points: raw values (ts, value) or buckets "
                "(ts, min, avg, max, last; counters also increase and rate); times: Unix "
                "seconds")
SERIES_REPLY = arr(obj({"name": STR, "server": STR, "labels": _LABELS, "kind": STR,
                        "last_ts": nullable(NUM), "last_value": nullable(NUM)}))
STATUS_REPLY = obj({"path": STR, "open": BOOL, "size_bytes": INT, "degraded": nullable(STR),
                    "backlog": INT, "max_backlog": INT, "dropped": INT, "written": INT,
                    "batches": INT, "raw_retention": NUM, "rollup_retention": NUM,
                    "last_prune": nullable({"type": "object"}),
                    "reset": nullable({"type": "object"})})
JOBS_REPLY = arr(obj({"collector": STR, "server": nullable(STR), "interval": NUM, "runs": INT,
                      "failures": INT, "skipped": INT, "last_run": nullable(NUM),
                      "last_duration": nullable(NUM), "last_samples": nullable(INT),
                      "last_error": nullable(STR), "plugin": STR}))
_CYCLE = obj({"collector": STR, "cycle": INT, "interval": NUM, "window_start": NUM,
              "jobs": INT, "cycle_time": NUM, "longest_wait": nullable(NUM),
              "slowest": nullable(NUM), "slowest_server": nullable(STR), "ok": INT,
              "failed": INT, "skipped": INT, "overran": INT, "fits": BOOL})
CYCLES_REPLY = arr(obj({"collector": STR, "interval": nullable(NUM), "jobs": INT,
                        "cycles": INT, "not_fitting": INT,
                        "cycle_time_median": nullable(NUM), "cycle_time_max": nullable(NUM),
                        "recent": arr(_CYCLE, "closed cycles, newest last")}),
                   "one summary per collector (with --collector: that one)")


def setup(registry: Registry) -> None:
    @registry.command(
        "metrics query", "Show a series over time from the metrics store",
        params=[Arg("series", "the series name, e.g. node_load1 (the podod_ prefix may be "
                    "left out)", metavar="SERIES"),
                Opt("server", "only this server"),
                Opt("since", "how far back (e.g. 6h, 7d; up to the rollup retention)",
                    kind="duration", default=3600.0),
                Opt("step", "bucket size (e.g. 1m, 5m, 1h); without it: raw samples up to "
                    "6h, 5-minute buckets up to 2d, hourly beyond", kind="duration"),
                Opt("label", "only series with this label value (repeatable)", kind="list",
                    metavar="KEY=VALUE")],
        description="Raw samples answer steps under 5 minutes (they are kept for "
                    "monitor.raw_retention); 5-minute and hourly rollups answer larger steps "
                    "for up to monitor.rollup_retention. Buckets show min, avg, max and the "
                    "last value; counters also show the increase and the rate per second "
                    "(a counter that drops was reset, which never gives a negative rate).",
        examples=["metrics query node_load1 --server mx1 --since 6h",
                  "metrics query postfix_queue_messages --server mx1 --since 7d --step 1h "
                  "--label queue=deferred"], reply=QUERY_REPLY,
    )
    async def metrics_query(ctx: CommandContext, series: str, server: str | None,
                            since: float, step: float | None, label: list[str] | None
                            ) -> Reply:
        name = series.removeprefix("podod_")
        if not _NAME.fullmatch(name):
            raise ValidationError(f"metrics query: '{series}' is not a series name")
        labels = parse_labels(label)
        store = _store(ctx)
        monitor = ctx.runtime.config.monitor
        plan = plan_query(since, step, time.time(), monitor.raw_retention,
                          monitor.rollup_retention)
        results = await store.query(name, server, labels, plan)
        if not results:
            await _explain_empty(ctx, store, name, server, labels)
        multi_server = len({r["server"] for r in results}) > 1
        counter = any(r["kind"] == "counter" for r in results)
        columns = ["time (UTC)"] + (["server"] if multi_server else []) + ["labels"]
        if plan.step is None:
            columns += ["value"] + (["rate/s"] if counter else [])
        else:
            columns += ["min", "avg", "max", "last"] + (["increase", "rate/s"] if counter
                                                         else [])
        rows: list[list[Any]] = []
        points = 0
        for result in results:
            head = [result["server"]] if multi_server else []
            shown = _labels(result["labels"])
            for p in result["points"]:
                points += 1
                row: list[Any] = [_ts(p["ts"]), *head, shown]
                if plan.step is None:
                    row.append(_num(p["value"]))
                    if counter:
                        row.append(_num(p.get("rate")))
                else:
                    row += [_num(p["min"]), _num(p["avg"]), _num(p["max"]), _num(p["last"])]
                    if counter:
                        row += [_num(p.get("increase")), _num(p.get("rate"))]
                rows.append(row)
        source = {"raw": "raw samples", "5m": "5-minute rollups", "1h": "hourly rollups"}
        bucket = f", {format_duration(plan.step)} buckets" if plan.step else ""
        message = (f"{name}: {len(results)} series, {points} points over the last "
                   f"{format_duration(since)} from {source[plan.source]}{bucket}")
        data = {"series": name, "source": plan.source, "step": plan.step,
                "since": plan.since, "until": plan.until, "results": results}
        return Reply(message=message, data=data, table=Table(columns, rows, title=message))

    @registry.command(
        "metrics series", "List the series in the metrics store",
        params=[Opt("server", "only this server"),
                Opt("match", "only names containing this text")],
        examples=["metrics series --server mx1", "metrics series --match queue"],
        reply=SERIES_REPLY,
    )
    async def metrics_series(ctx: CommandContext, server: str | None, match: str | None
                             ) -> Reply:
        store = _store(ctx)
        rows = await store.series(server=server)
        if match:
            rows = [r for r in rows if match.lower() in r["name"].lower()]
        if not rows and server is not None:
            servers = sorted({r["server"] for r in await store.series()})
            if server not in servers:
                known = ", ".join(servers) or "none yet"
                raise NotFound(f"metrics series: the store has no series of server "
                               f"'{server}' (servers with series: {known})")
        table = [[r["name"], r["server"], _labels(r["labels"]), r["kind"],
                  _num(r["last_value"]), _ts(r["last_ts"])] for r in rows]
        names = len({r["name"] for r in rows})
        return Reply(message=f"{len(rows)} series ({names} names)", data=rows,
                     table=Table(["series", "server", "labels", "kind", "last value",
                                  "last sample (UTC)"], table, title="metrics series"))

    @registry.command("metrics status",
                      "Show the metrics store: size, backlog, degraded state, retention",
                      reply=STATUS_REPLY)
    async def metrics_status(ctx: CommandContext) -> Reply:
        status = _store(ctx).status()
        prune = status["last_prune"] or {}
        rows: list[list[Any]] = [
            ["file", status["path"]],
            ["size", f"{status['size_bytes'] / 1048576:.1f} MiB"],
            ["state", "degraded: " + status["degraded"] if status["degraded"] else
             ("writing" if status["open"] else "not open")],
            ["backlog", f"{status['backlog']} samples (at most {status['max_backlog']})"],
            ["dropped", str(status["dropped"])],
            ["written", f"{status['written']} samples in {status['batches']} batches"],
            ["retention", f"raw {format_duration(status['raw_retention'])}, rollups "
                          f"{format_duration(status['rollup_retention'])}"],
            ["last prune", f"{_ts(prune.get('at'))}: {prune.get('samples', 0)} samples, "
                           f"{prune.get('rollups', 0)} rollups" if prune else "not yet"],
        ]
        if status["reset"]:
            rows.append(["reset at start", f"{status['reset']['reason']} (old file: "
                                           f"{status['reset']['moved_to']})"])
        message = ("the metrics store is degraded: " + status["degraded"]
                   if status["degraded"] else "the metrics store is writing normally")
        return Reply(message=message, data=status,
                     table=Table(["item", "value"], rows, title="metrics store"))

    cycles_setup(registry)

    @registry.command("collector list",
                      "Show every collector job: interval, last run, duration, last error",
                      reply=JOBS_REPLY)
    async def collector_list(ctx: CommandContext) -> Reply:
        scheduler = ctx.runtime.component("scheduler")
        jobs: list[dict[str, Any]] = scheduler.describe() if scheduler is not None else []
        rows = [[j["collector"], j["server"], format_duration(j["interval"]), j["runs"],
                 j["failures"], _ts(j["last_run"]),
                 f"{j['last_duration'] * 1000:.0f} ms" if j["last_duration"] is not None
                 else "-", j["last_samples"], j["last_error"] or ""] for j in jobs]
        enabled = ctx.runtime.config.monitor.enabled
        message = (f"{len(jobs)} collector jobs" if enabled else
                   "monitoring is switched off (monitor.enabled: false)")
        return Reply(message=message, data=jobs,
                     table=Table(["collector", "server", "every", "runs", "failures",
                                  "last run (UTC)", "took", "samples", "last error"], rows,
                                 title="collectors"))


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _cycle_row(c: dict[str, Any]) -> list[Any]:
    slowest = (f"{c['slowest_server']} ({_secs(c['slowest'])})" if c["slowest_server"]
               else "-")
    due = datetime.fromtimestamp(c["window_start"], UTC).strftime("%H:%M:%S")
    return [due, c["jobs"], c["ok"], c["failed"], c["skipped"],
            c["overran"], _secs(c["cycle_time"]), _secs(c["span"]),
            _secs(c["longest_wait"]), slowest, "yes" if c["fits"] else "NO"]


def cycles_setup(registry: Registry) -> None:
    @registry.command(
        "collector cycles", "Show whether each collector measures every server once per "
        "interval: its recent cycles, cycle time, skipped and overrun runs",
        params=[Opt("collector", "only this collector, one row per recent cycle"),
                Opt("last", "how many recent cycles to show with --collector", kind="int",
                    default=10)],
        description="A collector's cycle is one turn of each of its jobs (servers) within "
                    "one interval. The cycle time is the longest any run took from its turn "
                    "to its end (waiting for a free slot plus running); span is the first "
                    "run's start to the last run's end (close to the interval, since runs "
                    "are spread over it). A run overran when it ended after its next turn "
                    "was due; that turn is then skipped. A cycle fits when every job ran "
                    "once, none was skipped and none overran.",
        examples=["collector cycles", "collector cycles --collector system --last 20"],
        reply=CYCLES_REPLY,
    )
    async def collector_cycles(ctx: CommandContext, collector: str | None, last: int
                               ) -> Reply:
        if last < 1 or last > 1000:
            raise ValidationError("collector cycles: --last must be between 1 and 1000")
        scheduler = ctx.runtime.component("scheduler")
        if scheduler is None or not hasattr(scheduler, "cycle_summary"):
            raise Unavailable("collector cycles: the scheduler is not running")
        if not ctx.runtime.config.monitor.enabled:
            return Reply(message="monitoring is switched off (monitor.enabled: false)",
                         data=[], table=Table(["collector"], [], title="collector cycles"))
        names: list[str] = scheduler.collectors()
        if collector is not None:
            if collector not in names:
                known = ", ".join(names) or "none are running"
                raise NotFound(f"collector cycles: there is no collector named "
                               f"'{collector}' running (collectors: {known})")
            summary = scheduler.cycle_summary(collector, last)
            rows = [_cycle_row(c) for c in summary["recent"]]
            message = (f"{collector}: {summary['jobs']} jobs every "
                       f"{format_duration(summary['interval'])}; {summary['cycles']} cycles "
                       f"kept, {summary['not_fitting']} did not fit; cycle time median "
                       f"{_secs(summary['cycle_time_median'])}, max "
                       f"{_secs(summary['cycle_time_max'])}")
            return Reply(message=message, data=[summary], table=Table(
                ["cycle (UTC)", "jobs", "ok", "failed", "skipped", "overran", "cycle time",
                 "span", "wait", "slowest", "fits"], rows, title=message))
        summaries = [scheduler.cycle_summary(name, 1) for name in names]
        rows = []
        for s in summaries:
            c = s["recent"][-1] if s["recent"] else None
            figures = [c["ok"], c["failed"], c["skipped"], c["overran"],
                       _secs(c["cycle_time"])] if c else ["-"] * 5
            slowest = (f"{c['slowest_server']} ({_secs(c['slowest'])})"
                       if c and c["slowest_server"] else "-")
            rows.append([s["collector"], format_duration(s["interval"]), s["jobs"], *figures,
                         _secs(s["cycle_time_median"]), _secs(s["cycle_time_max"]), slowest,
                         ("yes" if c["fits"] else "NO") if c else "-"])
        bad = [s["collector"] for s in summaries if s["recent"] and
               not s["recent"][-1]["fits"]]
        waiting = [s["collector"] for s in summaries if not s["recent"]]
        if bad:
            message = "the last cycle did not fit its interval: " + ", ".join(bad)
        elif waiting and len(waiting) == len(summaries):
            message = "no cycle has finished yet (the first one ends within two intervals)"
        else:
            message = f"the last cycle of every collector fit its interval ({len(rows)} " \
                      "collectors)"
        return Reply(message=message, data=summaries, table=Table(
            ["collector", "every", "jobs", "ok", "failed", "skipped", "overran",
             "cycle time", "median", "max", "slowest", "fits"], rows,
            title="collector cycles: the last closed cycle; the median and max cycle time "
                  "over the kept ones"))


async def _explain_empty(ctx: CommandContext, store: Store, name: str, server: str | None,
                         labels: dict[str, str]) -> None:
    """Nothing matched: say which part of the request did not (one sentence)."""
    everything = await store.series()
    named = [r for r in everything if r["name"] == name]
    if not named:
        names = sorted({r["name"] for r in everything} | set(ctx.runtime.registry.series))
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else \
            "; 'metrics series' lists what exists"
        if name in ctx.runtime.registry.series:
            raise NotFound(f"metrics query: no samples of {name} have been stored yet")
        raise NotFound(f"metrics query: the store has no series named '{name}'{hint}")
    if server is not None and not any(r["server"] == server for r in named):
        servers = ", ".join(sorted({r["server"] for r in named}))
        raise NotFound(f"metrics query: server '{server}' has no series {name} (servers "
                       f"with it: {servers})")
    if labels:
        wanted = ",".join(f"{k}={v}" for k, v in labels.items())
        values = sorted({f"{k}={v}" for r in named for k, v in r["labels"].items()})
        raise NotFound(f"metrics query: no {name} series has the labels {wanted} (labels "
                       f"seen: {', '.join(values) or 'none'})")
    raise NotFound(f"metrics query: {name} has no samples in that range")
