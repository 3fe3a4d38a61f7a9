"""Service control and after-actions without servers: the sudoers line, the allow-list, the
refusals, the settings' checks, and how the bus reports an after-action's output (reply
note, event, counter)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pydantic
import pytest

from podod.bus.audit import AuditLog
from podod.bus.context import Actor, CommandContext, Reply, Request
from podod.bus.core import CommandBus
from podod.errors import PermissionDenied, ValidationError
from podod.events import AfterActionDone, AfterActionFailed
from podod.frontends.metrics import MetricsEndpoint
from podod.plugins import Registry
from podod.servers.allowlist import default_allowlist
from podod.servers.services import (
    allow,
    check_service,
    doveadm_argv,
    parse_status,
    status_argv,
    sudo_wrap,
    sudoers_line,
    systemctl_argv,
)
from podod.servers.settings import ServerConfig
from testbed.runtime import EventLog, runtime_for


def server(**control: object) -> ServerConfig:
    return ServerConfig.model_validate({"name": "mx1", "host": "mx1.example.org",
                                        "control": control})


def test_the_sudoers_line_admits_exactly_what_the_server_may_run() -> None:
    config = server(services=["postfix", "dovecot", "sogo"], flush_auth_cache=True,
                    recalc_quota=True, doveadm_config="/etc/dovecot/podod+x.conf")
    assert sudoers_line(config, "podod") == (
        "podod ALL=(root) NOPASSWD: /usr/bin/systemctl ^reload (postfix|dovecot)$, "
        "/usr/bin/systemctl ^restart (postfix|dovecot|sogo)$, "
        r"/usr/bin/doveadm ^-c /etc/dovecot/podod\+x\.conf auth cache flush"
        "( [A-Za-z0-9_][A-Za-z0-9._+@-]*)?$, "
        r"/usr/bin/doveadm ^-c /etc/dovecot/podod\+x\.conf quota recalc -u "
        "[A-Za-z0-9_][A-Za-z0-9._+@-]*$")
    # Only the switched-on after-actions get a line: nothing else runs as root.
    assert "doveadm" not in sudoers_line(server(), "podod")
    with pytest.raises(ValidationError, match=r"control\.sudo is false"):
        sudoers_line(server(sudo=False), "podod")
    with pytest.raises(ValidationError, match="needs no sudoers line"):
        sudoers_line(server(services=[]), "podod")


def test_every_command_podod_builds_is_on_the_allow_list_and_little_else() -> None:
    allowed = default_allowlist()
    allow(allowed.allow)
    for sudo in (True, False):
        control = server(sudo=sudo, doveadm_config="/etc/dovecot/dovecot.conf").control
        for argv in (systemctl_argv("reload", "dovecot"), systemctl_argv("restart", "sogo"),
                     doveadm_argv(control, "auth", "cache", "flush", "a.b+c@example.com"),
                     doveadm_argv(control, "auth", "cache", "flush"),
                     doveadm_argv(server().control, "quota", "recalc", "-u", "x@example.com")):
            allowed.check(sudo_wrap(control, argv))
    allowed.check(status_argv("nginx"))
    for argv in (["sudo", "-n", "/usr/bin/systemctl", "reload", "sogo"],  # has no reload
                 ["sudo", "-n", "/usr/bin/systemctl", "stop", "dovecot"],
                 ["sudo", "-n", "/usr/bin/systemctl", "restart", "ssh"],
                 ["sudo", "-n", "/usr/bin/doveadm", "auth", "cache", "flush", "-x"],
                 ["sudo", "-n", "/usr/bin/doveadm", "auth", "cache", "flush", "a;b"],
                 ["sudo", "/usr/bin/systemctl", "restart", "dovecot"]):
        with pytest.raises(PermissionDenied):
            allowed.check(argv)


def test_service_refusals_are_one_sentence() -> None:
    config = server(services=["dovecot"])
    with pytest.raises(ValidationError, match=r"^podod does not control the service 'ssh'"):
        check_service(config, "ssh", "restart")
    with pytest.raises(PermissionDenied, match=r"^controlling postfix is not allowed on mx1 "
                       r"\(servers\[\].control.services: dovecot\)$"):
        check_service(config, "postfix", "reload")
    with pytest.raises(ValidationError, match=r"^memcached cannot be reloaded"):
        check_service(server(), "memcached", "reload")
    check_service(config, "dovecot", "reload")


@pytest.mark.parametrize(("control", "error"), [
    ({"sogo_memcached": "memcached"}, "HOST:PORT"),
    ({"sogo_memcached": "tunnel:memcache"}, "tunnel 'memcache', which this server does not"),
    ({"doveadm_config": "dovecot.conf"}, "absolute file path"),
    ({"doveadm_config": "/etc/../tmp/x.conf"}, "absolute file path"),
    ({"services": ["apache2"]}, "postfix"),
])
def test_bad_control_settings_are_refused(control: dict[str, object], error: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=error.replace("(", r"\(")):
        server(**control)


async def test_after_action_output_is_shown_published_and_counted(tmp_path: Path) -> None:
    registry = Registry()

    @registry.command("thing flush", "Change nothing, then run after-actions",
                      permission="admin", mutating=True)
    async def flush(ctx: CommandContext) -> Reply:
        ctx.record("set", "thing", "x")

        async def ok() -> str:
            return "2 cache   entries\nflushed"

        async def broken() -> None:
            raise ValidationError("memcached answered nonsense")

        ctx.after("flush the cache", ok, kind="flush_auth_cache")
        ctx.after("delete SOGo's cached login", broken, kind="sogo_memcached")
        return Reply(message="done")

    async with runtime_for(tmp_path, registry) as runtime:
        audit = AuditLog(runtime.state)
        await audit.setup()
        bus = CommandBus(runtime, audit)
        metrics = MetricsEndpoint(runtime)  # type: ignore[arg-type]
        metrics._after_subs = [
            runtime.events.subscribe(AfterActionDone, metrics._after_action),
            runtime.events.subscribe(AfterActionFailed, metrics._after_action)]
        events = EventLog(runtime, AfterActionDone)
        reply = await bus.execute(Request(["thing", "flush"], Actor("unix:root", "admin"),
                                          "socket", execute_real=True))
        assert reply.ok and reply.message == "done"
        assert reply.notes == [
            "after: flush the cache: done (2 cache entries flushed)",
            "after: delete SOGo's cached login: FAILED (memcached answered nonsense)"]
        [event] = await events.wait_for(AfterActionDone)
        assert (event.kind, event.output) == ("flush_auth_cache", "2 cache entries flushed")
        for _ in range(100):
            if len(metrics.after_actions) == 2:
                break
            await asyncio.sleep(0.01)
        assert dict(metrics.after_actions) == {("flush_auth_cache", "done"): 1,
                                               ("sogo_memcached", "failed"): 1}


def test_status_reads_systemctl_show() -> None:
    text = ("ActiveState=active\nSubState=running\nLoadState=loaded\nMainPID=812\n"
            "ActiveEnterTimestamp=Mon 2026-12-07 06:00:01 UTC\n")
    assert parse_status(text) == {"ActiveState": "active", "SubState": "running",
                                  "LoadState": "loaded", "MainPID": "812",
                                  "ActiveEnterTimestamp": "Mon 2026-12-07 06:00:01 UTC"}


def test_a_refusal_by_sudo_names_the_command_that_prints_the_line() -> None:
    from podod.servers.runner import CommandResult
    from podod.servers.services import refused

    denied = CommandResult(("sudo", "-n", "/usr/bin/systemctl", "reload", "dovecot"), 1, "",
                           "sudo: a password is required\n", 0.01)
    assert refused(denied, "mx1").message == (
        "'sudo -n /usr/bin/systemctl reload dovecot' failed on mx1: sudo: a password is "
        "required (the sudoers line it needs: podoctl service sudoers mx1; docs/services.md)")
    other = CommandResult(("/usr/bin/systemctl", "reload", "dovecot"), 1, "",
                          "Job for dovecot.service failed.\n", 0.01)
    assert refused(other, "mx1").message.endswith("failed on mx1: Job for dovecot.service "
                                                  "failed.")


def test_kick_is_admitted_for_one_user_and_in_the_sudoers_line_only_when_switched_on() -> None:
    allowed = default_allowlist()
    allow(allowed.allow)
    control = server(kick_sessions=True, doveadm_config="/etc/dovecot/dovecot.conf").control
    allowed.check(sudo_wrap(control, doveadm_argv(control, "kick", "a.b+c@example.com")))
    allowed.check(doveadm_argv(server().control, "kick", "x@example.com"))
    for argv in (["/usr/bin/doveadm", "kick", "-f", "x@example.com"],   # forced: not podod's
                 ["/usr/bin/doveadm", "kick", "*@example.com"],        # a mask: many users
                 ["/usr/bin/doveadm", "kick", "x@example.com", "10.0.0.0/8"],
                 ["/usr/bin/doveadm", "kick", "-x"]):
        with pytest.raises(PermissionDenied):
            allowed.check(["sudo", "-n", *argv])
    assert sudoers_line(server(services=["dovecot"], kick_sessions=True), "podod").endswith(
        ", /usr/bin/doveadm ^kick [A-Za-z0-9_][A-Za-z0-9._+@-]*$")
    assert "kick" not in sudoers_line(server(services=["dovecot"], flush_auth_cache=True),
                                      "podod")
