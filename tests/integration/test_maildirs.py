"""``user delete --remove-maildir``, the maildir trash and ``user restore-maildir`` against
maildirs the session's Dovecot made by delivering mail (through Postfix): over the real
sshd as the test bed's SSH user with the sudoers rule podod renders (as vmail, as in
production), and on a ``local: true`` server without SSH."""

from __future__ import annotations

import os
import pwd
import re
import smtplib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_mail_servers import PASSWORD, inbox_count

from conftest import STACK_DB, MailStack, make_mail_config, new_domain
from podod.mail.maildirs import MaildirLayout, sudoers_rule
from testbed.daemon import DaemonProcess
from testbed.dovecot import Dovecot
from testbed.postfix import Postfix
from testbed.sshd import Sshd
from testbed.sudoers import SudoersRule
from testbed.waiting import poll as wait_for

STAMP = r"[0-9]{8}T[0-9]{6}Z"


def maildir_config(stack: MailStack, root: Path, servers: list[dict[str, Any]],
                   maildir: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = make_mail_config(stack.pg, root, STACK_DB, servers=servers)
    config = yaml.safe_load(path.read_text())
    config["mail"]["maildir"] = maildir
    path.write_text(yaml.safe_dump(config))
    return path


def mailbox_with_mail(stack: MailStack, postfix: Postfix, dovecot: Dovecot,
                      local: str) -> tuple[str, Path]:
    """A new mailbox that received one message through Postfix → LMTP → Dovecot."""
    domain = new_domain(stack)
    user = f"{local}@{domain}"
    stack.ok("user", "create", user, "--password-stdin", stdin=PASSWORD, real=True)
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=10) as smtp:
        smtp.sendmail("sender@remote.example", [user], "Subject: keep me\r\n\r\nhello\r\n")
    assert wait_for(lambda: inbox_count(dovecot, user, PASSWORD) == 1), postfix.output()
    # Dovecot writes the usage into quota2 through its SQL dict a moment after the delivery:
    # wait for it, or a later dump of the tables would see it arrive.
    assert wait_for(lambda: stack.sql(
        f"SELECT messages FROM quota2 WHERE username = '{user}'").strip() == "1")
    home = dovecot.mail_dir / domain / local
    assert (home / "Maildir").is_dir()
    return user, home


def vmail_dir(path: Path) -> Path:
    """A trash entry made by hand, owned by vmail as podod's would be."""
    entry = pwd.getpwnam("vmail")
    path.mkdir(parents=True)
    for part in (path.parent, path):
        os.chown(part, entry.pw_uid, entry.pw_gid)
    return path


def stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y%m%dT%H%M%SZ")


def ok(daemon: DaemonProcess, *argv: str, real: bool = False) -> dict[str, Any]:
    reply = daemon.request(list(argv), execute_real=real)
    assert reply["ok"], reply["message"]
    return reply


def fail(daemon: DaemonProcess, *argv: str, real: bool = True) -> str:
    reply = daemon.request(list(argv), execute_real=real)
    assert not reply["ok"], reply
    assert "\n" not in reply["message"] and "Traceback" not in reply["message"]
    return str(reply["message"])


@pytest.fixture(scope="module")
def ssh_trash(dovecot: Dovecot, sshd: Sshd) -> Iterator[str]:
    """The trash of the SSH tests, and the sudoers rule podod renders for it: the sshd's
    login user may run exactly podod's maildir commands as vmail."""
    trash = f"{dovecot.mail_dir}/.trash-ssh"
    layout = MaildirLayout(str(dovecot.mail_dir), trash, "vmail")
    with SudoersRule(sudoers_rule(layout, sshd.user)):
        yield trash


@pytest.fixture
def ssh_daemon(stack: MailStack, dovecot: Dovecot, sshd: Sshd, ssh_trash: str,
               tmp_path: Path) -> Iterator[DaemonProcess]:
    path = maildir_config(stack, tmp_path, [sshd.server_entry("mx1")], {
        "server": "mx1", "root": str(dovecot.mail_dir), "trash": ssh_trash,
        "purge_interval": 0})
    with DaemonProcess(path) as daemon:
        yield daemon


