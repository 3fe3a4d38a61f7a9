"""Who may do what with monitoring and alerting: a viewer reads everything issues 4 and 5
added (servers, metrics, collectors, traffic, queue, alerts), and is refused every change
(silences, maintenance windows, backfills, servers), sandbox or real; refusals are audited."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.daemon import DaemonProcess

pytestmark = pytest.mark.integration

READS = [
    ["server", "list"], ["server", "show", "local1"], ["server", "commands"],
    ["metrics", "series"], ["metrics", "status"], ["collector", "list"],
    ["collector", "cycles"], ["traffic", "report"], ["traffic", "top", "senders"],
    ["traffic", "status"], ["queue", "summary"], ["alerts", "list", "--all"],
    ["alerts", "history"], ["alerts", "rules"], ["alerts", "silences"],
]
CHANGES = [
    ["alerts", "silence", "DiskFull", "--for", "1h", "--reason", "x"],
    ["alerts", "maintenance", "--server", "local1", "--for", "1h", "--reason", "x"],
    ["alerts", "unsilence", "deadbeef"],
    ["traffic", "backfill", "--server", "local1", "/var/log/mail.log"],
    ["server", "add", "mx9", "--host", "127.0.0.1"],
    ["server", "remove", "local1"],
    ["server", "reconnect", "local1"],
]


def test_viewers_read_monitoring_and_alerts_but_change_nothing(
        start_daemon: Callable[..., DaemonProcess], public_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to ask as another user")
    daemon = start_daemon(
        socket={"path": str(public_dir / "s.sock"), "mode": "0666"},
        access={"unix_users": {"nobody": {"role": "viewer"}}},
        servers=[{"name": "local1", "local": True, "services": ["postfix"]}],
        monitor={"enabled": True}, alerts={"enabled": True})
    for argv in READS:
        reply = daemon.request_as(65534, argv)
        assert reply.get("code") != "forbidden", (argv, reply)
        assert reply["ok"] or argv == ["queue", "summary"], (argv, reply)  # no Postfix here
    for argv in CHANGES:
        for real in (False, True):
            reply = daemon.request_as(65534, argv, execute_real=real)
            assert reply["ok"] is False and reply["code"] == "forbidden", (argv, real, reply)
    # and an admin may (the same requests are not refused for what they are)
    assert daemon.request(CHANGES[0])["ok"]
    audit = daemon.request(["audit", "list", "--actor", "unix:nobody", "--limit", "500"])
    outcomes = {(r["command"], r["outcome"]) for r in audit["data"]}
    assert ("alerts silence", "forbidden") in outcomes
    assert ("traffic backfill", "forbidden") in outcomes
    assert ("alerts list", "ok") in outcomes
    assert daemon.request(["alerts", "silences"])["data"]["silences"] == []
