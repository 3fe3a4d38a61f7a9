"""/api/monitoring/errors and /api/monitoring/security (the bus's ``monitoring errors`` and
``monitoring security``) from what podod collects: a real mail log followed by the traffic
counter, and the audit log's refusals."""

from __future__ import annotations

from pathlib import Path

from apitest import DOMADMIN, VIEWER, Api, api_sections
from maillogs import lines_of, truth

from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.waiting import poll

FAST = {"flush_interval": "200ms", "publish_interval": "200ms", "rotation_check": "300ms",
        "rotation_grace": "500ms"}


def test_errors_and_security_count_the_mail_log_and_podods_refusals(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    lines = lines_of(3000, 7)
    log.write_text("".join(lines))
    counted = truth(lines, None)
    sections = api_sections()
    config = base_config(tmp_path, servers=[{"name": "mx1", "local": True,
                                             "mail_log": str(log)}],
                         traffic={**FAST, "timezone": "UTC"}, **sections)
    daemon = DaemonProcess(write_config(tmp_path / "podod.yaml", config)).start()
    api = Api(f"http://127.0.0.1:{sections['api']['port']}")
    try:
        week = {"since": "400d"}
        assert poll(lambda: api.ok("GET", "/api/monitoring/errors", params=week)["data"]
                    ["bounced"] == counted.get("bounced", 0), 60, 0.2)
        errors = api.as_(VIEWER).ok("GET", "/api/monitoring/errors", params=week)["data"]
        assert errors["traffic_counted"] is True
        assert errors["deferred"] == counted.get("deferred", 0) > 0
        assert errors["deferrals"] == counted.get("deferrals", 0)
        assert errors["bounced"] > 0
        assert all(d["status"] != "sent" for d in errors["failed_deliveries"])

        api.as_("wrong-token").problem("GET", "/api/users", status=401)
        api.as_(VIEWER).problem("GET", "/api/backups", status=403)
        security = api.ok("GET", "/api/monitoring/security", params=week)["data"]
        assert security["sasl_auth_failures"] == counted.get("sasl_auth_failures", 0) > 0
        assert security["rejected"] == counted.get("rejected", 0)
        refused = {(r["actor"], r["outcome"]) for r in security["refused_requests"]}
        assert ("api:(unknown token)", "unauthenticated") in refused
        assert ("api:view", "forbidden") in refused
        # who was refused is for admins
        api.as_(VIEWER).problem("GET", "/api/monitoring/security", status=403)
        api.as_(DOMADMIN).problem("GET", "/api/monitoring/security", status=403)
        api.problem("GET", "/api/monitoring/errors", params={"server": "nope"}, status=404)
        api.problem("GET", "/api/monitoring/errors", params={"since": "0s"}, status=400)
    finally:
        daemon.stop()
