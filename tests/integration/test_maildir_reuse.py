"""``user create`` over an address whose old maildir is still on the mail server (deleted
without ``--remove-maildir``) would give the new owner the old owner's mail: refused unless
``--reuse-maildir``, checked on a real maildir Dovecot made by delivering mail (issue 11)."""

from __future__ import annotations

from pathlib import Path

from test_mail_servers import PASSWORD, inbox_count
from test_maildirs import fail, mailbox_with_mail, maildir_config, ok

from conftest import STACK_DB, MailStack, make_mail_config, new_domain
from testbed.daemon import DaemonProcess
from testbed.dovecot import Dovecot
from testbed.postfix import Postfix
from testbed.sshd import Sshd
from testbed.waiting import poll


def test_an_old_maildir_is_not_handed_to_a_new_mailbox(
        stack: MailStack, postfix: Postfix, dovecot: Dovecot, tmp_path: Path) -> None:
    path = maildir_config(stack, tmp_path, [{"name": "here", "local": True}], {
        "server": "here", "root": str(dovecot.mail_dir), "run_as": None,
        "purge_interval": 0})
    user, home = mailbox_with_mail(stack, postfix, dovecot, "rita")
    domain = user.split("@")[1]
    stack.ok("user", "delete", user, real=True)  # the maildir stays
    assert home.is_dir()
    with DaemonProcess(path) as daemon:
        before = stack.dump()
        for real in (False, True):  # the sandbox plan says it too
            assert fail(daemon, "user", "create", user, "--generate-password", real=real) == (
                f"the old maildir {home} of a deleted mailbox {user} is still on here, and the "
                "new mailbox would get its mail; move it away first, or give --reuse-maildir "
                "if that mail is meant for the new owner; nothing was changed")
        assert stack.dump() == before
        # A fresh address of the same domain has no maildir yet: no question asked.
        assert ok(daemon, "user", "create", f"new@{domain}", "--generate-password")["ok"]
        plan = ok(daemon, "user", "create", user, "--generate-password", "--reuse-maildir")
        reused = (f"The old maildir {home} on here will be reused: its mail becomes {user}'s. "
                  f"Run 'doveadm quota recalc -u {user}' there so its usage counts.")
        assert reused in plan["notes"]
        real = daemon.request(["user", "create", user, "--password-stdin", "--reuse-maildir"],
                              execute_real=True, stdin=PASSWORD)
        assert real["ok"], real
        assert reused.replace("will be", "is") in real["notes"]
    assert inbox_count(dovecot, user, PASSWORD) == 1  # deliberately: the old mail is there


def test_a_maildir_podod_cannot_look_for_is_refused_unless_asked(
        stack: MailStack, tmp_path: Path) -> None:
    path = make_mail_config(stack.pg, tmp_path, STACK_DB)
    text = path.read_text().replace("check_on_create: false", "check_on_create: true")
    path.write_text(text)
    with DaemonProcess(path) as daemon:
        before = stack.dump()
        for real in (False, True):
            assert fail(daemon, "user", "create", "x@nowhere.example", "--generate-password",
                        real=real) == (
                "the domain nowhere.example does not exist (create it with 'domain create "
                "nowhere.example')")
        ok(daemon, "domain", "create", "unchecked.example", real=True)
        before = stack.dump()
        for real in (False, True):
            assert fail(daemon, "user", "create", "sam@unchecked.example",
                        "--generate-password", real=real) == (
                "podod cannot check whether an old maildir unchecked.example/sam/ of "
                "sam@unchecked.example is still on the mail server, whose mail the new mailbox "
                "would get (mail.maildir.server is not set); set it, or give --reuse-maildir "
                "to create it anyway, or set mail.maildir.check_on_create: false if the "
                "maildirs are not podod's to check; nothing was changed")
        assert stack.dump() == before
        created = ok(daemon, "user", "create", "sam@unchecked.example", "--generate-password",
                     "--reuse-maildir", real=True)
        assert created["notes"] == [
            "podod did not check for an old maildir (mail.maildir.server is not set): if there "
            "is one, this mailbox gets its mail."]


def test_a_create_is_refused_while_the_maildir_server_is_down(
        stack: MailStack, dovecot: Dovecot, private_sshd: Sshd, tmp_path: Path) -> None:
    path = maildir_config(stack, tmp_path, [private_sshd.server_entry("mx2")], {
        "server": "mx2", "root": str(dovecot.mail_dir), "purge_interval": 0})
    user = f"otto@{new_domain(stack)}"
    with DaemonProcess(path) as daemon:
        private_sshd.stop()
        assert poll(lambda: "connection refused" in (
            daemon.request(["server", "show", "mx2"])["data"]["last_error"] or ""), 60, 0.2)
        before = stack.dump()
        for real in (False, True):
            message = fail(daemon, "user", "create", user, "--generate-password", real=real)
            assert message.startswith(
                f"podod cannot check whether an old maildir of {user} is still on the mail "
                f"server (user create: server mx2 (127.0.0.1:{private_sshd.port}) is not "
                "connected since "), message
            assert message.endswith(
                "); give --reuse-maildir to create it anyway, or set "
                "mail.maildir.check_on_create: false if the maildirs are not podod's to "
                "check; nothing was changed"), message
        assert stack.dump() == before
        reused = ok(daemon, "user", "create", user, "--generate-password", "--reuse-maildir")
        assert reused["notes"][0].startswith("podod could not check for an old maildir (")
