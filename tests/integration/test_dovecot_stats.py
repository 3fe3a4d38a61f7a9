"""The dovecot collector on the session's real Dovecot 2.3, read locally and over the real
sshd (as the unprivileged login, through the stats-reader socket opened to its group): logins
and failures counted, a real ``doveadm reload`` that resets every counter handled as a reset
(no negative increase or rate, the events before and after add up), and the bad paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import MailStack, new_domain
from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.dovecot import Dovecot
from testbed.sshd import Sshd
from testbed.waiting import wait_for

pytestmark = pytest.mark.integration
PASSWORD = "Correct-Horse-7-Battery"


def points(daemon: DaemonProcess, server: str, metric: str, *extra: str
           ) -> list[dict[str, Any]]:
    reply = daemon.request(["metrics", "query", "dovecot_stats_events_total", "--server",
                            server, "--label", f"metric={metric}", "--since", "30m", *extra])
    if not reply["ok"]:
        return []
    result: list[dict[str, Any]] = reply["data"]["results"][0]["points"]
    return result


def latest(daemon: DaemonProcess, server: str, metric: str) -> float | None:
    found = points(daemon, server, metric)
    return found[-1]["value"] if found else None


@pytest.fixture
def watcher(stack: MailStack, dovecot: Dovecot, sshd: Sshd, tmp_path: Path
            ) -> Iterator[DaemonProcess]:
    servers = [{"name": "here", "local": True, "services": ["dovecot"]},
               sshd.server_entry("mx1", services=["dovecot"]),
               sshd.server_entry("denied"), sshd.server_entry("nosocket")]
    socket = str(dovecot.stats_socket)
    monitor = {"enabled": True, "interval": "1s", "store": {"flush_interval": 0.2},
               "intervals": {"system": "1h", "services": "1h", "queue": "1h",
                             "postgres": "1h"},
               "collectors": {"dovecot": {"socket": socket, "servers": {
                   # a socket only root may open, and one that does not exist
                   "denied": {"socket": str(dovecot.base_dir / "config")},
                   "nosocket": {"socket": str(dovecot.base_dir / "no-such-socket")}}}}}
    path = write_config(tmp_path / "podod.yaml",
                        base_config(tmp_path, servers=servers, monitor=monitor))
    daemon = DaemonProcess(path).start(timeout=30)
    yield daemon
    daemon.stop()


def test_logins_counted_and_a_reload_is_a_reset_not_a_negative_rate(
        stack: MailStack, dovecot: Dovecot, watcher: DaemonProcess) -> None:
    domain = new_domain(stack)
    user = f"stats@{domain}"
    stack.ok("user", "create", user, "--password-stdin", stdin=PASSWORD, real=True)
    wait_for(lambda: all(latest(watcher, s, "imap_login") is not None
                         for s in ("here", "mx1")), what="the first dovecot samples")
    before = latest(watcher, "mx1", "imap_login")
    failures_before = latest(watcher, "mx1", "auth_failure")
    assert before is not None and failures_before is not None
    for _ in range(3):
        assert dovecot.imap_login(user, PASSWORD)
    assert not dovecot.imap_login(user, "Wrong-Password-99")
    wait_for(lambda: latest(watcher, "mx1", "imap_login") == before + 3, what="3 logins")
    wait_for(lambda: latest(watcher, "mx1", "auth_failure") == failures_before + 1,
             what="1 failure")
    # the same Dovecot read as root on this machine, without SSH
    wait_for(lambda: latest(watcher, "here", "imap_login") == before + 3, what="here too")

    dovecot.reload()  # the stats process restarts: every counter starts from zero
    wait_for(lambda: latest(watcher, "mx1", "imap_login") == 0, what="the reset")
    for _ in range(2):
        assert dovecot.imap_login(user, PASSWORD)
    wait_for(lambda: latest(watcher, "mx1", "imap_login") == 2, what="2 logins after it")

    raw = points(watcher, "mx1", "imap_login")
    values = [p["value"] for p in raw]
    drop = next(i for i in range(1, len(values)) if values[i] < values[i - 1])
    assert values[drop - 1] == before + 3  # the stored values do fall at the reload ...
    # ... but no increase or rate is negative, and the events add up: 3 before, 2 after
    assert all(p["increase"] >= 0 and p["rate"] >= 0 for p in raw[1:])
    assert raw[drop]["increase"] == values[drop]
    assert sum(p["increase"] for p in raw[1:]) == 5
    for step in ("1m", "5m"):  # raw buckets, and the 5-minute rollups
        buckets = points(watcher, "mx1", "imap_login", "--step", step)
        # a first bucket holding only the first reading has no increase yet (None)
        known = [b for b in buckets if b["increase"] is not None]
        assert all(b["increase"] >= 0 and b["rate"] >= 0 for b in known), buckets
        assert sum(b["increase"] for b in known) == 5, (step, buckets)
        assert all(b["increase"] is not None for b in buckets[1:]), buckets
        assert min(b["min"] for b in buckets) == 0  # the reset is in there
    table = watcher.request(["metrics", "query", "dovecot_stats_events_total", "--server",
                             "mx1", "--label", "metric=imap_login", "--since", "30m"])
    assert "rate/s" in table["table"]["columns"]

    # the other series of a metric: summed durations, also never decreasing between resets
    duration = watcher.request(["metrics", "query", "dovecot_stats_duration_seconds_total",
                                "--server", "mx1", "--label", "metric=imap_login", "--since",
                                "30m", "--step", "1m"])
    assert duration["ok"], duration["message"]
    spans = duration["data"]["results"][0]["points"]
    assert all(b["increase"] >= 0 for b in spans[1:]), spans
    seen = watcher.request(["metrics", "series", "--server", "mx1", "--match", "dovecot"])
    metrics = {row["labels"]["metric"] for row in seen["data"]}
    assert metrics >= {"auth_success", "auth_failure", "imap_login", "pop3_login",
                       "smtp_auth_failure", "mail_delivery", "mail_delivery_failure"}


def test_unreadable_or_missing_stats_socket_is_a_collector_failure(
        watcher: DaemonProcess) -> None:
    def errors() -> dict[str, str]:
        jobs = watcher.request(["collector", "list"])["data"]
        return {j["server"]: j["last_error"] for j in jobs
                if j["collector"] == "dovecot" and j["last_error"]}

    found = wait_for(lambda: {"denied", "nosocket"} <= set(errors()) and errors(),
                     what="both failures")
    assert "Permission denied" in found["denied"]
    assert "podod's login must be allowed to read Dovecot's stats-reader socket" in \
        found["denied"]
    assert "no-such-socket" in found["nosocket"]
    assert "\n" not in found["denied"] + found["nosocket"]
    assert "mx1" not in errors()
