"""Mail administration through the real daemon and a real PostgreSQL: sandbox, real changes
with verified backups, restore, and every kind of bad input leaving the database unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MailStack, make_mail_config
from podod.mail.passwords import verify_password
from testbed.daemon import DaemonProcess
from testbed.postgres import PgCluster

PASSWORD = "Correct-Horse-7-Battery"


def seed(mail: MailStack) -> None:
    mail.ok("domain", "create", "example.com", "--max-mailboxes", "3", "--quota-mb", "3000",
            "--max-quota-mb", "1024", real=True)
    mail.ok("user", "create", "alice@example.com", "--name", "Alice Doe", "--password-stdin",
            stdin=PASSWORD, real=True)
    mail.ok("alias", "create", "sales@example.com", "--to", "alice@example.com,bob@remote.org",
            real=True)


def test_sandbox_changes_nothing_and_shows_the_plan(mail: MailStack) -> None:
    seed(mail)
    before = mail.dump()
    for argv, stdin in [
        (["domain", "create", "example.org"], None),
        (["domain", "update", "example.com", "--description", "Example"], None),
        (["user", "create", "bob@example.com", "--generate-password"], None),
        (["user", "update", "alice@example.com", "--quota-mb", "512"], None),
        (["user", "reset-password", "alice@example.com", "--password-stdin"], "New-Pass-9-word"),
        (["alias", "create", "@example.com", "--to", "alice@example.com"], None),
        (["alias", "update", "sales@example.com", "--add", "carol@remote.org"], None),
        (["domain-alias", "create", "old.example", "--to", "example.com"], None),
        (["user", "delete", "alice@example.com"], None),
        (["domain", "delete", "example.com", "--cascade"], None),
    ]:
        reply = mail.ok(*argv, stdin=stdin)
        assert reply["sandbox"] is True and reply["backup_id"] is None, argv
        assert reply["changes"], argv
        assert "secret" not in reply
    assert mail.dump() == before
    # The sentence of a sandbox run says what would happen, not that it happened.
    for argv, said in [
            (["domain", "update", "example.com", "--description", "E"],
             "domain example.com would be updated"),
            (["user", "update", "alice@example.com", "--name", "A"],
             "mailbox alice@example.com would be updated")]:
        assert mail.ok(*argv)["message"] == said
    plan = mail.ok("domain", "delete", "example.com", "--cascade")
    assert plan["message"] == ("domain example.com would be deleted: 5 rows (1 mailbox, "
                               "2 alias, 1 quota2)")
    assert [(c["action"], c["target"], c["key"]) for c in plan["changes"]] == [
        ("delete", "quota2", "alice@example.com"), ("delete", "alias", "alice@example.com"),
        ("delete", "alias", "sales@example.com"), ("delete", "mailbox", "alice@example.com"),
        ("delete", "domain", "example.com")]


def test_real_changes_are_backed_up_and_restorable(mail: MailStack) -> None:
    seed(mail)
    assert mail.sql("SELECT goto FROM alias WHERE address='alice@example.com'") == \
        "alice@example.com"
    stored = mail.sql("SELECT password FROM mailbox WHERE username='alice@example.com'")
    assert stored.startswith("{SHA512-CRYPT}$6$rounds=5000$")
    assert verify_password(PASSWORD, stored)
    before = mail.dump()
    reply = mail.ok("user", "delete", "alice@example.com", real=True)
    backup = str(reply["backup_id"])
    assert backup and mail.sql("SELECT count(*) FROM mailbox") == "0"
    assert mail.ok("backup", "verify", backup)["message"] == "1 backup verified"
    shown = mail.ok("backup", "show", backup)
    assert shown["data"]["command"] == "user delete" and shown["data"]["problems"] == []
    sandbox = mail.ok("backup", "restore", backup)
    assert sandbox["sandbox"] and mail.sql("SELECT count(*) FROM mailbox") == "0"
    restored = mail.ok("backup", "restore", backup, real=True)
    assert restored["backup_id"]  # the restore is itself backed up
    assert mail.dump() == before
    folder = Path(str(shown["data"]["path"]))
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert PASSWORD not in "".join(p.read_text() for p in folder.rglob("*.json"))


def test_generated_password_is_shown_once_and_never_audited(mail: MailStack) -> None:
    mail.ok("domain", "create", "example.com", real=True)
    reply = mail.ok("user", "create", "bob@example.com", "--generate-password", real=True)
    secret = str(reply["secret"])
    assert len(secret) >= 20
    stored = mail.sql("SELECT password FROM mailbox WHERE username='bob@example.com'")
    assert verify_password(secret, stored)
    audit = mail.ok("audit", "list", "--limit", "50")
    assert secret not in json.dumps(audit)
    state = sqlite3.connect(mail.root / "state" / "state.db")
    dump = "\n".join(state.iterdump())
    assert secret not in dump and PASSWORD not in dump
    assert secret not in mail.daemon.log()


def test_podoctl_password_stdin_and_real_change(mail: MailStack) -> None:
    mail.ok("domain", "create", "example.com", real=True)
    result = mail.daemon.podoctl("--execute-real", "--yes", "user", "create",
                                 "carol@example.com", "--name", "Carol", "--password-stdin",
                                 input=PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    assert "mailbox carol@example.com created" in result.stdout
    assert "podoctl backup restore" in result.stdout and "--execute-real" in result.stdout
    listed = mail.daemon.podoctl("user", "list", json_output=True)
    assert [u["username"] for u in json.loads(listed.stdout)["data"]] == ["carol@example.com"]
    bad = mail.daemon.podoctl("user", "create", "nope@@example.com", "--generate-password")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("Error: 'nope@@example.com' is not an e-mail address (it "
                                  "needs exactly one @)")


@pytest.mark.parametrize(("argv", "stdin", "message"), [
    (["user", "create", "alice@example.com", "--generate-password"], None,
     "the mailbox alice@example.com already exists"),
    (["user", "create", "x@nowhere.example", "--generate-password"], None,
     "the domain nowhere.example does not exist (create it with 'domain create "
     "nowhere.example')"),
    (["user", "create", "a..b@example.com", "--generate-password"], None,
     "the local part 'a..b' of 'a..b@example.com' has characters that are not allowed"),
    (["user", "create", "x@exa_mple.com", "--generate-password"], None,
     "'x@exa_mple.com': 'exa_mple.com' is not a valid domain name (the character '_' "
     "(U+005F) at position 4 of 'exa_mple' is not allowed)"),
    (["user", "create", "weak@example.com", "--password-stdin"], "short",
     "the password is too short: at least 12 characters are required"),
    (["user", "create", "big@example.com", "--quota-mb", "2048", "--generate-password"], None,
     "a mailbox of example.com may have at most 1024 MB, not 2048 MB"),
    (["user", "create", "nopw@example.com"], None,
     "user create: give either --password-stdin or --generate-password"),
    (["domain", "create", "example.com"], None, "the domain example.com already exists"),
    (["domain", "delete", "example.com"], None,
     "the domain example.com still has 1 mailbox, 2 aliases and 0 alias domains; delete "
     "them first or add --cascade"),
    (["alias", "create", "sales@example.com", "--to", "alice@example.com"], None,
     "the alias sales@example.com already exists"),
    (["alias", "create", "me@example.com", "--to", "me@example.com"], None,
     "the alias me@example.com cannot forward to itself"),
    (["alias", "create", "x@example.com", "--to", "ghost@example.com"], None,
     "the target ghost@example.com is in the local domain example.com but no mailbox or "
     "alias has that address"),
    (["alias", "update", "sales@example.com", "--add", "loop@example.com"], None,
     "the alias sales@example.com would create a loop: sales@example.com → "
     "loop@example.com → sales@example.com"),
    (["alias", "delete", "alice@example.com"], None,
     "alice@example.com is a mailbox's own alias row; delete the mailbox with 'user delete "
     "alice@example.com'"),
    (["domain-alias", "create", "example.com", "--to", "example.com"], None,
     "a domain cannot be an alias of itself (example.com)"),
    (["user", "show", "nobody@example.com"], None, "there is no mailbox nobody@example.com"),
    # Numbers a database column cannot hold, and text it cannot take, are refused up front
    # (they used to end as "failed on an internal error").
    (["domain", "update", "example.com", "--quota-mb", "9" * 20], None,
     f"domain update: --quota-mb must be at most 1000000000, not {'9' * 20}"),
    (["domain", "update", "example.com", "--max-mailboxes", "3000000000"], None,
     "domain update: --max-mailboxes must be at most 2147483647, not 3000000000"),
    (["user", "update", "alice@example.com", "--quota-mb", "-1"], None,
     "user update: --quota-mb must be at least 0, not -1"),
    (["user", "list", "--limit", "-1"], None, "user list: --limit must be at least 1, not -1"),
    (["backup", "list", "--limit", "0"], None, "backup list: --limit must be at least 1, not 0"),
    (["user", "update", "alice@example.com", "--name", "x" * 300], None,
     "--name may have at most 255 characters, not 300"),
    (["domain", "update", "example.com", "--description", "two\nlines"], None,
     "--description must not contain control characters such as a line break or a tab"),
    (["user", "create", "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + ".com",
      "--generate-password"], None, "the address 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…' "
     "has 260 characters; an e-mail address may have at most 254"),
])
def test_bad_input_is_one_sentence_and_changes_nothing(
        mail: MailStack, argv: list[str], stdin: str | None, message: str) -> None:
    seed(mail)
    mail.ok("alias", "create", "loop@example.com", "--to", "sales@example.com", real=True)
    before = mail.dump()
    got = mail.fail(*argv, stdin=stdin)
    assert got.startswith(message), got
    assert "\n" not in got and "Traceback" not in got
    assert mail.dump() == before


def test_what_the_database_refuses_is_one_sentence(mail: MailStack) -> None:
    """A rule the database enforces on its own (here a CHECK constraint an administrator
    added; also a row another tool created a moment ago) surfaces as one sentence, in the
    sandbox too, and nothing changes."""
    seed(mail)
    mail.sql("ALTER TABLE mailbox ADD CONSTRAINT no_test_names CHECK (name <> 'Test')")
    before = mail.dump()
    for real in (False, True):
        got = mail.fail("user", "update", "alice@example.com", "--name", "Test", real=real)
        assert got == ('the database refused the change: new row for relation "mailbox" '
                       'violates check constraint "no_test_names"; nothing was changed'), got
    assert mail.dump() == before
    assert "Traceback" not in mail.daemon.log()
    audit = json.dumps(mail.ok("audit", "list", "--limit", "5"))
    assert "SHA512-CRYPT" not in audit  # the failing row (with the hash) is never shown


def test_search_is_plain_text(mail: MailStack) -> None:
    """--search finds text, case-insensitively; '_' and '%' are characters, not wildcards."""
    seed(mail)
    for address, name in (("a_b@example.com", "Anna Berg"), ("axb@example.com", "Axel B")):
        mail.ok("user", "create", address, "--name", name, "--generate-password",
                "--quota-mb", "10", real=True)
    mail.ok("alias", "create", "fw@example.com", "--to", "axb@example.com", real=True)

    def users(*extra: str) -> list[str]:
        return [u["username"] for u in mail.ok("user", "list", *extra)["data"]]

    assert users("--search", "a_b") == ["a_b@example.com"]
    assert users("--search", "%") == []
    assert users("--search", "BERG") == ["a_b@example.com"]
    assert [a["address"] for a in mail.ok("alias", "list", "--search", "AXB")["data"]] == \
        ["fw@example.com"]
    assert [d["domain"] for d in mail.ok("domain", "list", "--search", "ample.c")["data"]] == \
        ["example.com"]
    # Only aliases forwarding to exactly this address are named after a delete.
    deleted = mail.ok("user", "delete", "a_b@example.com", real=True)
    assert not any("still forward" in n for n in deleted["notes"])


def test_a_database_that_is_down_is_one_sentence(pg: PgCluster, tmp_path: Path) -> None:
    from testbed.ports import free_port

    closed = free_port()
    path = make_mail_config(pg, tmp_path, "mail")
    path.write_text(path.read_text().replace(f"127.0.0.1:{pg.port}/", f"127.0.0.1:{closed}/"))
    daemon = DaemonProcess(path).start()  # the daemon starts anyway
    try:
        for real, argv in ((False, ["user", "list"]), (True, ["domain", "create", "x.org"])):
            reply = daemon.request(argv, execute_real=real)
            assert reply["code"] == "unavailable", reply
            assert reply["message"] == (f"the mail database at 127.0.0.1:{closed} cannot be "
                                        "reached: connection refused (is PostgreSQL running?)")
        assert "Traceback" not in daemon.log()
    finally:
        daemon.stop()


def test_domain_limits(mail: MailStack) -> None:
    seed(mail)
    mail.ok("user", "create", "b@example.com", "--quota-mb", "1000", "--generate-password",
            real=True)
    assert mail.fail("user", "create", "c@example.com", "--quota-mb", "1024",
                     "--generate-password") == \
        "the domain example.com has 976 MB of its 3000 MB quota left, not 1024 MB"
    mail.ok("user", "create", "c@example.com", "--quota-mb", "10", "--generate-password",
            real=True)
    assert mail.fail("user", "create", "d@example.com", "--quota-mb", "1",
                     "--generate-password") == \
        "the domain example.com already has its maximum of 3 mailboxes"


def test_backup_gate_failure_aborts_the_change(pg: PgCluster, tmp_path: Path,
                                               mail: MailStack) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the backup folder should be")
    root = tmp_path / "second"
    root.mkdir()
    path = make_mail_config(pg, root, mail.db)
    text = path.read_text().replace(str(root / "backups"), str(blocker / "backups"))
    path.write_text(text)
    daemon = DaemonProcess(path).start()
    try:
        before = mail.dump()
        reply = daemon.request(["domain", "create", "example.net"], execute_real=True)
        assert reply["ok"] is False and reply["code"] == "backup-failed"
        assert reply["message"] == ("the backup could not be taken (Not a directory: "
                                    f"{blocker}/backups); nothing was changed")
        assert mail.dump() == before
    finally:
        daemon.stop()


def test_domain_admin_is_scoped(pg: PgCluster, tmp_path: Path, public_dir: Path,
                                mail: MailStack) -> None:
    seed(mail)
    mail.ok("domain", "create", "other.org", real=True)
    root = tmp_path / "scoped"
    root.mkdir()
    config = make_mail_config(pg, root, mail.db, access={
        "unix_users": {"nobody": {"role": "domain-admin", "domains": ["example.com"]}}},
        socket={"path": str(public_dir / "podod.sock"), "mode": "0666"})
    daemon = DaemonProcess(config).start()
    try:
        ok = daemon.request_as(65534, ["user", "create", "dave@example.com",
                                       "--generate-password"], execute_real=True)
        assert ok["ok"], ok
        denied = daemon.request_as(65534, ["user", "create", "eve@other.org",
                                           "--generate-password"], execute_real=True)
        assert denied["code"] == "forbidden"
        assert denied["message"] == "unix:nobody may not manage the domain other.org"
        assert daemon.request_as(65534, ["domain", "delete", "other.org"])["code"] == \
            "forbidden"
        listed = daemon.request_as(65534, ["user", "list"])
        assert [u["username"] for u in listed["data"]] == ["alice@example.com",
                                                            "dave@example.com"]
        assert mail.sql("SELECT count(*) FROM mailbox WHERE domain='other.org'") == "0"
        # Other domains stay invisible to a domain-admin, as in PostfixAdmin.
        mail.ok("alias", "create", "info@other.org", "--to", "x@remote.example", real=True)
        mail.ok("domain-alias", "create", "old.org", "--to", "other.org", real=True)
        for argv in (["alias", "show", "info@other.org"], ["domain", "show", "other.org"],
                     ["user", "list", "--domain", "other.org"],
                     ["alias", "list", "--domain", "other.org"]):
            hidden = daemon.request_as(65534, argv)
            assert hidden["code"] == "forbidden", (argv, hidden)
            assert hidden["message"] == "unix:nobody may not manage the domain other.org"
        assert daemon.request_as(65534, ["domain-alias", "list"])["data"] == []
        assert daemon.request_as(65534, ["alias", "show", "sales@example.com"])["ok"]
    finally:
        daemon.stop()


def test_sogo_view_and_password_change_through_it(mail: MailStack) -> None:
    seed(mail)
    assert mail.sql("SELECT c_uid, c_cn, mail, domain FROM sogo_users") == \
        "alice@example.com|Alice Doe|alice@example.com|example.com"
    mail.sql("UPDATE sogo_users SET c_password='{SHA512-CRYPT}x' WHERE c_uid='alice@example.com'")
    assert mail.sql("SELECT password FROM mailbox") == "{SHA512-CRYPT}x"
    mail.ok("user", "update", "alice@example.com", "--active", "no", real=True)
    assert mail.sql("SELECT count(*) FROM sogo_users") == "0"
    mail.ok("user", "update", "alice@example.com", "--active", "yes", real=True)
    mail.ok("domain", "update", "example.com", "--active", "no", real=True)
    assert mail.sql("SELECT count(*) FROM sogo_users") == "0"


def test_db_init_is_idempotent_and_check_names_what_is_missing(pg: PgCluster,
                                                               mail: MailStack) -> None:
    run = [sys.executable, "-m", "podod.cli", "db"]
    again = subprocess.run([*run, "init", "-c", str(mail.config_path)], capture_output=True,
                           text=True)
    assert again.returncode == 0 and "up to date (version 2)" in again.stdout
    pg.create_database("foreign", "podod")
    pg.psql("CREATE TABLE domain (domain varchar(255) PRIMARY KEY, active integer); "
            "CREATE TABLE mailbox (username varchar(255) PRIMARY KEY); "
            "ALTER TABLE domain OWNER TO podod; ALTER TABLE mailbox OWNER TO podod", "foreign")
    path = mail.config_path.read_text().replace(f"/{mail.db}", "/foreign")
    foreign = mail.root / "foreign.yaml"
    foreign.write_text(path)
    check = subprocess.run([*run, "check", "-c", str(foreign)], capture_output=True, text=True)
    assert check.returncode == 1
    assert "  - column domain.description is missing" in check.stderr
    assert "  - column domain.active is integer, expected a bool type" in check.stderr
    assert "  - table alias is missing" in check.stderr
    # Only a warning: podod manages mailboxes without SOGo's view.
    assert "warning: view sogo_users is missing: SOGo's SQL user source reads it" in \
        check.stderr
    assert "Traceback" not in check.stderr


def test_pg_dump_backup_is_taken_verified_and_restorable(pg: PgCluster, tmp_path: Path,
                                                         mail: MailStack) -> None:
    seed(mail)
    root = tmp_path / "dumping"
    root.mkdir()
    path = make_mail_config(pg, root, mail.db, backup={"pg_dump": True})
    before = mail.dump()
    with DaemonProcess(path) as daemon:
        # A change backs up its rows only; the pg_dump is part of a full backup.
        reply = daemon.request(["user", "delete", "alice@example.com"], execute_real=True)
        assert reply["ok"], reply
        change = daemon.request(["backup", "show", str(reply["backup_id"])])
        assert change["data"]["manifest"]["pg_dump"] is False
        assert not (Path(change["data"]["path"]) / "dump.pgc").exists()
        assert daemon.request(["backup", "restore", str(reply["backup_id"])],
                              execute_real=True)["ok"]
        assert mail.dump() == before
        taken = daemon.request(["backup", "take"])
        assert taken["ok"], taken
        shown = daemon.request(["backup", "show", str(taken["data"]["id"])])
        refused = daemon.request(["backup", "restore", str(taken["data"]["id"])])
    assert refused["exit_code"] == 2 and "is a full copy of the mail database" in \
        refused["message"]
    folder = Path(shown["data"]["path"])
    assert shown["data"]["problems"] == [] and shown["data"]["manifest"]["pg_dump"] is True
    assert "dump.pgc" in (folder / "SHA256SUMS").read_text()
    dump = (folder / "dump.pgc").read_bytes()
    pg.create_database("restored", "podod")
    try:
        pg.restore(dump, "restored")  # the whole database as it was before the change
        assert pg.dump("restored") == before
    finally:
        pg.drop_database("restored")
    as_sql = subprocess.run(["pg_restore", "-f", "-", str(folder / "dump.pgc")],
                            capture_output=True, text=True, check=True).stdout
    assert "alice@example.com" in as_sql and "{SHA512-CRYPT}$6$" in as_sql
    assert PASSWORD not in as_sql
    every_file = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert PASSWORD.encode() not in every_file and b"podod-owner-pw" not in every_file


@pytest.mark.parametrize(("program", "reason"), [
    ("/nonexistent/pg_dump", "pg_dump cannot run: /nonexistent/pg_dump: No such file or "
                             "directory"),
    ("/bin/false", "pg_dump: exit status 1"),
])
def test_a_failing_pg_dump_fails_the_full_backup(pg: PgCluster, tmp_path: Path, mail: MailStack,
                                             program: str, reason: str) -> None:
    root = tmp_path / "failing"
    root.mkdir()
    path = make_mail_config(pg, root, mail.db,
                            backup={"pg_dump": True, "pg_dump_path": program})
    before = mail.dump()
    with DaemonProcess(path) as daemon:
        reply = daemon.request(["backup", "take"])
        assert reply["code"] == "backup-failed"
        assert reply["message"] == f"the full backup could not be taken ({reason})"
        assert daemon.request(["backup", "list"])["data"] == []
        audit = daemon.request(["audit", "list", "--command", "backup take"])["data"]
    assert mail.dump() == before
    assert list((root / "backups").iterdir()) == []  # no half-written folder stays
    assert audit[0]["outcome"] == "backup-failed" and audit[0]["backup_id"] is None


def test_every_request_is_audited_with_its_backup_and_restore_is_too(mail: MailStack) -> None:
    seed(mail)
    sandbox = mail.ok("user", "update", "alice@example.com", "--name", "Alice D.")
    real = mail.ok("user", "update", "alice@example.com", "--name", "Alice D.", real=True)
    mail.ok("user", "list")
    restore_plan = mail.ok("backup", "restore", str(real["backup_id"]))
    restored = mail.ok("backup", "restore", str(real["backup_id"]), real=True)
    assert mail.sql("SELECT name FROM mailbox") == "Alice Doe"
    records = mail.ok("audit", "list", "--limit", "7")["data"]
    got = [(r["command"], bool(r["execute_real"]), r["outcome"], r["backup_id"])
           for r in reversed(records)]  # oldest first
    assert got == [  # a real change is recorded before it runs, then with its outcome
        ("user update", False, "sandbox", None),
        ("user update", True, "intent", None),
        ("user update", True, "ok", real["backup_id"]),
        ("user list", False, "ok", None),
        ("backup restore", False, "sandbox", None),
        ("backup restore", True, "intent", None),
        ("backup restore", True, "ok", restored["backup_id"]),
    ]
    assert sandbox["backup_id"] is None and restore_plan["backup_id"] is None
    assert restored["backup_id"] != real["backup_id"]
    assert mail.ok("backup", "show", str(restored["backup_id"]))["data"]["command"] == \
        "backup restore"


def test_the_printed_restore_command_undoes_the_change(mail: MailStack) -> None:
    seed(mail)
    before = mail.dump()
    change = mail.daemon.podoctl("--execute-real", "--yes", "alias", "update",
                                 "sales@example.com", "--set", "carol@remote.org")
    assert change.returncode == 0, change.stderr
    line = next(ln for ln in change.stdout.splitlines() if "undo with:" in ln)
    command = line.split("undo with: ", 1)[1].split()
    assert command[0] == "podoctl" and command[1:3] == ["backup", "restore"]
    assert command[-1] == "--execute-real"
    undo = mail.daemon.podoctl("--yes", *command[1:])
    assert undo.returncode == 0, undo.stderr
    assert mail.dump() == before


@pytest.mark.parametrize(("raw", "stored"), [
    ("Bücher.Example", "xn--bcher-kva.example"),
    ("EXAMPLE.ORG.", "example.org"),
    ("пример.рф", "xn--e1afmkfd.xn--p1ai"),
])
def test_idn_domains_are_stored_as_punycode(mail: MailStack, raw: str, stored: str) -> None:
    reply = mail.ok("domain", "create", raw, real=True)
    assert reply["data"] == {"domain": stored}
    mail.ok("user", "create", f"Info@{raw}", "--generate-password", real=True)
    assert mail.sql("SELECT username, domain FROM mailbox") == f"info@{stored}|{stored}"


@pytest.mark.parametrize(("argv", "message"), [
    (["domain", "create", "bad_label.example"],
     "'bad_label.example' is not a valid domain name (the character '_' (U+005F) at "
     "position 4 of 'bad_label' is not allowed)"),
    (["domain", "create", "-lead.example"],
     "'-lead.example' is not a valid domain name (the label '-lead' starts or ends with a "
     "hyphen)"),
    (["domain", "create", "xn--zz.example"],
     "'xn--zz.example' is not a valid domain name (the label 'xn--zz' is not valid "
     "punycode)"),
    (["domain", "create", "a..b.example"],
     "'a..b.example' is not a valid domain name (it has an empty label: two dots in a row)"),
    (["domain", "create", "localhost"],
     "'localhost' is not a valid domain name (it needs a dot, like example.com)"),
    (["user", "create", "jürgen@example.com", "--generate-password"],
     "the local part 'jürgen' of 'jürgen@example.com' has characters that are not allowed"),
    (["user", "create", "a b@example.com", "--generate-password"],
     "the local part 'a b' of 'a b@example.com' has characters that are not allowed"),
    (["alias", "create", "x@example.com", "--to", "bob@exa mple.org"],
     "'bob@exa mple.org': 'exa mple.org' is not a valid domain name (the character ' ' "
     "(U+0020) at position 4 of 'exa mple' is not allowed)"),
])
def test_bad_addresses_name_the_offending_part(mail: MailStack, argv: list[str],
                                               message: str) -> None:
    mail.ok("domain", "create", "example.com", real=True)
    before = mail.dump()
    got = mail.fail(*argv)
    assert got.startswith(message), got
    assert "\n" not in got and mail.dump() == before


def test_user_delete_keeps_the_maildir_unless_asked_and_says_so_truthfully(
        mail: MailStack) -> None:
    seed(mail)
    mail.ok("user", "create", "bob@example.com", "--generate-password", real=True)
    kept = mail.ok("user", "delete", "bob@example.com", real=True)
    assert kept["notes"] == ["The maildir example.com/bob/ stays on the mail server."]
    # Without mail.maildir.server podod cannot move it: refused before anything changes
    # (test_maildirs.py moves real maildirs).
    before = mail.dump()
    for real in (False, True):
        assert mail.fail("user", "delete", "alice@example.com", "--remove-maildir",
                         real=real) == (
            "--remove-maildir needs mail.maildir.server in podod.yaml (the server that holds "
            "the maildirs; see docs/mail.md); nothing was changed")
    assert mail.dump() == before
    asked = mail.ok("user", "delete", "alice@example.com", real=True)
    assert asked["notes"] == [
        "The maildir example.com/alice/ stays on the mail server.",
        "Aliases that still forward to alice@example.com: sales@example.com (update or "
        "delete them)."]
    assert mail.sql("SELECT count(*) FROM mailbox") == "0"


def test_hashing_workers_run_apart_and_stop_with_the_daemon(mail: MailStack) -> None:
    import psutil

    mail.ok("domain", "create", "example.com", real=True)
    mail.ok("user", "create", "a@example.com", "--generate-password", real=True)
    daemon = psutil.Process(mail.daemon.proc.pid)  # type: ignore[union-attr]
    workers = [c.pid for c in daemon.children()]
    assert 1 <= len(workers) <= (os.cpu_count() or 1)
    mail.daemon.stop()
    for pid in workers:
        assert not psutil.pid_exists(pid) or \
            psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_damaged_backup_is_reported_and_not_restored(mail: MailStack) -> None:
    seed(mail)
    reply = mail.ok("user", "update", "alice@example.com", "--name", "Changed", real=True)
    backup = str(reply["backup_id"])
    folder = Path(str(mail.ok("backup", "show", backup)["data"]["path"]))
    rows = folder / "rows.json"
    rows.write_text(rows.read_text().replace("Alice Doe", "Mallory"))
    verify = mail.daemon.request(["backup", "verify", "--all"])
    assert verify["ok"] is False and verify["exit_code"] == 1
    assert verify["message"] == (f"1 of 4 backups do not verify: {backup}: rows.json does not "
                                 "match its checksum")
    before = mail.dump()
    refused = mail.fail("backup", "restore", backup)
    assert refused == (f"backup {backup} is damaged (rows.json does not match its checksum); "
                       "it cannot be restored")
    assert mail.dump() == before


def _rewrite_sums(folder: Path) -> None:
    """What someone who can write the backup folder can do: make SHA256SUMS agree."""
    names = [line.split("  ", 1)[1] for line in (folder / "SHA256SUMS").read_text().splitlines()]
    (folder / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n" for n in names))


def test_a_backup_forged_with_matching_sha256sums_is_caught(mail: MailStack) -> None:
    """The catalog in state.db holds the manifest's hash and the manifest every file's, so
    a rows.json rewritten together with SHA256SUMS does not verify, and is not restored."""
    seed(mail)
    backup = str(mail.ok("user", "update", "alice@example.com", "--name", "Changed",
                         real=True)["backup_id"])
    folder = Path(str(mail.ok("backup", "show", backup)["data"]["path"]))
    rows = folder / "rows.json"
    rows.write_text(rows.read_text().replace('"mailbox"', '"mailbox; DROP TABLE domain --"'))
    _rewrite_sums(folder)
    problem = "rows.json does not match its checksum in manifest.json"
    assert mail.fail("backup", "verify", backup) == \
        f"1 of 1 backups do not verify: {backup}: {problem}"
    before = mail.dump()
    assert mail.fail("backup", "restore", backup) == \
        f"backup {backup} is damaged ({problem}); it cannot be restored"
    assert mail.dump() == before
    (folder / "manifest.json").write_text("{not json")
    _rewrite_sums(folder)
    shown = mail.ok("backup", "show", backup)  # still shown, and says why it is broken
    assert shown["data"]["problems"] == ["manifest.json differs from the one in the catalog"]
