"""The built-in collectors against real things: this machine (psutil, and the remote script
run through a LocalRunner: the same text an SSH session runs), systemctl as it answers here,
the test PostgreSQL (and a real streaming replica of it), and closed ports."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from conftest import OWNER, OWNER_PW
from podod.monitor.catalog import builtin_series
from podod.monitor.collect import CollectContext
from podod.monitor.collectors.postgres import collect_postgres
from podod.monitor.collectors.services import collect_services
from podod.monitor.collectors.system import (
    SCRIPT_NAME,
    collect_system,
    local_snapshot,
    parse_snapshot,
)
from podod.monitor.model import Sample
from podod.plugins import Registry, load_builtins
from podod.runtime import Runtime
from podod.servers.runner import LocalRunner
from testbed.ports import free_port
from testbed.postgres import PgCluster, find_pg_bin
from testbed.runtime import runtime_for

pytestmark = pytest.mark.integration
CATALOG = set(builtin_series())


def registry() -> Registry:
    reg = Registry()
    load_builtins(reg, ["podod.monitor.collectors"])
    return reg


def context(rt: Runtime, collector: str, server_name: str = "here",
            state: dict[str, Any] | None = None) -> CollectContext:
    server = next(s for s in rt.config.servers if s.name == server_name)
    runner = LocalRunner(server.name, rt.registry.allowlist) if server.local else None
    return CollectContext(rt, collector, server, runner, state if state is not None else {})


def by_series(samples: list[Sample]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.series, []).append(s)
    return out


@pytest.fixture
async def here(tmp_path: Path) -> AsyncIterator[Runtime]:
    servers = [{"name": "here", "local": True, "services": ["postfix", "dovecot"]}]
    async with runtime_for(tmp_path, registry(), servers=servers) as rt:
        yield rt


# -- system ---------------------------------------------------------------------------------


async def test_system_collector_locally_through_psutil(here: Runtime) -> None:
    state: dict[str, Any] = {}
    first = await collect_system(context(here, "system", state=state))
    await asyncio.sleep(0.3)
    second = by_series(await collect_system(context(here, "system", state=state)))
    assert {s.series for s in first} <= CATALOG and set(second) <= CATALOG
    assert "node_cpu_busy_ratio" not in by_series(first)
    assert 0 <= second["node_cpu_busy_ratio"][0].value <= 1
    assert second["node_cpus"][0].value == os.cpu_count()
    mounts = {dict(s.labels)["mountpoint"] for s in second["node_filesystem_size_bytes"]}
    assert "/" in mounts and not any(m.startswith(("/proc", "/sys", "/dev")) for m in mounts)
    total, _used, _free = shutil.disk_usage("/")
    root = next(s for s in second["node_filesystem_size_bytes"]
                if dict(s.labels)["mountpoint"] == "/")
    assert root.value == total
    modes = {dict(s.labels)["mode"] for s in second["node_cpu_seconds_total"]}
    assert modes == {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}
    assert all(s.kind == "counter" for s in second["node_cpu_seconds_total"])
    assert all(s.server == "here" for s in first)


async def test_remote_script_reads_this_machine_like_psutil(here: Runtime) -> None:
    runner = LocalRunner("here", here.registry.allowlist)
    before = local_snapshot()
    result = await runner.run_script(SCRIPT_NAME, check=True)
    after = local_snapshot()
    snap = parse_snapshot(result.stdout)
    assert snap.problems == []
    assert snap.cpus == before.cpus
    assert snap.mem_total == before.mem_total
    assert snap.swap_total == before.swap_total
    assert snap.load is not None and before.load is not None
    assert all(abs(a - b) < 1.0 for a, b in zip(snap.load, before.load, strict=True))
    for mode, seconds in snap.cpu_seconds.items():
        assert before.cpu_seconds[mode] - 0.02 <= seconds <= after.cpu_seconds[mode] + 0.02
    assert set(snap.network) == set(before.network)
    for device, (rx, tx) in snap.network.items():
        assert before.network[device][0] <= rx <= after.network[device][0]
        assert before.network[device][1] <= tx <= after.network[device][1]
    settings = here.config.monitor.collector_settings("system")
    real = {m for m, (t, size, _a, _u) in snap.filesystems.items()
            if t not in settings.ignore_fs_types and size > 0}
    local_real = {m for m, (t, size, _a, _u) in before.filesystems.items()
                  if t not in settings.ignore_fs_types and size > 0}
    assert real == local_real
    for mount in real:
        assert snap.filesystems[mount][1] == before.filesystems[mount][1]  # same size
    # the script path gives the same series as psutil's
    from podod.monitor.collectors.system import samples_of

    names = {s.series for s in samples_of(snap, "here", settings, {}, time.time())}
    assert names <= CATALOG and "node_filesystem_used_ratio" in names


# -- services -------------------------------------------------------------------------------


async def test_systemctl_here_is_reported_as_absent_not_down(here: Runtime) -> None:
    runner = LocalRunner("here", here.registry.allowlist)
    raw = await runner.run(["systemctl", "is-active", "postfix", "dovecot"])
    samples = by_series(await collect_services(context(here, "services")))
    if raw.stdout.strip():  # a machine with systemd: one state per unit
        assert {dict(s.labels)["service"] for s in samples["service_up"]} == \
            {"postfix", "dovecot"}
        assert samples["systemd_available"][0].value == 1
    else:  # this container: "System has not been booted with systemd"
        assert "service_up" not in samples
        assert samples["systemd_available"][0].value == 0
    # nothing listens on the derived probes' ports here: failures, not exceptions
    probes = {dict(s.labels)["probe"]: s.value for s in samples["probe_success"]}
    assert set(probes) == {"smtp", "submission", "imap", "imaps"}


async def test_probes_against_postgres_and_closed_ports(pg: PgCluster, tmp_path: Path
                                                        ) -> None:
    closed = free_port()
    secret = tmp_path / "pw"
    secret.write_text(OWNER_PW)
    services = {"probes": {"smtp": {"port": closed}, "imap": {"port": closed},
                           "web": {"type": "http", "url": f"http://{{host}}:{closed}/"},
                           "pgport": {"type": "tcp", "port": pg.port}}}
    postgres = {"servers": {"here": {"dsn": f"postgresql://{OWNER}@127.0.0.1:{pg.port}/"
                                            "postgres", "password_file": str(secret)}}}
    servers = [{"name": "here", "local": True, "services": ["postgresql"]}]
    monitor = {"collectors": {"services": services, "postgres": postgres}}
    async with runtime_for(tmp_path, registry(), servers=servers, monitor=monitor) as rt:
        samples = by_series(await collect_services(context(rt, "services")))
    success = {dict(s.labels)["probe"]: s.value for s in samples["probe_success"]}
    assert success == {"postgres": 1.0, "pgport": 1.0, "smtp": 0.0, "imap": 0.0, "web": 0.0}
    durations = {dict(s.labels)["probe"]: s.value for s in samples["probe_duration_seconds"]}
    assert all(0 <= d < 5 for d in durations.values())


async def test_a_protocol_mismatch_fails_the_probe(pg: PgCluster, tmp_path: Path) -> None:
    """PostgreSQL's port accepts the connection but never sends an SMTP banner."""
    services = {"timeout": "1s", "probes": {"smtp": {"port": pg.port},
                                             "imap": {"port": pg.port}}}
    servers = [{"name": "here", "local": True}]
    async with runtime_for(tmp_path, registry(), servers=servers,
                           monitor={"collectors": {"services": services}}) as rt:
        samples = by_series(await collect_services(context(rt, "services")))
    assert {dict(s.labels)["probe"]: s.value for s in samples["probe_success"]} == \
        {"smtp": 0.0, "imap": 0.0}


