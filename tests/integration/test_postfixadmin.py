"""A database PostfixAdmin 3.3 made itself (Debian's package: its upgrade.php built the schema,
its postfixadmin-cli added the mailboxes), managed by podod, and read back by PostfixAdmin:
both ways, without podod altering PostfixAdmin's schema (issue 12)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from conftest import (
    PFA_PASSWORDS,
    READER,
    READER_PW,
    ROLES,
    PostfixAdminDb,
    login,
    make_mail_config,
)
from podod.config import load_config
from podod.mail.database import MailDatabase, MailUnitOfWork
from testbed.daemon import DaemonProcess
from testbed.dovecot import Dovecot


def podod_db(path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podod.cli", "db", *argv, "-c", str(path)],
                          capture_output=True, text=True)


def ok(daemon: DaemonProcess, *argv: str, stdin: str | None = None,
       real: bool = True) -> dict[str, object]:
    reply = daemon.request(list(argv), execute_real=real, stdin=stdin)
    assert reply["ok"], reply["message"]
    return reply


def test_db_check_warns_of_the_sogo_view_and_sogo_view_adds_only_it(
        postfixadmin_db: PostfixAdminDb) -> None:
    pfa, path = postfixadmin_db, postfixadmin_db.config_path
    schema = pfa.pg.dump(pfa.db, schema_only=True)
    assert "merge_quota2" in schema  # PostfixAdmin's own trigger: this is its schema

    check = podod_db(path, "check")
    assert check.returncode == 0, check.stderr
    assert "The mail database is compatible (an existing PostfixAdmin schema" in check.stdout
    assert check.stderr.strip() == (
        "warning: view sogo_users is missing: SOGo's SQL user source reads it (podod manages "
        "mailboxes without it); add only that view with: podod db init --sogo-view -c FILE")
    init = podod_db(path, "init")
    assert init.returncode == 0 and "warning: view sogo_users is missing" in init.stderr
    assert podod_db(path, "upgrade").returncode == 1  # podod never migrates PostfixAdmin's
    assert pfa.pg.dump(pfa.db, schema_only=True) == schema

    sandbox = podod_db(path, "init", "--sogo-view")
    assert sandbox.returncode == 0, sandbox.stderr
    assert sandbox.stdout.startswith("SANDBOX: nothing was changed.")
    assert "CREATE OR REPLACE VIEW sogo_users AS" in sandbox.stdout
    assert "It would show 2 active mailboxes." in sandbox.stdout
    assert pfa.pg.dump(pfa.db, schema_only=True) == schema

    real = podod_db(path, "init", "--sogo-view", "--execute-real")
    assert real.returncode == 0, real.stderr
    assert real.stdout.startswith("Created the view sogo_users (SOGo's user source); "
                                  "PostfixAdmin's tables were not changed:")
    assert "warning" not in real.stderr
    assert pfa.sql("SELECT c_uid, c_cn FROM sogo_users ORDER BY 1") == \
        "alice@example.com|Alice Pfa\nbob@example.com|Bob Pfa"
    # The view is the only change: without it, the schema is PostfixAdmin's again.
    pfa.sql("DROP VIEW sogo_users")
    assert pfa.pg.dump(pfa.db, schema_only=True) == schema
    assert podod_db(path, "init", "--sogo-view", "--execute-real").returncode == 0
    after = pfa.pg.dump(pfa.db, schema_only=True)

    again = podod_db(path, "init", "--sogo-view", "--execute-real")
    assert again.returncode == 0 and "sogo_users exists already; nothing was changed." in \
        again.stdout
    check = podod_db(path, "check")
    assert check.returncode == 0 and check.stderr == ""
    assert pfa.pg.dump(pfa.db, schema_only=True) == after

    wrong = podod_db(path, "check", "--sogo-view")
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == "--sogo-view goes with 'podod db init', not 'podod db check'"
    alone = podod_db(path, "init", "--execute-real")
    assert alone.returncode == 2 and "--execute-real goes with --sogo-view" in alone.stderr


def test_podod_manages_a_postfixadmin_database_and_postfixadmin_reads_it_back(
        postfixadmin_db: PostfixAdminDb) -> None:
    """No sogo_users view here: managing mailboxes does not need it."""
    pfa, admin = postfixadmin_db, postfixadmin_db.admin
    schema = pfa.pg.dump(pfa.db, schema_only=True)
    with DaemonProcess(pfa.config_path) as daemon:
        # PostfixAdmin's mailboxes, as podod sees them (quota: 50 MB, PostfixAdmin's unit).
        listed = ok(daemon, "user", "list", real=False)["data"]
        assert isinstance(listed, list)
        assert {u["username"]: u["quota"] for u in listed} == {
            "alice@example.com": 50 * 1024 * 1024, "bob@example.com": 40 * 1024 * 1024}
        assert ok(daemon, "alias", "show", "info@example.com", real=False)["ok"]

        # The sandbox leaves nothing behind, through PostfixAdmin's triggers too.
        ok(daemon, "user", "create", "carol@example.com", "--password-stdin",
           stdin="Carol-pw-4711", real=False)
        assert pfa.sql("SELECT count(*) FROM quota2") == "0"

        created = ok(daemon, "user", "create", "carol@example.com", "--name", "Carol Podod",
                     "--quota-mb", "30", "--password-stdin", stdin="Carol-pw-4711")
        changes = [c["action"] + " " + c["target"] for c in created["changes"]]  # type: ignore
        assert changes == ["insert mailbox", "insert alias", "insert quota2"]
        assert pfa.sql("SELECT username, bytes, messages FROM quota2") == \
            "carol@example.com|0|0"
        # PostfixAdmin shows it, takes its password, and its Dovecot query with password
        # expiry (Password_Expiration.md; the domain's default is 365 days) lets it log in.
        shown = admin.view("mailbox", "carol@example.com")
        assert (shown["Name"], shown["Quota"], shown["Active"]) == ("Carol Podod", "30", "YES")
        assert admin.login("carol@example.com", "Carol-pw-4711")
        assert not admin.login("carol@example.com", "wrong-password")
        assert pfa.sql("SELECT count(*) FROM mailbox m, domain d WHERE d.domain = m.domain "
                       "AND m.username = 'carol@example.com' AND m.active = '1' AND "
                       "(m.password_expiry > now() OR d.password_expiry = 0)") == "1"
        # The mailbox's own alias row, as PostfixAdmin shows its own mailboxes' rows.
        own = admin.view("alias", "carol@example.com")
        assert (own["To"], own["Deliver to the local mailbox."], own["Active"]) == \
            ("", "YES", "YES")
        assert own.keys() == admin.view("alias", "alice@example.com").keys()

        ok(daemon, "user", "update", "carol@example.com", "--name", "Carol C", "--quota-mb",
           "20")
        pfa.sql("UPDATE mailbox SET password_expiry = '2001-01-01' "
                "WHERE username = 'carol@example.com'")
        ok(daemon, "user", "reset-password", "carol@example.com", "--password-stdin",
           stdin="Carol-new-pw-99")
        assert pfa.sql("SELECT password_expiry > now() + interval '364 days' FROM mailbox "
                       "WHERE username = 'carol@example.com'") == "t"  # as PostfixAdmin sets
        shown = admin.view("mailbox", "carol@example.com")
        assert (shown["Name"], shown["Quota"]) == ("Carol C", "20")
        assert admin.login("carol@example.com", "Carol-new-pw-99")
        assert not admin.login("carol@example.com", "Carol-pw-4711")

        # PostfixAdmin's own mailboxes and aliases, changed by podod.
        ok(daemon, "user", "update", "alice@example.com", "--quota-mb", "60", "--name",
           "Alice Changed")
        shown = admin.view("mailbox", "alice@example.com")
        assert (shown["Name"], shown["Quota"]) == ("Alice Changed", "60")
        assert admin.login("alice@example.com", PFA_PASSWORDS["alice@example.com"])
        ok(daemon, "alias", "create", "sales@example.com", "--to", "carol@example.com",
           "--to", "bob@example.com")
        assert admin.view("alias", "sales@example.com")["To"] == \
            "carol@example.com, bob@example.com"
        ok(daemon, "alias", "delete", "info@example.com")
        assert admin.cli("alias", "view", "info@example.com", check=False).returncode != 0

        deleted = ok(daemon, "user", "delete", "bob@example.com")
        assert admin.cli("mailbox", "view", "bob@example.com", check=False).returncode != 0
        # ... and a restore puts PostfixAdmin's mailbox back as it was.
        ok(daemon, "backup", "restore", str(deleted["backup_id"]))
        assert admin.view("mailbox", "bob@example.com")["Name"] == "Bob Pfa"
        assert admin.login("bob@example.com", PFA_PASSWORDS["bob@example.com"])

        # A domain podod creates, and PostfixAdmin's counts of podod's rows in its domain.
        ok(daemon, "domain", "create", "podod.example", "--description", "made by podod",
           "--max-mailboxes", "5", "--max-quota-mb", "100")
        shown = admin.view("domain", "podod.example")
        assert (shown["Description"], shown["Mailboxes"], shown["Mailbox Quota (MB)"],
                shown["Active"]) == ("made by podod", "0 / 5", "100", "YES")
        assert admin.view("domain", "example.com")["Mailboxes"] == "3 / 10"

        # What PostfixAdmin adds after podod, podod lists.
        admin.cli("mailbox", "add", "dave@example.com", "--password", "Dave-pw-1234",
                  "--password2", "Dave-pw-1234", "--name", "Dave", "--quota", "10",
                  "--active", "1", "--welcome-mail", "0")
        listed = ok(daemon, "user", "list", real=False)["data"]
        assert isinstance(listed, list)
        assert sorted(u["username"] for u in listed) == [
            "alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"]
    assert pfa.pg.dump(pfa.db, schema_only=True) == schema


async def test_an_insert_merged_by_postfixadmins_trigger_is_recorded_as_the_update_it_is(
        postfixadmin_db: PostfixAdminDb) -> None:
    """PostfixAdmin's merge_quota2 trigger adds an INSERT into an existing quota2 row and
    returns NULL (so INSERT ... RETURNING gives no row, new row or not): the unit of work
    reads the row back, and records a merge as an update with the row as it was, which the
    backup keeps and a restore puts back."""
    pfa = postfixadmin_db
    pfa.sql("INSERT INTO quota2 (username, bytes, messages) VALUES ('alice@example.com', "
            "1000, 3)")
    runtime = SimpleNamespace(config=load_config(pfa.config_path))
    database = MailDatabase(cast(Any, runtime))
    uow = MailUnitOfWork(cast(Any, None), database)
    await uow.begin()
    try:
        merged = await uow.insert("quota2", {"username": "alice@example.com", "bytes": 10,
                                             "messages": 1})
        new = await uow.insert("quota2", {"username": "bob@example.com", "bytes": 0,
                                          "messages": 0})
        assert (merged["bytes"], merged["messages"]) == (1010, 4)
        assert (new["username"], new["bytes"], new["messages"]) == ("bob@example.com", 0, 0)
        assert [c.describe() for c in uow.changes()] == [
            "update quota2 alice@example.com (bytes=1010, messages=4, merged=into the "
            "existing row by quota2's insert trigger)",
            "insert quota2 bob@example.com (bytes=0, messages=0)"]
        assert uow.before_images == [
            ("quota2", "update", {"username": "alice@example.com"},
             {"username": "alice@example.com", "bytes": 1000, "messages": 3}),
            ("quota2", "insert", {"username": "bob@example.com"}, None)]
    finally:
        await uow.rollback()
        await database.stop()
    assert pfa.sql("SELECT username, bytes, messages FROM quota2") == "alice@example.com|1000|3"


def test_dovecot_logs_in_postfixadmins_and_podods_mailboxes(
        postfixadmin_db: PostfixAdminDb) -> None:
    """Dovecot with podod's SQL config, on the read-only role 'podod db init --roles' grants
    on PostfixAdmin's database: PostfixAdmin's and podod's password hashes both work."""
    pfa = postfixadmin_db
    config = make_mail_config(pfa.pg, pfa.root, pfa.db, roles=ROLES)
    roles = podod_db(config, "init", "--roles")
    assert roles.returncode == 0, roles.stderr
    assert "skipped role sogo: the view sogo_users is missing (add it with podod db init " \
        "--sogo-view -c FILE)" in roles.stdout
    assert f"granted {READER}" in roles.stdout
    with DaemonProcess(config) as daemon, \
            Dovecot(pfa.root / "dovecot", login(pfa.pg, READER, READER_PW, pfa.db)) as dovecot:
        ok(daemon, "user", "create", "carol@example.com", "--password-stdin",
           stdin="Carol-pw-4711")
        assert dovecot.auth_test("carol@example.com", "Carol-pw-4711")
        assert dovecot.auth_test("alice@example.com", PFA_PASSWORDS["alice@example.com"])
        assert not dovecot.auth_test("alice@example.com", "Carol-pw-4711")
        ok(daemon, "user", "reset-password", "alice@example.com", "--password-stdin",
           stdin="Alice-new-pw-77")
        assert dovecot.auth_test("alice@example.com", "Alice-new-pw-77")
        assert not dovecot.auth_test("alice@example.com", PFA_PASSWORDS["alice@example.com"])
