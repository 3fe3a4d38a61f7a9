"""metrics.db at the SQLite level: ingest, rollups that agree with the raw rows, counter
resets, pruning in bounded steps, and the integrity check that moves a broken file aside."""

from __future__ import annotations

import math
import random
import sqlite3
from pathlib import Path

import pytest

from podod.monitor import metricsdb
from podod.monitor.model import Sample
from podod.monitor.query import QueryPlan, run_query

T0 = 1_699_999_200.0  # a fixed epoch, aligned to the hour


def gauge(name: str, value: float, ts: float, server: str = "mx1", **labels: str) -> Sample:
    return Sample(name, server, value, Sample.labels_of(**labels), "gauge", ts)


def counter(name: str, value: float, ts: float, server: str = "mx1", **labels: str) -> Sample:
    return Sample(name, server, value, Sample.labels_of(**labels), "counter", ts)


def expected_rollups(conn: sqlite3.Connection) -> dict[tuple[int, int, int], tuple]:
    """Rollups recomputed from the raw rows alone, the way a reader would check them."""
    kinds = dict(conn.execute("SELECT id, kind FROM series").fetchall())
    out: dict[tuple[int, int, int], list] = {}
    prev: dict[int, float] = {}
    for sid, ts, value in conn.execute("SELECT series_id, ts, value FROM samples "
                                       "ORDER BY series_id, ts"):
        inc = None
        if kinds[sid] == "counter":
            inc = 0.0 if sid not in prev else (value - prev[sid] if value >= prev[sid]
                                               else value)
            prev[sid] = value
        for step in metricsdb.STEPS:
            bucket = ts // 1000 - (ts // 1000) % step
            row = out.setdefault((sid, step, bucket), [0, 0.0, math.inf, -math.inf, None, 0,
                                                       None])
            row[0] += 1
            row[1] += value
            row[2] = min(row[2], value)
            row[3] = max(row[3], value)
            if ts >= row[5]:
                row[4], row[5] = value, ts
            if inc is not None:
                row[6] = (row[6] or 0.0) + inc
    return {k: tuple(v) for k, v in out.items()}


def stored_rollups(conn: sqlite3.Connection) -> dict[tuple[int, int, int], tuple]:
    return {(r[0], r[1], r[2]): tuple(r[3:]) for r in conn.execute(
        "SELECT series_id, step, bucket, count, sum, min, max, last, last_ts, increase "
        "FROM rollups")}


def assert_rollups_agree(conn: sqlite3.Connection) -> None:
    want, got = expected_rollups(conn), stored_rollups(conn)
    assert want.keys() == got.keys()
    for key, w in want.items():
        g = got[key]
        assert g[0] == w[0] and g[2] == w[2] and g[3] == w[3] and g[4] == w[4], key
        assert g[5] == w[5]
        assert g[1] == pytest.approx(w[1])
        assert (g[6] is None) == (w[6] is None)
        if w[6] is not None:
            assert g[6] == pytest.approx(w[6])


def test_rollups_agree_with_raw_data_over_many_batches(tmp_path: Path) -> None:
    writer = metricsdb.MetricsWriter(tmp_path / "metrics.db")
    rng = random.Random(7)
    total = {"a": 0.0, "b": 0.0}
    batch: list[Sample] = []
    for i in range(3000):  # 25 hours at 30 s, in batches of uneven size
        ts = T0 + i * 30 + rng.random()
        batch.append(gauge("node_load1", rng.uniform(0, 4), ts))
        batch.append(gauge("node_filesystem_avail_bytes", rng.uniform(1e9, 2e9), ts,
                           mountpoint="/"))
        for dev in ("a", "b"):
            total[dev] += rng.uniform(0, 1e6)
            value = total[dev]
            if dev == "a" and i in (500, 1700):  # the source restarted
                total[dev] = value = rng.uniform(0, 1e3)
            batch.append(counter("node_network_receive_bytes_total", value, ts, device=dev))
        if rng.random() < 0.05:
            writer.ingest(batch)
            batch = []
    writer.ingest(batch)
    assert writer.written == 12000
    assert_rollups_agree(writer.conn)
    increases = [r[0] for r in writer.conn.execute(
        "SELECT increase FROM rollups WHERE increase IS NOT NULL")]
    assert increases and min(increases) >= 0
    # the hourly increases add up to the counter's whole growth, resets included
    sid = writer.conn.execute("SELECT id FROM series WHERE labels='{\"device\":\"b\"}'"
                              ).fetchone()[0]
    first, last = writer.conn.execute(
        "SELECT min(value), max(value) FROM samples WHERE series_id=?", (sid,)).fetchone()
    hourly = writer.conn.execute("SELECT sum(increase) FROM rollups WHERE series_id=? AND "
                                 "step=3600", (sid,)).fetchone()[0]
    assert hourly == pytest.approx(last - first)
    writer.close()