# -- postgres -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replica(pg: PgCluster) -> Iterator[PgCluster]:
    """A real streaming replica of the test cluster (pg_basebackup -R over TCP, with a
    replication role). Outside pytest's temp folder: another pytest session resets that to
    0700, which would lock the postgres user out."""
    root = Path(tempfile.mkdtemp(prefix="podod-test-replica-"))
    os.chmod(root, 0o711)
    pg.psql("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'repl') "
            "THEN CREATE ROLE repl REPLICATION LOGIN PASSWORD 'repl-pw'; END IF; END $$")
    cluster = PgCluster(root / "replica", free_port())
    for folder in (cluster.root, cluster.sockdir, cluster.logfile.parent):
        folder.mkdir(parents=True, exist_ok=True)
        if cluster.as_postgres:
            shutil.chown(folder, "postgres", "postgres")
    result = cluster._run([find_pg_bin("pg_basebackup"), "-h", "127.0.0.1", "-p",
                           str(pg.port), "-U", "repl", "-D", str(cluster.data), "-R",
                           "-X", "stream", "--no-sync", "--checkpoint=fast"],
                          env={**os.environ, "PGPASSWORD": "repl-pw"})
    assert result.returncode == 0, result.stderr
    cluster.start()
    yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


def pg_target(server: str, cluster: PgCluster, secret: Path) -> dict[str, Any]:
    return {server: {"dsn": f"postgresql://{OWNER}@127.0.0.1:{cluster.port}/postgres",
                     "password_file": str(secret)}}


