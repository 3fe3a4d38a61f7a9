"""The daemon as a user meets it: podoctl, the socket, signals, systemd, plugins, audit."""

from __future__ import annotations

import grp
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from testbed.daemon import DaemonProcess
from testbed.waiting import poll as wait_for

REPO = Path(__file__).resolve().parents[2]
Start = Callable[..., DaemonProcess]

BROKEN_PLUGIN = "def setup(registry):\n    raise RuntimeError('cannot reach its API')\n"


def test_podoctl_exit_codes_and_output(start_daemon: Start) -> None:
    daemon = start_daemon()
    ok = daemon.podoctl("status")
    assert ok.returncode == 0, ok.stderr
    assert "podod status" in ok.stdout and "0.1.0" in ok.stdout
    as_json = json.loads(daemon.podoctl("status", json_output=True).stdout)
    assert as_json["ok"] is True and as_json["data"]["version"] == "0.1.0"
    unknown = daemon.podoctl("frobnicate")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == ("Error: unknown command 'frobnicate'; try 'help' for "
                                      "the list of commands")
    helped = daemon.podoctl("help", "audit", "list")
    assert helped.returncode == 0 and helped.stdout.startswith("Usage: audit list")
    # A real change without a terminal needs --yes.
    refused = daemon.podoctl("--execute-real", "status")
    assert refused.returncode == 2 and "without --yes" not in refused.stdout
    assert "add --yes" in refused.stderr


def test_podoctl_daemon_unreachable(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "podod.podoctl", "--socket", str(tmp_path / "none.sock"),
         "status"], capture_output=True, text=True)
    assert result.returncode == 3
    assert result.stderr.startswith(f"podoctl: podod is not running: there is no socket at "
                                     f"{tmp_path / 'none.sock'}. Start it with")


def test_sandbox_then_real_change_through_a_plugin(start_daemon: Start) -> None:
    daemon = start_daemon(plugins={"dirs": [str(REPO / "plugins")], "entry_points": False})
    sandbox = daemon.podoctl("example", "note", "hello")
    assert sandbox.returncode == 0
    assert sandbox.stdout.startswith("SANDBOX: nothing was changed.")
    assert "Would insert note 1" in sandbox.stdout
    real = daemon.podoctl("--execute-real", "--yes", "example", "note", "hello")
    assert real.returncode == 0 and "kept note 1" in real.stdout
    assert "SANDBOX" not in real.stdout
    # plan, then confirm: the sandbox reply carries a plan id bound to the actor
    plan = daemon.request(["example", "note", "second"])
    assert plan["sandbox"] is True and plan["plan_id"]
    done = daemon.request(["confirm", plan["plan_id"]])
    assert done["ok"] and done["sandbox"] is False and done["message"] == "kept note 2"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:  # progress is streamed
        sock.connect(str(daemon.socket_path))
        sock.sendall(b'{"argv": ["example", "note", "third"]}\n')
        reader = sock.makefile("rb")
        first, last = json.loads(reader.readline()), json.loads(reader.readline())
        assert first == {"type": "progress", "message": "checking 2 earlier notes"}
        assert last["type"] == "reply" and last["sandbox"] is True
    again = daemon.request(["confirm", plan["plan_id"]])
    assert not again["ok"] and again["message"].startswith("there is no pending plan")


def test_socket_protocol_survives_bad_input(start_daemon: Start) -> None:
    daemon = start_daemon(socket={"path": "x", "max_request_bytes": 8192})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(daemon.socket_path))
        reader = sock.makefile("rb")
        for line, expected in [
            (b"this is not json\n", "the request is not valid JSON"),
            (b"[1, 2]\n", "the request must be a JSON object with an 'argv' list"),
            (b'{"argv": "status"}\n', "the request needs 'argv', a list of strings"),
            (b'{"argv": ["status"], "stdin": 5}\n', "'stdin' must be a string"),
            (b"\xff\xfe\x00garbage\n", "the request is not valid JSON"),
            (b"[" * 1500 + b"]" * 1500 + b"\n", "the request is nested too deeply"),
            (b'{"argv": ["status"], "n": ' + b"9" * 4400 + b"}\n",
             "the request holds a value that cannot be read"),
            (b'{"argv": ["user", "show", "\\ud800@example.com"]}\n',
             "the request holds text that is not valid Unicode"),
        ]:
            sock.sendall(line)
            reply = json.loads(reader.readline())
            assert reply["ok"] is False and reply["message"] == expected
            assert reply["code"] == "bad-request"
        sock.sendall(b'{"argv": ["status"]}\n')  # the same connection still works
        assert json.loads(reader.readline())["ok"] is True
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(daemon.socket_path))
        sock.sendall(b'{"argv": ["' + b"a" * 10000 + b'"]}\n')
        reply = json.loads(sock.makefile("rb").readline())
        assert reply["message"] == "request larger than 8192 bytes; refused"
    assert daemon.request(["status"])["ok"]
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert "Traceback" not in daemon.log()


