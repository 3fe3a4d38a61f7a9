"""Secrets of issues 4 and 5 never show: an SSH key's passphrase (right and wrong), the
postgres collector's password, the webhook's URL and token, the SMTP password, the Matrix
access token and the Alertmanager token stay out of the log, the audit records, /metrics,
`server show`, `status`, `alerts history` and state.db, while every one of them is used and
fails (so the error paths are walked too)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.daemon import DaemonProcess
from testbed.ports import free_port
from testbed.sshd import Sshd

pytestmark = pytest.mark.integration

SECRETS = {
    "passphrase": "PassphraseSECRET1",
    "wrong_passphrase": "WrongPassphraseSECRET2",
    "pg": "PgPasswordSECRET3",
    "url": "UrlTokenSECRET4",
    "token": "BearerTokenSECRET5",
    "smtp": "SmtpPasswordSECRET6",
    "matrix": "MatrixTokenSECRET7",
    "alertmanager": "AlertmanagerTokenSECRET8",
}


def secret_file(root: Path, name: str, text: str) -> str:
    path = root / name
    path.write_text(text + "\n")
    path.chmod(0o600)
    return str(path)


def test_no_secret_shows_anywhere(private_sshd: Sshd, tmp_path: Path,
                                  start_daemon: Callable[..., DaemonProcess]) -> None:
    key = tmp_path / "pp_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", SECRETS["passphrase"], "-f",
                    str(key)], check=True)
    with open(private_sshd.authorized_keys, "a") as keys:
        keys.write("restrict,port-forwarding " + Path(f"{key}.pub").read_text())
    closed = free_port()  # nothing listens: every notifier fails and retries
    port = free_port()
    daemon = start_daemon(
        servers=[
            private_sshd.server_entry("mx1", key_file=str(key), key_passphrase_file=secret_file(
                tmp_path, "pp", SECRETS["passphrase"]), tunnels=[{"name": "pg",
                                                                  "remote_port": closed}]),
            private_sshd.server_entry("mx3", key_file=str(key),
                                      key_passphrase=SECRETS["wrong_passphrase"])],
        monitor={"enabled": True, "interval": "1s", "collectors": {"postgres": {"servers": {
            "mx1": {"dsn": "postgresql://monitor@127.0.0.1/postgres", "tunnel": "pg",
                    "password_file": secret_file(tmp_path, "pgpw", SECRETS["pg"])}}}}},
        alerts={"enabled": True, "default_rules": False, "group_wait": "0.2s",
                "evaluation_interval": "0.5s",
                "rule_files": [secret_file(tmp_path, "rules.yaml", json.dumps({"rules": [
                    {"name": "Up", "series": "ssh_connected", "op": "==", "threshold": 1,
                     "summary": "{{ server }} is up"}]}))],
                "notifiers": [
                    {"type": "webhook", "give_up_after": "2s", "retry_initial": "0.2s",
                     "url_file": secret_file(tmp_path, "url", f"http://127.0.0.1:{closed}/"
                                             f"hook?token={SECRETS['url']}"),
                     "token_file": secret_file(tmp_path, "tok", SECRETS["token"])},
                    {"type": "email", "smtp_host": "127.0.0.1", "smtp_port": closed,
                     "username": "podod", "from": "podod@example.org",
                     "to": ["postmaster@example.org"], "give_up_after": "2s",
                     "password_file": secret_file(tmp_path, "smtp", SECRETS["smtp"])},
                    {"type": "matrix", "homeserver": f"http://127.0.0.1:{closed}",
                     "user_id": "@podod:example.org", "room_id": "!ops:example.org",
                     "give_up_after": "2s",
                     "access_token_file": secret_file(tmp_path, "mtok", SECRETS["matrix"])},
                    {"type": "alertmanager", "url": f"http://127.0.0.1:{closed}",
                     "give_up_after": "2s",
                     "token_file": secret_file(tmp_path, "amtok", SECRETS["alertmanager"])},
                ]},
        metrics={"enabled": True, "listen": "127.0.0.1", "port": port})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # every notifier gave up once: its errors are logged
        history = daemon.request(["alerts", "history"])["data"]
        failed = {h["detail"].split(":")[0] for h in history if h["event"] == "notify-failed"}
        if failed >= {"webhook", "email", "matrix", "alertmanager"}:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the notifiers did not all fail: {failed}")
    mx1 = daemon.request(["server", "show", "mx1"])
    mx3 = daemon.request(["server", "show", "mx3"])
    assert mx1["data"]["state"] == "connected", mx1
    assert "passphrase" in str(mx3["data"]["last_error"]).lower(), mx3
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        metrics = resp.read().decode()
    seen = {
        "log": daemon.log(),
        "server show": json.dumps([mx1, mx3]),
        "server list": json.dumps(daemon.request(["server", "list"])),
        "status": json.dumps(daemon.request(["status"])),
        "alerts history": json.dumps(daemon.request(["alerts", "history"])),
        "alerts list": json.dumps(daemon.request(["alerts", "list", "--all"])),
        "audit": json.dumps(daemon.request(["audit", "list", "--limit", "1000"])),
        "metrics": metrics,
        "collector list": json.dumps(daemon.request(["collector", "list"])),
    }
    state = daemon.config_path.parent / "state"
    for db in ("state.db", "metrics.db"):
        with sqlite3.connect(state / db) as conn:
            seen[db] = "\n".join(conn.iterdump())
    for where, text in seen.items():
        for what, secret in SECRETS.items():
            assert secret not in text, f"the {what} secret shows in {where}"
    assert "Traceback" not in seen["log"]
    # each failure is one line of podod's (nio's own "Timed out" for a refused connection
    # misled)
    assert "Timed out, sleeping" not in seen["log"]
    assert "notifier matrix gave up" in seen["log"]
