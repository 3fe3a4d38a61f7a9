"""A domain-admin sees and learns only their own domains in the read commands that span
domains (issue 11): traffic top and report, queue summary, and the notes of user delete.
Other domains' rows are left out, or counted together as '(other domains)', never named."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from maillogs import lines_of, truth
from test_queue_and_probes import QueueingPostfix, queued

from conftest import MailStack, make_mail_config
from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.waiting import poll

__all__ = ["queued"]  # the module fixture with a real Postfix holding deferred mail

NOBODY = 65534
FAST = {"flush_interval": "200ms", "publish_interval": "200ms", "rotation_check": "300ms",
        "rotation_grace": "500ms"}


@pytest.fixture(autouse=True)
def as_root() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("needs root to ask as another user")
    yield


def grant(public_dir: Path, *domains: str) -> dict[str, Any]:
    return {"socket": {"path": str(public_dir / "s.sock"), "mode": "0666"},
            "access": {"unix_users": {"nobody": {"role": "domain-admin",
                                                 "domains": list(domains)}}}}


def in_org(item: str) -> bool:
    return item.rpartition("@")[2] == "example.org"


def test_traffic_top_and_report_show_a_domain_admin_their_domains_only(
        start_daemon: Callable[..., DaemonProcess], public_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    lines = lines_of(3000, 5)
    log.write_text("".join(lines))
    daemon = start_daemon(servers=[{"name": "mx1", "local": True, "mail_log": str(log)}],
                          traffic={**FAST, "timezone": "UTC"},
                          **grant(public_dir, "example.org"))
    received = truth(lines)["received"]
    assert poll(lambda: daemon.request(["traffic", "report", "--since", "400d"])["data"]
                ["received"] == received, 60, 0.2)
    for what, key in (("senders", "address"), ("recipients", "address"),
                      ("sender-domains", "domain"), ("recipient-domains", "domain")):
        argv = ["traffic", "top", what, "--since", "400d", "--limit", "1000"]
        everyone = daemon.request(argv)["data"]
        assert any(not in_org(row[key]) for row in everyone), what  # an admin sees all
        mine = daemon.request_as(NOBODY, argv)
        assert mine["ok"], mine
        assert mine["data"], what
        assert all(in_org(row[key]) for row in mine["data"]), (what, mine["data"])
        assert all(row in everyone for row in mine["data"])
        assert mine["notes"] == [
            "Only rows of your domains (example.org) are shown; other domains are left out "
            "or counted together as '(other domains)'."]
    report = daemon.request_as(NOBODY, ["traffic", "report", "--since", "400d",
                                        "--top", "50"])
    assert report["ok"] and report["data"]["received"] == received
    for name, key in (("top_senders", "address"), ("top_recipients", "address"),
                      ("top_sender_domains", "domain"), ("top_recipient_domains", "domain")):
        assert report["data"][name], name
        assert all(in_org(row[key]) for row in report["data"][name]), (name, report["data"])


def test_queue_summary_names_only_a_domain_admins_domains(
        queued: tuple[QueueingPostfix, dict[str, str]], public_dir: Path,
        tmp_path: Path) -> None:
    postfix, domains = queued
    d1 = domains["d1"]
    config = base_config(tmp_path, servers=[{"name": "here", "local": True,
                                             "services": ["postfix"]}],
                         monitor={"collectors": {"queue": {
                             "config_dir": str(postfix.config_dir)}}},
                         **grant(public_dir, d1))
    with DaemonProcess(write_config(tmp_path / "podod.yaml", config)) as daemon:
        mine = daemon.request_as(NOBODY, ["queue", "summary"])
        assert mine["ok"], mine
        [data] = mine["data"]
        assert data["messages"]["deferred"] == 4
        assert [(d["domain"], d["recipients"], d["messages"])
                for d in data["deferred_domains"]] == [(d1, 1, 1), ("(other domains)", 5, 3)]
        assert data["deferred_domains"][1]["reasons"] == []
        assert [row[1] for row in mine["table"]["rows"]] == [d1, "(other domains)"]
        for hidden in (domains["d2"], "far.example", "grey.example"):
            assert hidden not in str(mine), hidden
        # an admin still sees every domain
        assert len(daemon.request(["queue", "summary"])["data"][0]["deferred_domains"]) == 4


def test_user_delete_does_not_name_other_domains_aliases_to_a_domain_admin(
        mail: MailStack, public_dir: Path, tmp_path: Path) -> None:
    mail.ok("domain", "create", "example.com", real=True)
    mail.ok("domain", "create", "other.org", real=True)
    mail.ok("user", "create", "alice@example.com", "--generate-password", real=True)
    mail.ok("alias", "create", "sales@example.com", "--to", "alice@example.com", real=True)
    mail.ok("alias", "create", "secret-list@other.org", "--to", "alice@example.com",
            real=True)
    root = tmp_path / "scoped"
    root.mkdir()
    config = make_mail_config(mail.pg, root, mail.db, **grant(public_dir, "example.com"))
    with DaemonProcess(config) as daemon:
        reply = daemon.request_as(NOBODY, ["user", "delete", "alice@example.com"])
        assert reply["ok"], reply
        assert reply["notes"] == [
            "The maildir example.com/alice/ stays on the mail server.",
            "Aliases that still forward to alice@example.com: sales@example.com (update or "
            "delete them).",
            "1 alias of other domains still forwards to alice@example.com (an admin can see "
            "which)."]
    assert "secret-list@other.org" in str(mail.ok("user", "delete", "alice@example.com"))
