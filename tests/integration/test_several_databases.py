"""Several mail databases (``mail.databases``): two PostgreSQL clusters, the second reached
only through a test sshd's tunnel; one daemon on both. Commands on a domain find its
database, listings merge both (with paging and sorting exact across them), a domain in two
databases is refused, ``domain move`` moves a domain all-or-nothing, and one database
going down leaves the other working."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import (
    OWNER,
    OWNER_PW,
    READER,
    READER_PW,
    ROLES,
    db_init,
    make_mail_config,
)
from podod.mail.serverconfig import SqlLogin
from testbed.daemon import DaemonProcess
from testbed.dovecot import Dovecot
from testbed.ports import free_port
from testbed.postfix import Postfix
from testbed.postgres import PgCluster
from testbed.sshd import Sshd
from testbed.waiting import poll as wait_for

A_DB, B_DB = "multi_a", "multi_b"


@dataclass
class Two:
    pg: PgCluster  # database a
    pg2: PgCluster  # database b, reached through sshd's tunnel
    sshd: Sshd
    path: Path
    daemon: DaemonProcess

    def ok(self, *argv: str, real: bool = False, stdin: str | None = None) -> dict[str, Any]:
        reply = self.daemon.request(list(argv), execute_real=real, stdin=stdin)
        assert reply["ok"], reply["message"]
        return reply

    def fail(self, *argv: str, real: bool = True) -> dict[str, Any]:
        reply = self.daemon.request(list(argv), execute_real=real)
        assert not reply["ok"], reply
        assert "\n" not in str(reply["message"]) and "Traceback" not in str(reply["message"])
        return reply

    def a(self, sql: str) -> str:
        return self.pg.psql(sql, A_DB).strip()

    def b(self, sql: str) -> str:
        return self.pg2.psql(sql, B_DB).strip()


def podod_db(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podod.cli", "db", *args, "-c", str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def two(pg: PgCluster, mail_template: str, daemons_tmp: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Two]:
    root = tmp_path_factory.mktemp("several")
    pg2 = PgCluster(daemons_tmp / "pg-several", free_port()).start()
    sshd = Sshd(root / "sshd").start()
    try:
        pg2.create_role(OWNER, OWNER_PW, superuser=False)
        pg2.psql(f'ALTER ROLE "{OWNER}" CREATEROLE')
        pg2.create_database(B_DB, OWNER)
        (root / "init-b").mkdir()
        # b's roles (Dovecot's and Postfix's SELECT-only one) made by podod db init --roles
        init = db_init(make_mail_config(pg2, root / "init-b", B_DB, roles=ROLES), "--roles")
        assert init.returncode == 0, init.stderr
        pg.psql(f'CREATE DATABASE "{A_DB}" TEMPLATE "{mail_template}" OWNER "{OWNER}"')
        path = make_mail_config(pg, root, A_DB)
        config = yaml.safe_load(path.read_text())
        single = config["mail"].pop("database")
        config["mail"]["databases"] = {
            "a": single,
            "b": {"dsn": f"postgresql://{OWNER}@db.invalid:1/{B_DB}",
                  "password_file": single["password_file"], "via_server": "db2",
                  "tunnel": "postgres"}}
        # Only a's mailboxes keep their maildirs on the (here unset) maildir server.
        config["mail"]["maildir"]["databases"] = ["a"]
        config["mail"]["sogo"] = {"databases": []}  # a SOGo that serves neither database
        config["servers"] = [sshd.server_entry("db2", tunnels=[
            {"name": "postgres", "remote_port": pg2.port}])]
        path.write_text(yaml.safe_dump(config))
        daemon = DaemonProcess(path).start()
        try:
            yield Two(pg, pg2, sshd, path, daemon)
        finally:
            daemon.stop()
    finally:
        sshd.close()
        pg2.stop()
        pg.drop_database(A_DB)


def test_a_domain_is_created_where_asked_and_its_commands_find_it(two: Two) -> None:
    refused = two.fail("domain", "create", "one.example")
    assert refused["message"] == ("domain create one.example: say which mail database with "
                                  "--on NAME (one of a, b)")
    unknown = two.fail("domain", "create", "one.example", "--on", "c")
    assert unknown["message"] == ("there is no mail database named c (the configured ones: "
                                  "a, b)")
    assert two.a("SELECT count(*) FROM domain WHERE domain = 'one.example'") == "0"
    two.ok("domain", "create", "one.example", "--on", "a", real=True)
    two.ok("domain", "create", "two.example", "--on", "b", real=True)
    again = two.fail("domain", "create", "one.example", "--on", "b")
    assert again["message"] == "the domain one.example already exists (in mail database a)"
    for address in ("ann@one.example", "bob@one.example", "cid@two.example",
                    "dan@two.example", "a.b@two.example"):
        two.ok("user", "create", address, "--generate-password", real=True)
    two.ok("alias", "create", "team@two.example", "--to", "cid@two.example,ann@one.example",
           real=True)
    two.ok("user", "update", "cid@two.example", "--quota-mb", "7", real=True)
    assert two.b("SELECT username FROM mailbox ORDER BY 1") == \
        "a.b@two.example\ncid@two.example\ndan@two.example"
    assert two.a("SELECT username FROM mailbox ORDER BY 1") == \
        "ann@one.example\nbob@one.example"
    shown = two.ok("user", "show", "cid@two.example")["data"]
    assert shown["quota"] == 7 * 1024 * 1024
    nowhere = two.fail("user", "create", "x@nowhere.example", "--generate-password")
    assert nowhere["message"].startswith("the domain nowhere.example does not exist in any "
                                         "mail database")

    listed = two.ok("user", "list")["data"]
    assert [(u["username"], u["database"]) for u in listed] == [
        ("a.b@two.example", "b"), ("ann@one.example", "a"), ("bob@one.example", "a"),
        ("cid@two.example", "b"), ("dan@two.example", "b")]
    only_b = two.ok("user", "list", "--on", "b")["data"]
    assert [u["username"] for u in only_b] == ["a.b@two.example", "cid@two.example",
                                               "dan@two.example"]
    # Pages across both databases: every mailbox once, in one order, whatever the limit.
    seen: list[str] = []
    argv = ["user", "list", "--limit", "2"]
    while True:
        reply = two.ok(*argv)
        seen += [u["username"] for u in reply["data"]]
        if not reply.get("page"):
            break
        assert reply["page"]["more"] == 5 - len(seen)
        argv = ["user", "list", "--limit", "2", "--after", reply["page"]["after"]]
    assert seen == [u["username"] for u in listed]
    assert two.ok("user", "list", "--sort", "-quota", "--limit", "1")["data"][0][
        "username"] == "cid@two.example"
    quotas = [u["quota"] for u in two.ok("user", "list", "--sort", "-quota")["data"]]
    assert quotas == sorted(quotas, reverse=True)
    domains = two.ok("domain", "list")["data"]
    assert [(d["domain"], d["database"]) for d in domains] == [("one.example", "a"),
                                                                ("two.example", "b")]
    aliases = two.ok("alias", "list", "--on", "b")["data"]
    assert [(x["address"], x["database"]) for x in aliases] == [("team@two.example", "b")]
    # Aliases of every database count for a mailbox.
    assert [x["address"] for x in two.ok("user", "aliases", "ann@one.example")["data"]] == \
        ["team@two.example"]
    # The tunnel a database goes through stays open.
    assert two.fail("server", "tunnel", "stop", "db2", "postgres")["message"] == (
        "the mail database b is reached through the tunnel postgres of db2 "
        "(mail.databases.b.via_server); it stays open")
    report = two.ok("usage", "report")["data"]
    assert [(r["domain"], r["mailboxes"], r["database"]) for r in report] == [
        ("one.example", 2, "a"), ("two.example", 3, "b")]


def test_a_rename_across_databases_is_refused(two: Two) -> None:
    two.ok("domain", "create", "ren-a.example", "--on", "a", real=True)
    two.ok("domain", "create", "ren-b.example", "--on", "b", real=True)
    two.ok("user", "create", "eve@ren-a.example", "--generate-password", real=True)
    before = (two.a("SELECT username FROM mailbox ORDER BY 1"),
              two.b("SELECT username FROM mailbox ORDER BY 1"))
    refused = two.fail("user", "rename", "eve@ren-a.example", "eve@ren-b.example")
    assert refused["message"] == (
        "ren-b.example is in mail database b and eve@ren-a.example in a; a mailbox cannot be "
        "renamed across mail databases (move one of the domains first with 'domain move'); "
        "nothing was changed")
    assert (two.a("SELECT username FROM mailbox ORDER BY 1"),
            two.b("SELECT username FROM mailbox ORDER BY 1")) == before


def test_maildirs_of_a_database_not_on_the_maildir_server_are_never_moved(two: Two) -> None:
    two.ok("domain", "create", "far.example", "--on", "b", real=True)
    two.ok("user", "create", "fay@far.example", "--generate-password", real=True)
    before = two.b("SELECT username FROM mailbox WHERE domain = 'far.example'")
    not_here = ("the mailboxes of mail database b are not on mail.maildir.server "
                "(mail.maildir.databases does not list it)")
    renamed = two.fail("user", "rename", "fay@far.example", "faye@far.example")
    assert renamed["message"] == (f"{not_here}, so podod cannot move this mailbox's maildir "
                                  "with it; nothing was changed")
    deleted = two.fail("user", "delete", "fay@far.example", "--remove-maildir")
    assert deleted["message"] == (f"--remove-maildir: {not_here}; delete the mailbox without "
                                  "it and remove the maildir on its server by hand; nothing "
                                  "was changed")
    assert two.b("SELECT username FROM mailbox WHERE domain = 'far.example'") == before
    vacation = two.fail("user", "vacation", "set", "fay@far.example", "--subject", "Away",
                        "--message", "Back soon.")
    assert vacation["message"] == (
        "the mailboxes of mail database b are not on the SOGo of mail.sogo (mail.sogo."
        "databases does not list it), so podod cannot manage the vacation reply of "
        "fay@far.example; nothing was changed")
    gone = two.ok("user", "delete", "fay@far.example", real=True)
    assert ("SOGo's data of fay@far.example is left alone: the mailboxes of mail database b "
            "are not on the SOGo of mail.sogo (mail.sogo.databases does not list it).") \
        in gone["notes"]
    assert two.b("SELECT count(*) FROM mailbox WHERE domain = 'far.example'") == "0"


def test_a_domain_in_two_databases_is_refused_until_resolved(two: Two) -> None:
    two.ok("domain", "create", "dup.example", "--on", "a", real=True)
    two.ok("user", "create", "u@dup.example", "--generate-password", real=True)
    two.b("INSERT INTO domain (domain, description) VALUES ('dup.example', 'stray copy')")
    try:
        for argv in (["user", "update", "u@dup.example", "--name", "U"],
                     ["user", "create", "v@dup.example", "--generate-password"],
                     ["domain", "update", "dup.example", "--description", "x"],
                     ["domain", "delete", "dup.example", "--cascade"]):
            reply = two.fail(*argv)
            assert reply["message"] == (
                "the domain dup.example is in two mail databases (a and b); podod changes "
                "nothing on it until one copy is removed or the move is finished ('domain "
                "move dup.example --to NAME', see 'podod db check'); nothing was changed")
        assert two.a("SELECT name FROM mailbox WHERE username = 'u@dup.example'") == ""
        check = podod_db(two.path, "check")
        assert check.returncode == 1
        assert ("the domain dup.example is in 2 mail databases (a and b): podod refuses "
                "every change on it until one copy is removed or 'domain move' finishes it"
                in check.stderr)
        assert "mail database a:" in check.stdout and "mail database b:" in check.stdout
        only_a = podod_db(two.path, "check", "--on", "a")
        assert only_a.returncode == 0 and "mail database a:" in only_a.stdout
        assert "mail database b:" not in only_a.stdout
    finally:
        two.b("DELETE FROM domain WHERE domain = 'dup.example'")
    check = podod_db(two.path, "check")
    assert check.returncode == 0, check.stderr
    assert "No domain is in two mail databases." in check.stdout
    two.ok("user", "update", "u@dup.example", "--name", "U", real=True)


def _rows(sql: Any, domain: str) -> dict[str, str]:
    return {
        "domain": sql(f"SELECT domain FROM domain WHERE domain IN ('{domain}', "
                      f"'alias-{domain}') ORDER BY 1"),
        "mailbox": sql(f"SELECT username, quota FROM mailbox WHERE domain = '{domain}' "
                       "ORDER BY 1"),
        "alias": sql(f"SELECT address, goto FROM alias WHERE domain = '{domain}' ORDER BY 1"),
        "alias_domain": sql(f"SELECT alias_domain, target_domain FROM alias_domain WHERE "
                            f"target_domain = '{domain}'"),
        "quota2": sql(f"SELECT username, bytes FROM quota2 WHERE username LIKE '%@{domain}' "
                      "ORDER BY 1")}


def test_domain_move_moves_every_row_of_a_domain_backed_up_on_both_sides(two: Two) -> None:
    two.ok("domain", "create", "mv.example", "--on", "a", real=True)
    for name in ("m1", "m2"):
        two.ok("user", "create", f"{name}@mv.example", "--generate-password", real=True)
    two.ok("alias", "create", "list@mv.example", "--to", "m1@mv.example,m2@mv.example",
           real=True)
    two.ok("domain-alias", "create", "alias-mv.example", "--to", "mv.example", real=True)
    two.a("UPDATE quota2 SET bytes = 4096 WHERE username = 'm1@mv.example'")
    before = _rows(two.a, "mv.example")
    assert before["mailbox"] and before["alias_domain"]

    plan = two.ok("domain", "move", "mv.example", "--to", "b")
    assert plan["sandbox"] and plan["plan_id"]
    assert plan["message"] == ("domain mv.example would move from a to b: 2 domain rows, 1 "
                               "alias domains, 2 mailboxes, 3 alias rows, 2 quota rows")
    assert _rows(two.a, "mv.example") == before
    assert two.b("SELECT count(*) FROM mailbox WHERE domain = 'mv.example'") == "0"

    moved = two.ok("domain", "move", "mv.example", "--to", "b", real=True)
    assert moved["data"]["from"] == "a" and moved["data"]["mailbox"] == 2
    assert any("Maildirs are not moved" in n for n in moved["notes"])
    assert _rows(two.b, "mv.example") == before
    assert all(v == "" for v in _rows(two.a, "mv.example").values())
    # The backup holds both sides' rows, each with its database.
    backup = two.ok("backup", "show", moved["backup_id"])["data"]
    rows = json.loads((Path(backup["path"]) / "rows.json").read_text())
    assert {(r["database"], r["action"]) for r in rows} == {("b", "insert"), ("a", "delete")}
    # Restoring the move's backup puts every row back into its own database.
    restored = two.ok("backup", "restore", moved["backup_id"], real=True)
    assert restored["message"].startswith("restore of backup ")
    assert _rows(two.a, "mv.example") == before
    assert all(v == "" for v in _rows(two.b, "mv.example").values())
    two.ok("domain", "move", "mv.example", "--to", "b", real=True)
    assert _rows(two.b, "mv.example") == before
    # The domain now works from b: commands find it there.
    two.ok("user", "update", "m1@mv.example", "--name", "Moved", real=True)
    assert two.b("SELECT name FROM mailbox WHERE username = 'm1@mv.example'") == "Moved"
    assert [u["database"] for u in two.ok("user", "list", "--domain", "mv.example")["data"]] \
        == ["b", "b"]
    assert two.fail("domain", "move", "mv.example", "--to", "b")["message"] == \
        "the domain mv.example is in mail database b already; nothing was changed"
    assert "alias domain of mv.example" in two.fail(
        "domain", "move", "alias-mv.example", "--to", "a")["message"]


def test_a_move_that_fails_in_the_target_changes_nothing_anywhere(two: Two) -> None:
    two.ok("domain", "create", "stuck.example", "--on", "a", real=True)
    for name in ("s1", "s2", "s3"):
        two.ok("user", "create", f"{name}@stuck.example", "--generate-password", real=True)
    before_a = _rows(two.a, "stuck.example")
    # The target refuses the mailboxes half-way (after the domain row went in).
    two.b("ALTER TABLE mailbox ADD CONSTRAINT not_stuck CHECK (domain <> 'stuck.example') "
          "NOT VALID")
    try:
        failed = two.fail("domain", "move", "stuck.example", "--to", "b")
        assert failed["message"].startswith("the database refused the change: ")
        assert "not_stuck" in failed["message"]
        assert failed["message"].endswith("; nothing was changed")
    finally:
        two.b("ALTER TABLE mailbox DROP CONSTRAINT not_stuck")
    assert _rows(two.a, "stuck.example") == before_a
    assert all(v == "" for v in _rows(two.b, "stuck.example").values())
    # A row of the domain already in the target: refused before anything is copied.
    two.b("INSERT INTO alias (address, goto, domain) VALUES ('s2@stuck.example', "
          "'elsewhere@example.org', 'two.example')")
    try:
        taken = two.fail("domain", "move", "stuck.example", "--to", "b")
        assert taken["message"] == ("mail database b already has alias rows of stuck.example "
                                    "(s2@stuck.example); nothing was changed")
    finally:
        two.b("DELETE FROM alias WHERE address = 's2@stuck.example'")
    assert _rows(two.a, "stuck.example") == before_a
    # Stopped between its two commits (the copy committed in b, a's rows still there): the
    # domain is in both, refused, and the move run again finishes it.
    two.b("INSERT INTO domain (domain) VALUES ('stuck.example')")
    for name in ("s1", "s2", "s3"):
        address = f"{name}@stuck.example"
        two.b(f"INSERT INTO mailbox (username, local_part, domain) VALUES ('{address}', "
              f"'{name}', 'stuck.example')")
        two.b(f"INSERT INTO alias (address, goto, domain) VALUES ('{address}', '{address}', "
              "'stuck.example')")
        two.b(f"INSERT INTO quota2 (username) VALUES ('{address}')")
    assert "is in two mail databases (a and b)" in two.fail(
        "user", "update", "s1@stuck.example", "--name", "x")["message"]
    finished = two.ok("domain", "move", "stuck.example", "--to", "b", real=True)
    assert finished["data"]["resumed"] is True
    assert all(v == "" for v in _rows(two.a, "stuck.example").values())
    assert two.b("SELECT count(*) FROM mailbox WHERE domain = 'stuck.example'") == "3"
    two.ok("user", "update", "s1@stuck.example", "--name", "x", real=True)


def test_one_database_down_leaves_the_other_working(two: Two) -> None:
    two.ok("domain", "create", "up.example", "--on", "a", real=True)
    two.ok("domain", "create", "down.example", "--on", "b", real=True)
    two.ok("user", "create", "x@down.example", "--generate-password", real=True)
    two.sshd.stop()
    try:
        def refused() -> bool:
            last = two.daemon.request(["server", "show", "db2"])["data"]["last_error"] or ""
            return "connection refused" in last

        assert wait_for(refused)
        for argv in (["user", "create", "y@down.example", "--generate-password"],
                     ["user", "show", "x@down.example"], ["user", "list", "--on", "b"]):
            reply = two.fail(*argv)
            assert reply["code"] == "server-unreachable", reply
            assert reply["message"].startswith(
                "the mail database b cannot be reached: the tunnel postgres of server db2 "), \
                reply["message"]
        two.ok("user", "create", "z@up.example", "--generate-password", real=True)
        listed = two.ok("user", "list")
        assert "z@up.example" in [u["username"] for u in listed["data"]]
        assert all(u["database"] == "a" for u in listed["data"])
        assert any(n.startswith("mail database b did not answer, so none of its rows are "
                                "shown: the mail database b cannot be reached")
                   for n in listed["notes"])
    finally:
        two.sshd.start()
    # (A hashing worker forked meanwhile must not hold the tunnel's port: it came back.)
    assert wait_for(lambda: bool(two.daemon.request(["user", "list", "--on", "b"])["ok"]))
    two.ok("user", "create", "y@down.example", "--generate-password", real=True)


def test_a_mailbox_of_the_second_database_logs_in_and_routes(two: Two,
                                                               daemons_tmp: Path) -> None:
    """The real Dovecot and Postfix of the mail test bed on database b (as on b's own mail
    server): a mailbox podod created there, through the tunnel, logs in and is routed;
    one of database a is not b's."""
    two.ok("domain", "create", "mx2.example", "--on", "b", real=True)
    two.ok("domain", "create", "mx1.example", "--on", "a", real=True)
    password = "Second-db-Pw-4711"
    for address in ("eve@mx2.example", "fay@mx1.example"):
        two.ok("user", "create", address, "--password-stdin", stdin=password, real=True)
    two.ok("alias", "create", "info@mx2.example", "--to", "eve@mx2.example", real=True)
    login = SqlLogin(host="127.0.0.1", port=two.pg2.port, dbname=B_DB, user=READER,
                     password=READER_PW)
    dovecot = Dovecot(daemons_tmp / "dovecot-b", login)
    dovecot.start()
    try:
        assert dovecot.auth_test("eve@mx2.example", password)
        assert dovecot.imap_login("eve@mx2.example", password)
        assert not dovecot.auth_test("eve@mx2.example", "Wrong-Password-99")
        assert not dovecot.auth_test("fay@mx1.example", password)  # a's, not b's
        postfix = Postfix(daemons_tmp / "postfix-b", login, lmtp_port=dovecot.lmtp_port)
        postfix.write_config()
        assert postfix.resolve("virtual_mailbox_domains", "mx2.example") == "mx2.example"
        assert postfix.resolve("virtual_mailbox_domains", "mx1.example") is None
        assert postfix.resolve("virtual_mailbox_maps", "eve@mx2.example") == \
            "mx2.example/eve/"
        assert postfix.resolve("virtual_alias_maps", "info@mx2.example") == "eve@mx2.example"
        # Moved to a, the mailbox is no longer b's to serve.
        two.ok("domain", "move", "mx2.example", "--to", "a", real=True)
        assert not dovecot.auth_test("eve@mx2.example", password)
        assert postfix.resolve("virtual_mailbox_domains", "mx2.example") is None
    finally:
        dovecot.stop()


