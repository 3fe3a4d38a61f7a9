"""The SOGo commands' shapes (podod.mail.sogo): what the allow-list admits, the sudoers line
visudo accepts, and the Vacation value podod writes (podod.mail.commands.vacation)."""

from __future__ import annotations

import json
import subprocess
from datetime import date
from pathlib import Path

import pytest

from podod.errors import PermissionDenied, ValidationError
from podod.mail.commands.vacation import (
    check_message,
    check_subject,
    interval_days,
    vacation_value,
)
from podod.mail.settings import SogoSettings
from podod.mail.sogo import SogoLayout, check_address, sudoers_rule
from podod.servers.allowlist import AllowList

SETTINGS = SogoSettings(environment={"GNUSTEP_CONFIG_FILE": "/srv/sogo/GNUstep.conf"},
                        sieve_credentials_file="/etc/sogo/sieve.creds")
TOOL = ["sudo", "-n", "-u", "sogo", "/usr/bin/env", "GNUSTEP_CONFIG_FILE=/srv/sogo/GNUstep.conf",
        "/usr/sbin/sogo-tool"]


def allowlist(settings: SogoSettings = SETTINGS) -> AllowList:
    allowed = AllowList()
    SogoLayout(settings).allow(lambda *args, purpose: allowed.allow(*args, purpose=purpose))
    return allowed


def test_the_commands_podod_runs_are_admitted() -> None:
    allowed = allowlist()
    value = json.dumps({"Vacation": vacation_value(None, "a@example.com", "Away",
                                                   'Back "soon".\nBye', None, None, 1)},
                       separators=(",", ":"))
    for argv in (
            [*TOOL, "backup", "/var/backups/podod-sogo/20261207T101500Z-a1b2c3", "a@example.com"],
            [*TOOL, "remove", "a@example.com"],
            [*TOOL, "rename-user", "a@example.com", "b@example.org"],
            [*TOOL, "restore", "-F", "ALL", "/var/backups/podod-sogo/20261207T101500Z-a1b2c3",
             "a@example.com"],
            [*TOOL, "user-preferences", "get", "defaults", "a@example.com", "Vacation"],
            [*TOOL, "user-preferences", "set", "defaults", "a@example.com", "-p",
             "/etc/sogo/sieve.creds", "Vacation", value],
            ["sudo", "-n", "-u", "sogo", "/usr/bin/mkdir", "-p", "-m", "0700", "--",
             "/var/backups/podod-sogo/20261207T101500Z-a1b2c3"],
            ["sudo", "-n", "-u", "sogo", "/usr/bin/mv", "-T", "--",
             "/var/backups/podod-sogo/20261207T101500Z-a1b2c3",
             "/var/backups/podod-sogo/20261207T101501Z-d4e5f6"]):
        allowed.check(argv)


@pytest.mark.parametrize("argv", [
    [*TOOL, "user-preferences", "set", "defaults", "a@example.com", "-p",
     "/etc/sogo/sieve.creds", "SOGoLanguage", '{"SOGoLanguage":"French"}'],
    [*TOOL, "user-preferences", "set", "defaults", "a@example.com", "-p", "/tmp/other",
     "Vacation", '{"Vacation":{}}'],
    [*TOOL, "remove", "ALL"],
    [*TOOL, "remove", "a@example.com", "b@example.com"],
    [*TOOL, "remove", "-x@example.com"],
    [*TOOL, "backup", "/tmp/elsewhere/20261207T101500Z-a1b2c3", "a@example.com"],
    [*TOOL, "backup", "/var/backups/podod-sogo/../x", "a@example.com"],
    [*TOOL, "user-preferences", "set", "defaults", "a@example.com", "-p",
     "/etc/sogo/sieve.creds", "Vacation", '{"Vacation":{}}\n'],
    ["sudo", "-n", "-u", "root", "/usr/sbin/sogo-tool", "remove", "a@example.com"],
    ["sudo", "-n", "-u", "sogo", "/usr/bin/mv", "-T", "--",
     "/var/backups/podod-sogo/20261207T101500Z-a1b2c3", "/etc/sogo/sogo.conf"],
])
def test_anything_else_is_refused(argv: list[str]) -> None:
    with pytest.raises(PermissionDenied):
        allowlist().check(argv)


def test_without_sieve_credentials_podod_cannot_write_preferences() -> None:
    allowed = allowlist(SogoSettings())
    with pytest.raises(PermissionDenied):
        allowed.check(["sudo", "-n", "-u", "sogo", "/usr/sbin/sogo-tool", "user-preferences",
                       "set", "defaults", "a@example.com", "-p", "/etc/sogo/sieve.creds",
                       "Vacation", '{"Vacation":{}}'])


def test_visudo_accepts_the_sudoers_line(tmp_path: Path) -> None:
    rule = sudoers_rule(SogoLayout(SETTINGS), "podod")
    assert rule.startswith("podod ALL=(sogo) NOPASSWD: /usr/bin/mkdir ^-p -m 0700 -- ")
    assert "GNUSTEP_CONFIG_FILE\\=/srv/sogo/GNUstep\\.conf" in rule
    path = tmp_path / "podod"
    path.write_text(rule + "\n")
    check = subprocess.run(["visudo", "-cqf", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr or check.stdout


def test_sudoers_without_run_as_is_one_sentence() -> None:
    with pytest.raises(ValidationError, match="run_as is null"):
        sudoers_rule(SogoLayout(SogoSettings(run_as=None)), "podod")


def test_addresses_outside_the_pattern_are_refused_before_anything_runs() -> None:
    check_address("a.b+c@example.com")
    with pytest.raises(ValidationError, match="podod passes only mailbox addresses"):
        check_address("A@example.com")


def test_vacation_keeps_what_the_user_set_in_sogo() -> None:
    current = {"enabled": 0, "autoReplyEmailAddresses": ["a@example.com", "alias@example.com"],
               "alwaysSend": 1, "ignoreLists": 0, "startDateEnabled": 1, "startDate": 1}
    value = vacation_value(current, "a@example.com", "Away", "Back.", None,
                           date(2027, 1, 4), 7)
    assert value["autoReplyEmailAddresses"] == ["a@example.com", "alias@example.com"]
    assert (value["alwaysSend"], value["ignoreLists"]) == (1, 0)
    assert (value["enabled"], value["daysBetweenResponse"]) == (1, 7)
    assert value["startDateEnabled"] == 0 and "startDate" not in value
    assert value["endDate"] == 1_799_064_000  # 2027-01-04 12:00 UTC


@pytest.mark.parametrize(("function", "value", "sentence"), [
    (check_subject, "a\tb", "--subject must not contain control characters"),
    (check_subject, "x" * 256, "--subject may have at most 255 characters, not 256"),
    (check_message, "ok\x07bell", "--message must not contain control characters other"),
    (check_message, "a\n..b", "line 2 of --message starts with '.'"),
])
def test_checks(function: object, value: str, sentence: str) -> None:
    with pytest.raises(ValidationError, match=sentence.replace(".", r"\.").replace("(", r"\(")):
        function(value)  # type: ignore[operator]


def test_interval() -> None:
    assert interval_days(None) == 1
    assert interval_days(7 * 86400) == 7
    for bad in (0.0, 3600.0, 31 * 86400.0):
        with pytest.raises(ValidationError, match="whole days from 1d to 30d"):
            interval_days(bad)


def test_messages_keep_their_line_breaks_and_tabs() -> None:
    assert check_message("Hi,\r\n\tback soon.\r\n") == "Hi,\n\tback soon."
