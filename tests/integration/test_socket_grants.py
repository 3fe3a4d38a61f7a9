"""Grants reloaded with SIGHUP apply to the next request of a connection that is already open,
through the real daemon and a real local user (nobody)."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from testbed.daemon import DaemonProcess
from testbed.waiting import poll as wait_for

NOBODY = 65534


@contextmanager
def connection_as(uid: int, socket_path: Path) -> Iterator[Callable[[list[str]], Any]]:
    """One socket connection kept open by a child running as ``uid``; ``ask(argv)`` sends a
    request on it and returns the reply (None once podod has closed the connection)."""
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to uid, relay requests from the pipe over one connection
        try:
            os.close(to_child_w)
            os.close(from_child_r)
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, \
                    os.fdopen(to_child_r, "rb") as requests:
                sock.connect(str(socket_path))
                replies = sock.makefile("rb")
                for line in requests:
                    try:
                        sock.sendall(line)
                        answer = replies.readline() or b"null\n"
                    except OSError:  # podod closed the connection
                        answer = b"null\n"
                    os.write(from_child_w, answer)
        except BaseException as exc:  # report, never return into the test runner
            os.write(from_child_w, json.dumps({"ok": False, "code": "child",
                                               "message": repr(exc)}).encode() + b"\n")
        finally:
            os._exit(0)
    os.close(to_child_r)
    os.close(from_child_w)
    answers = os.fdopen(from_child_r, "rb")

    def ask(argv: list[str]) -> Any:
        os.write(to_child_w, json.dumps({"argv": argv}).encode() + b"\n")
        return json.loads(answers.readline() or b"null")

    try:
        yield ask
    finally:
        os.close(to_child_w)
        answers.close()
        os.waitpid(pid, 0)


def reload_with(daemon: DaemonProcess, grants: dict[str, Any]) -> None:
    config = yaml.safe_load(daemon.config_path.read_text())
    config["access"] = {"unix_users": grants}
    daemon.config_path.write_text(yaml.safe_dump(config))
    reloads = daemon.log().count("configuration reloaded from")
    daemon.signal(signal.SIGHUP)
    assert wait_for(lambda: daemon.log().count("configuration reloaded from") > reloads)


def test_reloaded_grants_apply_to_an_open_connection(
        start_daemon: Callable[..., DaemonProcess], public_dir: Path) -> None:
    daemon = start_daemon(access={"unix_users": {"nobody": {"role": "admin"}}},
                          socket={"path": str(public_dir / "podod.sock"), "mode": "0666"})
    with connection_as(NOBODY, daemon.socket_path) as ask:
        assert ask(["audit", "list"])["ok"]
        reload_with(daemon, {"nobody": {"role": "viewer"}})
        demoted = ask(["audit", "list"])  # the same connection, now as a viewer
        assert demoted["code"] == "forbidden", demoted
        assert ask(["status"])["ok"]
        reload_with(daemon, {})
        removed = ask(["status"])
        assert removed["code"] == "unauthenticated"
        assert removed["message"] == (
            "the local user nobody may not use podod; an administrator can allow it under "
            "access.unix_users in podod.yaml")
        assert ask(["status"]) is None  # and the connection is closed
    records = daemon.request(["audit", "list", "--actor", "unix:nobody"])["data"]
    assert [(r["command"], r["outcome"]) for r in records] == [
        ("status", "unauthenticated"), ("status", "ok"), ("audit list", "forbidden"),
        ("audit list", "ok")]