def test_an_import_goes_to_its_domains_database_and_an_export_reads_all(two: Two) -> None:
    two.ok("domain", "create", "imp-a.example", "--on", "a", real=True)
    two.ok("domain", "create", "imp-b.example", "--on", "b", real=True)
    header = "address,name,quota,password,password_hash,active\n"
    both = (header + "p1@imp-a.example,P1,100,Plain-Pass-00001,,yes\n"
            "p2@imp-b.example,P2,100,Plain-Pass-00002,,yes\n")
    refused = two.daemon.request(["user", "import"], execute_real=True, stdin=both)
    assert not refused["ok"]
    assert refused["message"] == (
        "user import: the file's domains are in several mail databases (a: imp-a.example; "
        "b: imp-b.example); import one file per database; nothing was changed")
    assert two.a("SELECT count(*) FROM mailbox WHERE domain = 'imp-a.example'") == "0"
    only_b = header + "p2@imp-b.example,P2,100,Plain-Pass-00002,,yes\n"
    two.ok("user", "import", real=True, stdin=only_b)
    assert two.b("SELECT username FROM mailbox WHERE domain = 'imp-b.example'") == \
        "p2@imp-b.example"
    wrong = two.daemon.request(["user", "import", "--on", "a"], execute_real=True,
                               stdin=only_b)
    assert not wrong["ok"] and "several mail databases" in wrong["message"]
    domains = "domain,description\nnew-dom.example,New\n"
    assert two.daemon.request(["domain", "import"], execute_real=True, stdin=domains)[
        "message"] == "domain import: say which mail database with --on NAME (one of a, b)"
    elsewhere = two.daemon.request(["domain", "import", "--on", "b"], execute_real=True,
                                   stdin=domains + "imp-a.example,Twice\n")
    assert elsewhere["message"] == (
        "domain import: imp-a.example is in another mail database than b already (a domain "
        "lives in one; 'domain move' moves it); nothing was changed")
    two.ok("domain", "import", "--on", "b", real=True, stdin=domains)
    assert two.b("SELECT description FROM domain WHERE domain = 'new-dom.example'") == "New"
    exported = two.ok("domain", "export")["data"]["csv"]
    assert "imp-a.example" in exported and "new-dom.example" in exported
    assert "imp-a.example" not in two.ok("domain", "export", "--on", "b")["data"]["csv"]


