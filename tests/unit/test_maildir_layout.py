"""The maildir commands' shapes: what the allow-list admits (and what it never admits), the
settings' path rules, maildir columns, trash entries; and the pool-floor log filter."""

from __future__ import annotations

import logging
import sys

import pytest

from podod.config import parse_config
from podod.errors import ConfigError, PermissionDenied, ValidationError
from podod.mail.database import _PoolFloorFilter
from podod.mail.maildirs import MaildirLayout, split_maildir, stamp, sudoers_rule
from podod.mail.settings import MaildirSettings
from podod.servers.allowlist import AllowList

ROOT, TRASH = "/var/vmail", "/var/vmail/.podod-trash"
HOME = "/var/vmail/example.com/alice"
ENTRY = "/var/vmail/.podod-trash/example.com/alice-20250102T030405Z"


def allowlist(run_as: str | None = "vmail") -> AllowList:
    allowed = AllowList()
    MaildirLayout(ROOT, TRASH, run_as).allow(allowed.allow)
    return allowed


def test_the_allow_list_admits_exactly_the_maildir_commands() -> None:
    allowed = allowlist()
    sudo = ["sudo", "-n", "-u", "vmail"]
    for argv in (["test", "-d", HOME], ["test", "-d", TRASH],
                 ["mkdir", "-p", "--", f"{TRASH}/example.com"],
                 ["mkdir", "-p", "--", f"{ROOT}/example.com"],
                 ["mv", "-T", "--", HOME, ENTRY], ["mv", "-T", "--", ENTRY, HOME],
                 ["mv", "-T", "--", HOME, f"{ROOT}/example.org/alice.doe"],
                 ["find", TRASH, "-mindepth", "2", "-maxdepth", "2", "-type", "d"],
                 ["rm", "-rf", "--", ENTRY]):
        allowed.check(sudo + argv)
        with pytest.raises(PermissionDenied):
            allowed.check(argv)  # not without sudo when run_as is set
    refused = [
        ["mv", "-T", "--", "/var/vmail/example.com/../../../etc", ENTRY],   # '..'
        ["mv", "-T", "--", "/var/vmail/example.com/-rf", ENTRY],            # leading dash
        ["mv", "-T", "--", "/var/vmail/.podod-trash/x", ENTRY],             # hidden: the trash
        ["mv", "-T", "--", "/etc/passwd/x", ENTRY],                          # outside the root
        ["mv", "-T", "--", "/var/vmailx/example.com/alice", ENTRY],         # a look-alike root
        ["mv", "-T", "--", HOME, "/tmp/example.com/alice-20250102T030405Z"],
        ["mv", "-T", "--", HOME, "/var/vmail/.podod-trash/example.com/alice"],  # no stamp
        ["mv", HOME, ENTRY],
        ["mv", "-T", "--", HOME, f"{ROOT}/example.org/.alice"],             # hidden target
        ["mv", "-T", "--", HOME, f"{ROOT}/example.org/a/b"],                # deeper than a home
        ["mv", "-T", "--", HOME, f"{ROOT}/.podod-trash/alice"],              # into the trash
        ["mv", "-T", "--", HOME, "/tmp/example.org/alice"],                 # outside the root
        ["mv", "-T", "--", f"{ROOT}/example.com", f"{ROOT}/example.org"],   # a whole domain
        ["rm", "-rf", "--", HOME],                                           # only the trash
        ["rm", "-rf", "--", TRASH],
        ["rm", "-rf", "--", f"{TRASH}/example.com"],
        ["rm", "-rf", "/", ENTRY],
        ["mkdir", "-p", "--", "/var/vmail/.podod-trash/a/b"],
        ["test", "-d", "/var/vmail/a b/c"],
        ["find", TRASH, "-delete"],
    ]
    for argv in refused:
        with pytest.raises(PermissionDenied):
            allowed.check(sudo + argv)
    with pytest.raises(PermissionDenied):
        allowed.check(["sudo", "-n", "-u", "root", "mv", "-T", "--", HOME, ENTRY])
    plain = allowlist(run_as=None)
    plain.check(["mv", "-T", "--", HOME, ENTRY])
    with pytest.raises(PermissionDenied):
        plain.check([*sudo, "mv", "-T", "--", HOME, ENTRY])


