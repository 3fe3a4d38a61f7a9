"""The allow-list and the local runner: what may run on a server, and how it runs."""

from __future__ import annotations

import pytest

from podod.errors import PermissionDenied
from podod.plugins import Registry
from podod.servers.allowlist import ABS_PATH, AllowList, default_allowlist
from podod.servers.runner import CommandFailed, CommandTimeout, LocalRunner


def test_allowlist_admits_only_declared_shapes() -> None:
    allowed = default_allowlist()
    allowed.allow("postqueue", "-j", purpose="queue")
    allowed.allow("tail", "-c", r"\+[0-9]+", "-F", ABS_PATH, purpose="follow a log")
    allowed.check(["postqueue", "-j"])
    allowed.check(["systemctl", "is-active", "postfix.service", "dovecot"])
    allowed.check(["tail", "-c", "+1234", "-F", "/var/log/mail.log"])
    for argv in (["postqueue", "-f"], ["postqueue", "-j", "-f"], ["sh", "-c", "id"],
                 ["systemctl", "is-active", "x; rm -rf /"], ["tail", "-c", "+1", "-F", "a b"],
                 ["systemctl", "stop", "postfix"]):
        with pytest.raises(PermissionDenied) as err:
            allowed.check(argv)
        assert err.value.message.endswith("is not on podod's allow-list of server commands")
    with pytest.raises(PermissionDenied, match="an empty command cannot be run"):
        allowed.check([])


def test_scripts_run_by_name_only() -> None:
    allowed = AllowList()
    allowed.script("hello", "echo hello", purpose="test")
    with pytest.raises(ValueError):
        allowed.script("hello", "echo other", purpose="test")
    with pytest.raises(PermissionDenied, match="no allow-listed script named 'nope'"):
        allowed.get_script("nope")


def test_a_failing_plugin_loses_its_allowlist_entries() -> None:
    registry = Registry()

    def broken(reg: Registry) -> None:
        reg.remote_command("rm", "-rf", ABS_PATH, purpose="cleanup")
        raise RuntimeError("boom")

    info = registry.load("broken", "test", broken)
    assert not info.loaded
    with pytest.raises(PermissionDenied):
        registry.allowlist.check(["rm", "-rf", "/tmp/x"])


async def test_local_runner_runs_checks_and_times_out() -> None:
    allowed = default_allowlist()
    allowed.allow("sleep", r"[0-9.]+", purpose="test")
    allowed.allow("sh", "-c", "exit 3", purpose="test")
    allowed.allow("seq", r"[0-9]+", purpose="test")
    allowed.script("two-lines", "echo one; echo two >&2", purpose="test")
    runner = LocalRunner("localhost", allowed, max_commands=2, timeout=5)
    result = await runner.run(["true"])
    assert result.ok and result.argv == ("true",)
    script = await runner.run_script("two-lines")
    assert (script.stdout, script.stderr, script.argv) == ("one\n", "two\n",
                                                           ("script", "two-lines"))
    failed = await runner.run(["sh", "-c", "exit 3"])
    assert failed.exit_status == 3
    with pytest.raises(CommandFailed, match="'sh -c exit 3' failed on localhost"):
        await runner.run(["sh", "-c", "exit 3"], check=True)
    with pytest.raises(CommandTimeout, match=r"did not finish within 0\.2 s"):
        await runner.run(["sleep", "5"], timeout=0.2)
    with pytest.raises(PermissionDenied):
        await runner.run(["id"])
    lines = [line async for line in runner.stream(["seq", "3"])]
    assert lines == [b"1\n", b"2\n", b"3\n"]
