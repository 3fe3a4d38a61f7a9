"""The audit log as an attacker meets it: what malformed requests leave behind, whether
removed or rewritten records are found, and what happens when a record cannot be written."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Callable

from podod.testbed.daemon import DaemonProcess
from podod.testbed.ports import free_port

Start = Callable[..., DaemonProcess]
MARK = "Hunter2Hunter2"
ADDRESS = "s1@demo.example"

MALFORMED = [
    ["user", "create", ADDRESS, "--password", MARK],  # an unknown option with a value
    ["user", "create", ADDRESS, f"--password-stdin={MARK}"],  # a flag given a value
    ["user", "create", ADDRESS, f"--{MARK}={MARK}"],
    ["user", "create", ADDRESS, MARK],  # a stray positional
    ["user", "create", ADDRESS, "--password-stdin", MARK],  # the secret flag, then the marker
    ["user", "create", ADDRESS, "--name", "S One", "--name", MARK],  # given twice
    ["user", "create", ADDRESS, "--quota-mb", MARK],  # a value that does not convert
    ["audit", "list", "--since", MARK],
    [MARK],  # unknown command words
    ["!podo", MARK],
    ["user", MARK, "--name", "x"],
    [f"--{MARK}"],
    ["user", "create", ADDRESS, "--name", f"S {MARK}\x00"],  # a NUL character
    ["user", "create", ADDRESS, *[MARK] * 3000],  # an over-long argv
    ["user", "create", "--help", "--password", MARK],  # help is audited too
]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        return str(resp.read().decode())


def oversized(daemon: DaemonProcess) -> None:
    """A request over socket.max_request_bytes: refused by the socket before the bus (which
    may close the connection before all of it is sent)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(daemon.socket_path))
        try:
            sock.sendall(json.dumps({"argv": ["user", "create", MARK * 100_000]}).encode())
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_malformed_requests_leave_no_trace_of_their_values(start_daemon: Start) -> None:
    """A request that does not parse is audited by the words the grammar knows: the
    command, the names of its declared options, placeholders for the rest. A password typed
    in the wrong place appears in no database file, no log line and no metric."""
    port = free_port()
    daemon = start_daemon(metrics={"enabled": True, "listen": "127.0.0.1", "port": port})
    for argv in MALFORMED:
        reply = daemon.request(argv)
        assert reply["ok"] is (argv[-1] == MARK and "--help" in argv), (argv, reply)
        if not reply["ok"]:
            assert reply["exit_code"] == 2 and "\n" not in str(reply["message"]), reply
    oversized(daemon)
    refused = daemon.podoctl("user", "create", ADDRESS, "--password", MARK)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    records = [r for r in daemon.request(["audit", "list", "--limit", "100"])["data"]
               if r["command"] != "status"]  # the one start_daemon asked
    assert len(records) == len(MALFORMED) + 1
    by_command = [r["command"] for r in records]
    assert by_command.count("(unknown command)") == 4
    assert by_command.count("user create") == len(MALFORMED) - 5 + 1
    first = records[-1]
    assert json.loads(first["args"]) == {"argv": ["user", "create", "?", "?", "?"]}
    assert first["message"].startswith("user create: unknown option (options: --name")
    helped = next(r for r in records if "--help" in r["args"])
    assert helped["outcome"] == "ok" and json.loads(helped["args"]) == {
        "argv": ["user", "create", "--help", "?", "?"]}
    twice = json.loads(records[-6]["args"])["argv"]
    assert twice == ["user", "create", "?", "--name", "?", "--name", "?"]
    assert records[-6]["message"] == "user create: --name is given twice; give it once"
    metrics = scrape(port)
    assert 'command="unknown"' in metrics
    assert MARK not in metrics
    assert daemon.podoctl("audit", "verify").returncode == 0
    state = daemon.config_path.parent / "state"
    daemon.stop()
    files = sorted(state.iterdir())
    assert {"state.db", "metrics.db", "traffic.db"} <= {f.name for f in files}
    for path in files:
        if path.is_file():
            assert MARK.encode() not in path.read_bytes(), path
    assert MARK not in daemon.log()
