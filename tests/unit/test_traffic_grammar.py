"""The traffic commands' grammar: a list as the last positional takes every remaining value."""

from __future__ import annotations

import pytest

from podod.bus import grammar
from podod.errors import UsageError
from podod.monitor.traffic import setup
from podod.plugins import Registry


def commands() -> Registry:
    registry = Registry()
    registry.load("monitor-traffic", "built-in", setup)
    return registry


def test_backfill_takes_several_files() -> None:
    cmds = commands().commands
    parsed = grammar.parse(["traffic", "backfill", "--server", "mx1", "/var/log/mail.log.1",
                            "/var/log/mail.log.2.gz", "--execute-real"], cmds)
    assert parsed.params["files"] == ["/var/log/mail.log.1", "/var/log/mail.log.2.gz"]
    assert parsed.execute_real
    one = grammar.parse(["traffic", "backfill", "/var/log/mail.log.1", "--server", "mx1"], cmds)
    assert one.params["files"] == ["/var/log/mail.log.1"]
    assert cmds["traffic backfill"].usage == \
        "traffic backfill --server NAME FILE... [--execute-real]"


def test_report_options() -> None:
    cmds = commands().commands
    parsed = grammar.parse(["traffic", "report", "--since", "7d", "--by", "hour"], cmds)
    assert parsed.params == {"server": None, "since": 7 * 86400.0, "by": "hour", "top": 10}
    with pytest.raises(UsageError, match="must be one of day, hour"):
        grammar.parse(["traffic", "report", "--by", "week"], cmds)


def test_the_follower_commands_are_allow_listed_and_nothing_else() -> None:
    allow = commands().allowlist
    allow.check(["stat", "-L", "-c", "%i %s %Y %n", "--", "/var/log/mail.log",
                 "/var/log/mail.log.1"])
    allow.check(["gzip", "-dc", "--", "/var/log/mail.log.1.gz"])
    allow.check(["journalctl", "--no-pager", "-o", "json", "-f", "--lines=all",
                 "SYSLOG_FACILITY=2", "--after-cursor=s=abc;i=1f;b=0;m=1;t=2;x=3"])
    for argv in (["cat", "--", "/var/log/../../etc/shadow"], ["cat", "/etc/shadow"],
                 ["gzip", "-dc", "--", "relative.gz"],
                 ["journalctl", "--no-pager", "-o", "json", "-f", "--lines=all",
                  "SYSLOG_FACILITY=2", "--after-cursor=x; rm -rf /"]):
        with pytest.raises(Exception, match="not on podod's allow-list"):
            allow.check(argv)
