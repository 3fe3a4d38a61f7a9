"""Following a remote server's mail log over the real sshd: sshd killed and restarted in the
middle of the stream, a rotation while connected; not a line lost or counted twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from maillogs import TOTALS, append, lines_of, truth

from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.sshd import Sshd
from testbed.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def log_and_daemon(private_sshd: Sshd, tmp_path: Path) -> Iterator[tuple[Path, DaemonProcess]]:
    log = private_sshd.public_file("mail.log")
    entry = private_sshd.server_entry("mx1", mail_log=str(log))
    config = base_config(tmp_path, servers=[entry],
                         traffic={"flush_interval": "200ms", "rotation_check": "500ms",
                                  "rotation_grace": "1s", "reconnect_max": "2s",
                                  "timezone": "UTC"})
    daemon = DaemonProcess(write_config(tmp_path / "podod.yaml", config)).start(timeout=30)
    yield log, daemon
    daemon.stop()


def totals(daemon: DaemonProcess) -> dict[str, int]:
    reply = daemon.request(["traffic", "report", "--since", "400d"])
    assert reply["ok"], reply["message"]
    return {k: reply["data"][k] for k in TOTALS}


def test_sshd_killed_and_restarted_mid_stream(log_and_daemon: tuple[Path, DaemonProcess],
                                              private_sshd: Sshd) -> None:
    log, daemon = log_and_daemon
    lines = lines_of(6000, 21)
    append(log, lines[:2000])
    wait_for(lambda: totals(daemon) == truth(lines[:2000]))
    status = daemon.request(["traffic", "status"])["data"][0]
    assert status["state"] == "following" and status["offset"] == log.stat().st_size
    # The connection dies in the middle of a stream of writes ...
    append(log, lines[2000:2600])
    private_sshd.kill()
    append(log, lines[2600:3500])   # ... the log grows while the server cannot be reached
    wait_for(lambda: daemon.request(["traffic", "status"])["data"][0]["error"])
    private_sshd.start()
    append(log, lines[3500:4000])
    wait_for(lambda: totals(daemon) == truth(lines[:4000]))
    # a rotation while connected over SSH
    rotated = log.with_name("mail.log.1")
    log.rename(rotated)
    append(rotated, lines[4000:4500])
    append(log, lines[4500:])
    log.chmod(0o644)
    wait_for(lambda: totals(daemon) == truth(lines))
    time.sleep(1.0)
    assert totals(daemon) == truth(lines)  # and nothing more arrives: no double counting
    # backfill over SSH: the rotated file was counted live, so nothing is added
    reply = daemon.request(["traffic", "backfill", "--server", "mx1", str(rotated)],
                           execute_real=True)
    assert reply["ok"], reply["message"]
    assert reply["data"][0]["counted_lines"] == 0
    assert totals(daemon) == truth(lines)