async def test_postgres_collector_on_a_primary_and_a_replica(
        pg: PgCluster, replica: PgCluster, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(OWNER_PW)
    servers = [{"name": "db1", "host": "127.0.0.1"}, {"name": "db2", "host": "127.0.0.1"}]
    postgres = {"servers": {**pg_target("db1", pg, secret), **pg_target("db2", replica,
                                                                         secret)}}
    monitor = {"collectors": {"postgres": postgres}}
    pg.psql("CREATE TABLE IF NOT EXISTS lagtest (n int)")
    pg.psql("INSERT INTO lagtest VALUES (1)")
    async with runtime_for(tmp_path, registry(), servers=servers, monitor=monitor) as rt:
        # a transaction left open for a while shows as the longest one
        conn = await asyncpg.connect(pg.dsn(OWNER, OWNER_PW, "postgres"))
        tx = conn.transaction()
        await tx.start()
        await conn.fetchval("SELECT txid_current()")
        await asyncio.sleep(1.2)
        primary = by_series(await collect_postgres(context(rt, "postgres", "db1")))
        await tx.rollback()
        await conn.close()
        assert set(primary) <= CATALOG
        assert primary["postgres_up"][0].value == 1
        assert primary["postgres_longest_transaction_seconds"][0].value >= 1.0
        states = {dict(s.labels)["state"]: s.value for s in primary["postgres_connections"]}
        assert states["idle in transaction"] >= 1 and states["active"] >= 1
        assert "idle in transaction (aborted)" in states  # zero-filled
        assert primary["postgres_max_connections"][0].value == 100
        used = primary["postgres_connections_used_ratio"][0].value
        assert 0 < used == pytest.approx(sum(states.values()) / 100)
        sizes = {dict(s.labels)["database"]: s.value
                 for s in primary["postgres_database_size_bytes"]}
        assert sizes["postgres"] > 1_000_000
        assert "postgres_replication_lag_seconds" not in primary  # a primary has no lag
        # the replica: in sync, then replay paused while the primary writes
        deadline = time.monotonic() + 30
        while True:
            standby = by_series(await collect_postgres(context(rt, "postgres", "db2")))
            if standby["postgres_replication_lag_seconds"][0].value == 0 or \
                    time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert standby["postgres_replication_lag_seconds"][0].value == 0
        replica.psql("SELECT pg_wal_replay_pause()")
        try:
            pg.psql("INSERT INTO lagtest VALUES (2)")
            await asyncio.sleep(1.5)
            standby = by_series(await collect_postgres(context(rt, "postgres", "db2")))
            assert standby["postgres_replication_lag_seconds"][0].value >= 1.0
        finally:
            replica.psql("SELECT pg_wal_replay_resume()")


async def test_postgres_follows_the_mail_database_and_reports_it_down(
        pg: PgCluster, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(OWNER_PW)
    mail = {"database": {"dsn": f"postgresql://{OWNER}@127.0.0.1:{pg.port}/postgres",
                         "password_file": str(secret)}}
    servers = [{"name": "here", "local": True}, {"name": "other", "host": "192.0.2.7"}]
    async with runtime_for(tmp_path, registry(), servers=servers, mail=mail) as rt:
        here = by_series(await collect_postgres(context(rt, "postgres")))
        assert here["postgres_up"][0].value == 1  # the mail database lives on this machine
        assert await collect_postgres(context(rt, "postgres", "other")) == []
    closed = free_port()
    mail["database"]["dsn"] = f"postgresql://{OWNER}@127.0.0.1:{closed}/postgres"
    async with runtime_for(tmp_path / "b", registry(), servers=servers, mail=mail) as rt:
        state: dict[str, Any] = {}
        down = await collect_postgres(context(rt, "postgres", state=state))
        assert [(s.series, s.value) for s in down] == [("postgres_up", 0.0)]
        assert "refused" in state["down"].lower() or "connect" in state["down"].lower()