def test_remove_maildir_over_ssh_then_restore_it(stack: MailStack, postfix: Postfix,
                                                 dovecot: Dovecot, ssh_trash: str,
                                                 ssh_daemon: DaemonProcess) -> None:
    daemon = ssh_daemon
    user, home = mailbox_with_mail(stack, postfix, dovecot, "mona")
    domain = user.split("@")[1]
    before = stack.dump()
    plan = ok(daemon, "user", "delete", user, "--remove-maildir")
    assert plan["sandbox"] is True
    assert any(re.fullmatch(rf"Would move the maildir {home} into the trash \({ssh_trash}/"
                            rf"{domain}/mona-{STAMP}\) on mx1 once the deletion is committed; "
                            r"it stays there for 30 days\.", n) for n in plan["notes"]), plan
    assert stack.dump() == before and home.is_dir()

    real = ok(daemon, "user", "delete", user, "--remove-maildir", real=True)
    assert real["message"] == f"mailbox {user} deleted"
    after = [n for n in real["notes"] if n.startswith("after: ")]
    assert len(after) == 1 and re.fullmatch(
        rf"after: move maildir {home} to {ssh_trash}/{domain}/mona-{STAMP} on mx1: done",
        after[0]), real["notes"]
    assert (f"The maildir stays in the trash for 30 days; to undo: podoctl backup restore "
            f"{real['backup_id']} --execute-real, then podoctl user restore-maildir {user} "
            "--execute-real") in real["notes"]
    assert not home.exists()
    [entry] = list(Path(ssh_trash, domain).iterdir())
    assert entry.name == after[0].split("/")[-1].split(" ")[0]
    assert (entry / "Maildir").is_dir() and entry.stat().st_uid == pwd.getpwnam("vmail").pw_uid
    assert stack.sql(f"SELECT count(*) FROM mailbox WHERE username = '{user}'") == "0"

    listed = ok(daemon, "maildir", "list", "--domain", domain)
    assert [(e["entry"], e["address"]) for e in listed["data"]] == [
        (f"{domain}/{entry.name}", user)]
    shown = daemon.podoctl("maildir", "list", "--domain", domain)
    assert shown.returncode == 0 and f"maildir trash {ssh_trash} on mx1" in shown.stdout

    # Undo: the mailbox first, then its maildir.
    assert fail(daemon, "user", "restore-maildir", user) == (
        f"there is no mailbox {user}; restore it first (backup restore ID of its deletion), "
        "then its maildir")
    ok(daemon, "backup", "restore", str(real["backup_id"]), real=True)
    plan = ok(daemon, "user", "restore-maildir", user)
    assert plan["sandbox"] and plan["message"] == (
        f"the maildir of {user} would be moved back from {entry} to {home} on mx1")
    assert entry.is_dir() and not home.exists()
    back = ok(daemon, "user", "restore-maildir", user, real=True)
    assert back["message"] == f"the maildir of {user} is back: {entry} → {home} on mx1"
    assert home.is_dir() and not entry.exists()
    assert inbox_count(dovecot, user, PASSWORD) == 1  # the mail is there again
    audit = ok(daemon, "audit", "list", "--command", "user restore-maildir")["data"]
    # newest first; a real run is recorded before it runs too (its "intent")
    assert [r["outcome"] for r in audit] == ["ok", "intent", "sandbox", "not-found", "intent"]


def test_maildir_purge_and_the_sudoers_rule(stack: MailStack, dovecot: Dovecot, sshd: Sshd,
                                            ssh_trash: str, ssh_daemon: DaemonProcess) -> None:
    daemon = ssh_daemon
    domain = "purge.example"
    old = vmail_dir(Path(ssh_trash, domain, "old-20200101T000000Z"))
    new = vmail_dir(Path(ssh_trash, domain, f"new-{stamp(time.time())}"))
    plan = ok(daemon, "maildir", "purge")
    assert plan["message"] == ("1 maildirs in the trash on mx1 are at least 30 days old and "
                               "would be purged")
    assert [c["key"] for c in plan["changes"]] == [f"{domain}/{old.name}"]
    assert old.is_dir()
    done = ok(daemon, "maildir", "purge", real=True)
    assert done["message"] == "purged 1 maildir from the trash on mx1"
    assert not old.exists() and new.is_dir()
    ok(daemon, "maildir", "purge", "--older-than", "0", real=True)
    assert not new.exists()
    assert fail(daemon, "maildir", "purge", "--older-than", "-1") == (
        "maildir purge: --older-than must be at least 0, not -1")
    # The rule podoctl shows is the one the test bed installed (and sudo enforces).
    shown = ok(daemon, "maildir", "sudoers")["message"]
    assert shown == sudoers_rule(MaildirLayout(str(dovecot.mail_dir), ssh_trash, "vmail"),
                                 sshd.user)
    assert shown.startswith(f"{sshd.user} ALL=(vmail) NOPASSWD: /usr/bin/test ^-d (")
    commands = ok(daemon, "server", "commands")["data"]
    assert any(c["command"].startswith("sudo -n -u vmail mv -T -- ") for c in commands)


