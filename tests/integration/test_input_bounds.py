"""Input an attacker would try, through podoctl and a real daemon: numbers that are no numbers,
passwords crypt cannot hash, and data that looks like terminal markup."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import MailStack
from podod.mail.passwords import verify_password
from testbed.daemon import DaemonProcess

Start = Callable[..., DaemonProcess]


def test_non_finite_durations_are_usage_errors(start_daemon: Start, tmp_path: Path) -> None:
    """`traffic report --since nan` and `metrics query node_load1 --since nan` used to end in
    "failed on an internal error"."""
    log = tmp_path / "mail.log"
    log.write_text("")
    daemon = start_daemon(servers=[{"name": "mx1", "local": True, "mail_log": str(log)}],
                          monitor={"enabled": True})
    assert daemon.podoctl("traffic", "report", "--since", "1h").returncode == 0
    for argv in ([*command, value] for value in ("nan", "inf", "-inf", "1e309", "1e300")
                 for command in (["traffic", "report", "--since"],
                                 ["metrics", "query", "node_load1", "--since"],
                                 ["metrics", "query", "node_load1", "--since", "1h", "--step"])):
        out = daemon.podoctl(*argv)
        assert out.returncode == 2, (argv, out)
        lines = out.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {argv[0]} {argv[1]}: --"), \
            (argv, out.stderr)
        assert "internal error" not in out.stderr and out.stdout == ""
    # the largest duration is safe to compute with: an answer, or one sentence of the command
    assert daemon.podoctl("audit", "list", "--since", "36500d").returncode == 0
    for argv, sentence in ((["traffic", "report"], "--since can reach back at most 400 days"),
                           (["metrics", "query", "node_load1"], "is beyond the 90d")):
        out = daemon.podoctl(*argv, "--since", "36500d")
        assert out.returncode == 2 and sentence in out.stderr, out  # a value to fix: 2
        assert len(out.stderr.splitlines()) == 1 and "internal error" not in out.stderr
    assert "Traceback" not in daemon.log()


LONG = ("Correct-Horse-Battery-7-" * 22)[:520]  # 520 bytes: libxcrypt's hash would be "*0"


def test_a_password_too_long_to_hash_is_refused_and_changes_nothing(mail: MailStack) -> None:
    """`user reset-password --password-stdin` with a 520-byte password used to answer
    "password of ceo@b.example changed" and store "{SHA512-CRYPT}*0"."""
    mail.ok("domain", "create", "b.example", real=True)
    mail.ok("user", "create", "ceo@b.example", "--generate-password", real=True)
    before = mail.dump()
    stored = mail.sql("SELECT password FROM mailbox WHERE username = 'ceo@b.example'")
    assert stored.startswith("{SHA512-CRYPT}$6$rounds=5000$"), stored
    for password, message in [
            (LONG, "the password is too long: at most 256 characters are allowed, not 520"),
            ("Null-\x00-Byte-Password", "the password must not contain control characters "
                                        "such as U+0000"),
            ("Clear-\x1b[2J-Screen-1", "the password must not contain control characters "
                                       "such as U+001B")]:
        for argv in (["user", "reset-password", "ceo@b.example"],
                     ["user", "create", "cfo@b.example"]):
            for real in (["--execute-real", "--yes"], []):
                out = mail.daemon.podoctl(*real, *argv, "--password-stdin",
                                          input=password + "\n")
                assert out.returncode == 2, (argv, out)
                assert out.stderr == f"Error: {message}\n", out.stderr
                assert "changed" not in out.stdout and "created" not in out.stdout
    assert mail.dump() == before
    assert mail.sql("SELECT password FROM mailbox WHERE username = 'ceo@b.example'") == stored
    # a long password that fits is hashed, checked and works
    fits = LONG[:256]
    out = mail.daemon.podoctl("--execute-real", "--yes", "user", "reset-password",
                              "ceo@b.example", "--password-stdin", input=fits + "\n")
    assert out.returncode == 0 and "password of ceo@b.example changed" in out.stdout, out
    new = mail.sql("SELECT password FROM mailbox WHERE username = 'ceo@b.example'")
    assert new != stored and verify_password(fits, new) and not verify_password(LONG, new)


def test_podoctl_shows_markup_in_data_literally(mail: MailStack) -> None:
    """A mailbox named `[/]` made `podoctl user list` die with rich's MarkupError."""
    mail.ok("domain", "create", "b.example", real=True)
    names = {"ceo@b.example": "[/]", "cfo@b.example": "[link=http://evil.example]Bob[/link]",
             "cto@b.example": "[conceal]hidden[/conceal] :thumbs_up:"}
    for address, name in names.items():
        mail.ok("user", "create", address, "--name", name, "--generate-password", real=True)
    for argv in (["user", "list"], ["user", "list", "--search", "[/]"],
                 ["user", "show", "ceo@b.example"]):
        out = mail.daemon.podoctl(*argv)
        assert out.returncode == 0, (argv, out.stderr)
        assert out.stderr == "" and "[/]" in out.stdout, (argv, out.stdout)
    listed = mail.daemon.podoctl("user", "list").stdout
    for name in names.values():
        assert name in listed, listed
    # the sandbox plan and an error message quote data too
    plan = mail.daemon.podoctl("user", "update", "ceo@b.example", "--name", "[bold]x[/bold]")
    assert plan.returncode == 0 and "name=[bold]x[/bold]" in plan.stdout, plan
    bad = mail.daemon.podoctl("user", "show", "[/]@b.example")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("Error: ") and "[/]@b.example" in bad.stderr, bad.stderr
