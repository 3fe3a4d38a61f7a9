"""Server connections as an admin meets them: the real daemon, a real sshd, podoctl and the
socket; tunnels to the real PostgreSQL; drops, changed keys, server add/remove, reload."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from conftest import OWNER, OWNER_PW, make_mail_config
from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.postgres import PgCluster
from testbed.sshd import Sshd
from testbed.waiting import poll as wait_for

_dbs = iter(range(1000))


def show(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    reply = daemon.request(["server", "show", name])
    assert reply["ok"], reply["message"]
    data: dict[str, Any] = reply["data"]
    return data


def tunnel_port(daemon: DaemonProcess, server: str, tunnel: str) -> int:
    for t in show(daemon, server)["tunnels"]:
        if t["name"] == tunnel:
            return int(t["local_port"])
    raise AssertionError(f"no tunnel {tunnel}")


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.stop()


def start(daemons: list[DaemonProcess], path: Path) -> DaemonProcess:
    daemon = DaemonProcess(path)
    daemons.append(daemon)
    return daemon.start(timeout=30)


def servers_config(root: Path, servers: list[dict[str, Any]], **extra: Any) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return write_config(root / "podod.yaml", base_config(root, servers=servers, **extra))


def mail_via_tunnel(pg: PgCluster, root: Path, server: dict[str, Any]) -> tuple[Path, str]:
    """A mail database initialised directly, then reached only through ``server``'s tunnel:
    the DSN names a host that does not exist, so every query must take the tunnel."""
    db = f"viassh{next(_dbs)}"
    pg.create_database(db, OWNER)
    path = make_mail_config(pg, root, db)
    init = subprocess.run([sys.executable, "-m", "podod.cli", "db", "init", "-c", str(path)],
                          capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    config = yaml.safe_load(path.read_text())
    config["mail"]["database"].update(dsn=f"postgresql://{OWNER}@db.invalid:1/{db}",
                                      via_server=server["name"], tunnel="postgres")
    config["servers"] = [server]
    path.write_text(yaml.safe_dump(config))
    return path, db


async def query_through(port: int, db: str, sql: str) -> Any:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user=OWNER, password=OWNER_PW,
                                 database=db, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def test_list_show_status_and_the_allow_list(sshd: Sshd, tmp_path: Path,
                                              daemons: list[DaemonProcess]) -> None:
    path = servers_config(tmp_path, [
        sshd.server_entry("mx1", services=["postfix", "dovecot"], mail_log="/var/log/mail.log",
                          tunnels=[{"name": "ssh", "remote_port": sshd.port}]),
        {"name": "here", "local": True}])
    daemon = start(daemons, path)
    listed = daemon.podoctl("server", "list")
    assert listed.returncode == 0, listed.stderr
    assert "mx1" in listed.stdout and "connected" in listed.stdout and "local" in listed.stdout
    mx1 = show(daemon, "mx1")
    assert mx1["state"] == "connected" and mx1["last_error"] is None
    assert mx1["user"] == sshd.user and mx1["reconnects"] == 0
    assert 0 < mx1["rtt_seconds"] < 5
    assert mx1["services"] == ["postfix", "dovecot"] and mx1["mail_log"] == "/var/log/mail.log"
    assert mx1["tunnels"][0]["open"] is True and mx1["tunnels"][0]["local_port"] > 0
    text = daemon.podoctl("server", "show", "mx1").stdout
    for expected in ("connected", "round trip", "tunnel ssh", f"-> 127.0.0.1:{sshd.port} (open)",
                     "postfix, dovecot", "/var/log/mail.log", str(sshd.known_hosts)):
        assert expected in text, expected
    status = daemon.request(["status"])["data"]["servers"]
    assert [(s["name"], s["state"]) for s in status] == [("mx1", "connected"),
                                                         ("here", "local")]
    assert "mx1 (connected), here (local)" in daemon.podoctl("status").stdout
    allowed = daemon.request(["server", "commands"])
    assert {"command": "true", "purpose": "measure the round-trip time of a connection",
            "plugin": "core"} in allowed["data"]
    assert "allow-listed" in allowed["message"]
    helped = daemon.podoctl("help", "server", "add")
    assert helped.returncode == 0 and "--tunnel SPEC" in helped.stdout
    unknown = daemon.podoctl("server", "show", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "Error: there is no server named 'nope' (servers: here, mx1)"


def test_mail_database_through_the_tunnel(sshd: Sshd, pg: PgCluster, tmp_path: Path,
                                           daemons: list[DaemonProcess]) -> None:
    server = sshd.server_entry("db1", tunnels=[{"name": "postgres", "remote_port": pg.port}])
    path, db = mail_via_tunnel(pg, tmp_path, server)
    daemon = start(daemons, path)
    created = daemon.request(["domain", "create", "tunnel.example"], execute_real=True)
    assert created["ok"], created["message"]
    assert created["backup_id"]  # the backup gate also went through the tunnel
    listed = daemon.request(["domain", "list"])
    assert [d["domain"] for d in listed["data"]] == ["tunnel.example"]
    port = tunnel_port(daemon, "db1", "postgres")
    assert asyncio.run(query_through(port, db, "SELECT domain FROM domain")) == "tunnel.example"
    assert pg.psql("SELECT domain FROM domain", db).strip() == "tunnel.example"


def test_sshd_killed_then_back_without_restarting_podod(
        private_sshd: Sshd, pg: PgCluster, tmp_path: Path,
        daemons: list[DaemonProcess]) -> None:
    server = private_sshd.server_entry(
        "db1", tunnels=[{"name": "postgres", "remote_port": pg.port}])
    path, db = mail_via_tunnel(pg, tmp_path, server)
    daemon = start(daemons, path)
    assert daemon.request(["domain", "create", "a.example"], execute_real=True)["ok"]
    port = tunnel_port(daemon, "db1", "postgres")
    pid = daemon.proc.pid if daemon.proc else None

    private_sshd.kill()
    assert wait_for(lambda: show(daemon, "db1")["state"] == "disconnected")
    assert wait_for(lambda: show(daemon, "db1")["failed_attempts"] >= 3)
    down = show(daemon, "db1")
    assert down["last_error"] == (f"connection refused by 127.0.0.1:{private_sshd.port} "
                                  "(is sshd running?)")
    assert down["rtt_seconds"] is None and down["tunnels"][0]["open"] is False
    text = daemon.podoctl("server", "show", "db1").stdout
    assert "disconnected (" in text and "connection refused by" in text
    assert "server db1: not connected: the connection was lost" in daemon.log()
    refused = daemon.request(["domain", "list"])
    assert not refused["ok"] and "\n" not in refused["message"]
    assert "mail database" in refused["message"] or "server db1" in refused["message"]

    private_sshd.start()  # same port, same host key
    assert wait_for(lambda: show(daemon, "db1")["state"] == "connected")
    back = show(daemon, "db1")
    assert back["reconnects"] == 1
    assert back["tunnels"][0]["local_port"] == port and back["tunnels"][0]["open"] is True
    assert asyncio.run(query_through(port, db, "SELECT count(*) FROM domain")) == 1

    def mail_works() -> bool:
        return bool(daemon.request(["domain", "list"])["ok"])

    assert wait_for(mail_works)
    assert daemon.request(["domain", "create", "b.example"], execute_real=True)["ok"]
    assert daemon.proc is not None and daemon.proc.pid == pid and daemon.proc.poll() is None


def test_unknown_and_changed_host_keys_are_refused(sshd: Sshd, private_sshd: Sshd,
                                                  tmp_path: Path,
                                                  daemons: list[DaemonProcess]) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    path = servers_config(tmp_path / "podod", [
        private_sshd.server_entry("mx1"),
        sshd.server_entry("mx2", known_hosts=str(empty))])
    daemon = start(daemons, path)
    assert show(daemon, "mx1")["state"] == "connected"
    unknown = show(daemon, "mx2")
    assert unknown["state"] == "disconnected"
    assert unknown["last_error"].startswith(
        f"the host key of mx2 (127.0.0.1:{sshd.port}) is unknown: {empty} has no entry for it "
        f"(it presents {sshd.fingerprint()}), and podod never trusts a key on first use; ")
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in unknown["last_error"]

    old = private_sshd.fingerprint()
    private_sshd.regenerate_host_key()
    private_sshd.restart()
    assert private_sshd.fingerprint() != old

    def changed() -> bool:
        return "has CHANGED" in (show(daemon, "mx1")["last_error"] or "")

    assert wait_for(changed)
    message = show(daemon, "mx1")["last_error"]
    assert message.startswith(
        f"the host key of mx1 (127.0.0.1:{private_sshd.port}) has CHANGED (it presents "
        f"{private_sshd.fingerprint()}): {private_sshd.known_hosts} holds a different key")
    assert f"ssh-keygen -R '[127.0.0.1]:{private_sshd.port}'" in message
    assert show(daemon, "mx1")["state"] == "disconnected"
    # After checking the fingerprint, the admin trusts the new key: no restart needed.
    private_sshd.trust_current_host_key()
    assert daemon.request(["server", "reconnect", "mx1"])["ok"]
    assert wait_for(lambda: show(daemon, "mx1")["state"] == "connected")


def _stored(daemon: DaemonProcess) -> list[str]:
    db = daemon.config_path.parent / "state" / "state.db"
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM servers ORDER BY name")]


def test_server_add_and_remove(sshd: Sshd, tmp_path: Path,
                               daemons: list[DaemonProcess]) -> None:
    path = servers_config(tmp_path, [sshd.server_entry("mx1")])
    daemon = start(daemons, path)
    add = ["server", "add", "mx2", "--host", "127.0.0.1", "--port", str(sshd.port),
           "--user", sshd.user, "--key-file", str(sshd.client_key), "--known-hosts",
           str(sshd.known_hosts), "--services", "postfix,dovecot", "--mail-log", "journal",
           "--tunnel", f"ssh:127.0.0.1:{sshd.port}"]
    sandbox = daemon.podoctl(*add)
    assert sandbox.returncode == 0, sandbox.stderr
    assert sandbox.stdout.startswith("SANDBOX: nothing was changed.\nwould add server mx2 "
                                     f"(127.0.0.1:{sshd.port} as {sshd.user})")
    assert "Would insert server mx2" in sandbox.stdout
    assert [s["name"] for s in daemon.request(["server", "list"])["data"]] == ["mx1"]
    assert _stored(daemon) == []

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    noted = daemon.request(["server", "add", "mx3", "--host", "127.0.0.1", "--port",
                            str(sshd.port), "--key-file", str(sshd.client_key),
                            "--known-hosts", str(empty)])
    assert noted["ok"] and noted["sandbox"] and noted["plan_id"]
    assert noted["notes"] == [
        f"{empty} has no host key for 127.0.0.1:{sshd.port} yet: podod will refuse to connect "
        f"until you add it after checking its fingerprint (ssh-keyscan -p {sshd.port} "
        f"127.0.0.1 >> {empty})"]

    real = daemon.request(add, execute_real=True)
    assert real["ok"] and real["sandbox"] is False, real["message"]
    assert real["message"].startswith("added server mx2; connected (round trip ")
    assert any(n.startswith("tunnel ssh: 127.0.0.1:") for n in real["notes"])
    mx2 = show(daemon, "mx2")
    assert mx2["state"] == "connected" and mx2["source"] == "added"
    assert mx2["added_by"] == "unix:root" and mx2["services"] == ["postfix", "dovecot"]
    assert mx2["mail_log"] == "journal"
    assert _stored(daemon) == ["mx2"]
    audit = daemon.request(["audit", "list", "--command", "server add"])["data"]
    assert [(r["command"], r["outcome"]) for r in audit][:3] == [
        ("server add", "ok"), ("server add", "intent"), ("server add", "sandbox")]

    daemon.stop()  # persisted: back after a restart, and connected again
    daemon = start(daemons, path)
    assert [(s["name"], s["state"]) for s in daemon.request(["server", "list"])["data"]] == [
        ("mx1", "connected"), ("mx2", "connected")]

    refused = daemon.podoctl("--execute-real", "--yes", "server", "remove", "mx1")
    assert refused.returncode == 1
    assert refused.stderr.strip() == ("Error: server mx1 is configured in podod.yaml; remove "
                                      "it there and reload podod (systemctl reload podod)")
    sandbox = daemon.podoctl("server", "remove", "mx2")
    assert sandbox.returncode == 0 and "Would delete server mx2" in sandbox.stdout
    assert _stored(daemon) == ["mx2"]
    removed = daemon.request(["server", "remove", "mx2"], execute_real=True)
    assert removed["message"] == "removed server mx2 and closed its connection"
    assert [s["name"] for s in daemon.request(["server", "list"])["data"]] == ["mx1"]
    daemon.stop()
    daemon = start(daemons, path)
    assert [s["name"] for s in daemon.request(["server", "list"])["data"]] == ["mx1"]
    assert _stored(daemon) == []


def test_server_add_bad_input_is_one_sentence_and_changes_nothing(
        sshd: Sshd, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    path = servers_config(tmp_path, [sshd.server_entry("mx1")])
    daemon = start(daemons, path)
    (tmp_path / "folder").mkdir()
    good = ["--host", "127.0.0.1", "--port", str(sshd.port), "--key-file", str(sshd.client_key),
            "--known-hosts", str(sshd.known_hosts)]

    def but(option: str, value: str) -> list[str]:
        """``good`` with one option's value replaced (an option may be given once)."""
        at = good.index(option)
        return [*good[:at + 1], value, *good[at + 2:]]

    cases: list[tuple[list[str], str]] = [
        (["mx1", *good], "server add: a server named mx1 exists already"),
        (["MX 2", *good], "server add: NAME must be lower-case letters, digits, '.', '_' or "
                          "'-' (at most 63 characters)"),
        (["mx2", *but("--port", "70000")],
         "server add: --port must be less than or equal to 65535"),
        (["mx2", *but("--port", "abc")], "server add: --port must be a whole number, not 'abc'"),
        (["mx2", "--port", "22"], "server add: --host is required (usage: server add NAME "
                                  "--host HOST [--port N] [--user USER] [--key-file PATH] "
                                  "[--known-hosts PATH] [--services A,B] [--mail-log "
                                  "PATH|journal] [--tunnel SPEC] [--execute-real])"),
        (["mx2", *but("--key-file", "/nonexistent/key")],
         "server add: the key file /nonexistent/key does not exist"),
        (["mx2", *but("--key-file", "id_ed25519")],
         "server add: --key-file must be an absolute path, not 'id_ed25519'"),
        (["mx2", *but("--key-file", str(sshd.known_hosts))],
         f"server add: the key file {sshd.known_hosts} is not a private key podod can use"),
        (["mx2", *but("--key-file", str(tmp_path / "folder"))],
         f"server add: the key file {tmp_path / 'folder'} is a folder"),
        (["mx2", *but("--known-hosts", str(tmp_path / "none"))],
         f"server add: the known_hosts file {tmp_path / 'none'} does not exist"),
        (["mx2", *good, "--tunnel", "postgres"],
         "server add: --tunnel 'postgres' is not NAME:REMOTE_HOST:REMOTE_PORT[:LOCAL_PORT] "
         "(for example postgres:127.0.0.1:5432)"),
        (["mx2", *good, "--tunnel", "pg:127.0.0.1:99999"],
         "server add: --tunnel pg: remote port must be less than or equal to 65535"),
        (["mx2", *good, "--tunnel", "pg:127.0.0.1:5432", "--tunnel", "pg:127.0.0.1:5433"],
         "server add: --tunnel tunnel name 'pg' is used twice"),
        (["mx2", *good, "--mail-log", "mail.log"],
         "server add: --mail-log must be an absolute file path, or 'journal' for the systemd "
         "journal"),
        (["mx2", *good, "--services", "post fix"],
         "server add: --services 'post fix' is not a systemd unit name"),
        (["mx2", *good[2:], "--host", "no-such-host.invalid"],
         "server add: the host name no-such-host.invalid cannot be resolved"),
    ]
    for args, expected in cases:
        for real in (False, True):
            reply = daemon.request(["server", "add", *args], execute_real=real)
            assert not reply["ok"], (args, reply)
            assert reply["message"].startswith(expected), (args, reply["message"])
            assert "\n" not in reply["message"] and "Traceback" not in reply["message"]
    cli = daemon.podoctl("--execute-real", "--yes", "server", "add", "mx2",
                         *but("--port", "0"))
    assert cli.returncode == 2 and cli.stderr.strip() == (
        "Error: server add: --port must be greater than or equal to 1")
    for argv, expected in [
        (["server", "remove", "nope"], "there is no server named 'nope' (servers: mx1)"),
        (["server", "reconnect", "nope"], "there is no server named 'nope' (servers: mx1)"),
    ]:
        reply = daemon.request(argv, execute_real=True)
        assert not reply["ok"] and reply["message"] == expected
    assert [s["name"] for s in daemon.request(["server", "list"])["data"]] == ["mx1"]
    assert _stored(daemon) == []


