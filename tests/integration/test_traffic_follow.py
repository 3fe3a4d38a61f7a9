"""Following a mail log for real (GNU tail on the open file, the local runner, traffic.db):
rotation, copytruncate, restarts and rotations while podod is away, with exact counts."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

import pytest
from maillogs import lines_of, truth

from podod.monitor.traffic import sources
from podod.monitor.traffic.clock import LogClock
from podod.monitor.traffic.follower import LogFollower
from podod.monitor.traffic.settings import TrafficSettings
from podod.monitor.traffic.store import Batch, Position, TrafficStore
from podod.plugins import Registry
from podod.servers.runner import LocalRunner

SETTINGS = TrafficSettings(flush_interval=0.2, rotation_check=0.3, rotation_grace=0.6,
                           reconnect_max=1.0, batch_lines=500)


def compress(path: Path) -> None:
    with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()


class Harness:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "mail.log"
        self.store = TrafficStore(root / "traffic.db")
        self.store.open_sync()
        registry = Registry()
        sources.register(registry)
        self.runner = LocalRunner("mx1", registry.allowlist)
        self.task: asyncio.Task[None] | None = None
        self.follower: LogFollower | None = None
        self.fail_commits: set[int] = set()
        self.commits = 0
        self.commit_delay = 0.0

    async def commit(self, batch: Batch) -> None:
        self.commits += 1
        if self.commits in self.fail_commits:  # as SQLite says on a full disk
            raise sqlite3.OperationalError("database or disk is full")
        await asyncio.sleep(self.commit_delay)  # a slow disk, a busy machine
        await self.store.run(self.store.commit, batch)

    async def reload(self) -> tuple[Position | None, list[tuple[str, int, int, int, str]]]:
        return (await self.store.run(self.store.position, "mx1"),
                await self.store.run(self.store.pending, "mx1"))

    async def start(self, spec: str | None = None) -> None:
        position = await self.store.run(self.store.position, "mx1")
        pending = await self.store.run(self.store.pending, "mx1")
        self.follower = LogFollower("mx1", spec or str(self.path), self.runner, SETTINGS,
                                    self.commit, clock=LogClock(UTC), position=position,
                                    pending=pending, reload=self.reload)
        self.task = asyncio.create_task(self.follower.run())

    async def crash(self) -> None:
        """Stop without flushing: what was read but not committed is simply lost."""
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def stop(self) -> None:
        await self.crash()
        assert self.follower is not None
        await self.follower.flush()

    def totals(self) -> dict[str, int]:
        return {k: v for k, v in self.store.tally(None, None).totals().items() if v}

    async def wait_for(self, check: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.store.run(check):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out; store has {self.totals()}")

    async def caught_up(self, lines: list[str]) -> None:
        expected = {k: v for k, v in truth(lines, keys=None).items() if v}
        await self.wait_for(lambda: self.totals() == expected)
        await asyncio.sleep(0.5)  # nothing more must arrive: no double counting
        assert self.totals() == expected

    def write(self, lines: list[str], path: Path | None = None) -> None:
        with open(path or self.path, "a") as f:
            f.writelines(lines)

    def close(self) -> None:
        self.store.close_sync()


@pytest.fixture
async def harness(tmp_path: Path) -> Harness:
    h = Harness(tmp_path)
    yield h  # type: ignore[misc]
    if h.task is not None and not h.task.done():
        await h.crash()
    h.close()


async def test_follows_a_growing_log_from_its_beginning(harness: Harness) -> None:
    lines = lines_of(3000, 1, days=0.5)
    harness.write(lines[:1200])
    await harness.start()
    await harness.caught_up(lines[:1200])
    for i in range(1200, 3000, 300):
        harness.write(lines[i:i + 300])
        await asyncio.sleep(0.05)
    await harness.caught_up(lines)
    pos = await harness.store.run(harness.store.position, "mx1")
    assert pos is not None and pos.offset == harness.path.stat().st_size
    assert pos.inode == harness.path.stat().st_ino and pos.followed_since is not None


async def test_rotation_while_following(harness: Harness) -> None:
    lines = lines_of(3000, 2, days=0.5)
    harness.write(lines[:1000])
    await harness.start()
    await harness.caught_up(lines[:1000])
    rotated = harness.root / "mail.log.1"
    harness.path.rename(rotated)
    harness.write(lines[1000:1400], rotated)   # the writer has not reopened yet
    harness.write(lines[1400:2000])            # ... now it has: a new file
    await asyncio.sleep(0.3)
    harness.write(lines[2000:])
    await harness.caught_up(lines)


async def test_copytruncate_while_following(harness: Harness) -> None:
    lines = lines_of(3000, 3, days=0.5)
    harness.write(lines[:1500])
    await harness.start()
    await harness.caught_up(lines[:1500])
    harness.write(lines[1500:1700])
    shutil.copy(harness.path, harness.root / "mail.log.1")  # logrotate copytruncate
    os.truncate(harness.path, 0)
    await asyncio.sleep(0.2)
    harness.write(lines[1700:])
    await harness.caught_up(lines)


async def test_failed_commits_lose_and_repeat_nothing(harness: Harness) -> None:
    lines = lines_of(3000, 9, days=0.5)
    harness.fail_commits = {2, 3, 6}  # e.g. a full disk, twice
    harness.write(lines[:1500])
    await harness.start()
    for i in range(1500, 3000, 250):
        harness.write(lines[i:i + 250])
        await asyncio.sleep(0.15)
    await harness.caught_up(lines)
    assert harness.commits > 6
    assert harness.follower is not None and harness.follower.status.last_error


async def test_lines_read_during_a_slow_commit_are_committed_too(harness: Harness) -> None:
    lines = lines_of(2000, 10, days=0.5)
    harness.commit_delay = 0.4
    await harness.start()
    for i in range(0, 2000, 100):  # small writes, many of them while a commit waits
        harness.write(lines[i:i + 100])
        await asyncio.sleep(0.07)
    await harness.caught_up(lines)


async def test_crash_in_the_middle_of_a_file_and_restart(harness: Harness) -> None:
    lines = lines_of(4000, 4, days=0.5)
    harness.write(lines[:2000])
    await harness.start()
    await asyncio.sleep(0.4)  # part of it committed, part read but not committed
    await harness.crash()
    harness.write(lines[2000:3000])
    await harness.start()
    await harness.caught_up(lines[:3000])
    await harness.stop()
    harness.write(lines[3000:])
    await harness.start()
    await harness.caught_up(lines)


@pytest.mark.parametrize("how", ["rename", "gzip", "copytruncate"])
async def test_rotation_while_podod_is_away(harness: Harness, how: str) -> None:
    lines = lines_of(3000, 5, days=0.5)
    harness.write(lines[:1000])
    await harness.start()
    await harness.caught_up(lines[:1000])
    await harness.stop()
    harness.write(lines[1000:1500])          # written while podod was down
    rotated = harness.root / "mail.log.1"
    if how == "copytruncate":
        shutil.copy(harness.path, rotated)
        os.truncate(harness.path, 0)
    else:
        harness.path.rename(rotated)
    if how == "gzip":  # rotated and compressed at once (no delaycompress)
        compress(rotated)
    harness.write(lines[1500:2500])          # the new file, also while podod was down
    await harness.start()
    await harness.caught_up(lines[:2500])
    harness.write(lines[2500:])
    await harness.caught_up(lines)


async def test_a_new_file_with_a_reused_inode_is_not_taken_for_the_old_one(
        harness: Harness) -> None:
    lines = lines_of(2000, 6, days=0.5)
    harness.write(lines[:800])
    await harness.start()
    await harness.caught_up(lines[:800])
    await harness.stop()
    # The old file disappears entirely, the new one has different content and may even
    # get the same inode number: its first line tells them apart.
    harness.path.unlink()
    harness.write(lines[800:])
    await harness.start()
    await harness.caught_up(lines)


JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"


def journal_append(directory: Path, lines: list[str], start_us: int) -> None:
    """Write entries with systemd's own journal writer (systemd-journal-remote)."""
    export = io.BytesIO()
    for i, line in enumerate(lines):
        head, _, message = line.rstrip("\n").partition(": ")
        tag = head.split(" ")[-1]
        ident, _, pid = tag.partition("[")
        fields = {"__REALTIME_TIMESTAMP": str(start_us + i * 1000),
                  "__MONOTONIC_TIMESTAMP": str(start_us + i * 1000),
                  "_BOOT_ID": "0123456789abcdef0123456789abcdef", "_HOSTNAME": "mx1",
                  "SYSLOG_IDENTIFIER": ident, "SYSLOG_FACILITY": "2", "PRIORITY": "6",
                  "MESSAGE": message}
        if pid:
            fields["SYSLOG_PID"] = pid.rstrip("]")
        for k, v in fields.items():
            export.write(f"{k}={v}\n".encode())
        export.write(b"\n")
    subprocess.run([JOURNAL_REMOTE, f"--output={directory / 'remote.journal'}", "-"],
                   input=export.getvalue(), check=True, capture_output=True)


async def test_follows_the_journal_with_cursors(harness: Harness) -> None:
    assert Path(JOURNAL_REMOTE).exists(), "systemd-journal-remote is not installed (make deps)"
    journal = harness.root / "journal"
    journal.mkdir()
    lines = [ln for ln in lines_of(1500, 8, days=0.5)
             if " CRON[" not in ln and " kernel:" not in ln]
    start_us = int((time.time() - 3600) * 1e6)
    journal_append(journal, lines[:600], start_us)
    await harness.start(f"journal:{journal}")
    await harness.caught_up(lines[:600])
    await harness.crash()
    journal_append(journal, lines[600:1000], start_us + 600_000)
    await harness.start(f"journal:{journal}")      # resumes after its cursor
    await harness.caught_up(lines[:1000])
    journal_append(journal, lines[1000:], start_us + 1_000_000)
    await harness.caught_up(lines)
    pos = await harness.store.run(harness.store.position, "mx1")
    assert pos is not None and pos.source == "journal" and pos.cursor
