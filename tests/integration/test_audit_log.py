"""The audit log as an attacker meets it: what malformed requests leave behind, whether
removed or rewritten records are found, and what happens when a record cannot be written."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from podod.bus.audit import FIELDS, GENESIS
from testbed.daemon import DaemonProcess
from testbed.ports import free_port

Start = Callable[..., DaemonProcess]
REPO = Path(__file__).resolve().parents[2]
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


# -- removed, edited and rewritten records -------------------------------------------------------

def sha256_rewrite(conn: sqlite3.Connection) -> None:
    """What someone with state.db but without the key can do: change a record and recompute
    every hash the way records before the audit key were chained (plain SHA-256)."""
    conn.row_factory = sqlite3.Row
    prev = GENESIS
    for row in list(conn.execute("SELECT * FROM audit ORDER BY id")):
        record = dict(row)
        if record["command"] == "audit verify":
            record["actor"] = "unix:someone-else"
        body = json.dumps({k: record[k] for k in FIELDS}, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256((prev + body).encode()).hexdigest()
        conn.execute("UPDATE audit SET actor=?, prev_hash=?, hash=?, scheme='sha256', "
                     "key_id=NULL WHERE id=?", (record["actor"], prev, digest, record["id"]))
        prev = digest


TAMPERING: dict[str, tuple[Callable[[sqlite3.Connection], object], str]] = {
    "truncate the newest": (
        lambda c: c.execute("DELETE FROM audit WHERE id = (SELECT max(id) FROM audit)"),
        "record 6: the newest records were removed: the log ended at record 5, but podod had "
        "written record 6"),
    "truncate the newest two": (
        lambda c: c.execute("DELETE FROM audit WHERE id >= 5"),
        "record 5: the newest records were removed: the log ended at record 4, but podod had "
        "written record 6"),
    "delete a middle record": (
        lambda c: c.execute("DELETE FROM audit WHERE id = 3"),
        "record 4 does not follow the one before it (a record was removed or inserted)"),
    "edit a record": (
        lambda c: c.execute("UPDATE audit SET actor = 'unix:someone-else' WHERE id = 2"),
        "record 2 was changed after it was written"),
    "rewrite the chain with SHA-256": (
        sha256_rewrite,
        "record 7: record 6 is not the one podod wrote (the head file"),
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_audit_verify_finds_tampering_done_while_podod_was_stopped(
        start_daemon: Start, how: str) -> None:
    tamper, expected = TAMPERING[how]
    daemon = start_daemon()
    for argv in (["help"], ["frobnicate"], ["audit", "list"], ["status"]):
        daemon.request(argv)
    intact = daemon.podoctl("audit", "verify")  # the 6th record
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.startswith("all 5 audit records are intact\n- records 1-5: signed "
                                    "with the audit key "), intact.stdout
    daemon.stop()
    with sqlite3.connect(daemon.config_path.parent / "state" / "state.db") as conn:
        tamper(conn)
    daemon.start()
    broken = daemon.podoctl("audit", "verify")
    assert broken.returncode == 1, broken.stdout
    assert broken.stderr.startswith(f"Error: the audit log is NOT intact: {expected}"), \
        broken.stderr
    again = daemon.podoctl("audit", "verify")  # still, after the head moved on
    assert again.returncode == 1 and again.stderr == broken.stderr


# -- a record that cannot be written ------------------------------------------------------------

def test_a_real_change_whose_audit_record_cannot_be_written_is_refused(
        start_daemon: Start) -> None:
    """A real change is recorded before it runs. With state.db locked by another writer the
    record cannot be written, so the change is refused with a sentence and nothing changes."""
    daemon = start_daemon(plugins={"dirs": [str(REPO / "plugins")], "entry_points": False})
    locker = sqlite3.connect(daemon.config_path.parent / "state" / "state.db",
                             isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # holds the write lock past podod's 5 s busy timeout
    try:
        refused = daemon.request(["example", "note", "kept?"], execute_real=True)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert refused["ok"] is False and refused["code"] == "audit-failed"
    assert refused["message"] == ("example note was not run: its audit record could not be "
                                  "written (database is locked); nothing was changed")
    assert daemon.request(["example", "note", "x"])["message"] == "would keep note 1"
    kept = daemon.request(["example", "note", "first"], execute_real=True)
    assert kept["message"] == "kept note 1"
    records = daemon.request(["audit", "list", "--command", "example note"])["data"]
    assert [(r["outcome"], r["request_id"] == records[0]["request_id"])
            for r in records[:3]] == [("ok", True), ("intent", True), ("sandbox", False)]
    assert "could not write the audit record of request" in daemon.log()
    assert daemon.podoctl("audit", "verify").returncode == 0
