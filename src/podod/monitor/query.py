"""``metrics query``: pick raw samples or rollups for a range and step, and aggregate them.

Sources, by ``--step`` (or, without it, by the range):

- no step and a range up to 6 h: the raw samples as stored;
- a step under 5 min: raw samples grouped into buckets of that step;
- a step of 5 min or more (a multiple of 5 min): the 5-minute rollups, merged;
- a step of 1 h or more (a multiple of 1 h): the hourly rollups, merged;
- no step and a range up to 2 days: 5-minute buckets; longer: hourly buckets.

Buckets start at multiples of the step since the Unix epoch (UTC). Counters also get
``increase`` (drops are resets, never negative) and ``rate`` (increase / step, per second);
both are None (null in JSON) for a bucket with no earlier reading to measure from.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Literal

from podod.durations import format_duration
from podod.errors import ValidationError
from podod.monitor import metricsdb

Source = Literal["raw", "5m", "1h"]
MAX_POINTS = 20_000
RAW_RANGE = 6 * 3600
FIVE_MINUTE_RANGE = 2 * 86400


@dataclass(frozen=True)
class QueryPlan:
    source: Source
    step: int | None  # None: raw samples as stored
    since: float
    until: float


def plan_query(since: float, step: float | None, now: float, raw_retention: float,
               rollup_retention: float) -> QueryPlan:
    """Decide where the answer comes from; a request that cannot be answered is refused
    with one sentence."""
    if since <= 0:
        raise ValidationError("metrics query: --since must be a positive duration such as 6h")
    if since > rollup_retention:
        raise ValidationError(f"metrics query: --since {format_duration(since)} is beyond the "
                              f"{format_duration(rollup_retention)} the store keeps")
    start, until = now - since, now
    if step is None:
        if since <= RAW_RANGE and since <= raw_retention:
            return QueryPlan("raw", None, start, until)
        step = 300.0 if since <= FIVE_MINUTE_RANGE else 3600.0
    if step < 1 or step != int(step):
        raise ValidationError("metrics query: --step must be a whole number of seconds, "
                              "at least 1s")
    istep = int(step)
    if istep > since:
        raise ValidationError(f"metrics query: --step {format_duration(istep)} is longer than "
                              f"--since {format_duration(since)}")
    if istep < 300 and since > raw_retention:
        raise ValidationError(
            f"metrics query: raw samples are kept for {format_duration(raw_retention)}; "
            f"use --step 5m or more for a range of {format_duration(since)}")
    if since / istep > MAX_POINTS:
        raise ValidationError(f"metrics query: --since {format_duration(since)} with --step "
                              f"{format_duration(istep)} would give more than {MAX_POINTS} "
                              "points; use a larger --step")
    if istep < 300:
        return QueryPlan("raw", istep, start, until)
    if istep < 3600:
        if istep % 300:
            raise ValidationError("metrics query: a --step of 5m or more must be a multiple "
                                  "of 5m")
        return QueryPlan("5m", istep, start, until)
    if istep % 3600:
        raise ValidationError("metrics query: a --step of 1h or more must be a multiple of 1h")
    return QueryPlan("1h", istep, start, until)


def _point(bucket: int, count: int, total: float, lo: float, hi: float, last: float,
           increase: float | None, step: int, counter: bool) -> dict[str, Any]:
    point: dict[str, Any] = {"ts": bucket, "count": count, "min": lo, "max": hi,
                             "avg": total / count if count else None, "last": last}
    if counter:  # None: no earlier reading to measure the increase from
        point["increase"] = increase
        point["rate"] = increase / step if increase is not None else None
    return point


def _raw_points(conn: sqlite3.Connection, sid: int, plan: QueryPlan, counter: bool
                ) -> list[dict[str, Any]]:
    since_ms, until_ms = int(plan.since * 1000), int(plan.until * 1000)
    rows = metricsdb.raw_points(conn, sid, since_ms, until_ms)
    prev: tuple[int, float] | None = None
    if counter:
        row = conn.execute("SELECT ts, value FROM samples WHERE series_id=? AND ts<? "
                           "ORDER BY ts DESC LIMIT 1", (sid, since_ms)).fetchone()
        prev = (int(row[0]), float(row[1])) if row else None
    if plan.step is None:
        out: list[dict[str, Any]] = []
        for ts, value in rows:
            point: dict[str, Any] = {"ts": ts / 1000, "value": value}
            if counter:
                if prev is not None and ts > prev[0]:
                    delta = value - prev[1]
                    gained = delta if delta >= 0 else value
                    point["increase"] = gained
                    point["rate"] = gained / ((ts - prev[0]) / 1000)
                prev = (ts, value)
            out.append(point)
        return out
    step = plan.step
    # bucket → [count, sum, min, max, last, increase, span start (ms), last ts (ms)]
    buckets: dict[int, list[Any]] = {}
    for ts, value in rows:
        inc: float | None = None
        span_start = ts
        if counter:
            if prev is not None and ts > prev[0]:
                delta = value - prev[1]
                inc = delta if delta >= 0 else value
                span_start = prev[0]
            prev = (ts, value)
        sec = ts // 1000
        bucket = sec - sec % step
        b = buckets.get(bucket)
        if b is None:
            buckets[bucket] = [1, value, value, value, value, inc, span_start, ts]
            continue
        b[0] += 1
        b[1] += value
        b[2] = min(b[2], value)
        b[3] = max(b[3], value)
        b[4] = value
        b[7] = ts
        if inc is not None:
            b[5] = (b[5] or 0.0) + inc
    out = []
    for key, b in sorted(buckets.items()):
        point = _point(key, b[0], b[1], b[2], b[3], b[4], b[5], step, counter)
        if counter:  # the increase was measured from the sample before the bucket
            span = (b[7] - b[6]) / 1000
            point["rate"] = b[5] / span if b[5] is not None and span > 0 else None
        out.append(point)
    return out


def _rollup_points(conn: sqlite3.Connection, sid: int, plan: QueryPlan, counter: bool
                   ) -> list[dict[str, Any]]:
    base = 300 if plan.source == "5m" else 3600
    step = plan.step or base
    first = int(plan.since) - int(plan.since) % step
    rows = metricsdb.rollup_rows(conn, sid, base, first, int(plan.until))
    if step == base:
        return [_point(r[0], r[1], r[2], r[3], r[4], r[5], r[7], step, counter) for r in rows]
    merged: dict[int, list[Any]] = {}
    for bucket, count, total, lo, hi, last, last_ts, inc in rows:
        key = bucket - bucket % step
        m = merged.get(key)
        if m is None:
            merged[key] = [count, total, lo, hi, last, last_ts, inc]
            continue
        m[0] += count
        m[1] += total
        m[2] = min(m[2], lo)
        m[3] = max(m[3], hi)
        if last_ts >= m[5]:
            m[4], m[5] = last, last_ts
        if inc is not None:
            m[6] = (m[6] or 0.0) + inc
    return [_point(k, m[0], m[1], m[2], m[3], m[4], m[6], step, counter)
            for k, m in sorted(merged.items())]


def run_query(conn: sqlite3.Connection, name: str, server: str | None,
              labels: dict[str, str], plan: QueryPlan) -> list[dict[str, Any]]:
    """Every matching series with its points (reader thread)."""
    out = []
    for row in metricsdb.find_series(conn, name, server):
        if any(row.labels.get(k) != v for k, v in labels.items()):
            continue
        counter = row.kind == "counter"
        if plan.source == "raw":
            points = _raw_points(conn, row.id, plan, counter)
        else:
            points = _rollup_points(conn, row.id, plan, counter)
        out.append({"server": row.server, "labels": row.labels, "kind": row.kind,
                    "points": points})
    return out
