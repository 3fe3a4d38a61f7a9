"""The mail database on the far side of an SSH tunnel: ``podod db`` opens the tunnel itself
(the servers package's connection code, host-key checks included), and a running daemon
whose tunnel's server is down answers every mail command with the server manager's one
sentence instead of socket errors, without filling its log with asyncpg's retries."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from conftest import OWNER, make_mail_config
from testbed.daemon import DaemonProcess
from testbed.postgres import PgCluster
from testbed.sshd import Sshd
from testbed.waiting import poll as wait_for

_dbs = iter(range(1000))


def tunnelled_config(pg: PgCluster, root: Path, server: dict[str, Any]) -> tuple[Path, str]:
    """An empty database reachable only through ``server``'s tunnel: the DSN names a host
    that does not exist, so every connection must take the tunnel."""
    db = f"viassh_db{next(_dbs)}"
    pg.create_database(db, OWNER)
    root.mkdir(parents=True, exist_ok=True)
    path = make_mail_config(pg, root, db)
    config = yaml.safe_load(path.read_text())
    config["mail"]["database"].update(dsn=f"postgresql://{OWNER}@db.invalid:1/{db}",
                                      via_server=server["name"], tunnel="postgres")
    config["servers"] = [server]
    path.write_text(yaml.safe_dump(config))
    return path, db


def podod_db(path: Path, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podod.cli", "db", action, "-c", str(path)],
                          capture_output=True, text=True, timeout=60)


def edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))


def test_podod_db_opens_the_tunnel_itself(private_sshd: Sshd, pg: PgCluster,
                                           tmp_path: Path) -> None:
    server = private_sshd.server_entry("db1", tunnels=[{"name": "postgres",
                                                        "remote_port": pg.port}])
    path, db = tunnelled_config(pg, tmp_path, server)
    init = podod_db(path, "init")
    assert init.returncode == 0, init.stderr
    assert init.stdout.strip() == "The mail schema is at version 2 (was 0)."
    assert pg.psql("SELECT max(version) FROM podod_schema", db).strip() == "2"
    check = podod_db(path, "check")
    assert check.returncode == 0 and "compatible (podod schema version 2)" in check.stdout
    upgrade = podod_db(path, "upgrade")
    assert upgrade.returncode == 0 and "up to date (version 2)" in upgrade.stdout

    private_sshd.stop()
    down = podod_db(path, "check")
    assert down.returncode == 1 and down.stderr.strip() == (
        f"cannot connect to server db1 (127.0.0.1:{private_sshd.port}): connection refused by "
        f"127.0.0.1:{private_sshd.port} (is sshd running?)")
    # The same host-key check as the daemon's: a changed key is refused, never trusted.
    private_sshd.regenerate_host_key()
    private_sshd.start()
    changed = podod_db(path, "check")
    assert changed.returncode == 1
    assert changed.stderr.startswith(
        f"cannot connect to server db1 (127.0.0.1:{private_sshd.port}): the host key of db1 "
        f"(127.0.0.1:{private_sshd.port}) has CHANGED")
    assert changed.stderr.count("\n") == 1 and "Traceback" not in changed.stderr

    edit(path, lambda c: c["mail"]["database"].update(via_server="nope"))
    unknown = podod_db(path, "check")
    assert unknown.returncode == 2 and unknown.stderr.strip() == (
        "mail.database.via_server: podod.yaml lists no server named 'nope' (servers: db1; "
        "'podod db' does not know servers added with 'server add')")
    edit(path, lambda c: c["mail"]["database"].update(via_server="db1", tunnel="pg"))
    no_tunnel = podod_db(path, "check")
    assert no_tunnel.returncode == 2 and no_tunnel.stderr.strip() == (
        "mail.database.tunnel: server db1 has no tunnel named 'pg' (its tunnels: postgres)")


def test_podod_db_through_a_local_server_needs_no_ssh(pg: PgCluster, tmp_path: Path) -> None:
    server = {"name": "here", "local": True,
              "tunnels": [{"name": "postgres", "remote_port": pg.port}]}
    path, db = tunnelled_config(pg, tmp_path, server)
    init = podod_db(path, "init")
    assert init.returncode == 0, init.stderr
    assert pg.psql("SELECT max(version) FROM podod_schema", db).strip() == "2"


def test_mail_commands_answer_the_server_managers_sentence_while_the_tunnel_is_down(
        private_sshd: Sshd, pg: PgCluster, tmp_path: Path) -> None:
    server = private_sshd.server_entry("db1", tunnels=[{"name": "postgres",
                                                        "remote_port": pg.port}])
    path, _db = tunnelled_config(pg, tmp_path, server)
    assert podod_db(path, "init").returncode == 0
    with DaemonProcess(path) as daemon:
        assert daemon.request(["domain", "create", "a.example"], execute_real=True)["ok"]
        assert daemon.request(["user", "list"])["ok"]
        private_sshd.stop()

        def refused() -> bool:
            last = daemon.request(["server", "show", "db1"])["data"]["last_error"] or ""
            return "connection refused" in last

        assert wait_for(refused)
        for argv, real in ((["domain", "list"], False), (["user", "list"], False),
                           (["domain", "create", "b.example"], False),
                           (["domain", "create", "b.example"], True),
                           (["user", "show", "x@a.example"], False)):
            reply = daemon.request(argv, execute_real=real)
            message = str(reply["message"])
            assert not reply["ok"] and reply["code"] == "server-unreachable", reply
            assert message.startswith(
                "the mail database cannot be reached: the tunnel postgres of server db1 "
                f"(127.0.0.1:{private_sshd.port}) is not connected since "), message
            assert f"connection refused by 127.0.0.1:{private_sshd.port} (is sshd running?)" \
                in message
            assert "\n" not in message and "Errno" not in message
        time.sleep(3.5)  # asyncpg's pool retries its floor after 1 s, then 2 s, ...
        log = daemon.log()
        assert "Traceback" not in log
        assert log.count("pool cannot reconnect") <= 1
        assert log.count("level=warning logger=asyncpg") <= 1

        private_sshd.start()
        assert wait_for(lambda: bool(daemon.request(["domain", "list"])["ok"]))
        assert daemon.request(["domain", "create", "b.example"], execute_real=True)["ok"]
        listed = daemon.request(["domain", "list"])["data"]
        assert [d["domain"] for d in listed] == ["a.example", "b.example"]