def test_the_sudoers_rule_names_every_command_once() -> None:
    rule = sudoers_rule(MaildirLayout(ROOT, TRASH, "vmail"), "podod")
    assert rule.startswith("podod ALL=(vmail) NOPASSWD: /usr/bin/test ^-d (/var/vmail/")
    assert rule.count(", /usr/bin/") == 6
    assert r"/var/vmail/\.podod-trash -mindepth 2 -maxdepth 2 -type d$" in rule
    with pytest.raises(ValidationError, match="run_as is null"):
        sudoers_rule(MaildirLayout(ROOT, TRASH, None), "podod")


def test_maildir_columns_and_trash_entries() -> None:
    assert split_maildir("example.com/alice/", "alice@example.com") == ("example.com", "alice")
    assert split_maildir("xn--bcher-kva.example/first.last+tag", "x") == (
        "xn--bcher-kva.example", "first.last+tag")
    for bad in ("../x/", "example.com/../", "example.com/-x/", "/example.com/a/", "a/b/c/",
                "example.com/", "", "example.com/a b/", "example.com/.hidden/"):
        with pytest.raises(ValidationError, match="is not DOMAIN/NAME/"):
            split_maildir(bad, "a@example.com")
    layout = MaildirLayout(ROOT, TRASH, "vmail")
    when = 1735787045.0  # 2025-01-02 03:04:05 UTC
    assert stamp(when) == "20250102T030405Z"
    assert layout.entry_path("example.com", "alice", when) == ENTRY
    entry = layout.parse_entry(ENTRY)
    assert entry is not None and entry.moved_at == when
    assert (entry.entry, entry.address) == ("example.com/alice-20250102T030405Z",
                                            "alice@example.com")
    assert layout.entry_named("example.com/alice-20250102T030405Z") == entry
    for bad in (f"{TRASH}/example.com/alice", f"{TRASH}/x/../y-20250102T030405Z",
                "/elsewhere/example.com/alice-20250102T030405Z"):
        assert layout.parse_entry(bad) is None


def _maildir(**values: object) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config({"mail": {"maildir": values}}, source="podod.yaml")
    return err.value.message


def test_maildir_settings_refuse_unsafe_paths() -> None:
    default = MaildirSettings()
    assert (default.root, default.trash_path, default.run_as) == (ROOT, TRASH, "vmail")
    assert MaildirSettings(root="/srv/mail/", trash="/srv/trash/").trash_path == "/srv/trash"
    assert _maildir(root="var/vmail") == ("podod.yaml: mail.maildir.root: must be an absolute "
                                          "folder path (not /) of letters, digits and "
                                          "'._+@-', for example /var/vmail")
    assert _maildir(root="/var/vmail/../etc").endswith("must not contain a '..' segment")
    assert _maildir(trash="/var/-trash").endswith("must not contain a '-trash' segment")
    assert _maildir(root="/var/v mail").startswith("podod.yaml: mail.maildir.root: must be ")
    assert _maildir(root="/").startswith("podod.yaml: mail.maildir.root: must be ")
    assert _maildir(trash="/var/vmail/trash").endswith(
        "a trash inside root must be a hidden folder (its name starting with '.', e.g. "
        "/var/vmail/.podod-trash), so no domain's folder can be mistaken for it")
    assert _maildir(trash="/var").endswith("trash must not be root or a folder above it")
    assert _maildir(run_as="root; id") == (
        "podod.yaml: mail.maildir.run_as: 'root; id' is not a user name")
    assert _maildir(trash_days=-1).startswith("podod.yaml: mail.maildir.trash_days: must be ")
    assert _maildir(purge_interval="-5s").startswith("podod.yaml: mail.maildir.purge_interval")


def test_the_pool_floor_warning_is_one_line_once() -> None:
    floor = _PoolFloorFilter()

    def record() -> logging.LogRecord:
        try:
            raise ConnectionRefusedError(111, "Connect call failed")
        except OSError:
            exc_info = sys.exc_info()
        return logging.LogRecord("asyncpg.pool", logging.WARNING, "pool.py", 1,
                                 "Failed to restore the pool connection floor; retrying",
                                 (), exc_info)

    first = record()
    assert floor.filter(first) is True
    assert first.getMessage() == ("the mail database pool cannot reconnect (connection "
                                  "refused); retrying with backoff")
    assert first.exc_info is None and first.levelno == logging.WARNING
    again = record()
    floor.filter(again)
    assert again.levelno == logging.DEBUG and again.exc_info is None
    other = logging.LogRecord("asyncpg.pool", logging.WARNING, "pool.py", 1, "else", (), None)
    assert floor.filter(other) is True and other.levelno == logging.WARNING
