"""After-actions and service control against real components: a Dovecot of this module's own
with ``auth_cache_size`` set (on the session's mail database), reached through the session's
real sshd as its login user with the sudoers line ``service sudoers`` renders, and a real
memcached standing in for SOGo's.

Without the after-action a changed password leaves the old one logging in (Dovecot's auth
cache); with it the new one does and the old one does not."""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import READER, READER_PW, STACK_DB, MailStack, login, make_mail_config, new_domain
from podod.servers.services import sudoers_line
from podod.servers.settings import ServerConfig
from testbed.daemon import DaemonProcess
from testbed.dovecot import Dovecot
from testbed.ports import free_port
from testbed.process import ForegroundDaemon
from testbed.sshd import Sshd
from testbed.sudoers import SudoersRule
from testbed.waiting import poll as wait_for

OLD, NEW = "Old-Horse-7-Battery", "New-Staple-42-Horse"
NOBODY = pwd.getpwnam("nobody").pw_uid


@pytest.fixture(scope="module")
def cached_dovecot(stack: MailStack, daemons_tmp: Path) -> Iterator[Dovecot]:
    """A Dovecot that caches logins for an hour (as many production set-ups do)."""
    server = Dovecot(daemons_tmp / "dovecot-auth-cache", login(stack.pg, READER, READER_PW),
                     extra_conf="auth_cache_size = 1M\nauth_cache_ttl = 1 hour\n"
                                "auth_cache_negative_ttl = 0\n")
    server.start()
    yield server
    server.stop()


def control(dovecot: Dovecot, **flags: Any) -> dict[str, Any]:
    return {"doveadm_config": str(dovecot.config), "services": ["dovecot", "postfix", "sogo"],
            **flags}


@pytest.fixture(scope="module")
def sudoers(sshd: Sshd, cached_dovecot: Dovecot) -> Iterator[str]:
    """The line podod renders for the test server, installed (visudo checks it first)."""
    config = ServerConfig.model_validate(sshd.server_entry("mx1", control=control(
        cached_dovecot, flush_auth_cache=True, recalc_quota=True)))
    line = sudoers_line(config, sshd.user)
    with SudoersRule(line):
        yield line


