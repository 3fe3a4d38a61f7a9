"""``user vacation set|show|clear`` against the real components (issue 17): podod writes
SOGo's Vacation default with ``sogo-tool user-preferences set ... -p`` (as the sogo user,
through podod's runner), SOGo writes the Sieve script over the ManageSieve of a Dovecot with
Pigeonhole, and a message delivered over LMTP gets exactly one auto-reply, caught by the
test SMTP receiver (Dovecot's submission host). SOGo shows the same text: read back through
its JSON preferences after a login."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import smtplib
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import (
    QUOTA_PW,
    QUOTA_ROLE,
    READER,
    READER_PW,
    ROLES,
    SOGO_PW,
    SOGO_ROLE,
    STACK_DB,
    DaemonRequests,
    MailStack,
    login,
    make_mail_config,
    new_domain,
)
from podod.mail.serverconfig import dovecot_sieve_conf
from testbed.daemon import DaemonProcess
from testbed.dovecot import Dovecot
from testbed.ports import free_port
from testbed.receivers import SmtpReceiver
from testbed.sogo import SOGo, SOGoSession
from testbed.sshd import Sshd
from testbed.sudoers import SudoersRule
from testbed.waiting import poll

MASTER, MASTER_PW = "sogo-master", "Master-pw-4711-sieve"
PASSWORD = "Vacation-pw-12345"
NOBODY = 65534


@dataclass
class VacationBed(DaemonRequests):
    REAL = True

    stack: MailStack
    dovecot: Dovecot
    sogo: SOGo
    smtp: SmtpReceiver
    daemon: DaemonProcess
    admin_domain: str  # the domain of the domain-admin "nobody"

    def mailbox(self, domain: str | None = None) -> str:
        domain = domain or new_domain(self.stack)
        address = f"ann@{domain}"
        self.stack.ok("user", "create", address, "--password-stdin", stdin=PASSWORD,
                      real=True)
        return address

    def deliver(self, sender: str, to: str, subject: str) -> None:
        with smtplib.LMTP("127.0.0.1", self.dovecot.lmtp_port) as lmtp:
            lmtp.sendmail(sender, [to], f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
                          f"Message-ID: <{time.time_ns()}@sender.example>\r\n\r\nHello.\r\n")

    def replies_to(self, sender: str) -> list[Any]:
        return [m for m in self.smtp.messages if m["To"] and sender in m["To"]]

    def sieve_script(self, address: str) -> Path:
        local, domain = address.split("@")
        return self.dovecot.mail_dir / domain / local / "sieve" / "sogo.sieve"

    def sogo_defaults(self, address: str) -> dict[str, Any]:
        """What SOGo's web interface reads: its JSON preferences, after a login."""
        session = SOGoSession(self.sogo.url)
        assert session.login(address, PASSWORD) == 200
        token = next(c.value for c in session.cookies if c.name == "XSRF-TOKEN")
        request = urllib.request.Request(
            f"{self.sogo.url}/so/{address}/Preferences/jsonDefaults",
            headers={"X-XSRF-TOKEN": token, "Accept": "application/json"})
        with session.opener.open(request, timeout=15) as response:
            import json

            value = json.loads(response.read())
        assert isinstance(value, dict)
        return value


def _sogo_owned(path: Path, text: str | None = None, mode: int = 0o600) -> Path:
    entry = pwd.getpwnam("sogo")
    if text is None:
        path.mkdir(parents=True, exist_ok=True)
    else:
        path.write_text(text)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(path, mode)
    return path


