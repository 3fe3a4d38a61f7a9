"""Tunnels over the REST API (and so over the bus): status, stop (sandbox first, refused to
a viewer), start again, on a real sshd's local forward."""

from __future__ import annotations

import socket
from pathlib import Path

from apitest import VIEWER, Api, api_sections

from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.sshd import Sshd
from testbed.waiting import poll


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            return conn.recv(4).startswith(b"SSH-")  # the sshd's banner through the tunnel
    except OSError:
        return False


def test_a_tunnel_is_shown_stopped_and_started_through_the_api(sshd: Sshd,
                                                              tmp_path: Path) -> None:
    sections = api_sections()
    config = base_config(tmp_path, servers=[sshd.server_entry(
        "mx1", tunnels=[{"name": "ssh", "remote_port": sshd.port}])], **sections)
    daemon = DaemonProcess(write_config(tmp_path / "podod.yaml", config)).start()
    api = Api(f"http://127.0.0.1:{sections['api']['port']}")
    try:
        def tunnel() -> dict[str, object]:
            reply = api.call("GET", "/api/servers/mx1/tunnel/status")
            if reply.status_code != 200 or not reply.json()["data"]:
                return {}
            row: dict[str, object] = reply.json()["data"][0]
            return row

        assert poll(lambda: tunnel().get("open") is True, 30, 0.2)
        port = int(str(tunnel()["local_port"]))
        assert _reachable(port)
        api.as_(VIEWER).ok("GET", "/api/servers/mx1/tunnel/status")
        api.as_(VIEWER).problem("POST", "/api/servers/mx1/tunnel/stop",
                                {"tunnel": "ssh", "execute_real": True}, status=403)
        planned = api.ok("POST", "/api/servers/mx1/tunnel/stop", {"tunnel": "ssh"})
        assert planned["sandbox"] and planned["plan_id"] and tunnel()["open"] is True
        api.ok("POST", f"/api/plans/{planned['plan_id']}")
        assert tunnel()["open"] is False and tunnel()["stopped"] is True
        assert not _reachable(port)
        api.problem("POST", "/api/servers/mx1/tunnel/start",
                    {"tunnel": "nope", "execute_real": True}, status=404)
        api.problem("GET", "/api/servers/nope/tunnel/status", status=404)
        started = api.ok("POST", "/api/servers/mx1/tunnel/start",
                         {"tunnel": "ssh", "execute_real": True})
        assert f"127.0.0.1:{port}" in started["message"]  # the same local port
        assert tunnel()["open"] is True and _reachable(port)
    finally:
        daemon.stop()


def test_a_server_added_through_the_api_is_updated_and_reconnected(sshd: Sshd,
                                                                  tmp_path: Path) -> None:
    sections = api_sections()
    entry = sshd.server_entry("cfg")
    config = base_config(tmp_path, servers=[entry], **sections)
    daemon = DaemonProcess(write_config(tmp_path / "podod.yaml", config)).start()
    api = Api(f"http://127.0.0.1:{sections['api']['port']}")
    try:
        body = {k: entry[k] for k in ("host", "port", "user", "key_file", "known_hosts")}
        api.ok("POST", "/api/servers", {"name": "mx2", **body, "execute_real": True})
        assert poll(lambda: api.ok("GET", "/api/servers/mx2")["data"]["state"] ==
                    "connected", 30, 0.2)
        planned = api.ok("PUT", "/api/servers/mx2", {"services": ["postfix", "dovecot"],
                                                     "tunnel": [f"ssh:127.0.0.1:{sshd.port}"]})
        assert planned["sandbox"] and api.ok("GET", "/api/servers/mx2")["data"]["services"] \
            == []
        api.ok("POST", f"/api/plans/{planned['plan_id']}")
        shown = api.ok("GET", "/api/servers/mx2")["data"]
        assert shown["services"] == ["postfix", "dovecot"]
        assert [t["name"] for t in shown["tunnels"]] == ["ssh"]
        assert poll(lambda: api.ok("GET", "/api/servers/mx2")["data"]["state"] ==
                    "connected", 30, 0.2)
        # stored: a restart keeps the new settings
        assert "dovecot" in daemon.request(["server", "show", "mx2"])["data"]["services"]
        assert "nothing to change" in api.problem("PUT", "/api/servers/mx2", {},
                                                  status=400)["detail"]
        assert "podod.yaml" in api.problem("PUT", "/api/servers/cfg", {"port": 2222},
                                           status=409)["detail"]
        api.problem("PUT", "/api/servers/nope", {"port": 2222}, status=404)
        assert "absolute path" in api.problem("PUT", "/api/servers/mx2",
                                              {"key_file": "id_rsa"}, status=400)["detail"]
    finally:
        daemon.stop()
