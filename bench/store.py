"""The metrics store (metrics.db): ingest rate, query latency, and a prune that must not
stall the event loop. Runs the real Store component (writer and reader threads) in process.

Targets (issue 4):
- bulk ingest at least 250 000 samples/s;
- one series over 6 hours (raw samples) in under 1 ms, over 90 days (hourly rollups) in
  under 20 ms;
- pruning 100 000 expired rows never blocks the event loop for more than 50 ms.

    .venv/bin/python bench/store.py [--bulk 1000000] [--servers 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (the checkout's testbed/ on sys.path)
from podod.events import DaemonStarted
from podod.monitor.model import Sample
from podod.monitor.query import plan_query, run_query
from podod.monitor.store import Store
from testbed.runtime import runtime_for

REPO = Path(__file__).resolve().parent.parent
DAY = 86400.0
SERIES_PER_SERVER = 80  # what system, services, queue and postgres emit for one server


def fleet_tick(servers: int, ts: float, value: float) -> list[Sample]:
    """One collection cycle of a fleet: one sample of every series of every server."""
    out = []
    for s in range(servers):
        server = f"mx{s:03d}"
        for i in range(SERIES_PER_SERVER):
            kind = "counter" if i % 4 == 0 else "gauge"
            out.append(Sample(f"bench_series_{i % 40}", server, value + i,
                              (("n", str(i // 40)),), kind, ts))
    return out


async def bench_ingest(store: Store, servers: int, bulk: int) -> dict[str, Any]:
    # one transaction per collection tick: the whole fleet's cycle (200 × 80 samples)
    now = time.time() - 3 * DAY
    ticks = 20
    batches = [fleet_tick(servers, now + 30 * t, float(t)) for t in range(ticks + 1)]
    store.add(batches[0])  # creates the series: not part of the measurement
    await store.flush()
    started = time.perf_counter()
    for batch in batches[1:]:
        store.add(batch)
        await store.flush()
    fleet_rate = ticks * len(batches[1]) / (time.perf_counter() - started)
    # one transaction per server's tick (80 samples)
    small = [fleet_tick(1, now + 30 * (ticks + 1 + t), float(t)) for t in range(200)]
    started = time.perf_counter()
    for batch in small:
        store.add(batch)
        await store.flush()
    server_rate = 200 * SERIES_PER_SERVER / (time.perf_counter() - started)
    # bulk: a backlog (say, after a full disk) written in max_batch transactions
    series = 1000
    points = bulk // series
    base = time.time() - 2 * DAY
    samples = [Sample(f"bulk_{i % 100}", f"bk{i // 100}", float(p), (), "gauge",
                      base + p * 60)
               for p in range(points) for i in range(series)]
    started = time.perf_counter()
    store.add(samples)
    await store.flush()
    bulk_rate = len(samples) / (time.perf_counter() - started)
    return {"tick_fleet_samples_per_s": round(fleet_rate),
            "tick_fleet_samples_per_transaction": len(batches[1]),
            "tick_server_samples_per_s": round(server_rate),
            "tick_server_samples_per_transaction": SERIES_PER_SERVER,
            "bulk_samples_per_s": round(bulk_rate), "bulk_samples": len(samples),
            "bulk_transactions": -(-len(samples) // store.settings.store.max_batch)}


async def bench_queries(store: Store) -> dict[str, Any]:
    """One series with 90 days at a 30-s interval (raw pruned to 7 days), among others."""
    now = time.time()
    start = now - 90 * DAY
    chunk: list[Sample] = []
    for i in range(int(90 * DAY / 30)):
        chunk.append(Sample("node_load1", "mx001", (i % 100) / 25, (), "gauge",
                            start + i * 30))
        if len(chunk) == 100_000:
            store.add(chunk)
            await store.flush()
            chunk = []
    store.add(chunk)
    await store.flush()
    await store.prune(now)  # raw_retention 7 d: older raw samples go, rollups stay
    monitor = store.settings
    results: dict[str, Any] = {}
    for label, since in (("6h", 6 * 3600.0), ("90d", 90 * DAY)):
        plan = plan_query(since, None, time.time(), monitor.raw_retention,
                          monitor.rollup_retention)

        def timed(conn: Any, plan: Any = plan) -> tuple[list[float], int]:
            laps = []
            points = 0
            for _ in range(200):
                t = time.perf_counter()
                out = run_query(conn, "node_load1", "mx001", {}, plan)
                laps.append(time.perf_counter() - t)
                points = len(out[0]["points"])
            return laps, points

        laps, points = await store.read(timed)
        through = []
        for _ in range(50):  # the same through the store's reader thread, from the loop
            t = time.perf_counter()
            await store.query("node_load1", "mx001", {}, plan)
            through.append(time.perf_counter() - t)
        results[f"query_{label}"] = {
            "source": plan.source, "points": points,
            "median_ms": round(statistics.median(laps) * 1000, 3),
            "p99_ms": round(sorted(laps)[int(len(laps) * 0.99) - 1] * 1000, 3),
            "via_loop_median_ms": round(statistics.median(through) * 1000, 3)}
    return results


async def bench_prune(store: Store, servers: int) -> dict[str, Any]:
    """100 000 expired raw rows pruned while collection goes on; the loop's lag measured."""
    old = time.time() - 30 * DAY
    expired = [Sample(f"old_{i % 100}", "pr", 1.0, (), "gauge", old + (i // 100) * 30)
               for i in range(100_000)]
    store.add(expired)
    await store.flush()
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(0.001)
            lags.append(loop.time() - before - 0.001)

    async def collect() -> None:  # the fleet keeps writing during the prune
        t = 0
        while not stop.is_set():
            store.add(fleet_tick(servers // 10, time.time(), float(t)))
            t += 1
            await asyncio.sleep(0.2)

    tasks = [asyncio.create_task(watch()), asyncio.create_task(collect())]
    await asyncio.sleep(0.3)
    started = time.perf_counter()
    result = await store.prune()
    took = time.perf_counter() - started
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*tasks)
    return {"prune_rows": result["samples"], "prune_steps": result["steps"],
            "prune_seconds": round(took, 3),
            "loop_max_lag_ms": round(max(lags) * 1000, 2),
            "loop_p99_lag_ms": round(sorted(lags)[int(len(lags) * 0.99) - 1] * 1000, 2)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="podod-bench-store-") as tmp:
        # the bench flushes by itself; the bulk run is a backlog bigger than the default bound
        monitor = {"store": {"flush_interval": 3600, "max_backlog": 2_000_000}}
        async with runtime_for(Path(tmp), monitor=monitor,
                               log={"level": "warning"}) as rt:
            store = Store(rt)
            await store.start()
            rt.events.publish(DaemonStarted(version="bench"))
            result: dict[str, Any] = {}
            result.update(await bench_ingest(store, args.servers, args.bulk))
            result.update(await bench_queries(store))
            result.update(await bench_prune(store, args.servers))
            result["db_size_mb"] = round(store.status()["size_bytes"] / 1048576, 1)
            await store.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bulk", type=int, default=1_000_000)
    parser.add_argument("--servers", type=int, default=200)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    result["targets"] = {"bulk_samples_per_s": 250_000, "query_6h_ms": 1.0,
                         "query_90d_ms": 20.0, "loop_max_lag_ms": 50.0}
    q6, q90 = result["query_6h"], result["query_90d"]
    print(f"store: bulk ingest {result['bulk_samples_per_s']:,} samples/s "
          f"({result['bulk_samples']:,} in {result['bulk_transactions']} transactions; "
          "target >= 250,000/s)")
    print(f"store: tick ingest {result['tick_fleet_samples_per_s']:,} samples/s with "
          f"{result['tick_fleet_samples_per_transaction']:,} per transaction (a "
          f"{args.servers}-server cycle), {result['tick_server_samples_per_s']:,} samples/s "
          f"with {SERIES_PER_SERVER} per transaction (one server's tick)")
    print(f"store: 6h query {q6['median_ms']} ms median, {q6['p99_ms']} ms p99 "
          f"({q6['points']} {q6['source']} points; target < 1 ms; "
          f"{q6['via_loop_median_ms']} ms from the event loop)")
    print(f"store: 90d query {q90['median_ms']} ms median, {q90['p99_ms']} ms p99 "
          f"({q90['points']} {q90['source']} points; target < 20 ms; "
          f"{q90['via_loop_median_ms']} ms from the event loop)")
    print(f"store: prune of {result['prune_rows']:,} rows in {result['prune_steps']} steps, "
          f"{result['prune_seconds']} s; event loop max lag {result['loop_max_lag_ms']} ms "
          f"(p99 {result['loop_p99_lag_ms']} ms; target <= 50 ms)")
    out = REPO / ".bench"
    out.mkdir(exist_ok=True)
    (out / "store.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
