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
from testbed.daemon import DaemonProcess
from testbed.runtime import EventLog, runtime_for

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


async def test_an_unreachable_server_is_warned_about_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The reason of an unreachable server changes at every run ("since ..., 3s ago; podod
    tries again in 2 s"): still one warning while it stays down, not one per run."""
    from podod.servers.runner import ServerUnreachable

    registry = Registry()
    runs = itertools.count(1)

    @registry.collector("down")
    async def down(ctx: CollectContext) -> list[Sample]:
        n = next(runs)
        raise ServerUnreachable(f"server here is not connected since 12:00:0{n % 10} UTC, "
                                f"{n}s ago: connection refused; podod tries again in "
                                f"{n * 1.5:.1f} s")

    caplog.set_level("DEBUG", logger="podod.monitor.scheduler")
    monitor = {"enabled": True, "interval": "1s"}
    async with runtime_for(tmp_path, registry, servers=SERVERS[:1], monitor=monitor) as rt:
        scheduler = Scheduler(rt)
        await scheduler.start()
        await asyncio.sleep(4.5)
        await scheduler.stop()
    assert next(runs) >= 4
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
                and "collector down on here failed" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert any("failed again" in r.getMessage() for r in caplog.records)


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



# -- cycles: is every server measured once per interval? -------------------------------------

FIVE = [{"name": f"mx{i}", "local": True} for i in range(5)]


async def test_cycles_of_a_collector_that_keeps_up(tmp_path: Path) -> None:
    registry = Registry()

    @registry.collector("quick")
    async def quick(ctx: CollectContext) -> list[Sample]:
        await asyncio.sleep(0.05 if ctx.server_name != "mx3" else 0.2)
        return [Sample("test_value", ctx.server_name, 1.0)]

    monitor = {"enabled": True, "interval": "1s", "max_concurrent": 8}
    async with runtime_for(tmp_path, registry, servers=FIVE, monitor=monitor) as rt:
        log = EventLog(rt, SamplesCollected)
        scheduler = Scheduler(rt)
        await scheduler.start()
        await asyncio.sleep(4.6)
        summary = scheduler.cycle_summary("quick")
        await scheduler.stop()
    cycles = summary["recent"]
    assert summary["jobs"] == 5 and summary["interval"] == 1
    assert len(cycles) >= 3
    full = cycles[1:]  # the first one may be partial: jobs whose phase had passed at start
    assert all(c["jobs"] == 5 and c["ok"] == 5 and c["fits"] for c in full), full
    assert [c["cycle"] for c in cycles] == list(range(cycles[0]["cycle"],
                                                      cycles[0]["cycle"] + len(cycles)))
    for c in full:
        assert c["failed"] == c["skipped"] == c["overran"] == 0
        assert c["slowest_server"] == "mx3" and 0.2 <= c["slowest"] < 0.9
        assert c["slowest"] <= c["cycle_time"] < 1  # turn -> end, for the slowest
        assert c["window_start"] <= c["first_start"] <= c["last_end"]
        assert c["span"] == c["last_end"] - c["first_start"]
    assert summary["not_fitting"] == 0 and summary["cycle_time_max"] < 1
    published = [s for e in log.of(SamplesCollected) if e.collector == "scheduler"
                 for s in e.samples]
    assert {s.server for s in published} == {"podod"}
    by_name = {(s.series, dict(s.labels).get("outcome")): s for s in published}
    assert by_name[("collector_interval_seconds", None)].value == 1.0
    assert by_name[("collector_cycle_jobs", None)].value == 5.0
    assert by_name[("collector_cycle_runs", "ok")].value == 5.0
    assert by_name[("collector_cycle_runs", "overran")].value == 0.0
    assert dict(by_name[("collector_cycle_seconds", None)].labels) == {"collector": "quick"}


async def test_cycles_of_a_collector_that_cannot_keep_up(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    """One slot, five servers, 0.5 s per run, a 1 s interval: 2.5 s of work per second."""
    registry = Registry()

    @registry.collector("slow")
    async def slow(ctx: CollectContext) -> list[Sample]:
        await asyncio.sleep(0.5)
        return []

    monitor = {"enabled": True, "interval": "1s", "max_concurrent": 1}
    async with runtime_for(tmp_path, registry, servers=FIVE, monitor=monitor) as rt:
        scheduler = Scheduler(rt)
        await scheduler.start()
        await asyncio.sleep(6.5)
        summary = scheduler.cycle_summary("slow")
        await scheduler.stop()
    closed = summary["recent"]
    assert closed and summary["not_fitting"] >= 2
    bad = [c for c in closed if not c["fits"]]
    assert all(c["skipped"] + c["overran"] > 0 for c in bad)
    assert summary["skipped"] > 0 and summary["overran"] > 0
    assert max(c["cycle_time"] for c in bad) >= 1.0  # someone waited beyond the interval
    assert max(c["longest_wait"] for c in bad) > 0.5  # for the one slot
    warnings = [r.getMessage() for r in caplog.records
                if "did not fit its 1s interval" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once, not every cycle


def test_collector_cycles_command_and_its_bad_input(start_daemon: Any, tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "tick.py").write_text(
        "def setup(registry):\n"
        "    @registry.collector('tick', interval=1)\n"
        "    async def tick(ctx):\n"
        "        return []\n")
    daemon: DaemonProcess = start_daemon(
        plugins={"dirs": [str(plugins)], "entry_points": False},
        servers=[{"name": "here", "local": True}, {"name": "there", "local": True}],
        monitor={"enabled": True, "store": {"flush_interval": 0.2},
                 "intervals": {"system": "1s", "services": "1s", "queue": "1s",
                               "postgres": "1s"}})
    deadline = time.monotonic() + 30
    reply: dict[str, Any] = {}
    while time.monotonic() < deadline:
        reply = daemon.request(["collector", "cycles", "--collector", "tick", "--last", "2"])
        if reply["ok"] and len(reply["data"][0]["recent"]) == 2:
            break
        time.sleep(0.3)
    summary = reply["data"][0]
    assert summary["collector"] == "tick" and summary["jobs"] == 2
    assert [c["fits"] for c in summary["recent"]] == [True, True]
    assert reply["message"].startswith("tick: 2 jobs every 1s;")
    overview = daemon.request(["collector", "cycles"])
    assert overview["ok"], overview["message"]
    assert {s["collector"] for s in overview["data"]} >= {"tick", "system", "services"}
    query = ["metrics", "query", "collector_cycle_runs", "--server", "podod", "--label",
             "collector=tick", "--label", "outcome=ok", "--since", "5m"]
    while time.monotonic() < deadline and not (series := daemon.request(query))["ok"]:
        time.sleep(0.3)
    assert series["ok"], series["message"]
    assert series["data"]["results"][0]["points"][-1]["value"] == 2.0
    for argv, words in [
        (["collector", "cycles", "--collector", "nope"],
         "collector cycles: there is no collector named 'nope' running (collectors: "),
        (["collector", "cycles", "--last", "0"],
         "collector cycles: --last must be between 1 and 1000"),
    ]:
        bad = daemon.request(argv)
        assert not bad["ok"] and bad["message"].startswith(words), bad["message"]
        assert "\n" not in bad["message"]
