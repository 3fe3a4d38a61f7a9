"""A reload (SIGHUP) while a mail command holds a database connection: requests sent during
the reload are answered, not failed with "pool is closing" (found while testing issue 11)."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from conftest import MailStack
from testbed.waiting import wait_for


def test_requests_during_a_reload_are_answered(mail: MailStack) -> None:
    mail.ok("domain", "create", "a.example", real=True)
    # Another session holds the domain row; user create waits for it on a pool connection.
    holder = threading.Thread(target=mail.sql, args=(
        "BEGIN; SELECT 1 FROM domain WHERE domain = 'a.example' FOR UPDATE; "
        "SELECT pg_sleep(6); COMMIT;",))
    holder.start()
    time.sleep(0.5)
    created: dict[str, Any] = {}
    creator = threading.Thread(target=lambda: created.update(mail.daemon.request(
        ["user", "create", "r1@a.example", "--generate-password"], execute_real=True)))
    creator.start()
    time.sleep(0.5)
    mail.daemon.signal(signal.SIGHUP)
    time.sleep(1.0)  # the reload reaches the mail database at once, and waits for the holder
    # The old pool is closing now (its connection is held): a new request gets the new pool.
    listed = mail.daemon.request(["user", "list"])
    assert listed["ok"], listed["message"]
    holder.join()
    creator.join()
    assert created["ok"], created["message"]
    log = mail.daemon.log()
    assert wait_for(lambda: "configuration reloaded" in mail.daemon.log())
    assert "a new pool for the reloaded configuration" in log
    assert mail.sql("SELECT count(*) FROM mailbox") == "1"