def test_a_reload_adds_and_removes_a_database(two: Two, mail_template: str) -> None:
    two.pg.psql(f'CREATE DATABASE "multi_c" TEMPLATE "{mail_template}" OWNER "{OWNER}"')
    before = two.path.read_text()
    config = yaml.safe_load(before)
    config["mail"]["databases"]["c"] = {**config["mail"]["databases"]["a"],
                                        "dsn": config["mail"]["databases"]["a"]["dsn"]
                                        .replace(A_DB, "multi_c")}
    two.path.write_text(yaml.safe_dump(config))
    try:
        two.daemon.signal(signal.SIGHUP)
        assert wait_for(lambda: bool(two.daemon.request(
            ["domain", "create", "three.example", "--on", "c"], execute_real=True)["ok"]))
        assert two.pg.psql("SELECT domain FROM domain", "multi_c").strip() == "three.example"
        listed = two.ok("domain", "list", "--on", "c")["data"]
        assert [(d["domain"], d["database"]) for d in listed] == [("three.example", "c")]
    finally:
        two.path.write_text(before)
        two.daemon.signal(signal.SIGHUP)
    assert wait_for(lambda: not two.daemon.request(["domain", "list", "--on", "c"])["ok"])
    assert two.fail("domain", "show", "three.example")["message"].startswith(
        "the domain three.example does not exist in any mail database")
    two.ok("user", "list")
    two.pg.drop_database("multi_c")
