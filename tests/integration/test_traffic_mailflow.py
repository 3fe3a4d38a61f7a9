"""podod follows the log of a REAL Postfix 3.7 and Dovecot 2.3 while mail flows through
them (testbed.mailflow), and counts exactly what happened."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.daemon import DaemonProcess
from testbed.mailflow import MailFlow

Start = Callable[..., DaemonProcess]


@pytest.fixture
def flow() -> Iterator[MailFlow]:
    root = Path(tempfile.mkdtemp(prefix="podod-flow-"))
    os.chmod(root, 0o755)  # Postfix's unprivileged processes must reach their queue
    flow = MailFlow(root, shared_log=True)
    flow.start()
    yield flow
    flow.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_counts_a_real_mail_flow_while_it_happens(start_daemon: Start, flow: MailFlow) -> None:
    daemon = start_daemon(
        servers=[{"name": "mx", "local": True, "mail_log": str(flow.maillog)}],
        traffic={"flush_interval": "200ms", "rotation_check": "500ms"})
    counts = flow.run()

    def report() -> dict[str, Any]:
        reply = daemon.request(["traffic", "report", "--since", "1d"])
        assert reply["ok"], reply["message"]
        data: dict[str, Any] = reply["data"]
        return data

    expected = {"received": counts.received, "delivered": counts.delivered,
                "deferred": counts.deferred, "deferrals": counts.deferrals,
                "bounced": counts.bounced, "rejected": counts.rejected,
                "expired": counts.expired, "sasl_auth_failures": counts.sasl_failures}
    deadline = time.monotonic() + 60
    data = report()
    while time.monotonic() < deadline:
        data = report()
        if {k: data[k] for k in expected} == expected and \
                data["dovecot"]["logins"] == counts.logins and \
                data["dovecot"]["auth_failures"] == counts.auth_failures:
            break
        time.sleep(0.2)
    logged = flow.maillog.read_text()  # on a mismatch: was it the parser or the flow?
    assert {k: data[k] for k in expected} == expected, {
        s: logged.count(f"status={s}") for s in ("sent", "deferred", "bounced", "expired")}
    assert data["dovecot"]["logins"] == counts.logins
    assert data["dovecot"]["auth_failures"] == counts.auth_failures
    by_class: dict[str, int] = {}
    for r in data["rejects"]:
        by_class[r["reason"]] = by_class.get(r["reason"], 0) + r["count"]
    assert by_class == counts.rejects
    status = daemon.request(["traffic", "status"])["data"][0]
    assert status["state"] == "following" and status["error"] is None