class Memcached(ForegroundDaemon):
    def __init__(self, port: int) -> None:
        self.port = port

    def start(self) -> Memcached:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(["memcached", "-l", "127.0.0.1", "-p", str(self.port),
                                      "-U", "0", *user], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        assert wait_for(lambda: self.ask("version\r\n").startswith("VERSION"))
        return self

    def ask(self, text: str) -> str:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
                conn.sendall(text.encode())
                return conn.recv(4096).decode()
        except OSError:
            return ""


@pytest.fixture(scope="module")
def memcached() -> Iterator[Memcached]:
    server = Memcached(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def start(stack: MailStack, sshd: Sshd, sudoers: str, daemons_tmp: Path
          ) -> Iterator[Callable[..., DaemonProcess]]:
    """A daemon on the session's mail database with the test server ``mx1`` (over SSH);
    its folder is reachable by other users (the non-admin test asks as nobody)."""
    started: list[DaemonProcess] = []

    def run(ctl: dict[str, Any], **extra: Any) -> DaemonProcess:
        root = daemons_tmp / f"services-{len(os.listdir(daemons_tmp))}"
        root.mkdir()
        os.chmod(root, 0o711)
        path = make_mail_config(stack.pg, root, STACK_DB,
                                servers=[sshd.server_entry("mx1", control=ctl)],
                                socket={"path": str(root / "podod.sock"), "mode": "0666"},
                                **extra)
        daemon = DaemonProcess(path).start()
        started.append(daemon)
        assert wait_for(lambda: daemon.request(["server", "show", "mx1"])["data"]["state"]
                        == "connected")
        return daemon

    yield run
    for daemon in started:
        daemon.stop()


def ok(daemon: DaemonProcess, *argv: str, real: bool = False,
       stdin: str | None = None) -> dict[str, Any]:
    reply = daemon.request(list(argv), execute_real=real, stdin=stdin)
    assert reply["ok"], reply["message"]
    return reply


def fail(daemon: DaemonProcess, *argv: str, real: bool = True) -> dict[str, Any]:
    reply = daemon.request(list(argv), execute_real=real)
    assert not reply["ok"], reply
    assert "\n" not in reply["message"] and "Traceback" not in reply["message"]
    return reply


def mailbox(stack: MailStack, daemon: DaemonProcess) -> str:
    user = f"cache@{new_domain(stack)}"
    ok(daemon, "user", "create", user, "--password-stdin", stdin=OLD, real=True)
    return user


def test_without_the_after_action_the_old_password_still_logs_in(
        stack: MailStack, cached_dovecot: Dovecot, start: Callable[..., DaemonProcess]) -> None:
    daemon = start(control(cached_dovecot))  # flush_auth_cache off
    user = mailbox(stack, daemon)
    assert cached_dovecot.imap_login(user, OLD)  # now in the auth cache
    reply = ok(daemon, "user", "reset-password", user, "--password-stdin", stdin=NEW, real=True)
    assert not [n for n in reply["notes"] if n.startswith("after: ")], reply["notes"]
    assert stack.sql(f"SELECT password FROM mailbox WHERE username = '{user}'").startswith(
        "{SHA512-CRYPT}")
    assert cached_dovecot.imap_login(user, OLD)  # the cache answers, not the database


def test_the_after_action_flushes_the_auth_cache_after_a_password_change(
        stack: MailStack, cached_dovecot: Dovecot, start: Callable[..., DaemonProcess]) -> None:
    daemon = start(control(cached_dovecot, flush_auth_cache=True))
    user = mailbox(stack, daemon)
    assert cached_dovecot.imap_login(user, OLD)

    plan = ok(daemon, "user", "reset-password", user, "--password-stdin", stdin=NEW)
    assert f"After the commit podod will flush {user} from Dovecot's auth cache on mx1." \
        in plan["notes"]
    assert cached_dovecot.imap_login(user, OLD)  # the sandbox flushed nothing

    reply = ok(daemon, "user", "reset-password", user, "--password-stdin", stdin=NEW, real=True)
    after = [n for n in reply["notes"] if n.startswith("after: ")]
    assert len(after) == 1 and re.fullmatch(
        rf"after: flush {re.escape(user)} from Dovecot's auth cache on mx1 \(password change\): "
        r"done \([1-9] cache entries flushed\)", after[0]), reply["notes"]
    assert not cached_dovecot.imap_login(user, OLD)
    assert cached_dovecot.imap_login(user, NEW)

    # Deleting the mailbox flushes it too: the cached login must not outlive the mailbox.
    gone = ok(daemon, "user", "delete", user, real=True)
    assert any(n.startswith(f"after: flush {user} from Dovecot's auth cache on mx1 (mailbox "
                            "deleted): done") for n in gone["notes"]), gone["notes"]
    assert not cached_dovecot.imap_login(user, NEW)


def test_switching_the_after_action_on_by_reload_keeps_the_connection(
        stack: MailStack, cached_dovecot: Dovecot, start: Callable[..., DaemonProcess]) -> None:
    daemon = start(control(cached_dovecot))
    before = ok(daemon, "server", "show", "mx1")["data"]
    config = yaml.safe_load(daemon.config_path.read_text())
    config["servers"][0]["control"]["flush_auth_cache"] = True
    daemon.config_path.write_text(yaml.safe_dump(config))
    reloads = daemon.log().count("configuration reloaded from")
    daemon.signal(signal.SIGHUP)
    assert wait_for(lambda: daemon.log().count("configuration reloaded from") > reloads)
    after = ok(daemon, "server", "show", "mx1")["data"]
    assert (after["state"], after["since"]) == ("connected", before["since"])  # not cut
    assert "server mx1: control settings changed" in daemon.log()
    user = mailbox(stack, daemon)
    reply = ok(daemon, "user", "reset-password", user, "--password-stdin", stdin=NEW, real=True)
    assert any(n.startswith(f"after: flush {user} from Dovecot's auth cache on mx1")
               for n in reply["notes"]), reply["notes"]


def test_switching_a_domain_off_flushes_the_whole_auth_cache(
        stack: MailStack, cached_dovecot: Dovecot, start: Callable[..., DaemonProcess]) -> None:
    daemon = start(control(cached_dovecot, flush_auth_cache=True))
    user = mailbox(stack, daemon)
    domain = user.split("@")[1]
    assert cached_dovecot.imap_login(user, OLD)
    reply = ok(daemon, "domain", "update", domain, "--active", "no", real=True)
    assert any(n.startswith(f"after: flush Dovecot's whole auth cache on mx1 (switched off: "
                            f"{domain}): done") for n in reply["notes"]), reply["notes"]
    assert not cached_dovecot.imap_login(user, OLD)


def test_quota_recalc_and_a_failing_after_action_keep_the_change(
        stack: MailStack, cached_dovecot: Dovecot, start: Callable[..., DaemonProcess],
        memcached: Memcached) -> None:
    daemon = start(control(cached_dovecot, recalc_quota=True,
                           sogo_memcached=f"127.0.0.1:{memcached.port}"))
    user = mailbox(stack, daemon)
    reply = ok(daemon, "user", "update", user, "--quota-mb", "30", real=True)
    assert f"after: recalculate the quota of {user} on mx1: done" in reply["notes"], reply
    assert stack.sql(f"SELECT quota FROM mailbox WHERE username = '{user}'") == str(30 << 20)

    # SOGo's cached credentials (memcached) go with a password change.
    key = f"{user}+attributes"
    assert memcached.ask(f"set {key} 0 0 2\r\n{{}}\r\n").startswith("STORED")
    reply = ok(daemon, "user", "reset-password", user, "--password-stdin", stdin=NEW, real=True)
    assert (f"after: delete SOGo's cached credentials of {user} (memcached of mx1): done "
            f"({key} deleted)") in reply["notes"], reply["notes"]
    assert memcached.ask(f"get {key}\r\n") == "END\r\n"

    # Deleting the domain with its mailboxes: every mailbox's key, on one connection.
    second = f"other@{user.split('@')[1]}"
    ok(daemon, "user", "create", second, "--password-stdin", stdin=OLD, real=True)
    for address in (user, second):
        assert memcached.ask(f"set {address}+attributes 0 0 2\r\n{{}}\r\n").startswith("STORED")
    domain = user.split("@")[1]
    plan = ok(daemon, "domain", "delete", domain, "--cascade")
    assert (f"After the commit podod will delete SOGo's cached credentials of 2 users of "
            f"{domain} (memcached of mx1).") in plan["notes"], plan["notes"]
    gone = ok(daemon, "domain", "delete", domain, "--cascade", real=True)
    assert (f"after: delete SOGo's cached credentials of 2 users of {domain} (memcached of "
            "mx1): done (2 of 2 users' entries deleted)") in gone["notes"], gone["notes"]
    assert memcached.ask(f"get {second}+attributes\r\n") == "END\r\n"
    user = mailbox(stack, daemon)

    memcached.stop()  # a failing after-action: the committed change stands, and says so
    try:
        reply = ok(daemon, "user", "reset-password", user, "--password-stdin", stdin=OLD,
                   real=True)
        assert reply["message"] == f"password of {user} changed"
        failed = [n for n in reply["notes"] if "FAILED" in n]
        assert failed == [f"after: delete SOGo's cached credentials of {user} (memcached of "
                          f"mx1): FAILED (memcached at 127.0.0.1:{memcached.port} cannot be "
                          "reached (Connect call failed ('127.0.0.1', "
                          f"{memcached.port})))"], reply["notes"]
        assert "nothing was committed" not in str(reply)
        assert cached_dovecot.imap_login(user, OLD)  # the new password is in force
        assert "after-action delete SOGo's cached credentials" in daemon.log()
    finally:
        memcached.start()


def test_service_commands(stack: MailStack, cached_dovecot: Dovecot, sshd: Sshd, sudoers: str,
                          start: Callable[..., DaemonProcess]) -> None:
    daemon = start(control(cached_dovecot, flush_auth_cache=True, recalc_quota=True),
                   access={"unix_users": {"nobody": {"role": "domain-admin",
                                                     "domains": ["example.com"]}}})
    assert ok(daemon, "service", "sudoers", "mx1")["data"] == [
        {"server": "mx1", "user": sshd.user, "rule": sudoers, "note": None}]
    assert sudoers.startswith(f"{sshd.user} ALL=(root) NOPASSWD: /usr/bin/systemctl ^reload "
                              "(dovecot|postfix)$, /usr/bin/systemctl ^restart "
                              "(dovecot|postfix|sogo)$, /usr/bin/doveadm ^-c ")

    plan = ok(daemon, "service", "reload", "mx1", "dovecot")
    assert plan["sandbox"] and plan["message"] == (
        "would reload dovecot on mx1 (sudo -n /usr/bin/systemctl reload dovecot)")

    # The bad paths: one sentence each, nothing run.
    assert "nginx" in fail(daemon, "service", "reload", "mx1", "apache2")["message"]
    assert fail(daemon, "service", "restart", "mx1", "nginx")["message"] == (
        "controlling nginx is not allowed on mx1 (servers[].control.services: dovecot, "
        "postfix, sogo)")
    assert fail(daemon, "service", "reload", "mx1", "sogo")["message"] == (
        "sogo cannot be reloaded (its unit has no reload); use 'service restart mx1 sogo'")
    assert fail(daemon, "service", "status", "mx9", "dovecot")["message"] == (
        "there is no server named 'mx9' (servers: mx1)")
    for argv in (["service", "status", "mx1", "dovecot"], ["service", "sudoers"],
                 ["service", "reload", "mx1", "dovecot"]):
        refused = daemon.request_as(NOBODY, argv, execute_real=True)
        assert refused["code"] == "forbidden", refused

    # The test machine has no systemd: the real reload runs (sudo admits it) and systemctl's
    # own refusal comes back as one sentence.
    real = fail(daemon, "service", "reload", "mx1", "dovecot")
    assert real["message"].startswith(
        "dovecot on mx1 was not reloaded: 'sudo -n /usr/bin/systemctl reload dovecot' failed "
        "on mx1: ")
    assert not real["message"].split("failed on mx1: ")[1].startswith("sudo:"), real
    records = daemon.request(["audit", "list", "--command", "service reload"])["data"]
    assert {r["outcome"] for r in records} >= {"sandbox", "forbidden"}


def test_server_tunnel_restart_keeps_the_local_port(
        stack: MailStack, sshd: Sshd, daemons_tmp: Path) -> None:
    root = daemons_tmp / "services-tunnel"
    root.mkdir()
    path = make_mail_config(stack.pg, root, STACK_DB, servers=[sshd.server_entry(
        "mx1", tunnels=[{"name": "postgres", "remote_port": stack.pg.port}])])
    config = yaml.safe_load(path.read_text())
    config["mail"]["database"].update({"via_server": "mx1", "tunnel": "postgres"})
    path.write_text(yaml.safe_dump(config))
    with DaemonProcess(path) as daemon:
        before = ok(daemon, "server", "show", "mx1")["data"]["tunnels"][0]["local_port"]
        reply = ok(daemon, "server", "tunnel", "restart", "mx1")
        assert reply["message"] == "1 tunnel of mx1 restarted, on the same local ports"
        assert reply["data"][0]["local_port"] == before and reply["data"][0]["open"]
        assert ok(daemon, "user", "list")["ok"]  # the pool reconnects through it
        assert fail(daemon, "server", "tunnel", "restart", "mx1", "--tunnel", "ldap",
                    real=False)["message"] == (
            "server mx1 has no tunnel named 'ldap' (its tunnels: postgres)")
