"""The metrics store as a component: fed from the event bus, a full file system (a real
tmpfs that the test fills), kill -9 in the middle of writing, a corrupt file at start,
retention, and `metrics query|series|status` with good and bad input."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podod.events import DaemonStarted
from podod.monitor.model import (
    CollectorFailed,
    Sample,
    SamplesCollected,
    StoreDegraded,
    StoreRecovered,
    StoreReset,
)
from podod.monitor.query import plan_query
from podod.monitor.store import Store
from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.runtime import EventLog, runtime_for

pytestmark = pytest.mark.integration


def batch(n: int, ts: float, *, series: int = 50, prefix: str = "g") -> tuple[Sample, ...]:
    return tuple(Sample(f"{prefix}{i % series}", "mx1", float(i), (("k", str(i // series)),),
                        "gauge", ts) for i in range(n))


async def test_samples_from_events_are_written_and_queried(tmp_path: Path) -> None:
    async with runtime_for(tmp_path, monitor={"store": {"flush_interval": 0.1}}) as rt:
        store = Store(rt)
        await store.start()
        now = time.time()
        for i in range(10):
            rt.events.publish(SamplesCollected(collector="system", server="mx1", samples=(
                Sample("node_load1", "mx1", float(i), (), "gauge", now - 60 * (10 - i)),)))
        for n in range(3):
            rt.events.publish(CollectorFailed(collector="queue", server="mx1", reason="boom",
                                              at=now - 3 + n))
        await rt.events.drain()
        await store.flush()
        plan = plan_query(3600, None, time.time(), 7 * 86400, 90 * 86400)
        result = await store.query("node_load1", "mx1", {}, plan)
        assert [p["value"] for p in result[0]["points"]] == [float(i) for i in range(10)]
        errors = await store.query("collector_errors_total", None, {"collector": "queue"}, plan)
        assert [p["value"] for p in errors[0]["points"]] == [1.0, 2.0, 3.0]
        assert errors[0]["kind"] == "counter"
        listed = {(s["name"], s["server"]) for s in await store.series()}
        assert listed == {("node_load1", "mx1"), ("collector_errors_total", "mx1")}
        assert store.status()["degraded"] is None
        await store.stop()


async def test_retention_prunes_samples_and_rollups_in_small_steps(tmp_path: Path) -> None:
    monitor = {"raw_retention": "1d", "rollup_retention": "3d",
               "store": {"prune_step_rows": 1000}}
    async with runtime_for(tmp_path, monitor=monitor) as rt:
        store = Store(rt)
        await store.start()
        now = time.time()
        for day in range(5):  # five days back, one sample a minute
            store.add([Sample("node_load1", "mx1", 1.0, (), "gauge",
                              now - day * 86400 - m * 60) for m in range(1440)])
        await store.flush()
        result = await store.prune()
        assert result["samples"] == 4 * 1440
        assert result["steps"] > 5  # in small transactions

        def oldest(conn: sqlite3.Connection) -> tuple[int, int]:
            return (conn.execute("SELECT min(ts) FROM samples").fetchone()[0],
                    conn.execute("SELECT min(bucket) FROM rollups").fetchone()[0])

        raw_min, rollup_min = await store.read(oldest)
        assert raw_min >= (now - 86400) * 1000 - 1000
        assert rollup_min >= now - 3 * 86400 - 3600
        await store.stop()


# -- a full file system ----------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MiB tmpfs, mounted for this test only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until the file system is full."""
    with open(path, "wb", buffering=0) as f:
        for size in (65536, 512):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)


async def test_full_disk_degrades_keeps_collecting_and_recovers(
        tmp_path: Path, small_fs: Path) -> None:
    monitor = {"store": {"flush_interval": 0.1, "retry_interval": 0.3,
                         "max_backlog": 6000, "max_batch": 2000}}
    async with runtime_for(tmp_path, monitor=monitor, state_dir=str(small_fs)) as rt:
        log = EventLog(rt, StoreDegraded, StoreRecovered)
        store = Store(rt)
        await store.start()
        rt.events.publish(DaemonStarted(version="test"))
        store.add(batch(500, time.time()))
        await store.flush()
        filler = small_fs / "filler"
        fill(filler)
        tick = 0
        async with asyncio.timeout(60):
            while not log.of(StoreDegraded):  # new series make the file grow
                tick += 1
                rt.events.publish(SamplesCollected(collector="t", server="mx1",
                                                   samples=batch(1000, time.time(), series=1000,
                                                                 prefix=f"s{tick}_")))
                await asyncio.sleep(0.05)
        degraded = log.of(StoreDegraded)[0]
        assert "is full" in degraded.reason and "kept in memory" in degraded.reason
        assert store.status()["degraded"]
        # collection goes on: samples queue up in memory, bounded, oldest dropped
        for i in range(10):
            rt.events.publish(SamplesCollected(collector="t", server="mx1",
                                               samples=batch(1000, time.time() + i,
                                                             prefix="late")))
        await rt.events.drain()
        assert store.backlog == 6000
        assert store.dropped > 0
        assert not log.of(StoreRecovered)
        filler.unlink()
        recovered = (await log.wait_for(StoreRecovered))[0]
        assert recovered.flushed == 6000 and recovered.dropped == store.dropped_total
        await asyncio.sleep(0.3)
        assert store.backlog == 0 and store.status()["degraded"] is None

        def newest_batch(conn: sqlite3.Connection) -> int:
            return conn.execute("SELECT count(*) FROM samples JOIN series ON series.id = "
                                "series_id WHERE name LIKE 'late%'").fetchone()[0]

        assert await store.read(newest_batch) == 6000  # the newest 6000 were kept
        await store.stop()
        conn = sqlite3.connect(small_fs / "metrics.db")
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()


