"""Quota warnings (issue 17): one collection of the ``mail_quota`` collector over 100 000
mailboxes in 1 000 domains on a throwaway PostgreSQL cluster.

A collection is what the collector does every run: its one aggregate statement
(``podod.alerts.quota.QUERY``: per-domain counts plus the mailboxes near a threshold),
reading the rows, the per-domain samples with their address notes, and planning the owner
notices against what was already sent. About 8 % of the mailboxes are seeded over 80 %
(what the statement returns), 3 % over 95 %. Target: under 1 s median at 100 000
mailboxes (the collector runs every 5 minutes). The counts are checked against a direct
count per threshold (exit 1 when they differ).

    .venv/bin/python bench/quota.py [--mailboxes 100000] [--domains 1000] [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _repo import save_result, write_config  # puts the checkout's testbed/ on sys.path
from podod.alerts.quota import QUERY, plan_notices, read_rows, samples_of
from podod.alerts.settings import QuotaWarningSettings
from testbed.daemon import base_config
from testbed.ports import free_port
from testbed.postgres import PgCluster

TARGETS = {"collection_ms_median_at_100000": 1000.0}


def seed(cluster: PgCluster, db: str, mailboxes: int, domains: int) -> None:
    per = max(mailboxes // domains, 1)
    cluster.psql(
        "INSERT INTO domain (domain) SELECT 'd' || d || '.example' "
        f"FROM generate_series(1, {domains}) AS d;"
        "INSERT INTO mailbox (username, password, name, maildir, quota, local_part, domain) "
        "SELECT 'user' || i || '@d' || (i % " + str(domains) + " + 1) || '.example', 'x', "
        "'User ' || i, 'm/' || i || '/', 1073741824, 'user' || i, "
        "'d' || (i % " + str(domains) + " + 1) || '.example' "
        f"FROM generate_series(1, {per * domains}) AS i;"
        "INSERT INTO quota2 (username, bytes, messages) "
        "SELECT username, CASE WHEN random() < 0.03 THEN 1030000000 "
        "WHEN random() < 0.05 THEN 900000000 ELSE (random() * 7e8)::bigint END, 100 "
        "FROM mailbox;"
        "ANALYZE;", db)


async def collect(dsn: str, password: str, runs: int) -> dict[str, Any]:
    import asyncpg

    settings = QuotaWarningSettings()
    lowest = float(settings.thresholds[0] - settings.rearm_margin)
    conn = await asyncpg.connect(dsn, password=password)
    times: list[float] = []
    query_times: list[float] = []
    try:
        notified: set[tuple[str, int]] = set()
        for _ in range(runs + 1):  # the first run is a warm-up, not counted
            started = time.perf_counter()
            rows = await conn.fetch(QUERY, lowest)
            queried = time.perf_counter()
            reading = read_rows(rows)
            samples = samples_of(reading, settings, time.time())
            _forget, due = plan_notices(reading.near, notified, settings)
            notified = {(d.usage.address, t) for d in due for t in d.crossed}
            times.append(time.perf_counter() - started)
            query_times.append(queried - started)
        # Correct, not only fast: the per-domain counts add up to what SQL counts directly.
        expected = {t: await conn.fetchval(
            "SELECT count(*) FROM mailbox m JOIN quota2 q USING (username) JOIN domain d "
            "ON d.domain = m.domain WHERE m.quota > 0 AND m.active AND d.active "
            "AND q.bytes::float8 * 100 >= m.quota::float8 * $1",
            float(t)) for t in settings.thresholds}
        got = {t: sum(s.value for s in samples if s.series == "mail_quota_mailboxes_over"
                      and dict(s.labels)["threshold"] == str(t)) for t in settings.thresholds}
        total = sum(s.value for s in samples if s.series == "mail_quota_mailboxes")
        correct = got == {t: float(n) for t, n in expected.items()} and total == \
            await conn.fetchval("SELECT count(*) FROM mailbox WHERE quota > 0 AND active")
    finally:
        await conn.close()
    return {"correct": correct, "over": {str(t): int(n) for t, n in expected.items()},
            "collection_ms_median": round(statistics.median(times[1:]) * 1000, 1),
            "query_ms_median": round(statistics.median(query_times[1:]) * 1000, 1),
            "rows": len(rows), "near": len(reading.near), "samples": len(samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=100_000)
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    result: dict[str, Any] = {"targets": TARGETS, "mailboxes": args.mailboxes,
                              "domains": args.domains, "load_average": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="podod-bench-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        cluster = PgCluster(root / "pg", free_port())
        cluster.start()
        try:
            database = cluster.mail_database(root)
            config = base_config(root, mail={"database": database})
            write_config(root, config)
            seed(cluster, "mail", args.mailboxes, args.domains)
            password = (root / "pg-password").read_text()
            result.update(asyncio.run(collect(database["dsn"], password, args.runs)))
        finally:
            cluster.stop()
    print(f"quota collection over {args.mailboxes} mailboxes in {args.domains} domains: "
          f"{result['collection_ms_median']} ms median (the statement "
          f"{result['query_ms_median']} ms; {result['near']} mailboxes near a threshold, "
          f"{result['samples']} samples); target under "
          f"{TARGETS['collection_ms_median_at_100000']:.0f} ms; counts "
          f"{'match' if result['correct'] else 'DO NOT match'} a direct count "
          f"({result['over']})")
    print(f"saved {save_result('quota', result)}")
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
