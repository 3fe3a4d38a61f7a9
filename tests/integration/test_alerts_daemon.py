"""Alerting through the real daemon: samples on the event bus → rules → notifications to a
webhook, an SMTP server, a real Alertmanager and a real Synapse; silences and maintenance
as commands; restarts; a broken rule file on reload."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import MailStack, new_domain
from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.dovecot import Dovecot
from testbed.ports import free_port
from testbed.postfix import Postfix
from testbed.prometheus import Alertmanager
from testbed.receivers import SmtpReceiver, WebhookReceiver
from testbed.sshd import Sshd
from testbed.synapse import Synapse, available
from testbed.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]

RULES = {
    "rules": [
        {"name": "ServerUnreachable", "series": "ssh_connected", "op": "==", "threshold": 0,
         "for": "1s", "severity": "critical", "summary": "{{ server }} cannot be reached"},
        {"name": "ServiceDown", "series": "service_up", "op": "==", "threshold": 0,
         "for": "2s", "severity": "critical",
         "summary": "{{ server }}: {{ labels.service }} is down"},
        {"name": "DiskFull", "series": "node_filesystem_used_ratio", "op": ">",
         "threshold": "90%", "summary": "{{ labels.mountpoint }} is {{ value | percent }} full"},
    ],
    "inhibit": [{"source": {"alertname": "ServerUnreachable"}, "equal": ["server"]}],
}


class Stack:
    """One daemon with the feeder plugin, alerting on, and its rule file."""

    def __init__(self, root: Path, notifiers: list[dict[str, Any]], **alerts: Any) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.rules = root / "alerts.yaml"
        self.rules.write_text(yaml.safe_dump(RULES))
        settings = {"enabled": True, "rule_files": [str(self.rules)], "default_rules": False,
                    "evaluation_interval": "0.2s", "group_wait": "0.5s",
                    "group_interval": "2s", "repeat_interval": "1h", "resolve_wait": "0.3s",
                    "notifiers": notifiers, **alerts}
        config = base_config(
            root, alerts=settings,
            servers=[{"name": "local1", "local": True}],
            plugins={"dirs": [str(REPO / "tests" / "plugins")], "entry_points": False})
        self.config_path = write_config(root / "podod.yaml", config)
        self.daemon = DaemonProcess(self.config_path)

    def start(self) -> Stack:
        self.daemon.start()
        return self

    def stop(self) -> None:
        self.daemon.stop()

    def feed(self, server: str, series: str, value: float, **labels: str) -> None:
        reply = self.daemon.request(["feed", "samples"], stdin=json.dumps(
            [{"series": series, "server": server, "value": value, "labels": labels}]))
        assert reply["ok"], reply

    def ok(self, *argv: str, real: bool = False) -> dict[str, Any]:
        reply = self.daemon.request(list(argv), execute_real=real)
        assert reply["ok"], reply["message"]
        return reply

    def fail(self, *argv: str, real: bool = True) -> str:
        reply = self.daemon.request(list(argv), execute_real=real)
        assert not reply["ok"], reply
        return str(reply["message"])

    def firing(self) -> list[dict[str, Any]]:
        return [a for a in self.ok("alerts", "list")["data"]["alerts"]
                if a["state"] == "firing"]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


def firing_of(bodies: list[Any]) -> list[Any]:
    return [b for b in bodies if b["status"] == "firing"]


def test_webhook_gets_firing_then_resolved_in_alertmanager_format(
        tmp_path: Path, receiver: WebhookReceiver) -> None:
    stack = Stack(tmp_path, [{"type": "webhook", "url": receiver.url, "token": "hook-s3cret",
                              "retry_initial": "0.1s"}]).start()
    try:
        receiver.fail_next = 2  # the receiver is down for a moment: retried with backoff
        for _ in range(6):
            stack.feed("mx1", "ssh_connected", 0)
            stack.feed("mx1", "service_up", 0, service="postfix")  # muted by inhibition
            time.sleep(0.5)
        bodies = receiver.wait_for(lambda b: len(b) >= 1)
        first = bodies[0]
        assert first["version"] == "4" and first["status"] == "firing"
        assert first["receiver"] == "webhook" and first["groupLabels"] == {"server": "mx1"}
        assert first["groupKey"] == '{}:{server="mx1"}'
        assert [a["labels"]["alertname"] for a in first["alerts"]] == ["ServerUnreachable"]
        alert = first["alerts"][0]
        assert alert["annotations"]["summary"] == "mx1 cannot be reached"
        assert alert["endsAt"] == "0001-01-01T00:00:00Z" and alert["fingerprint"]
        assert receiver.requests[0]["headers"]["Authorization"] == "Bearer hook-s3cret"
        listed = {a["rule"]: a["muted"] for a in stack.firing()}
        assert listed == {"ServerUnreachable": None,
                          "ServiceDown": "inhibited by ServerUnreachable"}
        # back: one resolved message, promptly
        stack.feed("mx1", "ssh_connected", 1)
        stack.feed("mx1", "service_up", 1, service="postfix")
        bodies = receiver.wait_for(lambda b: any(x["status"] == "resolved" for x in b))
        assert [b["status"] for b in bodies] == ["firing", "resolved"]
        assert bodies[1]["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
        time.sleep(1.0)
        assert len(receiver.bodies()) == 2  # the muted service alert never went out
        history = stack.ok("alerts", "history")["data"]
        events = [(h["event"], h["rule"]) for h in reversed(history)]
        assert ("firing", "ServerUnreachable") in events
        assert ("resolved", "ServerUnreachable") in events
        assert sum(1 for e, _ in events if e == "notified") == 2
        log = stack.daemon.log()
        assert "hook-s3cret" not in log and "answered HTTP 503" in log
    finally:
        stack.stop()


def test_silence_and_maintenance_commands(tmp_path: Path, receiver: WebhookReceiver) -> None:
    stack = Stack(tmp_path, [{"type": "webhook", "url": receiver.url}]).start()
    try:
        # sandbox first: nothing is created
        dry = stack.ok("alerts", "silence", "DiskFull", "--for", "1h", "--reason", "resize")
        assert dry["sandbox"] is True and dry["message"].startswith(
            "would silence alertname=DiskFull for 1h")
        assert stack.ok("alerts", "silences")["data"]["silences"] == []
        real = stack.ok("alerts", "silence", "DiskFull", "--for", "1h", "--reason", "resize",
                        real=True)
        silence_id = real["data"]["id"]
        stack.feed("local1", "node_filesystem_used_ratio", 0.97, mountpoint="/var")
        wait_for(lambda: stack.firing(), what="DiskFull firing")
        time.sleep(1.5)
        assert receiver.bodies() == []  # silenced: evaluated, listed, not notified
        assert stack.firing()[0]["muted"].startswith(f"silenced by {silence_id} until")
        listed = stack.ok("alerts", "silences")["data"]["silences"]
        assert [s["id"] for s in listed] == [silence_id]
        # ending it notifies what still fires
        stack.ok("alerts", "unsilence", silence_id, real=True)
        receiver.wait_for(lambda b: len(b) == 1)
        # a one-off maintenance window for the server
        stack.ok("alerts", "maintenance", "--server", "local1", "--for", "30m", "--reason",
                 "kernel update", real=True)
        stack.feed("local1", "node_filesystem_used_ratio", 0.97, mountpoint="/srv")
        time.sleep(2.5)
        assert len(receiver.bodies()) == 1
        audit = stack.ok("audit", "list", "--command", "alerts")["data"]
        outcomes = [(r["command"], r["outcome"], bool(r["execute_real"])) for r in audit]
        assert ("alerts silence", "sandbox", False) in outcomes
        assert ("alerts silence", "ok", True) in outcomes
        assert ("alerts unsilence", "ok", True) in outcomes
        assert ("alerts maintenance", "ok", True) in outcomes
        # bad input: one sentence each, nothing created
        before = len(stack.ok("alerts", "silences", "--all")["data"]["silences"])
        assert stack.fail("alerts", "silence", "NoSuchRule", "--for", "1h", "--reason",
                          "x") == "there is no alert rule 'NoSuchRule' (see 'alerts rules')"
        assert stack.fail("alerts", "silence", "--match", "server", "--for", "1h",
                          "--reason", "x") == (
            "alerts silence: --match 'server' is not a matcher such as server=mx1, "
            "severity=~warning|critical or queue!=hold")
        assert stack.fail("alerts", "silence", "DiskFull", "--reason", "x") == (
            "alerts silence: --for is required (usage: alerts silence [RULE] [--match "
            "K=V,...] [--server TEXT] --for DURATION --reason TEXT [--execute-real])")
        assert stack.fail("alerts", "silence", "DiskFull", "--for", "0s", "--reason", "x") \
            == "alerts silence: --for must be longer than 0s and at most 90d"
        assert stack.fail("alerts", "silence", "DiskFull", "--for", "1h").startswith(
            "alerts silence: --reason is required (usage: ")
        assert stack.fail("alerts", "silence", "DiskFull", "--for", "1h", "--reason", " ") \
            == "alerts silence: --reason is required (say why, for the others)"
        assert stack.fail("alerts", "silence", "--match", "alertname=DiskFul", "--for", "1h",
                          "--reason", "x") == \
            "there is no alert rule 'DiskFul' (see 'alerts rules')"
        assert stack.fail("alerts", "maintenance", "--server", "local1", "--for", "1h") \
            .startswith("alerts maintenance: --reason is required (usage: alerts maintenance "
                        "--server TEXT --for DURATION --reason TEXT")
        # a typo in a server or rule name is said, not answered with an empty list
        assert stack.fail("alerts", "list", "--server", "nosuch", real=False) == \
            "there is no server 'nosuch' (see 'server list')"
        assert stack.fail("alerts", "history", "--server", "nosuch", real=False) == \
            "there is no server 'nosuch' (see 'server list')"
        assert stack.fail("alerts", "history", "--rule", "DiskFul", real=False) == \
            "there is no alert rule 'DiskFul' (see 'alerts rules')"
        assert stack.ok("alerts", "history", "--rule", "DiskFull")["data"]
        assert stack.ok("alerts", "list", "--server", "local1")["data"]["alerts"]
        assert stack.fail("alerts", "silence", "--for", "1h", "--reason", "x") == (
            "alerts silence: say what to silence: a RULE, --server or --match (a silence of "
            "everything is not allowed)")
        assert stack.fail("alerts", "unsilence", "deadbeef") == \
            "there is no active silence deadbeef (see 'alerts silences')"
        assert stack.fail("alerts", "maintenance", "--server", "nosuch", "--for", "1h",
                          "--reason", "x") == "there is no server 'nosuch' (see 'server list')"
        assert len(stack.ok("alerts", "silences", "--all")["data"]["silences"]) == before
    finally:
        stack.stop()


def test_restart_keeps_a_firing_alert_firing_without_a_duplicate(
        tmp_path: Path, receiver: WebhookReceiver) -> None:
    stack = Stack(tmp_path, [{"type": "webhook", "url": receiver.url}]).start()
    try:
        stack.feed("local1", "node_filesystem_used_ratio", 0.99, mountpoint="/")
        receiver.wait_for(lambda b: len(b) == 1)
        stack.stop()
        stack.start()
        assert [a["rule"] for a in stack.firing()] == ["DiskFull"]
        for _ in range(5):  # still full after the restart
            stack.feed("local1", "node_filesystem_used_ratio", 0.99, mountpoint="/")
            time.sleep(1.0)
        assert len(receiver.bodies()) == 1  # no duplicate notification
        stack.feed("local1", "node_filesystem_used_ratio", 0.5, mountpoint="/")
        bodies = receiver.wait_for(lambda b: len(b) == 2)
        assert bodies[1]["status"] == "resolved"
    finally:
        stack.stop()


def test_reload_with_a_broken_rule_file_keeps_the_running_rules(
        tmp_path: Path, receiver: WebhookReceiver) -> None:
    stack = Stack(tmp_path, [{"type": "webhook", "url": receiver.url}]).start()
    try:
        assert len(stack.ok("alerts", "rules")["data"]) == 3
        broken = dict(RULES)
        broken["rules"] = [*RULES["rules"], {"name": "Broken", "series": "x", "op": "~",
                                             "threshold": 1}]
        stack.rules.write_text(yaml.safe_dump(broken))
        stack.daemon.signal(signal.SIGHUP)
        wait_for(lambda: "reload rejected" in stack.daemon.log(), what="the rejection")
        assert ("alerts.yaml: rule 'Broken' (rules[3]): op: must be one of '>', '>=', '<', "
                "'<=', '==' or '!='") in stack.daemon.log()
        assert [r["name"] for r in stack.ok("alerts", "rules")["data"]] == \
            ["ServerUnreachable", "ServiceDown", "DiskFull"]
        stack.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/")
        receiver.wait_for(lambda b: len(b) == 1)  # the old rules still run
        fixed = dict(RULES)
        fixed["rules"] = [r for r in RULES["rules"] if r["name"] != "DiskFull"]
        stack.rules.write_text(yaml.safe_dump(fixed))
        stack.daemon.signal(signal.SIGHUP)
        wait_for(lambda: len(stack.ok("alerts", "rules")["data"]) == 2, what="the new rules")
        bodies = receiver.wait_for(lambda b: len(b) == 2)  # its alert resolves
        assert bodies[1]["status"] == "resolved"
    finally:
        stack.stop()


def test_email_through_a_real_smtp_server(tmp_path: Path) -> None:
    (tmp_path / "smtp-password").write_text("mail-s3cret\n")
    with SmtpReceiver() as smtp:
        stack = Stack(tmp_path, [{"type": "email", "smtp_host": "127.0.0.1",
                                  "smtp_port": smtp.port, "tls": "auto",
                                  "from": "podod@example.org",
                                  "to": ["ops@example.org", "oncall@example.org"]}]).start()
        try:
            stack.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/var")
            messages = smtp.wait_for(1)
            msg = messages[0]
            assert msg["Subject"] == "[FIRING:1] mx1: DiskFull"
            assert msg["From"] == "podod@example.org"
            assert msg["To"] == "ops@example.org, oncall@example.org"
            body = msg.get_payload(decode=True).decode()
            assert "FIRING DiskFull (warning) on mx1: /var is 99.0% full" in body
            assert smtp.envelopes[0] == ("podod@example.org",
                                         ["ops@example.org", "oncall@example.org"])
            stack.feed("mx1", "node_filesystem_used_ratio", 0.5, mountpoint="/var")
            assert smtp.wait_for(2)[1]["Subject"] == "[RESOLVED] mx1: DiskFull"
        finally:
            stack.stop()


def test_email_through_the_test_postfix_into_a_dovecot_mailbox(
        tmp_path: Path, stack: MailStack, postfix: Postfix, dovecot: Dovecot) -> None:
    """The notifier hands its message to a real Postfix, which delivers it over LMTP to a
    real Dovecot mailbox that podod created."""
    import email
    import imaplib

    domain = new_domain(stack)
    user, password = f"postmaster@{domain}", "Alert-Inbox-2024-x"
    stack.ok("user", "create", user, "--password-stdin", stdin=password, real=True)
    alerts = Stack(tmp_path, [{"type": "email", "smtp_host": "127.0.0.1",
                               "smtp_port": postfix.smtp_port, "from": f"podod@{domain}",
                               "to": [user]}]).start()
    try:
        alerts.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/var")

        def fetched() -> list[email.message.Message]:
            with imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=10) as imap:
                imap.login(user, password)
                imap.select("INBOX", readonly=True)
                _, found = imap.search(None, "ALL")
                out = []
                for number in found[0].split():
                    _, data = imap.fetch(number, "(RFC822)")
                    raw = data[0][1]  # type: ignore[index]
                    out.append(email.message_from_bytes(bytes(raw)))  # type: ignore[arg-type]
                imap.logout()
            return out

        messages = wait_for(fetched, 30, "the alert in the mailbox")
        assert messages[0]["Subject"] == "[FIRING:1] mx1: DiskFull"
        assert messages[0]["Auto-Submitted"] == "auto-generated"
        assert "/var is 99.0% full" in messages[0].get_payload(decode=True).decode()
    finally:
        alerts.stop()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_email_with_smtp_auth_and_a_refused_login(tmp_path: Path) -> None:
    (tmp_path / "good").write_text("mail-s3cret\n")
    (tmp_path / "bad").write_text("wrong-s3cret\n")
    with SmtpReceiver(login=("podod", "mail-s3cret")) as smtp:
        common = {"type": "email", "smtp_host": "127.0.0.1", "smtp_port": smtp.port,
                  "tls": "auto", "username": "podod", "allow_plaintext_auth": True,
                  "from": "podod@example.org",
                  "to": ["ops@example.org"], "retry_initial": "0.1s", "retry_max": "0.2s",
                  "give_up_after": "1s"}
        stack = Stack(tmp_path, [{**common, "name": "good",
                                  "password_file": str(tmp_path / "good")},
                                 {**common, "name": "bad",
                                  "password_file": str(tmp_path / "bad")}]).start()
        try:
            stack.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/var")
            assert smtp.wait_for(1)[0]["Subject"] == "[FIRING:1] mx1: DiskFull"

            def failed() -> list[dict[str, Any]]:
                return [h for h in stack.ok("alerts", "history")["data"]
                        if h["event"] == "notify-failed"]

            rows = wait_for(failed, 30, "the give-up of the bad login")
            assert rows[0]["detail"].startswith("bad: alerts firing, 1 alert: gave up after ")
            assert rows[0]["detail"].endswith(
                f"the SMTP server 127.0.0.1:{smtp.port} refused the login of podod (535)")
            time.sleep(0.5)
            assert len(smtp.messages) == 1
            log = stack.daemon.log()
            assert "s3cret" not in log and "refused the login of podod" in log
        finally:
            stack.stop()


def test_forwarding_to_a_real_alertmanager(tmp_path: Path) -> None:
    with Alertmanager(tmp_path / "am") as am:
        assert isinstance(am, Alertmanager)
        stack = Stack(tmp_path / "podod", [{"type": "alertmanager", "url": am.url,
                                            "resend_interval": "1s"}]).start()
        try:
            stack.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/var")
            stack.feed("mx2", "service_up", 0, service="dovecot")
            alerts = wait_for(lambda: len(am.alerts()) == 2 and am.alerts(), 30,
                              "two alerts in the Alertmanager")
            by_name = {a["labels"]["alertname"]: a for a in alerts}
            assert by_name["DiskFull"]["labels"] == {
                "alertname": "DiskFull", "server": "mx1", "severity": "warning",
                "mountpoint": "/var"}
            assert by_name["DiskFull"]["annotations"]["summary"] == "/var is 99.0% full"
            assert by_name["ServiceDown"]["status"]["state"] == "active"
            stack.feed("mx1", "node_filesystem_used_ratio", 0.5, mountpoint="/var")
            wait_for(lambda: [a["labels"]["alertname"] for a in am.alerts()] ==
                     ["ServiceDown"], 30, "DiskFull resolved in the Alertmanager")
        finally:
            stack.stop()


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    if not available():
        pytest.skip("Synapse is not installed: run 'make synapse'")
    server = Synapse(tmp_path_factory.mktemp("synapse"))
    server.start()
    yield server
    server.stop()


def test_matrix_room_through_a_real_synapse(tmp_path: Path, synapse: Synapse) -> None:
    admin = synapse.register("admin", "admin-pw", admin=True)
    bot = synapse.register("podod", "podod-pw")
    room = synapse.create_room(admin, [synapse.user_id("podod")])
    (tmp_path / "matrix-token").write_text(bot + "\n")
    stack = Stack(tmp_path, [{"type": "matrix", "homeserver": synapse.url,
                              "user_id": synapse.user_id("podod"),
                              "access_token_file": str(tmp_path / "matrix-token"),
                              "room_id": room}]).start()
    try:
        stack.feed("mx1", "service_up", 0, service="postfix")
        messages = wait_for(lambda: synapse.messages(admin, room), 30, "a Matrix message")
        content = messages[0]["content"]
        assert content["msgtype"] == "m.notice"
        assert content["body"].startswith("[FIRING] mx1: ServiceDown")
        assert "mx1: postfix is down" in content["body"]
        assert "<b>ServiceDown</b>" in content["formatted_body"]
        assert messages[0]["sender"] == synapse.user_id("podod")
        stack.feed("mx1", "service_up", 1, service="postfix")
        wait_for(lambda: synapse.messages(admin, room)[0]["content"]["body"].startswith(
            "[RESOLVED]"), 30, "the resolved message")
        assert bot not in stack.daemon.log()
    finally:
        stack.stop()


def test_firing_alerts_show_on_metrics(tmp_path: Path, receiver: WebhookReceiver) -> None:
    import urllib.request

    port = free_port()
    stack = Stack(tmp_path, [{"type": "webhook", "url": receiver.url}])
    config = yaml.safe_load(stack.config_path.read_text())
    config["metrics"] = {"enabled": True, "listen": "127.0.0.1", "port": port}
    stack.config_path.write_text(yaml.safe_dump(config))
    stack.start()
    try:
        stack.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/var")
        receiver.wait_for(lambda b: len(b) == 1)

        def scrape() -> str:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as resp:
                return str(resp.read().decode())

        text = wait_for(lambda: 'podod_notifications_total{notifier="webhook",result="sent"'
                                in scrape() and scrape(), what="the notification counter")
        assert 'podod_alerts_firing{rule="DiskFull",server="mx1",severity="warning"} 1.0' \
            in text
        assert 'podod_notifications_total{notifier="webhook",result="sent",server="podod"} ' \
               '1.0' in text
    finally:
        stack.stop()


def test_end_to_end_an_sshd_that_stops_fires_server_unreachable_and_resolves(
        private_sshd: Sshd, tmp_path: Path, receiver: WebhookReceiver) -> None:
    """The default pack, with ServerUnreachable's for: shortened by a rule file of the same
    name; the real server manager, a real sshd stopped and started again."""
    rules = tmp_path / "site.yaml"
    rules.write_text(yaml.safe_dump({"rules": [
        {"name": "ServerUnreachable", "series": "ssh_connected", "op": "==", "threshold": 0,
         "for": "3s", "severity": "critical",
         "summary": "{{ server }}: podod cannot reach the server over SSH"}]}))
    config = base_config(
        tmp_path, servers=[private_sshd.server_entry("mx1")],
        alerts={"enabled": True, "rule_files": [str(rules)], "evaluation_interval": "0.5s",
                "group_wait": "1s", "resolve_wait": "0.5s",
                "notifiers": [{"type": "webhook", "url": receiver.url}]})
    daemon = DaemonProcess(write_config(tmp_path / "podod.yaml", config)).start()
    try:
        def state() -> str:
            reply = daemon.request(["server", "show", "mx1"])
            return str(reply["data"]["state"]) if reply["ok"] else ""

        wait_for(lambda: state() == "connected", 30, "mx1 connected")
        assert len(daemon.request(["alerts", "rules"])["data"]) == 24  # the default pack
        private_sshd.stop()
        started = time.monotonic()
        bodies = receiver.wait_for(lambda b: len(b) >= 1, 60)
        assert time.monotonic() - started >= 3.0  # not before its for:
        assert bodies[0]["status"] == "firing"
        assert [a["labels"]["alertname"] for a in bodies[0]["alerts"]] == ["ServerUnreachable"]
        assert bodies[0]["alerts"][0]["annotations"]["summary"] == \
            "mx1: podod cannot reach the server over SSH"
        private_sshd.start()
        wait_for(lambda: state() == "connected", 60, "mx1 connected again")
        bodies = receiver.wait_for(lambda b: any(x["status"] == "resolved" for x in b), 30)
        assert [b["status"] for b in bodies] == ["firing", "resolved"]
        assert bodies[1]["alerts"][0]["labels"]["alertname"] == "ServerUnreachable"
        events = [(h["event"], h["rule"]) for h in
                  reversed(daemon.request(["alerts", "history"])["data"])]
        assert events[:2] == [("firing", "ServerUnreachable"), ("notified", "ServerUnreachable")]
        assert ("resolved", "ServerUnreachable") in events
    finally:
        daemon.stop()


def test_a_rule_on_what_a_real_collector_measures(tmp_path: Path,
                                                  receiver: WebhookReceiver) -> None:
    """The system collector measures this machine; a rule that its root file system is in
    use at all fires from those real samples."""
    rules = tmp_path / "site.yaml"
    rules.write_text(yaml.safe_dump({"rules": [
        {"name": "RootInUse", "series": "node_filesystem_used_ratio",
         "match": {"mountpoint": "/"}, "op": ">", "threshold": 0, "severity": "info",
         "summary": "{{ server }}: / is {{ value | percent }} used"}]}))
    config = base_config(
        tmp_path, servers=[{"name": "local1", "local": True}],
        monitor={"enabled": True, "interval": "1s"},
        alerts={"enabled": True, "default_rules": False, "rule_files": [str(rules)],
                "group_wait": "0.5s", "evaluation_interval": "0.5s",
                "notifiers": [{"type": "webhook", "url": receiver.url}]})
    daemon = DaemonProcess(write_config(tmp_path / "podod.yaml", config)).start()
    try:
        bodies = receiver.wait_for(lambda b: len(b) >= 1, 60)
        alert = bodies[0]["alerts"][0]
        assert alert["labels"] == {"alertname": "RootInUse", "server": "local1",
                                   "severity": "info", "mountpoint": "/"}
        assert alert["annotations"]["summary"].startswith("local1: / is ")
    finally:
        daemon.stop()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_email_never_logs_in_without_tls_unless_allowed(tmp_path: Path) -> None:
    """tls: auto and a server that offers AUTH but no STARTTLS: the password is not sent,
    nor the message, and the failure is logged and recorded."""
    (tmp_path / "pw").write_text("mail-s3cret\n")
    with SmtpReceiver(login=("podod", "mail-s3cret")) as smtp:
        stack = Stack(tmp_path, [{"type": "email", "name": "mail", "smtp_host": "127.0.0.1",
                                  "smtp_port": smtp.port, "username": "podod",
                                  "password_file": str(tmp_path / "pw"),
                                  "from": "podod@example.org", "to": ["ops@example.org"],
                                  "retry_initial": "0.1s", "retry_max": "0.2s",
                                  "give_up_after": "1s"}]).start()
        try:
            stack.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/var")
            rows = wait_for(lambda: [h for h in stack.ok("alerts", "history")["data"]
                                     if h["event"] == "notify-failed"], 30, "the give-up")
            reason = (f"the SMTP server 127.0.0.1:{smtp.port} does not offer STARTTLS, and the "
                      "login of podod is not sent without TLS (allow_plaintext_auth: true "
                      "allows it, for a relay on loopback only); nothing was sent")
            assert rows[0]["detail"].endswith(reason)
            assert smtp.logins == [] and smtp.messages == []
            assert reason in stack.daemon.log() and "s3cret" not in stack.daemon.log()
        finally:
            stack.stop()
