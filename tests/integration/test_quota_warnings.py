"""Quota warnings against the real mail database and the real daemon: the mail_quota
collector's per-domain counts, the default pack's alerts that list the mailboxes, /metrics
without a series per mailbox, and the owner's notice sent once per threshold crossing
(caught by the test SMTP receiver), also across a restart."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from conftest import OWNER, MailStack, make_mail_config
from testbed.daemon import DaemonProcess
from testbed.ports import free_port
from testbed.postgres import PgCluster
from testbed.receivers import SmtpReceiver
from testbed.waiting import wait_for

_dbs = itertools.count()
DOMAIN = "quota.example"
THEIRS = "theirs.example"  # the domain-admin's domain
ADMIN = "ops@example.org"
NOBODY = 65534


@dataclass
class Quota:
    mail: MailStack
    smtp: SmtpReceiver
    metrics_port: int

    def restart(self) -> None:
        self.mail.daemon.stop()
        self.mail.daemon = DaemonProcess(self.mail.config_path).start()

    def use(self, address: str, percent: float) -> None:
        self.mail.sql(f"UPDATE quota2 SET bytes = (SELECT quota FROM mailbox WHERE username = "
                      f"'{address}') * {percent} / 100 WHERE username = '{address}'")

    def runs(self) -> int:
        jobs: list[dict[str, Any]] = self.mail.ok("collector", "list")["data"]  # type: ignore
        return sum(int(j["runs"]) for j in jobs if j["collector"] == "mail_quota")

    def next_runs(self, count: int = 2) -> None:
        """Wait until the collector has run ``count`` more times (whole evaluations)."""
        start = self.runs()
        wait_for(lambda: self.runs() >= start + count, timeout=30,
                 what=f"{count} more mail_quota runs")

    def owner_mail(self, address: str) -> list[Message]:
        return [m for m in self.smtp.messages if m["To"] == address]

    def alerts(self, rule: str) -> list[dict[str, Any]]:
        listed = self.mail.ok("alerts", "list")["data"]["alerts"]  # type: ignore[index]
        return [a for a in listed if a["rule"] == rule and a["state"] == "firing"]

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()


@pytest.fixture(scope="module")
def quota(pg: PgCluster, mail_template: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quota]:
    root = tmp_path_factory.mktemp("quota")
    db = f"quota{next(_dbs)}"
    pg.psql(f'CREATE DATABASE "{db}" TEMPLATE "{mail_template}" OWNER "{OWNER}"')
    port = free_port()
    public = Path(tempfile.mkdtemp(prefix="podod-public-"))  # a socket nobody can reach
    os.chmod(public, 0o755)
    with SmtpReceiver() as smtp:
        alerts = {
            "enabled": True, "evaluation_interval": "0.2s", "group_wait": "0.2s",
            "group_interval": "1s", "resolve_wait": "0.2s",
            "notifiers": [{"type": "email", "name": "mail", "smtp_host": "127.0.0.1",
                           "smtp_port": smtp.port, "tls": "none",
                           "from": "podod@example.org", "to": [ADMIN],
                           "retry_initial": "0.1s"}],
            "quota_warnings": {"list_addresses": 2, "owner_notice": {
                "enabled": True, "notifier": "mail", "from": "postmaster@example.org"}}}
        path = make_mail_config(pg, root, db, alerts=alerts,
                                monitor={"enabled": True, "intervals": {"mail_quota": "1s"}},
                                                metrics={"enabled": True, "listen": "127.0.0.1",
                                         "port": port},
                                socket={"path": str(public / "s.sock"), "mode": "0666"},
                                access={"unix_users": {"nobody": {
                                    "role": "domain-admin", "domains": [THEIRS]}}})
        daemon = DaemonProcess(path).start()
        mail = MailStack(pg, db, root, path, daemon)
        try:
            mail.ok("domain", "create", DOMAIN, real=True)
            mail.ok("domain", "create", THEIRS, real=True)
            mail.ok("user", "create", f"zoe@{THEIRS}", "--quota-mb", "10",
                    "--password-stdin", stdin="Quota-Test-2024-x", real=True)
            for user, quota_mb in (("alice", "10"), ("bob", "10"), ("carol", "10"),
                                   ("dave", "10"), ("eve", "0")):
                mail.ok("user", "create", f"{user}@{DOMAIN}", "--quota-mb", quota_mb,
                        "--password-stdin", stdin="Quota-Test-2024-x", real=True)
            yield Quota(mail, smtp, port)
        finally:
            mail.daemon.stop()
            pg.drop_database(db)
            shutil.rmtree(public, ignore_errors=True)


def test_a_crossing_alerts_the_domain_and_mails_the_owner_once(quota: Quota) -> None:
    alice = f"alice@{DOMAIN}"
    quota.use(alice, 85)
    quota.use(f"eve@{DOMAIN}", 0)
    quota.mail.sql(f"UPDATE quota2 SET bytes = 10737418240 WHERE username = 'eve@{DOMAIN}'")
    wait_for(lambda: quota.alerts("MailboxesNearQuota"), timeout=30,
             what="the 80% alert of the domain")
    alert = quota.alerts("MailboxesNearQuota")[0]
    assert alert["labels"]["domain"] == DOMAIN and alert["server"] == "podod"
    assert alert["summary"] == (f"{DOMAIN}: 1 mailbox uses 80% of their quota or more: "
                                f"{alice} (85%)")
    assert quota.alerts("MailboxesAlmostFull") == []

    wait_for(lambda: quota.owner_mail(alice), timeout=30, what="the owner's notice")
    notice = quota.owner_mail(alice)[0]
    assert notice["From"] == "postmaster@example.org"
    assert notice["Subject"] == f"Your mailbox {alice} is 85% full"
    assert notice["Auto-Submitted"] == "auto-generated"
    body = notice.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "uses 8.5 MiB of its 10.0 MiB quota (85%), more than 80 %" in body
    assert ("postmaster@example.org", [alice]) in quota.smtp.envelopes
    # The administrators' notifier got the alert, with the address listed.
    wait_for(lambda: [m for m in quota.smtp.messages if m["To"] == ADMIN], timeout=30,
             what="the administrators' alert mail")
    admin = [m for m in quota.smtp.messages if m["To"] == ADMIN]
    assert alice in admin[0].get_payload(decode=True).decode()  # type: ignore[union-attr]

    quota.next_runs(3)  # still over 80 %: evaluated again, mailed no more
    assert len(quota.owner_mail(alice)) == 1
    # An unlimited mailbox (quota 0) never warns, however much it holds.
    assert quota.owner_mail(f"eve@{DOMAIN}") == []
    assert len(quota.alerts("MailboxesNearQuota")) == 1

    quota.restart()  # what was sent is in state.db: a restart does not mail again
    quota.next_runs(3)
    assert len(quota.owner_mail(alice)) == 1

    quota.use(alice, 50)  # under the mark (by more than the re-arm margin): resolved
    wait_for(lambda: not quota.alerts("MailboxesNearQuota"), timeout=30,
             what="the 80% alert to resolve")
    quota.next_runs(2)
    quota.use(alice, 85)  # crossing again mails again
    wait_for(lambda: len(quota.owner_mail(alice)) == 2, timeout=30, what="a second notice")
    quota.next_runs(2)
    assert len(quota.owner_mail(alice)) == 2

    quota.use(alice, 96)  # the 95 % mark: its alert, and one notice naming 95
    wait_for(lambda: quota.alerts("MailboxesAlmostFull"), timeout=30, what="the 95% alert")
    wait_for(lambda: len(quota.owner_mail(alice)) == 3, timeout=30, what="the 95% notice")
    assert "more than 95 %" in quota.owner_mail(alice)[2].get_payload(  # type: ignore
        decode=True).decode()
    quota.next_runs(2)
    assert len(quota.owner_mail(alice)) == 3
    quota.use(alice, 50)
    wait_for(lambda: not quota.alerts("MailboxesAlmostFull")
             and not quota.alerts("MailboxesNearQuota"), timeout=30, what="both to resolve")


def test_a_domain_alert_lists_the_first_addresses_and_counts_the_rest(quota: Quota) -> None:
    for user, percent in (("bob", 90), ("carol", 99), ("dave", 82)):
        quota.use(f"{user}@{DOMAIN}", percent)

    def listed() -> str:
        alerts = quota.alerts("MailboxesNearQuota")
        return str(alerts[0]["summary"]) if alerts else ""

    wait_for(lambda: listed().startswith(f"{DOMAIN}: 3 mailboxes"), timeout=30,
             what="the domain's alert with three mailboxes")
    assert listed() == (f"{DOMAIN}: 3 mailboxes use 80% of their quota or more: "
                        f"carol@{DOMAIN} (99%), bob@{DOMAIN} (90%) and 1 more")
    # /metrics: per-domain counts with the threshold as a label, never an address.
    text = quota.metrics()
    assert (f'podod_mail_quota_mailboxes_over{{domain="{DOMAIN}",server="podod",'
            'threshold="80"} 3') in text
    assert (f'podod_mail_quota_mailboxes_over{{domain="{DOMAIN}",server="podod",'
            'threshold="95"} 1') in text
    assert f'podod_mail_quota_mailboxes{{domain="{DOMAIN}",server="podod"}} 4' in text
    assert "@" not in "".join(line for line in text.splitlines()
                              if line.startswith("podod_mail_quota"))
    for user in ("bob", "carol", "dave"):
        quota.use(f"{user}@{DOMAIN}", 10)


def test_a_domain_admin_sees_the_quota_alerts_of_their_domains_only(quota: Quota) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to ask as another user")
    quota.use(f"bob@{DOMAIN}", 90)
    quota.use(f"zoe@{THEIRS}", 91)

    def rules_seen(uid: int | None) -> set[tuple[str, str]]:
        argv = ["alerts", "list"]
        reply = quota.mail.daemon.request_as(uid, argv) if uid is not None else \
            quota.mail.daemon.request(argv)
        assert reply["ok"], reply
        return {(a["rule"], a["labels"].get("domain", "")) for a in reply["data"]["alerts"]}

    wait_for(lambda: {("MailboxesNearQuota", DOMAIN), ("MailboxesNearQuota", THEIRS)}
             <= rules_seen(None), timeout=30, what="both domains' alerts")
    assert rules_seen(NOBODY) == {("MailboxesNearQuota", THEIRS)}
    history = quota.mail.daemon.request_as(NOBODY, ["alerts", "history"])
    assert history["ok"] and f"bob@{DOMAIN}" not in str(history)
    admin_history = quota.mail.ok("alerts", "history")
    assert f"bob@{DOMAIN}" in str(admin_history)
    quota.use(f"bob@{DOMAIN}", 10)
    quota.use(f"zoe@{THEIRS}", 10)


def test_a_switched_off_domain_or_mailbox_never_warns(quota: Quota) -> None:
    mail = quota.mail
    mail.ok("domain", "create", "off.example", real=True)
    for user in ("ann@off.example", f"ivy@{DOMAIN}"):
        mail.ok("user", "create", user, "--quota-mb", "10", "--password-stdin",
                stdin="Quota-Test-2024-x", real=True)
    mail.ok("domain", "update", "off.example", "--active", "no", real=True)
    mail.ok("user", "update", f"ivy@{DOMAIN}", "--active", "no", real=True)
    quota.use("ann@off.example", 99)
    quota.use(f"ivy@{DOMAIN}", 99)
    quota.next_runs(3)
    assert quota.owner_mail("ann@off.example") == [] and quota.owner_mail(f"ivy@{DOMAIN}") == []
    listed = mail.ok("alerts", "list")["data"]["alerts"]  # type: ignore[index]
    assert not [a for a in listed if a["rule"].startswith("Mailboxes")]
    assert 'domain="off.example"' not in quota.metrics()