def test_a_failed_move_leaves_the_deletion_and_says_what_to_do(
        stack: MailStack, postfix: Postfix, dovecot: Dovecot, sshd: Sshd, ssh_trash: str,
        tmp_path: Path) -> None:
    """A trash the sudoers rule does not cover: sudo refuses the move after the commit."""
    uncovered = f"{dovecot.mail_dir}/.trash-uncovered"
    path = maildir_config(stack, tmp_path, [sshd.server_entry("mx1")], {
        "server": "mx1", "root": str(dovecot.mail_dir), "trash": uncovered,
        "purge_interval": 0})
    user, home = mailbox_with_mail(stack, postfix, dovecot, "nils")
    domain = user.split("@")[1]
    with DaemonProcess(path) as daemon:
        real = ok(daemon, "user", "delete", user, "--remove-maildir", real=True)
    [after] = [n for n in real["notes"] if n.startswith("after: ")]
    match = re.fullmatch(
        rf"after: move maildir {home} to (?P<target>{uncovered}/{domain}/nils-{STAMP}) on mx1: "
        rf"FAILED \('sudo -n -u vmail mkdir -p -- {uncovered}/{domain}' failed on mx1: sudo: a "
        r"password is required; the mailbox is deleted, so move its maildir by hand on mx1: "
        rf"sudo -u vmail mkdir -p -- {uncovered}/{domain} && sudo -u vmail mv -T -- {home} "
        r"(?P<again>\S+)\)", after)
    assert match is not None, after
    assert match["again"] == match["target"]
    assert stack.sql(f"SELECT count(*) FROM mailbox WHERE username = '{user}'") == "0"
    assert home.is_dir()  # nothing moved: the admin does it by hand


def test_remove_maildir_refuses_while_the_server_is_down(
        stack: MailStack, dovecot: Dovecot, private_sshd: Sshd, tmp_path: Path) -> None:
    path = maildir_config(stack, tmp_path, [private_sshd.server_entry("mx2")], {
        "server": "mx2", "root": str(dovecot.mail_dir), "purge_interval": 0})
    domain = new_domain(stack)
    user = f"olga@{domain}"
    stack.ok("user", "create", user, "--generate-password", real=True)
    with DaemonProcess(path) as daemon:
        private_sshd.stop()
        assert wait_for(lambda: "connection refused" in (
            daemon.request(["server", "show", "mx2"])["data"]["last_error"] or ""))
        before = stack.dump()
        for real in (False, True):
            message = fail(daemon, "user", "delete", user, "--remove-maildir", real=real)
            assert message.startswith(f"--remove-maildir: server mx2 (127.0.0.1:"
                                      f"{private_sshd.port}) is not connected since "), message
            assert f"connection refused by 127.0.0.1:{private_sshd.port} (is sshd running?)" \
                in message and message.endswith("; nothing was changed")
        assert stack.dump() == before


