"""The REST API's live events from a real daemon: a client subscribed to alerts receives
the alert when a real sshd stops (and the server's disconnection), and a domain-admin's
stream carries the alerts of their own domain only."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from apitest import ADMIN, DOMADMIN, DOMAIN_A, DOMAIN_B, REPO, VIEWER, Api, api_sections, sse

from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.sshd import Sshd
from testbed.waiting import poll

RULES = {"rules": [
    {"name": "ServerUnreachable", "series": "ssh_connected", "op": "==", "threshold": 0,
     "for": "1s", "severity": "critical",
     "summary": "{{ server }}: podod cannot reach the server over SSH"},
    {"name": "DomainBounces", "series": "domain_bounces", "op": ">", "threshold": 0,
     "severity": "warning", "summary": "bounces"}]}


class Follower:
    def __init__(self, api: Api, token: str, streams: str) -> None:
        self.seen: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=sse, args=(api, token, streams, self.seen,
                                                         self.ready, self.stop), daemon=True)
        self.thread.start()
        assert self.ready.wait(15)

    def alerts(self, state: str = "firing") -> list[dict[str, Any]]:
        return [e["event"] for e in self.seen
                if e["stream"] == "alerts" and e["event"]["state"] == state]


def test_alerts_reach_subscribers_when_sshd_stops_and_only_their_domains(
        private_sshd: Sshd, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(RULES))
    sections = api_sections()
    config = base_config(
        tmp_path, servers=[private_sshd.server_entry("mx1")],
        alerts={"enabled": True, "rule_files": [str(rules)], "default_rules": False,
                "evaluation_interval": "0.3s", "group_wait": "0.5s", "resolve_wait": "0.3s"},
        plugins={"dirs": [str(REPO / "tests" / "plugins")], "entry_points": False},
        **sections)
    daemon = DaemonProcess(write_config(tmp_path / "podod.yaml", config)).start()
    api = Api(f"http://127.0.0.1:{sections['api']['port']}")
    try:
        def state() -> str:
            reply = daemon.request(["server", "show", "mx1"])
            return str(reply["data"]["state"]) if reply["ok"] else ""

        assert poll(lambda: state() == "connected", 30, 0.2)
        admin = Follower(api, ADMIN, "alerts,server_health")
        viewer = Follower(api, VIEWER, "alerts")
        domain_admin = Follower(api, DOMADMIN, "alerts,server_health")

        private_sshd.stop()
        assert poll(lambda: bool(admin.alerts()), 60, 0.1), admin.seen
        fired = admin.alerts()[0]
        assert (fired["rule"], fired["server"], fired["severity"]) == \
            ("ServerUnreachable", "mx1", "critical")
        assert fired["summary"] == "mx1: podod cannot reach the server over SSH"
        assert any(e["stream"] == "server_health" and e["event"]["state"] == "disconnected"
                   for e in admin.seen)
        assert poll(lambda: bool(viewer.alerts()), 10, 0.1)

        # Alerts about domains: each domain-admin sees their own domain's only.
        for domain in (DOMAIN_B, DOMAIN_A):
            reply = daemon.request(["feed", "samples"], stdin=json.dumps(
                [{"series": "domain_bounces", "server": "mx1", "value": 3,
                  "labels": {"domain": domain}}]))
            assert reply["ok"], reply
        assert poll(lambda: len([a for a in admin.alerts() if a["rule"] == "DomainBounces"])
                    == 2, 30, 0.1), admin.seen
        assert poll(lambda: any(a["rule"] == "DomainBounces"
                                for a in domain_admin.alerts()), 10, 0.1)
        time.sleep(1)  # anything else on its way has arrived
        mine = domain_admin.alerts()
        assert [a["labels"]["domain"] for a in mine] == [DOMAIN_A]
        assert all(a["rule"] != "ServerUnreachable" for a in mine)  # names no domain
        # the server's own health is no domain's secret
        assert any(e["stream"] == "server_health" for e in domain_admin.seen)
        for follower in (admin, viewer, domain_admin):
            follower.stop.set()
    finally:
        daemon.stop()