def test_sighup_reload_good_and_bad(start_daemon: Start) -> None:
    daemon = start_daemon()
    config = yaml.safe_load(daemon.config_path.read_text())
    config["log"] = {"level": "info"}
    config["commands"] = {"plan_ttl": "5m"}
    daemon.config_path.write_text(yaml.safe_dump(config))
    daemon.signal(signal.SIGHUP)
    assert wait_for(lambda: "configuration reloaded from" in daemon.log())
    daemon.config_path.write_text("servers:\n  - {name: a, host: h, port: many}\n")
    daemon.signal(signal.SIGHUP)
    assert wait_for(lambda: "reload rejected" in daemon.log())
    assert ("reload rejected, keeping the running configuration: podod.yaml: "
            "servers[0].port: must be an integer") in daemon.log()
    assert daemon.request(["status"])["ok"]  # still serving on the old configuration


@pytest.mark.parametrize(("layout", "message"), [
    ({"state_dir": "file/state"}, "podod cannot start: Not a directory: {root}/file/state"),
    ({"socket": {"path": "file/podod.sock"}}, "podod cannot start: File exists: {root}/file"),
    ({"state_dir": "broken"}, "the state database {root}/broken/state.db cannot be opened "
                              "(file is not a database); it holds the audit log"),
    ({"socket": {"path": "s.sock", "group": "no-such-group-here"}},
     "socket.group: there is no group 'no-such-group-here'"),
])
def test_start_failures_are_one_sentence(tmp_path: Path, layout: dict[str, object],
                                         message: str) -> None:
    (tmp_path / "file").write_text("a file where a folder should be")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "state.db").write_bytes(b"not sqlite " * 100)
    config = {"state_dir": "state", "socket": {"path": "podod.sock"},
              "monitor": {"enabled": False}, "metrics": {"enabled": False}, **layout}
    path = tmp_path / "podod.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "podod.cli", "run", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode in (1, 2)
    errors = [line for line in result.stderr.splitlines() if "level=error" in line]
    assert len(errors) == 1 and message.format(root=tmp_path) in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_daemon_on_the_same_socket_leaves_the_first_alone(start_daemon: Start
                                                                   ) -> None:
    first = start_daemon()
    second = first.config_path.parent / "second.yaml"
    config = yaml.safe_load(first.config_path.read_text())
    second.write_text(yaml.safe_dump(config))  # the same state_dir too
    result = subprocess.run([sys.executable, "-m", "podod.cli", "run", "-c", str(second)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"another podod is already listening on {first.socket_path}" in result.stderr
    assert first.socket_path.exists() and first.request(["status"])["ok"]
    assert "podod 0.1.0 ready" not in result.stderr and "audit" not in result.stderr


def test_sigterm_stops_quickly_and_removes_the_socket(start_daemon: Start) -> None:
    daemon = start_daemon()
    assert daemon.socket_path.exists()
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.proc is not None
    assert daemon.proc.wait(10) == 0
    assert time.monotonic() - started < 5
    assert not daemon.socket_path.exists()
    assert "stopped" in daemon.log()


def test_sigterm_does_not_wait_for_idle_connections(start_daemon: Start) -> None:
    """A podoctl waiting at its prompt, or any client that connected and sent nothing (or
    half a line), must not hold the daemon's stop for the in-flight grace period."""
    daemon = start_daemon()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as halfway:
        idle.connect(str(daemon.socket_path))
        halfway.connect(str(daemon.socket_path))
        halfway.sendall(b'{"argv": ["sta')
        assert daemon.request(["status"])["ok"]  # both are accepted by now
        daemon.signal(signal.SIGTERM)
        assert daemon.proc is not None
        assert daemon.proc.wait(8) == 0  # the grace for requests in flight is 10 s
        assert idle.recv(100) == b""  # closed, not left hanging
    assert "in flight" not in daemon.log() and "Traceback" not in daemon.log()
    assert not daemon.socket_path.exists()


def test_systemd_notify_ready_watchdog_stopping(start_daemon: Start, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(10)
        daemon = start_daemon(_env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"})
        messages = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("WATCHDOG=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        assert any(m.startswith("READY=1") for m in messages)
        assert any("WATCHDOG=1" in m for m in messages)
        daemon.stop()
        while "STOPPING=1" not in messages:
            messages.append(listener.recv(4096).decode())


def test_broken_plugin_is_reported_and_the_daemon_runs(start_daemon: Start,
                                                       tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "flaky.py").write_text(BROKEN_PLUGIN)
    daemon = start_daemon(plugins={"dirs": [str(plugins), str(REPO / "plugins")],
                                   "entry_points": False})
    status = daemon.request(["status"])
    failed = {p["name"]: p for p in status["data"]["plugins"]}
    assert failed["flaky"]["loaded"] is False
    assert failed["flaky"]["error"] == "RuntimeError: cannot reach its API"
    assert failed["example"]["loaded"] is True
    assert "plugin flaky failed to load: RuntimeError: cannot reach its API" in daemon.log()
    assert daemon.podoctl("example", "hello").stdout.strip() == "hello, world!"


def test_entry_point_plugin_and_socket_permissions(start_daemon: Start,
                                                   tmp_path: Path) -> None:
    """A plugin installed as a Python package (entry point group podod.plugins) is found;
    the socket is mode 0660 and belongs to socket.group."""
    site = tmp_path / "site"
    (site / "podod_hello-1.0.dist-info").mkdir(parents=True)
    (site / "podod_hello-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: podod-hello\nVersion: 1.0\n")
    (site / "podod_hello-1.0.dist-info" / "entry_points.txt").write_text(
        "[podod.plugins]\nhello = podod_hello\n")
    (site / "podod_hello.py").write_text(
        "from podod.bus.context import Reply\n"
        "def setup(registry):\n"
        "    @registry.command('hello world', 'Say hello')\n"
        "    async def hello(ctx):\n"
        "        return Reply(message='hello from an installed plugin')\n")
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    daemon = start_daemon(_env={"PYTHONPATH": pythonpath},
                          plugins={"dirs": [], "entry_points": True},
                          socket={"path": "s.sock", "group": "adm"})
    plugins = {p["name"]: p for p in daemon.request(["status"])["data"]["plugins"]}
    assert plugins["hello"]["loaded"] and plugins["hello"]["source"] == \
        "entry point podod_hello"
    assert daemon.request(["hello", "world"])["message"] == "hello from an installed plugin"
    info = daemon.socket_path.stat()
    assert oct(info.st_mode & 0o777) == "0o660"
    assert info.st_gid == grp.getgrnam("adm").gr_gid


def test_a_component_that_fails_to_start_shows_in_status(start_daemon: Start) -> None:
    """/metrics on a port that is taken: the daemon runs on, status names the failure."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = start_daemon(metrics={"enabled": True, "listen": "127.0.0.1", "port": port},
                              log={"level": "info"})
        status = daemon.podoctl("status")
    assert status.returncode == 0
    row = next(line for line in status.stdout.splitlines() if "failed" in line)
    assert "component metrics failed to start" in row and "in use" in row, row
    assert "Traceback" not in daemon.log()


def test_audit_records_and_detects_tampering(start_daemon: Start) -> None:
    daemon = start_daemon()
    for argv in (["status"], ["frobnicate"], ["help"]):
        daemon.request(argv)
    listed = daemon.request(["audit", "list"])
    commands = [r["command"] for r in listed["data"]]
    assert commands[:3] == ["help", "(unknown command)", "status"]
    assert listed["data"][1]["outcome"] == "usage"
    assert daemon.podoctl("audit", "verify").returncode == 0
    db = daemon.config_path.parent / "state" / "state.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit SET actor='unix:someone-else' WHERE id=2")
    broken = daemon.podoctl("audit", "verify")
    assert broken.returncode == 1
    assert "record 2 was changed after it was written" in broken.stderr


def test_unix_users_and_roles(start_daemon: Start, public_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run podoctl as another user")
    daemon = start_daemon(socket={"path": str(public_dir / "s.sock"), "mode": "0666"},
                          plugins={"dirs": [str(REPO / "plugins")], "entry_points": False})

    def as_nobody(*argv: str) -> dict[str, object]:
        return daemon.request_as(65534, list(argv))

    refused = as_nobody("status")
    assert refused["ok"] is False and refused["code"] == "unauthenticated", refused
    assert str(refused["message"]).startswith("the local user nobody may not use podod")
    attempt = daemon.request(["audit", "list", "--actor", "unix:nobody"])["data"]
    assert [(r["command"], r["outcome"]) for r in attempt] == [("status", "unauthenticated")]
    config = yaml.safe_load(daemon.config_path.read_text())
    config["access"] = {"unix_users": {"nobody": {"role": "viewer"}}}
    daemon.config_path.write_text(yaml.safe_dump(config))
    daemon.signal(signal.SIGHUP)
    assert wait_for(lambda: "configuration reloaded" in daemon.log())
    assert as_nobody("status")["ok"] is True
    denied = as_nobody("example", "note", "x")
    assert denied["ok"] is False and denied["code"] == "forbidden"
    assert str(denied["message"]).startswith("unix:nobody (viewer) may not change anything")
    assert as_nobody("audit", "list")["code"] == "forbidden"
    # A plan is bound to the one who made it, even between two admins.
    config["access"] = {"unix_users": {"nobody": {"role": "admin"}}}
    daemon.config_path.write_text(yaml.safe_dump(config))
    daemon.signal(signal.SIGHUP)
    assert wait_for(lambda: daemon.log().count("configuration reloaded") == 2)
    plan = daemon.request(["example", "note", "by root"])["plan_id"]
    stolen = as_nobody("confirm", str(plan))
    assert stolen["ok"] is False and stolen["code"] == "forbidden"
    assert stolen["message"] == f"plan {plan} belongs to unix:root, not to you"
    assert daemon.request(["confirm", str(plan)])["message"] == "kept note 1"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (REPO / "systemd" / "podod.service").read_text()
    podod = Path(sys.executable).parent / "podod"
    (tmp_path / "podod.service").write_text(unit.replace("/usr/local/bin/podod", str(podod)))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "podod.service")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Type=notify" in unit and "ProtectSystem=strict" in unit
    # socket.group members must be able to reach the socket inside the runtime folder
    assert "RuntimeDirectoryMode=0755" in unit
