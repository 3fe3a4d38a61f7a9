"""The scheduler with real collectors of every bad kind: one that raises, one that hangs, one
that ignores cancellation, one that returns rubbish; the good ones keep their pace and state.
Reload, switching monitoring off, remote servers without SSH, and the spread of 200 servers."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from podod.monitor.collect import CollectContext
from podod.monitor.model import CollectorFailed, Sample, SamplesCollected
from podod.monitor.scheduler import Scheduler, spread
from podod.plugins import Registry, load_builtins
from podod.testbed.daemon import DaemonProcess
from podod.testbed.runtime import EventLog, runtime_for

pytestmark = pytest.mark.integration

SERVERS = [{"name": "here", "local": True}, {"name": "far", "host": "192.0.2.1"}]


def make_registry() -> tuple[Registry, dict[str, Any]]:
    registry = Registry()
    seen: dict[str, Any] = {"running": 0, "max_running": 0, "ok_at": []}

    @registry.collector("ok")
    async def ok(ctx: CollectContext) -> list[Sample]:
        n = ctx.state["n"] = ctx.state.get("n", 0) + 1
        seen["ok_at"].append((ctx.server_name, time.monotonic()))
        return [Sample("test_runs", ctx.server_name, float(n))]

    @registry.collector("boom")
    async def boom(ctx: CollectContext) -> list[Sample]:
        raise RuntimeError("kaput\n  in line two")

    @registry.collector("hang", per_server=False)
    async def hang(ctx: CollectContext) -> list[Sample]:
        await asyncio.sleep(3600)
        return []

    @registry.collector("stubborn", per_server=False)
    async def stubborn(ctx: CollectContext) -> list[Sample]:
        for _ in range(10):  # swallows cancellation, as a badly written plugin might
            try:
                await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                continue
        return []

    @registry.collector("rubbish", per_server=False)
    def rubbish(ctx: CollectContext) -> str:  # not even async
        return "not samples"

    @registry.collector("remote", per_server=True)
    async def remote(ctx: CollectContext) -> list[Sample]:
        assert ctx.runner is not None
        result = await ctx.runner.run(["true"], check=True)
        return [Sample("remote_ok", ctx.server_name, float(result.exit_status))]

    return registry, seen


async def test_failing_and_hanging_collectors_never_stop_the_others(tmp_path: Path) -> None:
    registry, seen = make_registry()
    monitor = {"enabled": True, "interval": "1s", "timeout": "1s", "max_concurrent": 4}
    async with runtime_for(tmp_path, registry, servers=SERVERS, monitor=monitor) as rt:
        log = EventLog(rt, SamplesCollected, CollectorFailed)
        scheduler = Scheduler(rt)
        await scheduler.start()
        assert len(scheduler.jobs) == 3 * 2 + 3  # ok, boom, remote per server; 3 once
        await asyncio.sleep(4.5)
        await scheduler.stop()
    failed = Counter((e.collector, e.server) for e in log.of(CollectorFailed))
    reasons = {(e.collector, e.server): e.reason for e in log.of(CollectorFailed)}
    assert reasons[("boom", "here")] == "RuntimeError: kaput in line two"
    assert reasons[("hang", "podod")] == "did not finish within 1s"
    assert reasons[("stubborn", "podod")] == "did not finish within 1s"
    assert reasons[("rubbish", "podod")] == "returned str instead of a list of samples"
    assert reasons[("remote", "far")] == ("server far is remote and podod's SSH connections "
                                          "(the servers component) are not running")
    assert ("remote", "here") not in reasons  # the local server runs commands directly
    assert failed[("boom", "here")] >= 3 and failed[("hang", "podod")] >= 2
    runs = [e for e in log.of(SamplesCollected) if e.collector == "ok"]
    for server in ("here", "far"):
        values = [e.samples[0].value for e in runs if e.server == server]
        assert values == [float(i) for i in range(1, len(values) + 1)]  # state kept
        assert len(values) >= 3
        times = [t for s, t in seen["ok_at"] if s == server]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.5 < g < 2.5 for g in gaps), gaps  # loosely every second


async def test_concurrency_is_bounded(tmp_path: Path) -> None:
    registry = Registry()
    running = {"now": 0, "max": 0, "done": 0}

    for i in range(6):
        @registry.collector(f"slow{i}", per_server=False)
        async def slow(ctx: CollectContext) -> list[Sample]:
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
            await asyncio.sleep(0.3)
            running["now"] -= 1
            running["done"] += 1
            return []

    monitor = {"enabled": True, "interval": "1s", "max_concurrent": 2}
    async with runtime_for(tmp_path, registry, monitor=monitor) as rt:
        scheduler = Scheduler(rt)
        await scheduler.start()
        jobs = list(scheduler.jobs.values())
        await asyncio.gather(*(scheduler.run_job(j) for j in jobs))
        await scheduler.stop()
    assert running["done"] >= 6 and running["max"] == 2


async def test_reload_applies_intervals_servers_and_the_off_switch(tmp_path: Path) -> None:
    registry, _ = make_registry()
    monitor = {"enabled": True, "interval": "30s"}
    async with runtime_for(tmp_path, registry, servers=SERVERS, monitor=monitor) as rt:
        scheduler = Scheduler(rt)
        await scheduler.start()
        assert scheduler.jobs[("ok", "here")].interval == 30
        scheduler.jobs[("ok", "here")].state["n"] = 41
        new = rt.config.model_copy(deep=True)
        new.monitor.intervals = {"ok": 5.0}
        new.servers = [s for s in new.servers if s.name == "here"]
        rt.config = new
        await scheduler.reload(new)
        assert ("ok", "far") not in scheduler.jobs
        assert scheduler.jobs[("ok", "here")].interval == 5
        assert scheduler.jobs[("boom", "here")].interval == 30
        assert scheduler.jobs[("ok", "here")].state["n"] == 41  # kept over the restart
        off = rt.config.model_copy(deep=True)
        off.monitor.enabled = False
        rt.config = off
        await scheduler.reload(off)
        assert scheduler.jobs == {}
        await scheduler.stop()


def test_two_hundred_servers_are_spread_over_the_interval() -> None:
    offsets = sorted(spread(f"system/mx{i:03d}", 30.0) for i in range(200))
    assert all(0 <= o < 30 for o in offsets)
    per_second = Counter(int(o) for o in offsets)
    assert len(per_second) >= 28 and max(per_second.values()) <= 16
    same_ms = Counter(round(o, 3) for o in offsets)
    assert max(same_ms.values()) == 1
    assert spread("system/mx001", 30.0) == spread("system/mx001", 30.0)  # stable


async def test_builtin_collectors_on_a_remote_server_without_ssh(tmp_path: Path) -> None:
    """No servers component yet: commands fail with a reason; probes still run."""
    registry = Registry()
    load_builtins(registry, ["podod.monitor.collectors"])
    servers = [{"name": "far", "host": "127.0.0.1", "services": ["postfix"]}]
    monitor = {"enabled": True, "collectors": {"services": {"probes": {
        "smtp": {"port": 1}}}}}
    async with runtime_for(tmp_path, registry, servers=servers, monitor=monitor) as rt:
        log = EventLog(rt, SamplesCollected, CollectorFailed)
        scheduler = Scheduler(rt)
        await scheduler.start()
        for job in list(scheduler.jobs.values()):
            await scheduler.run_job(job)
        await rt.events.drain()
        await scheduler.stop()
    failed = {e.collector: e.reason for e in log.of(CollectorFailed)}
    assert set(failed) == {"system", "queue"}
    assert all("are not running" in r for r in failed.values())
    samples = {s.series: s for e in log.of(SamplesCollected) for s in e.samples}
    assert samples["probe_success"].value == 0.0  # port 1 is closed: a result, no failure
    assert "service_up" not in samples


def test_collector_errors_are_counted_in_the_store(start_daemon: Any,
                                                  tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "flaky.py").write_text(
        "def setup(registry):\n"
        "    @registry.collector('flaky', interval=1, per_server=False)\n"
        "    async def flaky(ctx):\n"
        "        raise ValueError('the source went away')\n")
    daemon: DaemonProcess = start_daemon(
        plugins={"dirs": [str(plugins)], "entry_points": False},
        monitor={"enabled": True, "store": {"flush_interval": 0.2}})
    deadline = time.monotonic() + 30
    values: list[float] = []
    while time.monotonic() < deadline and len(values) < 3:
        reply = daemon.request(["metrics", "query", "collector_errors_total", "--label",
                                "collector=flaky", "--since", "5m"])
        if reply["ok"]:
            values = [p["value"] for p in reply["data"]["results"][0]["points"]]
        time.sleep(0.3)
    assert values[:3] == [1.0, 2.0, 3.0]
    jobs = daemon.request(["collector", "list"])["data"]
    flaky = next(j for j in jobs if j["collector"] == "flaky")
    assert flaky["last_error"] == "ValueError: the source went away"
    log = daemon.log()
    assert log.count("collector flaky on podod failed: ValueError") == 1  # no log spam
    assert log.count("Traceback") <= 1  # the first failure's, at debug level only


def test_monitor_switched_off_runs_nothing(start_daemon: Any) -> None:
    daemon: DaemonProcess = start_daemon()  # the test config has monitor.enabled: false
    reply = daemon.request(["collector", "list"])
    assert reply["ok"] and reply["data"] == []
    assert "switched off" in reply["message"]