# -- the daemon: kill -9, a corrupt file, the commands ---------------------------------------

BURST_PLUGIN = textwrap.dedent('''
    """Writes a lot, with a sequence number, so a test can see where a kill -9 cut it."""
    import time
    from podod.monitor.model import Sample

    def setup(registry):
        @registry.collector("burst", interval=1, per_server=False)
        async def burst(ctx):
            seq = ctx.state["seq"] = ctx.state.get("seq", 0) + 1
            now = time.time()
            out = [Sample("burst_seq", "podod", float(seq), (), "gauge", now)]
            out += [Sample("burst_load", "podod", float(i), (("n", str(i)),), "gauge", now)
                    for i in range(20000)]
            return out
''')


def start_daemon(root: Path, **sections: object) -> DaemonProcess:
    config = base_config(root, **sections)
    return DaemonProcess(write_config(root / "podod.yaml", config)).start()


def test_kill_9_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "burst.py").write_text(BURST_PLUGIN)
    monitor = {"enabled": True, "store": {"flush_interval": 0.2, "max_batch": 5000}}
    daemon = start_daemon(tmp_path, monitor=monitor,
                          plugins={"dirs": [str(plugins)], "entry_points": False})
    wrote = re.compile(r"wrote (\d+) samples \(batch (\d+), (\d+) in all")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = wrote.findall(daemon.log())
        if len(found) >= 12:
            break
        time.sleep(0.05)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGKILL)  # while it writes: 20 000 samples a second
    daemon.proc.wait(10)
    committed = int(wrote.findall(daemon.log())[-1][2])
    # restart without the plugin: the file must open clean, with everything committed
    daemon = start_daemon(tmp_path, monitor=monitor,
                          plugins={"dirs": [], "entry_points": False})
    assert "quick_check ok" in daemon.log().split("stopping")[-1]
    reply = daemon.request(["metrics", "series", "--match", "burst_seq"])
    assert reply["ok"] and reply["data"][0]["name"] == "burst_seq"
    daemon.stop()
    conn = sqlite3.connect(tmp_path / "state" / "metrics.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    total = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    assert total >= committed
    seqs = [r[0] for r in conn.execute(
        "SELECT value FROM samples JOIN series ON series.id = series_id "
        "WHERE name = 'burst_seq' ORDER BY ts")]
    assert seqs == [float(i) for i in range(1, len(seqs) + 1)]  # no hole: whole batches
    per_run = conn.execute(
        "SELECT count(*) FROM samples JOIN series ON series.id = series_id "
        "WHERE name = 'burst_load' GROUP BY ts").fetchall()
    assert per_run and all(n[0] <= 20000 for n in per_run)
    conn.close()


def test_a_corrupt_file_is_moved_aside_and_a_new_one_started(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "metrics.db").write_bytes(b"SQLite format 3\0" + os.urandom(8192))
    daemon = start_daemon(tmp_path)
    try:
        log = daemon.log()
        assert "failed its integrity check" in log and "moved it to" in log
        moved = [p.name for p in state.iterdir() if ".corrupt-" in p.name]
        assert len(moved) == 1
        status = daemon.request(["metrics", "status"])
        assert status["ok"] and status["data"]["reset"]["moved_to"].endswith(moved[0])
        assert status["data"]["open"] is True
    finally:
        daemon.stop()


async def test_store_reset_event_reaches_subscribers_after_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(parents=True)
    (state / "metrics.db").write_bytes(b"garbage" * 1000)
    async with runtime_for(tmp_path) as rt:
        store = Store(rt)
        await store.start()
        log = EventLog(rt, StoreReset)  # a component that starts after the store
        rt.events.publish(DaemonStarted(version="test"))
        reset = (await log.wait_for(StoreReset))[0]
        assert "failed its integrity check" in reset.reason
        assert Path(reset.moved_to).exists()
        await store.stop()


@pytest.fixture(scope="module")
def loaded_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon whose store holds two servers' samples (written by a plugin at start)."""
    root = tmp_path_factory.mktemp("metrics-cmds")
    plugins = root / "plugins"
    plugins.mkdir()
    (plugins / "seed.py").write_text(textwrap.dedent('''
        import time
        from podod.monitor.model import Sample, SamplesCollected

        class Seed:
            def __init__(self, runtime):
                self.runtime = runtime
            async def start(self):
                now = time.time()
                samples = []
                for i in range(3 * 24 * 12):  # three days, every 5 minutes
                    ts = now - i * 300
                    for server in ("mx1", "mx2"):
                        samples.append(Sample("node_load1", server, float(i % 7), (),
                                              "gauge", ts))
                        for q in ("deferred", "hold"):
                            samples.append(Sample("postfix_queue_messages", server,
                                                  float(i % 5), (("queue", q),), "gauge", ts))
                    samples.append(Sample("node_network_receive_bytes_total", "mx1",
                                          float(1000 * (864 - i)), (("device", "eth0"),),
                                          "counter", ts))
                self.runtime.events.publish(SamplesCollected(collector="seed", server="mx1",
                                                             samples=tuple(samples)))
            async def stop(self):
                pass

        def setup(registry):
            registry.component("seed", Seed)
    '''))
    daemon = start_daemon(root, plugins={"dirs": [str(plugins)], "entry_points": False},
                          monitor={"store": {"flush_interval": 0.1}})
    deadline = time.monotonic() + 30
    while "wrote" not in daemon.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield daemon
    daemon.stop()


def test_metrics_query_table_and_json(loaded_daemon: DaemonProcess) -> None:
    out = loaded_daemon.podoctl("metrics", "query", "node_load1", "--server", "mx1",
                                "--since", "2d", "--step", "1h")
    assert out.returncode == 0, out.stderr
    assert "hourly rollups" in out.stdout and "min" in out.stdout
    reply = loaded_daemon.request(["metrics", "query", "podod_postfix_queue_messages",
                                   "--server", "mx2", "--since", "6h", "--label",
                                   "queue=deferred"])
    assert reply["ok"], reply["message"]
    data = reply["data"]
    assert data["source"] == "raw" and len(data["results"]) == 1
    assert data["results"][0]["labels"] == {"queue": "deferred"}
    assert len(data["results"][0]["points"]) in (72, 73)
    both = loaded_daemon.request(["metrics", "query", "node_load1", "--since", "1d"])
    assert {r["server"] for r in both["data"]["results"]} == {"mx1", "mx2"}
    assert both["data"]["source"] == "5m"
    rates = loaded_daemon.request(["metrics", "query", "node_network_receive_bytes_total",
                                   "--since", "3d", "--step", "1h"])
    points = [p for p in rates["data"]["results"][0]["points"] if p["increase"] is not None]
    assert all(p["rate"] >= 0 for p in points)
    assert sum(p["increase"] for p in points) == pytest.approx(1000 * 863, rel=0.01)
    series = loaded_daemon.request(["metrics", "series", "--server", "mx2"])
    assert {r["name"] for r in series["data"]} == {"node_load1", "postfix_queue_messages"}


@pytest.mark.parametrize(("argv", "words"), [
    (["metrics", "query", "node_lod1"], "no series named 'node_lod1'; did you mean "
                                        "'node_load1'?"),
    (["metrics", "query", "node_load15"], "no samples of node_load15 have been stored yet"),
    (["metrics", "query", "node_load1", "--server", "mx9"], "server 'mx9' has no series "
                                                            "node_load1 (servers with it: "
                                                            "mx1, mx2)"),
    (["metrics", "query", "postfix_queue_messages", "--label", "queue=active"],
     "no postfix_queue_messages series has the labels queue=active"),
    (["metrics", "query", "node_load1", "--label", "queue"], "--label must be KEY=VALUE"),
    (["metrics", "query", "node_load1", "--since", "soon"], "not a duration"),
    (["metrics", "query", "node_load1", "--since", "100d"], "beyond the 90d"),
    (["metrics", "query", "node_load1", "--since", "30d", "--step", "1m"],
     "raw samples are kept for 7d"),
    (["metrics", "query", "bad-name!"], "is not a series name"),
    (["metrics", "series", "--server", "mx9"], "no series of server 'mx9'"),
    (["metrics", "query"], "SERIES is required"),
])
def test_metrics_commands_refuse_bad_input_with_one_sentence(
        loaded_daemon: DaemonProcess, argv: list[str], words: str) -> None:
    reply = loaded_daemon.request(argv)
    assert not reply["ok"]
    assert words in reply["message"], reply["message"]
    assert "\n" not in reply["message"] and "Traceback" not in reply["message"]
    out = loaded_daemon.podoctl(*argv)
    assert out.returncode != 0 and "Traceback" not in out.stderr + out.stdout
