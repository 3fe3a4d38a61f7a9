"""``podoctl help --json`` carries a JSON Schema of every command's input and reply, and the
daemon's real replies match them (the testbed checks every reply of the suite the same way;
these tests check it explicitly, and that the check would notice a mismatch)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from conftest import MailStack
from testbed.schemas import ReplySchemas

VALIDATOR = jsonschema.Draft202012Validator
PASSWORD = "Correct-Horse-7-Battery"


def help_json(mail: MailStack, *topic: str) -> Any:
    done = mail.daemon.podoctl("help", *topic, json_output=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["data"]


def test_podoctl_help_json_gives_valid_input_and_reply_schemas_of_every_command(
        mail: MailStack) -> None:
    entries = help_json(mail)
    status = mail.ok("status")["data"]
    assert len(entries) == status["commands"]  # every command, once
    for entry in entries:
        VALIDATOR.check_schema(entry["input_schema"])
        VALIDATOR.check_schema(entry["reply_schema"])
        assert entry["input_schema"]["title"] == entry["command"]
    one = help_json(mail, "user", "create")
    quota = one["input_schema"]["properties"]["quota_mb"]
    assert quota["type"] == "integer" and quota["minimum"] == 0
    assert one["input_schema"]["required"] == ["address"]
    shown = {e["command"]: e for e in entries}["user show"]["reply_schema"]
    assert "username" in shown["then"]["properties"]["data"]["required"]


def seed(mail: MailStack) -> None:
    mail.ok("domain", "create", "example.com", "--quota-mb", "3000", real=True)
    mail.ok("domain", "create", "example.net", real=True)
    mail.ok("user", "create", "alice@example.com", "--name", "Alice Doe", "--password-stdin",
            stdin=PASSWORD, real=True)
    mail.ok("alias", "create", "sales@example.com", "--to", "alice@example.com", real=True)
    mail.ok("domain-alias", "create", "old.example", "--to", "example.com", real=True)


READS = [["status"], ["help"], ["help", "user", "create"], ["user", "create", "--help"],
         ["domain", "list"], ["domain", "show", "example.com"], ["user", "list"],
         ["user", "show", "alice@example.com"], ["alias", "list"],
         ["alias", "show", "sales@example.com"], ["domain-alias", "list"], ["audit", "list"],
         ["audit", "verify"], ["backup", "list"], ["backup", "verify", "--all"],
         ["server", "list"], ["server", "commands"],
         ["user", "create", "bob@example.net", "--generate-password"],
         ["domain", "delete", "example.com", "--cascade"], ["alias", "delete", "sales@example.com"]]


def test_real_replies_match_the_declared_reply_schemas(mail: MailStack) -> None:
    seed(mail)
    schemas = {e["command"]: e["reply_schema"] for e in help_json(mail)}
    backup = mail.ok("backup", "list")["data"][0]["id"]
    for argv in [*READS, ["backup", "show", backup]]:
        done = mail.daemon.podoctl(*argv, json_output=True)
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
        reply = json.loads(done.stdout)
        assert reply["ok"], reply["message"]
        command = "help" if argv[-1] == "--help" else next(
            " ".join(argv[:n]) for n in (3, 2, 1) if " ".join(argv[:n]) in schemas)
        VALIDATOR(schemas[command]).validate(reply)
        if command.endswith(("list", "show")) and command != "server list":  # no servers
            assert reply["data"], f"{command}: nothing to check the shape of"


def test_the_suite_check_notices_a_reply_that_does_not_match(mail: MailStack) -> None:
    seed(mail)
    checker = ReplySchemas.from_help(mail.daemon.request(["help"]))
    reply = mail.daemon.request(["user", "list"])
    checker.check(["user", "list"], reply)
    reply["data"][0]["quota"] = "a lot"
    with pytest.raises(AssertionError, match=r"'user list' .* at data/0/quota"):
        checker.check(["user", "list"], reply)
    refused = mail.daemon.request(["user", "show", "nobody@example.com"])
    checker.check(["user", "show", "nobody@example.com"], refused)  # a refusal has no data
