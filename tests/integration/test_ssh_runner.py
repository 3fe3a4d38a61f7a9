"""The ServerManager in-process against a real sshd: allow-listed commands (quoted, bounded,
timed out), streams, events and samples across a drop and a reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from podod.config import parse_config
from podod.errors import NotFound, PermissionDenied
from podod.events import Event, EventBus
from podod.monitor.model import SamplesCollected
from podod.plugins import Registry
from podod.runtime import Runtime
from podod.servers.allowlist import ABS_PATH
from podod.servers.connection import ServerConnection
from podod.servers.events import ServerConnected, ServerDisconnected
from podod.servers.manager import ServerManager
from podod.servers.runner import (
    CommandFailed,
    CommandTimeout,
    LocalRunner,
    Runner,
    ServerUnreachable,
)
from podod.state import StateDB
from testbed.sshd import Sshd

SCRIPT = 'id -un; echo "$0"; printf "%s|" "$@"'


def allow_test_commands(registry: Registry) -> None:
    registry.remote_command("echo", rest=".*", purpose="test: quoting")
    registry.remote_command("cat", purpose="test: input")
    registry.remote_command("false", purpose="test: exit status")
    registry.remote_command("sleep", r"\d+(\.\d+)?", purpose="test: timeouts and slots")
    registry.remote_command("tail", "-n", r"\+1", "-F", ABS_PATH, purpose="test: streams")
    registry.remote_script("who-and-shell", SCRIPT, purpose="test: scripts")


@contextlib.asynccontextmanager
async def running(tmp_path: Path, servers: list[dict[str, Any]]
                  ) -> AsyncIterator[tuple[ServerManager, list[Event]]]:
    config = parse_config({"state_dir": str(tmp_path / "state"), "servers": servers},
                          source="test.yaml")
    registry = Registry()
    registry.load("test", "test", allow_test_commands)
    runtime = Runtime(config=config, config_path=None, events=EventBus(), registry=registry,
                      state=StateDB(tmp_path / "state" / "state.db"))
    await runtime.state.open()
    await runtime.events.start()
    seen: list[Event] = []
    runtime.events.subscribe((ServerConnected, ServerDisconnected, SamplesCollected),
                             seen.append)
    manager = ServerManager(runtime)
    await manager.start()
    try:
        yield manager, seen
    finally:
        await manager.stop()
        await runtime.events.stop()
        await runtime.state.close()


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def latest(seen: list[Event], series: str) -> float | None:
    for event in reversed(seen):
        if isinstance(event, SamplesCollected):
            for sample in event.samples:
                if sample.series == series:
                    return sample.value
    return None


async def test_allow_listed_commands_quoted_bounded_and_timed(sshd: Sshd,
                                                              tmp_path: Path) -> None:
    servers = [sshd.server_entry("mx1", max_commands=2),
               {"name": "here", "local": True,
                "tunnels": [{"name": "postgres", "remote_port": 5432}]}]
    async with running(tmp_path, servers) as (manager, seen):
        runner = manager.runner("mx1")
        assert isinstance(runner, Runner) and runner.local is False
        assert isinstance(manager.runner("here"), LocalRunner)
        assert [c.name for c in manager.configs()] == ["mx1", "here"]
        # Every argument stays one word for the remote shell: no injection, no expansion.
        result = await runner.run(["echo", "a b; echo pwned", "$HOME", "it's", "`id`"])
        assert result.ok and result.stdout == "a b; echo pwned $HOME it's `id`\n"
        assert result.argv == ("echo", "a b; echo pwned", "$HOME", "it's", "`id`")
        assert (await runner.run(["cat"], input=b"hello\n")).stdout == "hello\n"
        script = await runner.run_script("who-and-shell")
        assert script.stdout == f"{sshd.user}\nsh\n|" and script.argv == ("script",
                                                                          "who-and-shell")
        failing = await runner.run(["false"])
        assert failing.exit_status == 1 and not failing.ok
        with pytest.raises(CommandFailed, match="'false' failed on mx1: exit status 1"):
            await runner.run(["false"], check=True)
        # Not on the allow-list: refused before anything reaches the server.
        for argv in (["rm", "-rf", "/tmp/x"], ["systemctl", "stop", "postfix"],
                     ["sleep", "1; reboot"]):
            with pytest.raises(PermissionDenied, match="is not on podod's allow-list"):
                await runner.run(argv)
        with pytest.raises(PermissionDenied, match="no allow-listed script named 'nope'"):
            await runner.run_script("nope")
        # A timeout ends the command and frees its slot.
        with pytest.raises(CommandTimeout,
                           match=r"^'sleep 30' on mx1 did not finish within 0.5 s$"):
            await runner.run(["sleep", "30"], timeout=0.5)
        connection = manager.connection("mx1")
        assert isinstance(connection, ServerConnection)
        await until(lambda: connection.running == 0)
        # max_commands: 2 at a time, so 4 sleeps of 0.4 s take at least 0.8 s.
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, connection.running)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        started = time.monotonic()
        results = await asyncio.gather(*(runner.run(["sleep", "0.4"]) for _ in range(4)))
        elapsed = time.monotonic() - started
        watcher.cancel()
        assert all(r.ok for r in results) and peak == 2 and elapsed >= 0.8
        with pytest.raises(NotFound, match=r"there is no server named 'mx9' \(servers: "
                                           r"here, mx1\)"):
            manager.runner("mx9")
        assert manager.tunnel_address("here", "postgres") == ("127.0.0.1", 5432)
        with pytest.raises(NotFound, match="server mx1 has no tunnel named 'postgres'"):
            manager.tunnel_address("mx1", "postgres")
    connected = [e for e in seen if isinstance(e, ServerConnected)]
    assert [e.server for e in connected] == ["mx1"] and connected[0].rtt is not None


async def test_drop_and_reconnect_events_samples_stream_and_tunnel(
        private_sshd: Sshd, tmp_path: Path) -> None:
    log = private_sshd.public_file("mail.log", b"first line\n\xff\xfe not utf-8\n")
    entry = private_sshd.server_entry(
        "mx1", tunnels=[{"name": "ssh", "remote_port": private_sshd.port}])
    async with running(tmp_path, [entry]) as (manager, seen):
        runner = manager.runner("mx1")
        host, port = manager.tunnel_address("mx1", "ssh")
        assert host == "127.0.0.1"
        stream = runner.stream(["tail", "-n", "+1", "-F", str(log)])
        lines = [await anext(stream), await anext(stream)]
        assert lines == [b"first line\n", b"\xff\xfe not utf-8\n"]  # raw bytes, newline kept
        with log.open("ab") as f:
            f.write(b"appended\n")
        assert await asyncio.wait_for(anext(stream), 10) == b"appended\n"
        await until(lambda: latest(seen, "ssh_connected") == 1.0)
        assert latest(seen, "ssh_rtt_seconds") is not None

        private_sshd.stop()  # the daemon and its sessions: the connection drops
        with pytest.raises(ServerUnreachable,
                           match=r"connection to server mx1 dropped while running 'tail -n "):
            await asyncio.wait_for(anext(stream), 10)
        await until(lambda: any(isinstance(e, ServerDisconnected) for e in seen))
        down = [e for e in seen if isinstance(e, ServerDisconnected)]
        assert len(down) == 1 and down[0].server == "mx1" and "lost" in down[0].reason
        assert latest(seen, "ssh_connected") == 0.0
        connection = manager.connection("mx1")
        assert isinstance(connection, ServerConnection)
        await until(lambda: connection.backoff.failures >= 2)  # refused, backing off
        with pytest.raises(ServerUnreachable) as refused:
            await runner.run(["echo", "x"])
        assert refused.value.message.startswith(
            f"server mx1 (127.0.0.1:{private_sshd.port}) is not connected since ")
        assert "connection refused by 127.0.0.1" in refused.value.message
        with pytest.raises(ServerUnreachable, match="the tunnel ssh of server mx1"):
            manager.tunnel_address("mx1", "ssh")

        private_sshd.start()  # same port
        assert await manager.wait_connected("mx1", timeout=20)
        assert (await runner.run(["echo", "back"])).stdout == "back\n"
        assert manager.tunnel_address("mx1", "ssh") == (host, port)  # the same local port
        await until(lambda: latest(seen, "ssh_reconnects_total") == 1.0)
        assert latest(seen, "ssh_connected") == 1.0
        assert len([e for e in seen if isinstance(e, ServerConnected)]) == 2
        # The reopened tunnel carries traffic: sshd's banner through it.
        reader, writer = await asyncio.open_connection(host, port)
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"SSH-2.0-")
        writer.close()
        with contextlib.suppress(ServerUnreachable):
            await stream.aclose()


async def test_a_silent_peer_is_detected_and_replaced(private_sshd: Sshd, tmp_path: Path) -> None:
    """No RST, no FIN: the sessions just stop answering (a dead link). Keepalives notice it
    and podod connects afresh."""
    entry = private_sshd.server_entry("mx1", keepalive="0.5s", keepalive_count_max=2,
                                      command_timeout="2s")
    async with running(tmp_path, [entry]) as (manager, seen):
        frozen = private_sshd.freeze_sessions()
        try:
            assert frozen
            await until(lambda: any(isinstance(e, ServerDisconnected) for e in seen))
            reason = next(e for e in seen if isinstance(e, ServerDisconnected)).reason
            assert reason in ("the connection was lost (Server not responding to keepalive)",
                              "the round-trip probe failed (no answer within 2 s); reconnecting")
            assert await manager.wait_connected("mx1", timeout=20)
            assert (await manager.runner("mx1").run(["echo", "ok"])).stdout == "ok\n"
            connection = manager.connection("mx1")
            assert isinstance(connection, ServerConnection) and connection.reconnects == 1
        finally:
            private_sshd.thaw(frozen)
