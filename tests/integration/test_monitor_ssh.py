"""The collectors over real SSH: a daemon watching the loopback sshd as a remote server reads
this machine through the one-round-trip script, reaches PostgreSQL through the server's
tunnel, and measures servers added at run time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from conftest import OWNER, OWNER_PW
from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.postgres import PgCluster
from testbed.sshd import Sshd
from testbed.waiting import wait_for

pytestmark = pytest.mark.integration


def latest(daemon: DaemonProcess, series: str, server: str, **labels: str) -> float | None:
    argv = ["metrics", "query", series, "--server", server, "--since", "10m"]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    reply = daemon.request(argv)
    if not reply["ok"] or not reply["data"]["results"][0]["points"]:
        return None
    value: float = reply["data"]["results"][0]["points"][-1]["value"]
    return value


@pytest.fixture
def daemon(sshd: Sshd, pg: PgCluster, tmp_path: Path) -> Iterator[DaemonProcess]:
    secret = tmp_path / "pw"
    secret.write_text(OWNER_PW)
    mx1 = sshd.server_entry("mx1", services=["postgresql"],
                            tunnels=[{"name": "pg", "remote_port": pg.port}])
    monitor = {"enabled": True, "interval": "1s", "store": {"flush_interval": 0.2},
               "collectors": {"postgres": {"servers": {"mx1": {
                   "dsn": f"postgresql://{OWNER}@db.invalid:1/postgres",
                   "password_file": str(secret), "tunnel": "pg"}}}}}
    path = write_config(tmp_path / "podod.yaml",
                        base_config(tmp_path, servers=[mx1], monitor=monitor))
    process = DaemonProcess(path).start(timeout=30)
    yield process
    process.stop()


def test_a_remote_server_measured_over_ssh(daemon: DaemonProcess, sshd: Sshd) -> None:
    total = wait_for(lambda: latest(daemon, "node_memory_mem_total_bytes", "mx1"))
    assert total == psutil.virtual_memory().total  # the same machine, read through /proc
    cpus = wait_for(lambda: latest(daemon, "node_cpus", "mx1"))
    assert cpus == psutil.cpu_count()
    assert wait_for(lambda: latest(daemon, "node_filesystem_size_bytes", "mx1",
                                   mountpoint="/"))
    assert wait_for(lambda: latest(daemon, "node_cpu_busy_ratio", "mx1")) is not None
    # PostgreSQL only through the tunnel (the DSN names a host that does not exist)
    assert wait_for(lambda: latest(daemon, "postgres_up", "mx1")) == 1
    assert wait_for(lambda: latest(daemon, "probe_success", "mx1", probe="postgres")) == 1
    jobs = {(j["collector"], j["server"]): j for j in daemon.request(["collector", "list"])
            ["data"]}
    assert jobs[("system", "mx1")]["last_error"] is None
    assert jobs[("queue", "mx1")]["runs"] >= 1  # no postfix in services: nothing to read


def test_servers_added_at_run_time_are_measured_and_removed_ones_dropped(
        daemon: DaemonProcess, sshd: Sshd) -> None:
    add = ["server", "add", "mx2", "--host", "127.0.0.1", "--port", str(sshd.port),
           "--user", sshd.user, "--key-file", str(sshd.client_key), "--known-hosts",
           str(sshd.known_hosts)]
    reply = daemon.request(add, execute_real=True)
    assert reply["ok"], reply["message"]

    def mx2_jobs() -> list[str]:
        jobs = daemon.request(["collector", "list"])["data"]
        return [j["collector"] for j in jobs if j["server"] == "mx2"]

    assert set(wait_for(mx2_jobs)) >= {"system", "services", "queue", "postgres"}
    assert wait_for(lambda: latest(daemon, "node_load1", "mx2")) is not None
    removed = daemon.request(["server", "remove", "mx2"], execute_real=True)
    assert removed["ok"], removed["message"]
    wait_for(lambda: not mx2_jobs())


def test_a_tunnel_to_nothing_is_said_in_plain_words(sshd: Sshd, tmp_path: Path) -> None:
    """PostgreSQL measured through a tunnel whose far end has nothing listening: asyncpg's
    "unexpected connection_lost() call" becomes a sentence an admin can act on."""
    from testbed.ports import free_port

    closed = free_port()
    mx1 = sshd.server_entry("mx1", services=["postgresql"],
                            tunnels=[{"name": "pg", "remote_port": closed}])
    monitor = {"enabled": True, "interval": "1s", "collectors": {"postgres": {"servers": {
        "mx1": {"dsn": f"postgresql://{OWNER}@127.0.0.1/postgres", "tunnel": "pg"}}}}}
    path = write_config(tmp_path / "podod.yaml",
                        base_config(tmp_path, servers=[mx1], monitor=monitor))
    process = DaemonProcess(path).start(timeout=30)
    try:
        wanted = "the connection was closed before PostgreSQL answered"
        wait_for(lambda: f"postgres on mx1 cannot be reached: {wanted}" in process.log())
        wait_for(lambda: f"probe postgres on mx1 failed: {wanted}" in process.log())
        assert "connection_lost" not in process.log()
    finally:
        process.stop()
