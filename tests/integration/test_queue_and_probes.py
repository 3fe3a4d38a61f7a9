"""The queue collector and `queue summary` on a REAL Postfix with deferred and held mail
(LMTP and the relay are down; a sender is put on hold), its saved output as fixtures, and the
protocol probes against the real Postfix, Dovecot and SOGo of the test bed."""

from __future__ import annotations

import json
import os
import smtplib
import tempfile
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from conftest import READER, READER_PW, MailStack, login, new_domain
from podod.monitor.collect import CollectContext
from podod.monitor.collectors.queue import collect_queue, parse_postqueue
from podod.monitor.collectors.services import collect_services
from podod.plugins import Registry, load_builtins
from podod.servers.runner import LocalRunner
from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.dovecot import Dovecot
from testbed.ports import free_port
from testbed.postfix import Postfix
from testbed.runtime import runtime_for
from testbed.sogo import SOGo
from testbed.sshd import Sshd

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class Greylisting:
    """A real SMTP server (aiosmtpd) that answers every RCPT with a temporary failure."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        return f"450 4.2.0 <{address}>: Recipient address rejected: Greylisted"


class QueueingPostfix(Postfix):
    """The test bed's Postfix, with mail that cannot leave: LMTP points at a closed port,
    far.example is relayed to a closed port, grey.example to a greylisting server, and mail
    from hold@sender.example is held."""

    def __init__(self, *args: Any, closed_port: int, grey_port: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.closed_port = closed_port
        self.grey_port = grey_port

    def write_config(self) -> None:
        super().write_config()
        main = self.config_dir / "main.cf"
        main.write_text(main.read_text() + (
            "relay_domains = far.example grey.example\n"
            f"transport_maps = inline:{{ far.example=smtp:[127.0.0.1]:{self.closed_port}, "
            f"grey.example=smtp:[127.0.0.1]:{self.grey_port} }}\n"
            "smtpd_sender_restrictions = check_sender_access "
            "inline:{ hold@sender.example=HOLD }\n"))
        old = time.time() - 60  # postfix commands sleep while main.cf looks fresh
        os.utime(main, (old, old))


@pytest.fixture(scope="module")
def queued(stack: MailStack, daemons_tmp: Path) -> Iterator[tuple[QueueingPostfix, dict[str,
                                                                                      str]]]:
    d1, d2 = new_domain(stack), new_domain(stack)
    for address in (f"alice@{d1}", f"bob@{d2}", f"carol@{d2}"):
        stack.ok("user", "create", address, "--generate-password", real=True)
    grey = Controller(Greylisting(), hostname="127.0.0.1", port=free_port())
    grey.start()
    # A folder of its own: another module that imports this fixture gets its own instance,
    # which must not find this one's queue (its counts would double).
    folder = Path(tempfile.mkdtemp(prefix="postfix-queue-", dir=daemons_tmp))
    postfix = QueueingPostfix(folder, login(stack.pg, READER, READER_PW),
                              lmtp_port=free_port(), closed_port=free_port(),
                              grey_port=grey.port)
    postfix.start()
    mails = [("someone@sender.example", [f"alice@{d1}"], 1),
             ("someone@sender.example", [f"bob@{d2}", f"carol@{d2}"], 20),
             ("someone@sender.example", ["x@far.example"], 3),
             ("someone@sender.example", ["y@grey.example", "z@grey.example"], 1),
             ("hold@sender.example", [f"alice@{d1}"], 2)]
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=10) as smtp:
        for sender, recipients, kib in mails:
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = sender, ", ".join(recipients), "queued"
            msg.set_content("x" * 1024 * kib)
            smtp.send_message(msg, from_addr=sender, to_addrs=recipients)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the first delivery attempts fail at once
        entries = postfix.queue()
        if sorted(e["queue_name"] for e in entries) == ["deferred"] * 4 + ["hold"]:
            break
        time.sleep(0.2)
    yield postfix, {"d1": d1, "d2": d2}
    postfix.stop()
    grey.stop()


def test_real_postqueue_output_is_read_and_saved(queued: tuple[QueueingPostfix, dict[str, str]]
                                                 ) -> None:
    postfix, domains = queued
    raw = postfix.command("postqueue", "-c", str(postfix.config_dir), "-j").stdout
    report = parse_postqueue(raw)
    assert report.messages == {"active": 0, "deferred": 4, "hold": 1, "incoming": 0,
                               "maildrop": 0}
    assert report.unparsed == 0
    assert report.size["deferred"] > 24 * 1024 and report.size["hold"] > 2 * 1024
    assert ((domains["d2"], next(r for d, r in report.deferrals if d == domains["d2"]))
            in report.deferrals)
    by_domain = {d: n for (d, _r), n in report.deferrals.items()}
    assert by_domain == {domains["d1"]: 1, domains["d2"]: 2, "far.example": 1,
                         "grey.example": 2}  # y@ and z@: one reason once addresses blank
    assert report.deferred_messages[domains["d2"]] == 1
    reasons = {d: r for (d, r) in report.deferrals}
    assert reasons["far.example"] == (f"connect to 127.0.0.1[ip]:{postfix.closed_port}: "
                                      "Connection refused")
    assert reasons[domains["d1"]] == (f"connect to 127.0.0.1[ip]:{postfix.lmtp_port}: "
                                      "Connection refused")
    assert reasons["grey.example"] == (
        "host 127.0.0.1[ip] said: 450 4.2.0 <address>: Recipient address rejected: "
        "Greylisted (in reply to RCPT TO command)")
    # keep it as the fixture the unit-level tests read (domains made stable)
    text = raw.replace(domains["d1"], "d1.example").replace(domains["d2"], "d2.example")
    saved = FIXTURES / "postqueue-j.txt"
    if not saved.exists() or os.environ.get("PODOD_REFRESH_FIXTURES") == "1":
        saved.write_text(text)


def test_saved_postqueue_fixture_parses_with_damage() -> None:
    text = (FIXTURES / "postqueue-j.txt").read_text()
    lines = text.splitlines()
    assert len(lines) == 5 and all(json.loads(line)["queue_id"] for line in lines)
    extra = json.loads(lines[0])
    extra["queue_name"] = "corrupt"  # a queue podod does not know
    extra["future_member"] = {"x": 1}  # members podod does not know are ignored
    damaged = "\n".join([*lines, "{not json", '["a", "list"]', '{"queue_id": "X"}',
                         json.dumps(extra), "", lines[1]])
    report = parse_postqueue(damaged)
    assert report.unparsed == 3
    assert report.other_queues == 1
    assert report.messages == {"active": 0, "deferred": 5, "hold": 1, "incoming": 0,
                               "maildrop": 0}
    assert {d for d, _r in report.deferrals} == {"d1.example", "d2.example", "far.example",
                                                 "grey.example"}
    assert parse_postqueue("").messages == dict.fromkeys(report.messages, 0)


async def test_queue_collector_on_the_live_postfix(
        queued: tuple[QueueingPostfix, dict[str, str]], tmp_path: Path) -> None:
    postfix, _ = queued
    registry = Registry()
    load_builtins(registry, ["podod.monitor.collectors"])
    servers = [{"name": "here", "local": True, "services": ["postfix"]}]
    monitor = {"collectors": {"queue": {"config_dir": str(postfix.config_dir)}}}
    async with runtime_for(tmp_path, registry, servers=servers, monitor=monitor) as rt:
        server = rt.config.servers[0]
        ctx = CollectContext(rt, "queue", server, LocalRunner("here", registry.allowlist), {})
        samples = await collect_queue(ctx)
    values = {(s.series, dict(s.labels).get("queue")): s.value for s in samples}
    assert values[("postfix_queue_messages", "deferred")] == 4
    assert values[("postfix_queue_messages", "hold")] == 1
    assert values[("postfix_queue_messages", "active")] == 0
    assert values[("postfix_queue_size_bytes", "deferred")] > 24 * 1024
    assert 0 < values[("postfix_queue_oldest_message_age_seconds", "deferred")] < 600
    assert values[("postfix_queue_oldest_message_age_seconds", "maildrop")] == 0
    assert values[("postfix_queue_unparsed_lines", None)] == 0


def test_queue_summary_and_its_bad_input(queued: tuple[QueueingPostfix, dict[str, str]],
                                         tmp_path: Path) -> None:
    postfix, domains = queued
    servers = [{"name": "here", "local": True, "services": ["postfix"]},
               {"name": "broken", "local": True}, {"name": "quiet", "local": True}]
    monitor = {"collectors": {"queue": {"config_dir": str(postfix.config_dir), "servers": {
        "broken": {"config_dir": str(tmp_path / "no-such-postfix")}}}}}
    path = write_config(tmp_path / "podod.yaml",
                        base_config(tmp_path, servers=servers, monitor=monitor))
    with DaemonProcess(path) as daemon:
        out = daemon.podoctl("queue", "summary")
        assert out.returncode == 0, out.stderr
        assert "here: 4 deferred, 1 hold" in out.stdout
        assert "could not read the queue of broken: '/usr/sbin/postqueue -c" in out.stdout
        assert "quiet" not in out.stdout  # no postfix there
        data = daemon.request(["queue", "summary"])["data"][0]
        assert data["messages"]["deferred"] == 4 and data["more_domains"] == 0
        listed = [(d["domain"], d["recipients"], d["messages"])
                  for d in data["deferred_domains"]]
        assert listed == sorted([("grey.example", 2, 1), (domains["d2"], 2, 1),
                                 ("far.example", 1, 1), (domains["d1"], 1, 1)],
                                key=lambda t: (-t[1], t[0]))
        grey = data["deferred_domains"][0]
        assert grey["reasons"] == [{"recipients": 2, "reason": (
            "host 127.0.0.1[ip] said: 450 4.2.0 <address>: Recipient address rejected: "
            "Greylisted (in reply to RCPT TO command)")}]
        limited = daemon.request(["queue", "summary", "--limit", "1"])["data"][0]
        assert len(limited["deferred_domains"]) == 1 and limited["more_domains"] == 3
        for argv, words in [
            (["queue", "summary", "--server", "nope"], "no server named 'nope'"),
            (["queue", "summary", "--limit", "0"], "--limit must be between 1 and 1000"),
            (["queue", "summary", "--server", "broken"], "could not read the queue of broken"),
        ]:
            bad = daemon.request(argv)
            assert not bad["ok"] and words in bad["message"], bad["message"]
            assert "\n" not in bad["message"]


@pytest.fixture(scope="module")
def root_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """An sshd that lets root in: only root may read a Postfix instance with its own config
    folder (another user needs it in the default main.cf's alternate_config_directories,
    and this machine has no default main.cf)."""
    if os.geteuid() != 0:
        pytest.skip("an sshd for root needs root")
    server = Sshd(tmp_path_factory.mktemp("root-sshd"), user="root").start()
    yield server
    server.close()


def test_queue_over_ssh(queued: tuple[QueueingPostfix, dict[str, str]], root_sshd: Sshd,
                        tmp_path: Path) -> None:
    """The same queue read through a real sshd."""
    postfix, _ = queued
    servers = [root_sshd.server_entry("mx1", services=["postfix"])]
    monitor = {"enabled": True, "interval": "1s", "store": {"flush_interval": 0.2},
               "collectors": {"queue": {"config_dir": str(postfix.config_dir)}}}
    path = write_config(tmp_path / "podod.yaml",
                        base_config(tmp_path, servers=servers, monitor=monitor))
    with DaemonProcess(path) as daemon:
        deadline = time.monotonic() + 30
        reply: dict[str, Any] = {}
        while time.monotonic() < deadline:
            reply = daemon.request(["metrics", "query", "postfix_queue_messages", "--server",
                                    "mx1", "--label", "queue=deferred", "--since", "5m"])
            if reply["ok"] and reply["data"]["results"][0]["points"]:
                break
            time.sleep(0.2)
        assert reply["ok"], (reply, daemon.request(["collector", "list"])["data"])
        assert reply["data"]["results"][0]["points"][-1]["value"] == 4


async def test_probes_against_the_real_mail_servers(postfix: Postfix, dovecot: Dovecot,
                                                    sogo: SOGo, tmp_path: Path) -> None:
    registry = Registry()
    load_builtins(registry, ["podod.monitor.collectors"])
    probes = {"smtp": {"port": postfix.smtp_port}, "imap": {"port": dovecot.imap_port},
              "sogo": {"url": f"http://{{host}}:{sogo.port}/SOGo/"},
              "submission": {"port": dovecot.imap_port},  # an IMAP server: no SMTP banner
              "imaps": {"enabled": False}}
    servers = [{"name": "here", "local": True, "services": ["postfix", "dovecot", "sogo"]}]
    monitor = {"collectors": {"services": {"timeout": "3s", "probes": probes}}}
    async with runtime_for(tmp_path, registry, servers=servers, monitor=monitor) as rt:
        ctx = CollectContext(rt, "services", rt.config.servers[0],
                             LocalRunner("here", registry.allowlist), {})
        samples = await collect_services(ctx)
    success = {dict(s.labels)["probe"]: s.value for s in samples
               if s.series == "probe_success"}
    assert success == {"smtp": 1.0, "imap": 1.0, "sogo": 1.0, "submission": 0.0}
    durations = {dict(s.labels)["probe"]: s.value for s in samples
                 if s.series == "probe_duration_seconds"}
    assert 0 < durations["smtp"] < 3 and 0 < durations["imap"] < 3