def test_counter_state_survives_a_restart_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    writer = metricsdb.MetricsWriter(path)
    writer.ingest([counter("c_total", v, T0 + i) for i, v in enumerate([10, 20, 30])])
    writer.close()
    writer = metricsdb.MetricsWriter(path)  # knows nothing in memory: reads the last value
    writer.ingest([counter("c_total", v, T0 + 3 + i) for i, v in enumerate([5, 15])])
    inc = writer.conn.execute("SELECT sum(increase) FROM rollups WHERE step=300").fetchone()[0]
    assert inc == 10 + 10 + 5 + 10  # 30 → 5 is a reset: +5, not -25
    assert_rollups_agree(writer.conn)
    writer.close()


def test_a_bucket_with_only_the_first_reading_has_no_increase_or_rate(tmp_path: Path) -> None:
    # the first reading lands in the last second of its minute, the next ones a bucket later:
    # the first bucket has nothing to measure an increase from, and says so (None), while
    # every later bucket has a real increase and rate
    writer = metricsdb.MetricsWriter(tmp_path / "metrics.db")
    writer.ingest([counter("dovecot_logins_total", v, T0 + 59 + 2 * i, protocol="imap")
                   for i, v in enumerate([7, 8, 10, 10])])
    minutes = run_query(writer.conn, "dovecot_logins_total", "mx1", {},
                        QueryPlan("raw", 60, T0 - 1, T0 + 3600))[0]["points"]
    assert (minutes[0]["increase"], minutes[0]["rate"]) == (None, None)
    assert [(p["increase"], p["rate"]) for p in minutes[1:]] == [(3, 0.5)]
    # one 5-minute rollup holds all four readings: its increase counts from the first
    rollups = run_query(writer.conn, "dovecot_logins_total", "mx1", {},
                        QueryPlan("5m", 300, T0 - 1, T0 + 3600))[0]["points"]
    assert [p["increase"] for p in rollups] == [3]
    writer.close()


def test_query_rates_never_negative_across_resets(tmp_path: Path) -> None:
    writer = metricsdb.MetricsWriter(tmp_path / "metrics.db")
    values = [100, 160, 220, 30, 90, 150, 10]  # two resets (a reload, a restart)
    writer.ingest([counter("dovecot_logins_total", v, T0 + 60 * i, protocol="imap")
                   for i, v in enumerate(values)])
    raw = run_query(writer.conn, "dovecot_logins_total", "mx1", {},
                    QueryPlan("raw", None, T0 - 1, T0 + 3600))
    rates = [p["rate"] for p in raw[0]["points"] if "rate" in p]
    assert rates == pytest.approx([1.0, 1.0, 0.5, 1.0, 1.0, 10 / 60])
    buckets = run_query(writer.conn, "dovecot_logins_total", "mx1", {},
                        QueryPlan("raw", 120, T0 - 1, T0 + 3600))
    assert all(p["rate"] is None or p["rate"] >= 0 for p in buckets[0]["points"])
    assert sum(p["increase"] for p in buckets[0]["points"]) == 60 + 60 + 30 + 60 + 60 + 10
    hourly = run_query(writer.conn, "dovecot_logins_total", "mx1", {},
                       QueryPlan("1h", 3600, T0 - 3600, T0 + 3600))
    assert sum(p["increase"] for p in hourly[0]["points"]) == 280
    writer.close()


