"""The e-mail notifier's SMTP password never travels without TLS unless the config says so:
tls: none with a username is refused, and check-config warns when the exception is allowed
for a host that is not on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from podod.config import parse_config
from podod.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EMAIL = {"type": "email", "from": "podod@example.org", "to": ["ops@example.org"],
         "username": "podod", "password": "pw"}


def test_tls_none_with_a_login_needs_the_explicit_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"alerts": {"notifiers": [{**EMAIL, "tls": "none"}]}},
                     source="podod.yaml")
    assert str(info.value) == (
        "podod.yaml: alerts.notifiers[0]: tls: none with a username would send the SMTP "
        "password without TLS; use tls: auto, starttls or implicit, or set "
        "allow_plaintext_auth: true (for a relay on loopback only)")
    allowed = parse_config({"alerts": {"notifiers": [
        {**EMAIL, "tls": "none", "allow_plaintext_auth": True}]}}, source="podod.yaml")
    assert allowed.alerts.notifiers[0].allow_plaintext_auth is True  # type: ignore[union-attr]
    parse_config({"alerts": {"notifiers": [{**EMAIL, "username": None, "tls": "none"}]}},
                 source="podod.yaml")


def test_check_config_warns_of_plaintext_logins_beyond_loopback(tmp_path: Path) -> None:
    def check(host: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "podod.yaml"
        path.write_text(yaml.safe_dump({"alerts": {"default_rules": False, "notifiers": [
            {**EMAIL, "smtp_host": host, "allow_plaintext_auth": True}]}}))
        return subprocess.run([sys.executable, "-m", "podod.cli", "check-config", "-c",
                               str(path)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO / "src")})

    run = check("relay.example.org")
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == [
        "warning: alerts.notifiers[0]: allow_plaintext_auth lets the SMTP password of podod "
        "go to relay.example.org without TLS, and that is not a loopback address"]
    for host in ("127.0.0.1", "::1", "localhost"):
        run = check(host)
        assert run.returncode == 0 and run.stderr == "", (host, run.stderr)