@pytest.fixture(scope="module")
def bed(stack: MailStack, daemons_tmp: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[VacationBed]:
    if os.geteuid() != 0:
        pytest.skip("needs root: Dovecot, SOGo and sogo-tool run as their own users")
    root = daemons_tmp / "vacation"
    root.mkdir()
    os.chmod(root, 0o711)
    smtp = SmtpReceiver().start()
    sieve_port = free_port()
    master = root / "master-users"
    master.write_text(f"{MASTER}:{{PLAIN}}{MASTER_PW}\n")
    os.chmod(master, 0o640)
    os.chown(master, 0, grp.getgrnam("dovecot").gr_gid)
    dovecot = Dovecot(root / "dovecot", login(stack.pg, READER, READER_PW),
                      quota_login=login(stack.pg, QUOTA_ROLE, QUOTA_PW),
                      extra_conf=dovecot_sieve_conf(
                          managesieve_port=sieve_port, master_users=master,
                          submission_host=f"127.0.0.1:{smtp.port}")).start()
    stack.pg.create_database("sogo_vacation", SOGO_ROLE)
    sogo = SOGo(root / "sogo", user_source=login(stack.pg, SOGO_ROLE, SOGO_PW),
                profile_db=login(stack.pg, SOGO_ROLE, SOGO_PW, db="sogo_vacation"),
                imap_port=dovecot.imap_port, smtp_port=smtp.port,
                sieve_port=sieve_port).start()
    credentials = _sogo_owned(root / "sieve-credentials", f"{MASTER}:{MASTER_PW}\n")
    public = Path(tempfile.mkdtemp(prefix="podod-public-"))
    os.chmod(public, 0o755)
    conf_root = tmp_path_factory.mktemp("vacation-daemon")
    path = make_mail_config(stack.pg, conf_root, STACK_DB, roles=ROLES)
    config = yaml.safe_load(path.read_text())
    config["mail"]["sogo"] = {"run_as": "sogo", "environment": sogo.environment,
                              "sieve_credentials_file": str(credentials),
                              "backup_dir": str(_sogo_owned(root / "sogo-backups", mode=0o700))}
    config["socket"] = {"path": str(public / "s.sock"), "mode": "0666"}
    admin_domain = new_domain(stack)
    config["access"] = {"unix_users": {"nobody": {"role": "domain-admin",
                                                  "domains": [admin_domain]}}}
    path.write_text(yaml.safe_dump(config))
    daemon = DaemonProcess(path).start()
    yield VacationBed(stack, dovecot, sogo, smtp, daemon, admin_domain)
    daemon.stop()
    shutil.rmtree(public, ignore_errors=True)
    sogo.stop_begin()
    dovecot.stop_begin()
    sogo.stop_wait()
    dovecot.stop_wait()
    smtp.stop()


def test_one_auto_reply_per_sender_until_cleared_and_sogo_shows_the_same_text(
        bed: VacationBed) -> None:
    address = bed.mailbox()
    message = "I am away until Monday.\n\nUrgent: call \"Bob\" at 555-0100."
    until = (datetime.now(UTC).date() + timedelta(days=10)).isoformat()
    set_reply = bed.ok("user", "vacation", "set", address, "--subject", "Out of office",
                       "--message", message, "--until", until, "--interval", "2d")
    assert "is on" in set_reply["message"]
    assert bed.sieve_script(address).exists()  # written by SOGo over ManageSieve

    # SOGo's own preferences carry what podod wrote: the user sees and can edit it there.
    vacation = bed.sogo_defaults(address)["Vacation"]
    assert vacation["enabled"] == 1
    assert vacation["autoReplyText"] == message
    assert vacation["customSubject"] == "Out of office"
    assert vacation["daysBetweenResponse"] == 2
    assert vacation["endDateEnabled"] == 1
    shown = bed.ok("user", "vacation", "show", address, real=False)["data"]
    assert (shown["enabled"], shown["subject"], shown["message"], shown["until"],
            shown["interval_days"]) == (True, "Out of office", message, until, 2)

    sender = f"carol{time.time_ns()}@sender.example"
    bed.deliver(sender, address, "first")
    deadline = time.monotonic() + 20
    while not bed.replies_to(sender) and time.monotonic() < deadline:
        time.sleep(0.1)
    replies = bed.replies_to(sender)
    assert len(replies) == 1
    assert replies[0]["Subject"] == "Out of office"
    assert "I am away until Monday." in replies[0].get_payload(decode=True).decode()

    bed.deliver(sender, address, "second, within the interval")
    other = f"dave{time.time_ns()}@sender.example"
    bed.deliver(other, address, "from someone else")  # answered: proves delivery went on
    deadline = time.monotonic() + 20
    while not bed.replies_to(other) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(bed.replies_to(other)) == 1
    assert len(bed.replies_to(sender)) == 1  # the second message from the sender: none

    cleared = bed.ok("user", "vacation", "clear", address)
    assert cleared["message"].endswith("is off")
    assert bed.sogo_defaults(address)["Vacation"]["enabled"] == 0
    assert not bed.sieve_script(address).exists()  # SOGo removed its script
    third = f"erin{time.time_ns()}@sender.example"
    bed.deliver(third, address, "after clear")
    # A mailbox with vacation on, delivered to after it: once its reply is in, the message
    # to the cleared one has been handled too (one LMTP delivery after the other).
    other_box = bed.mailbox()
    bed.ok("user", "vacation", "set", other_box, "--subject", "Away", "--message", "Later.")
    marker = f"frank{time.time_ns()}@sender.example"
    bed.deliver(marker, other_box, "marker")
    deadline = time.monotonic() + 20
    while not bed.replies_to(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bed.replies_to(marker)
    assert bed.replies_to(third) == []


def test_the_sandbox_changes_nothing(bed: VacationBed) -> None:
    address = bed.mailbox()
    reply = bed.ok("user", "vacation", "set", address, "--subject", "Away", "--message",
                   "Not yet.", real=False)
    assert "would be switched on" in reply["message"]
    assert not bed.sieve_script(address).exists()
    assert bed.ok("user", "vacation", "show", address, real=False)["data"]["enabled"] is False


def _bad(bed: VacationBed, address: str, *options: str) -> str:
    return bed.fail("user", "vacation", "set", address, *options)


@pytest.mark.parametrize(("options", "sentence"), [
    (["--subject", "Away", "--message", "Back.", "--from", "2031-05-10", "--until",
      "2031-05-01"], "--until 2031-05-01 is before --from 2031-05-10; nothing was changed"),
    (["--subject", "  ", "--message", "Back."], "--subject must not be empty"),
    (["--subject", "Away", "--message", "\n \n"], "--message must not be empty"),
    (["--subject", "Away", "--message", "x" * 10_001],
     "--message may have at most 10000 characters, not 10001"),
    (["--subject", "Away\r\nBcc: x@example.com", "--message", "Back."],
     "--subject must not contain control characters such as a line break or a tab"),
    (["--subject", "Away", "--message", "Back.\n.\nmore"],
     "line 2 of --message starts with '.', which SOGo cannot put into a Sieve script; "
     "start it differently"),
    (["--subject", "Away", "--message", "Back.", "--interval", "12h"],
     "--interval must be whole days from 1d to 30d (Sieve counts the days between two "
     "replies to the same sender)"),
    (["--subject", "Away", "--message", "Back.", "--until", "2001-01-01"],
     "--until 2001-01-01 is in the past; nothing was changed"),
    (["--subject", "Away", "--message", "Back.", "--from", "next week"],
     "--from must be a date as YYYY-MM-DD, not 'next week'"),
])
def test_bad_input_is_one_sentence_and_changes_nothing(bed: VacationBed, options: list[str],
                                                       sentence: str) -> None:
    address = bed.mailbox()
    bed.ok("user", "vacation", "set", address, "--subject", "Before", "--message", "Kept.")
    before = bed.sieve_script(address).read_text()
    assert _bad(bed, address, *options) == sentence
    assert bed.sieve_script(address).read_text() == before
    shown = bed.ok("user", "vacation", "show", address, real=False)["data"]
    assert (shown["subject"], shown["message"]) == ("Before", "Kept.")


def test_an_unknown_address_is_refused(bed: VacationBed) -> None:
    domain = new_domain(bed.stack)
    assert _bad(bed, f"nobody@{domain}", "--subject", "Away", "--message", "Back.") == \
        f"there is no mailbox nobody@{domain}; nothing was changed"
    assert bed.fail("user", "vacation", "show", f"nobody@{domain}") == \
        f"there is no mailbox nobody@{domain}; nothing was changed"


def test_a_domain_admin_sets_vacation_in_their_domains_only(bed: VacationBed) -> None:
    mine, theirs = bed.mailbox(bed.admin_domain), bed.mailbox()
    argv = ["user", "vacation", "set", "--subject", "Away", "--message", "Back."]
    allowed = bed.daemon.request_as(NOBODY, [*argv[:3], mine, *argv[3:]], execute_real=True)
    assert allowed["ok"], allowed["message"]
    refused = bed.daemon.request_as(NOBODY, [*argv[:3], theirs, *argv[3:]], execute_real=True)
    assert not refused["ok"]
    assert refused["message"] == f"unix:nobody may not manage the domain {theirs.split('@')[1]}"
    assert not bed.sieve_script(theirs).exists()


@pytest.fixture
def ssh_daemon(bed: VacationBed, sshd: Sshd, tmp_path: Path) -> Iterator[DaemonProcess]:
    """A daemon that runs sogo-tool over SSH (the test sshd's login user), as sogo through
    the sudoers line podod prints: the production route for a SOGo on another server."""
    config = yaml.safe_load(bed.daemon.config_path.read_text())
    config["mail"]["sogo"]["server"] = "sogo1"
    config["servers"] = [sshd.server_entry("sogo1")]
    config["socket"] = {"path": str(tmp_path / "podod.sock")}
    config.pop("access", None)
    config["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "podod.yaml"
    path.write_text(yaml.safe_dump(config))
    with DaemonProcess(path) as daemon:
        rule = str(daemon.request(["sogo", "sudoers"])["data"]["rule"])
        assert rule.startswith(f"{sshd.user} ALL=(sogo) NOPASSWD: ")
        with SudoersRule(rule):
            yield daemon


def test_vacation_over_ssh_through_the_sudoers_line(bed: VacationBed,
                                                    ssh_daemon: DaemonProcess) -> None:
    address = bed.mailbox()
    message = 'Away: back "soon", maybe = later.\n\tRegards'
    argv = ["user", "vacation", "set", address, "--subject", "Away, really", "--message",
            message]
    assert poll(lambda: ssh_daemon.request(argv, execute_real=True)["ok"], 30, 0.2)
    reply = ssh_daemon.request(["user", "vacation", "show", address])
    assert reply["ok"], reply["message"]
    assert (reply["data"]["subject"], reply["data"]["message"]) == ("Away, really", message)
    sender = f"gina{time.time_ns()}@sender.example"
    bed.deliver(sender, address, "over ssh")
    assert poll(lambda: len(bed.replies_to(sender)) == 1, 20, 0.1)
    assert bed.replies_to(sender)[0]["Subject"] == "Away, really"


def test_mail_to_an_alias_is_answered_with_the_original_recipient(bed: VacationBed) -> None:
    address = bed.mailbox()
    alias = f"info@{address.split('@')[1]}"
    bed.stack.ok("alias", "create", alias, "--to", address, real=True)
    bed.ok("user", "vacation", "set", address, "--subject", "Away", "--message", "Back soon.")
    sender = f"hank{time.time_ns()}@sender.example"
    with smtplib.LMTP("127.0.0.1", bed.dovecot.lmtp_port) as lmtp:
        # What Postfix passes after expanding the alias: the original recipient (ORCPT).
        lmtp.sendmail(sender, [address], f"From: {sender}\r\nTo: {alias}\r\nSubject: hi\r\n"
                      f"Message-ID: <{time.time_ns()}@sender.example>\r\n\r\nHello.\r\n",
                      rcpt_options=[f"ORCPT=rfc822;{alias}"])
    assert poll(lambda: len(bed.replies_to(sender)) == 1, 20, 0.1)