def test_query_merges_rollups_to_larger_steps(tmp_path: Path) -> None:
    writer = metricsdb.MetricsWriter(tmp_path / "metrics.db")
    writer.ingest([gauge("g", float(i), T0 + 60 * i) for i in range(240)])  # 4 hours
    five = run_query(writer.conn, "g", None, {}, QueryPlan("5m", 900, T0, T0 + 4 * 3600))
    points = five[0]["points"]
    assert len(points) == 16 and points[0]["count"] == 15
    assert points[0]["min"] == 0 and points[0]["max"] == 14 and points[0]["last"] == 14
    assert points[0]["avg"] == pytest.approx(7)
    day = run_query(writer.conn, "g", None, {}, QueryPlan("1h", 86400, T0, T0 + 4 * 3600))
    # T0 is two hours before a UTC midnight: two daily buckets, 120 samples each
    assert [p["count"] for p in day[0]["points"]] == [120, 120]
    assert day[0]["points"][1]["ts"] % 86400 == 0
    assert day[0]["points"][1]["avg"] == pytest.approx(179.5)
    writer.close()


def test_failed_batch_leaves_nothing_behind(tmp_path: Path) -> None:
    writer = metricsdb.MetricsWriter(tmp_path / "metrics.db")
    writer.ingest([gauge("g", 1, T0)])
    bad = [gauge("new_series", 1, T0 + 1), gauge("g", float("nan"), T0 + 1)]
    # NaN is stored by SQLite as NULL, which the NOT NULL constraint refuses: a real failure
    with pytest.raises(sqlite3.IntegrityError):
        writer.ingest(bad)
    assert writer.conn.execute("SELECT count(*) FROM series").fetchone()[0] == 1
    writer.ingest([gauge("new_series", 2, T0 + 2)])  # the cached id was forgotten with it
    assert writer.conn.execute("SELECT count(*) FROM series").fetchone()[0] == 2
    assert_rollups_agree(writer.conn)
    writer.close()


def test_prune_removes_old_samples_rollups_and_empty_series_in_small_steps(
        tmp_path: Path) -> None:
    writer = metricsdb.MetricsWriter(tmp_path / "metrics.db")
    day = 86400
    now = T0 + 100 * day
    batch = []
    for i in range(0, 100 * 24):  # 100 days, hourly, of one series
        batch.append(gauge("old_and_new", float(i), T0 + i * 3600))
    batch += [gauge("only_old", 1.0, T0 + j * 60) for j in range(3000)]
    writer.ingest(batch)
    cursor = metricsdb.PruneCursor(raw_cut_ms=int((now - 7 * day) * 1000),
                                   rollup_cut=int(now - 90 * day))
    steps = 0
    while True:
        before = writer.conn.total_changes
        done = writer.prune_step(cursor, 500)
        # at most 500 rows plus the series row itself per step
        assert writer.conn.total_changes - before <= 501
        steps += 1
        if done:
            break
    assert steps > 5
    conn = writer.conn
    oldest_raw = conn.execute("SELECT min(ts) FROM samples").fetchone()[0]
    assert oldest_raw >= (now - 7 * day) * 1000
    assert conn.execute("SELECT min(bucket) FROM rollups").fetchone()[0] >= now - 90 * day
    names = [r[0] for r in conn.execute("SELECT name FROM series")]
    assert names == ["old_and_new"]  # only_old had nothing left: its series went too
    kept = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    assert kept == len([i for i in range(2400) if T0 + i * 3600 >= now - 7 * day])
    assert cursor.deleted_series == 1
    # a later sample of the pruned series gets a new series row
    writer.ingest([gauge("only_old", 5.0, now)])
    assert conn.execute("SELECT count(*) FROM series").fetchone()[0] == 2
    writer.close()


def test_quick_check_finds_a_broken_file_and_it_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    assert metricsdb.quick_check(path) is None  # no file yet: nothing to check
    writer = metricsdb.MetricsWriter(path)
    writer.ingest([gauge("g", float(i), T0 + i) for i in range(20000)])
    writer.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    writer.close()
    assert metricsdb.quick_check(path) is None
    data = bytearray(path.read_bytes())
    for offset in range(4096 * 2, len(data), 4096):  # scribble over every page but two
        data[offset + 100:offset + 400] = b"\xff" * 300
    path.write_bytes(bytes(data))
    problem = metricsdb.quick_check(path)
    assert problem is not None
    moved = metricsdb.move_aside(path)
    assert not path.exists() and moved.exists() and ".corrupt-" in moved.name
    (tmp_path / "garbage.db").write_bytes(b"this is not a database" * 100)
    assert "not a database" in (metricsdb.quick_check(tmp_path / "garbage.db") or "")