def test_a_local_server_moves_maildirs_without_ssh_and_purges_on_schedule(
        stack: MailStack, postfix: Postfix, dovecot: Dovecot, tmp_path: Path) -> None:
    trash = Path(dovecot.mail_dir, ".trash-local")
    expired = vmail_dir(trash / "old.example" / "gone-20200101T000000Z")
    path = maildir_config(stack, tmp_path, [{"name": "here", "local": True}], {
        "server": "here", "root": str(dovecot.mail_dir), "trash": str(trash),
        "run_as": None, "purge_interval": "1s"})
    user, home = mailbox_with_mail(stack, postfix, dovecot, "pia")
    domain = user.split("@")[1]
    with DaemonProcess(path) as daemon:
        real = ok(daemon, "user", "delete", user, "--remove-maildir", real=True)
        assert any(re.fullmatch(rf"after: move maildir {home} to {trash}/{domain}/pia-{STAMP} "
                                "on here: done", n) for n in real["notes"]), real["notes"]
        assert not home.exists()
        [entry] = list((trash / domain).iterdir())
        assert (entry / "Maildir").is_dir()
        # The periodic purge (every second here) removes what expired, through the bus.
        assert wait_for(lambda: not expired.exists())
        assert entry.is_dir()

        def purges() -> list[tuple[str, str, str, bool]]:  # audited after the move is done
            audit = ok(daemon, "audit", "list", "--command", "maildir purge")["data"]
            return [(r["actor"], r["origin"], r["outcome"], bool(r["execute_real"]))
                    for r in audit]

        assert wait_for(lambda: ("podod", "schedule", "ok", True) in purges())
        assert purges() == [("podod", "schedule", "ok", True),
                            ("podod", "schedule", "intent", True)]
        assert wait_for(lambda: "maildir trash: purged 1 maildir from the trash on here"
                        in daemon.log())


def test_bad_input_is_one_sentence_and_changes_nothing(
        stack: MailStack, dovecot: Dovecot, tmp_path: Path) -> None:
    domain = new_domain(stack)
    user = f"quentin@{domain}"
    stack.ok("user", "create", user, "--generate-password", real=True)
    before = stack.dump()
    # The session's daemon has no mail.maildir.server.
    for real in (False, True):
        assert stack.fail("user", "delete", user, "--remove-maildir", real=real) == (
            "--remove-maildir needs mail.maildir.server in podod.yaml (the server that holds "
            "the maildirs; see docs/mail.md); nothing was changed")
    assert stack.fail("maildir", "list").startswith("maildir list needs mail.maildir.server")
    unknown = maildir_config(stack, tmp_path / "unknown", [{"name": "here", "local": True}],
                             {"server": "mx9", "root": str(dovecot.mail_dir)})
    with DaemonProcess(unknown) as daemon:
        assert fail(daemon, "user", "delete", user, "--remove-maildir") == (
            "mail.maildir.server names the server 'mx9', which podod does not manage "
            "(servers: here); nothing was changed")
        assert "mail.maildir.server names the server 'mx9'" in daemon.log()
    local = maildir_config(stack, tmp_path / "local", [{"name": "here", "local": True}], {
        "server": "here", "root": str(dovecot.mail_dir), "trash": f"{dovecot.mail_dir}/.t-bad",
        "run_as": None, "purge_interval": 0})
    with DaemonProcess(local) as daemon:
        assert fail(daemon, "user", "restore-maildir", user) == (
            f"no maildir of {user} ({domain}/quentin) is in the trash on here")
        assert fail(daemon, "user", "restore-maildir", user, "--entry", "x/../y-1") == (
            "'x/../y-1' is not a trash entry (DOMAIN/NAME-YYYYMMDDTHHMMSSZ, as 'maildir list' "
            "shows them)")
        assert fail(daemon, "user", "restore-maildir", user, "--entry",
                    "other.example/quentin-20200101T000000Z") == (
            f"the trash entry other.example/quentin-20200101T000000Z is not the maildir "
            f"{domain}/quentin/ of {user}")
        home = vmail_dir(dovecot.mail_dir / domain / "quentin")
        vmail_dir(Path(f"{dovecot.mail_dir}/.t-bad", domain, "quentin-20200101T000000Z"))
        assert fail(daemon, "user", "restore-maildir", user).startswith(
            f"{home} exists on here already (Dovecot makes it when mail arrives or the user "
            "logs in); nothing was changed")
        assert stack.dump() == before
        for bad in ("../../etc/", "/etc/", f"{domain}/-rf/", f"{domain}/a b/", "x/y/z/"):
            stack.sql(f"UPDATE mailbox SET maildir = '{bad}' WHERE username = '{user}'")
            changed = stack.dump()
            assert fail(daemon, "user", "delete", user, "--remove-maildir") == (
                f"the maildir '{bad}' of {user} is not DOMAIN/NAME/ (letters, digits and "
                "'._+@-', not starting with '.' or '-'), so podod will not move it; nothing "
                "was changed (delete without --remove-maildir and move it by hand)")
            assert stack.dump() == changed