def test_reload_connects_new_and_drops_removed_servers_only(
        sshd: Sshd, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    path = servers_config(tmp_path, [sshd.server_entry("mx1")])
    daemon = start(daemons, path)
    since = show(daemon, "mx1")["since"]
    config = yaml.safe_load(path.read_text())

    def reload(servers: list[dict[str, Any]]) -> None:
        config["servers"] = servers
        path.write_text(yaml.safe_dump(config))
        before = daemon.log().count("configuration reloaded")
        daemon.signal(signal.SIGHUP)
        assert wait_for(lambda: daemon.log().count("configuration reloaded") > before)

    reload([sshd.server_entry("mx1"), sshd.server_entry("mx2")])
    assert show(daemon, "mx2")["state"] == "connected"
    assert show(daemon, "mx1")["since"] == since  # untouched: not reconnected
    since2 = show(daemon, "mx2")["since"]
    reload([sshd.server_entry("mx2")])
    names = [s["name"] for s in daemon.request(["server", "list"])["data"]]
    assert names == ["mx2"] and show(daemon, "mx2")["since"] == since2
    reload([sshd.server_entry("mx2", max_commands=2)])  # changed: reconnected with it
    assert show(daemon, "mx2")["max_commands"] == 2
    assert show(daemon, "mx2")["state"] == "connected"
    listed = json.loads(daemon.podoctl("server", "list", json_output=True).stdout)
    assert [s["name"] for s in listed["data"]] == ["mx2"]


def test_viewers_see_servers_but_only_admins_change_them(
        sshd: Sshd, tmp_path: Path, public_dir: Path, daemons: list[DaemonProcess]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to ask as another user")
    path = servers_config(tmp_path, [sshd.server_entry("mx1")],
                          socket={"path": str(public_dir / "s.sock"), "mode": "0666"},
                          access={"unix_users": {"nobody": {"role": "viewer"}}})
    daemon = start(daemons, path)
    for argv in (["server", "list"], ["server", "show", "mx1"], ["server", "commands"]):
        assert daemon.request_as(65534, argv)["ok"], argv
    for argv in (["server", "add", "mx2", "--host", "127.0.0.1"], ["server", "remove", "mx1"],
                 ["server", "reconnect", "mx1"]):
        reply = daemon.request_as(65534, argv)
        assert reply["ok"] is False and reply["code"] == "forbidden", (argv, reply)
