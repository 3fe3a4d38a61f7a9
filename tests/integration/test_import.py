"""Bulk CSV import and export through the real daemon, podoctl and PostgreSQL: every bad row
named with its line before anything is written, reruns that skip what is there, a kill -9
in the middle that leaves all or nothing, the imported users logging in to the real
Dovecot, and export → delete → import giving the same database."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from conftest import MailStack, PostfixAdminDb, make_mail_config, new_domain
from podod.mail.passwords import hash_password
from testbed.daemon import DaemonProcess
from testbed.dovecot import Dovecot
from testbed.postgres import PgCluster

HASH = hash_password("Pre-Hashed-Pass-77", "SHA512-CRYPT", 5000)
HEADER = "address,name,quota,password,password_hash,active\n"


def users_csv(domain: str, count: int, *, start: int = 0, plain: int = 0) -> str:
    """``count`` good rows; the first ``plain`` with a clear-text password, the others
    pre-hashed (fast: the tests run at 5000 rounds anyway)."""
    lines = [HEADER]
    for i in range(start, start + count):
        password, digest = (f"Plain-Pass-{i:05d}", "") if i - start < plain else ("", HASH)
        lines.append(f"u{i:05d}@{domain},User {i},100,{password},{digest},yes\n")
    return "".join(lines)


def counts(mail: MailStack) -> tuple[int, int, int]:
    return (int(mail.sql("SELECT count(*) FROM mailbox")),
            int(mail.sql("SELECT count(*) FROM alias")),
            int(mail.sql("SELECT count(*) FROM quota2")))


def half_created(mail: MailStack) -> int:
    """Mailboxes without their own alias row or their quota2 row."""
    return int(mail.sql(
        "SELECT count(*) FROM mailbox m WHERE NOT EXISTS (SELECT 1 FROM alias a WHERE "
        "a.address = m.username) OR NOT EXISTS (SELECT 1 FROM quota2 q WHERE "
        "q.username = m.username)"))


def twenty_bad(mail: MailStack) -> tuple[str, dict[int, str]]:
    """1 000 data rows, 20 of them bad in different ways; their lines and a word of why."""
    mail.ok("domain", "create", "big.example", "--max-mailboxes", "986", "--max-quota-mb",
            "500", real=True)
    mail.ok("domain", "create", "small.example", "--max-mailboxes", "2", real=True)
    mail.ok("domain", "create", "alias.example", real=True)
    mail.ok("domain-alias", "create", "other.example", "--to", "alias.example", real=True)
    mail.ok("user", "create", "taken@big.example", "--name", "Someone Else",
            "--password-stdin", stdin="Taken-Pass-1234", real=True)
    mail.ok("alias", "create", "list@big.example", "--to", "taken@big.example", real=True)
    bad = {
        "no-at-sign.big.example,A,100,,{h},yes": "not an e-mail address",
        "two@@big.example,A,100,,{h},yes": "not an e-mail address",
        "-dash@big.example,A,100,,{h},yes": "starts with '-'",
        "a@nowhere.example,A,100,,{h},yes": "does not exist",
        "b@other.example,A,100,,{h},yes": "is an alias domain",
        "u00010@big.example,Again,100,,{h},yes": "in the file twice",
        "taken@big.example,A,100,,{h},yes": "already exists with another name",
        "list@big.example,A,100,,{h},yes": "is already an alias",
        "q1@big.example,A,lots,,{h},yes": "is not a size",
        "q2@big.example,A,600,,{h},yes": "at most 500 MB",
        "s1@small.example,A,10,,{h},yes": "",
        "s2@small.example,A,10,,{h},yes": "",
        "s3@small.example,A,10,,{h},yes": "maximum of 2 mailboxes",
        "p1@big.example,A,100,short,,yes": "too short",
        "p2@big.example,A,100,Both-Pass-12345,{h},yes": "both password and password_hash",
        "p3@big.example,A,100,,,yes": "no password",
        "p4@big.example,A,100,,{ROT13}abc,yes": "Dovecot does not accept",
        "p5@big.example,A,100,,{PLAIN}secret,yes": "clear text",
        "p6@big.example,A,100,,{SHA512-CRYPT}$6$xyz,yes": "form is wrong",
        "act@big.example,A,100,,{h},maybe": "yes or no",
        "q3@big.example,A,0,,{h},yes": "unlimited is not allowed",
        "long@big.example," + "N" * 300 + ",100,,{h},yes": "at most 255 characters",
    }
    good = users_csv("big.example", 978, plain=5).splitlines(keepends=True)
    lines = good[:1]
    reasons: dict[int, str] = {}
    bad_rows = list(bad.items())
    body = good[1:]
    # The bad rows go between the good ones, every 50th line.
    while body or bad_rows:
        if bad_rows and len(lines) % 50 == 0:
            row, why = bad_rows.pop(0)
            if why:
                reasons[len(lines) + 1] = why
            lines.append(row.replace("{h}", HASH) + "\n")
        elif body:
            lines.append(body.pop(0))
        else:
            row, why = bad_rows.pop(0)
            if why:
                reasons[len(lines) + 1] = why
            lines.append(row.replace("{h}", HASH) + "\n")
    return "".join(lines), reasons


def test_a_thousand_rows_with_twenty_bad_ones_each_named_with_its_line(
        mail: MailStack, tmp_path: Path) -> None:
    text, reasons = twenty_bad(mail)
    assert text.count("\n") == 1 + 1000 and len(reasons) == 20
    path = tmp_path / "users.csv"
    path.write_text(text)
    before = mail.dump()
    # --on-error stop (the default): every bad row named, nothing written.
    report = tmp_path / "report.csv"
    done = mail.daemon.podoctl("--json", "user", "import", str(path), "--report", str(report),
                               "--execute-real", "--yes")
    assert done.returncode == 2, done.stderr
    reply = json.loads(done.stdout)
    assert not reply["ok"] and "nothing was imported" in reply["message"]
    got = {b["line"]: b["reason"] for b in reply["data"]["bad"]}
    assert sorted(got) == sorted(reasons), (got, reasons)
    for line, why in reasons.items():
        assert why in got[line], (line, got[line], why)
    assert mail.dump() == before
    assert report.read_text().splitlines()[0] == "line,key,reason"
    assert len(report.read_text().splitlines()) == 21
    # The table of bad rows is shown with the refusal.
    shown = mail.daemon.podoctl("user", "import", str(path))
    assert shown.returncode == 2 and "bad rows" in shown.stdout
    assert "line" in shown.stdout and "too short" in shown.stdout

    # --on-error skip: the good rows are imported, the bad ones listed again.
    done = mail.daemon.podoctl("--json", "user", "import", str(path), "--on-error", "skip",
                               "--execute-real", "--yes")
    assert done.returncode == 0, done.stderr + done.stdout
    reply = json.loads(done.stdout)
    assert reply["data"]["imported"] == 980 and reply["data"]["bad_count"] == 20
    assert reply["backup_id"]
    assert counts(mail) == (981, 982, 981)
    assert half_created(mail) == 0
    assert mail.sql("SELECT count(*) FROM mailbox WHERE domain = 'small.example'") == "2"
    # A second run imports nothing twice, and says what it skipped.
    done = mail.daemon.podoctl("--json", "user", "import", str(path), "--on-error", "skip",
                               "--execute-real", "--yes")
    again = json.loads(done.stdout)
    assert done.returncode == 0 and again["data"]["imported"] == 0
    assert again["data"]["skipped"] == 980 and again["data"]["bad_count"] == 20
    assert any("Skipped, already in the database" in n for n in again["notes"])
    assert counts(mail) == (981, 982, 981)


def test_the_sandbox_plans_the_whole_import_and_answers_with_a_summary(
        mail: MailStack) -> None:
    mail.ok("domain", "create", "plan.example", real=True)
    text = users_csv("plan.example", 300)
    before = mail.dump()
    plan = mail.ok("user", "import", stdin=text)
    assert plan["sandbox"] and plan["plan_id"] and mail.dump() == before
    assert len(plan["changes"]) == 20 and plan["changes_total"] == 900
    assert "insert 300 mailbox, 300 alias, 300 quota2" in plan["notes"][0]
    assert plan["message"].startswith("user import: 300 mailboxes would be imported")
    done = mail.ok("confirm", plan["plan_id"])
    assert done["backup_id"] and counts(mail) == (300, 300, 300)
    # The backup holds every row, so restoring it takes the import back.
    mail.ok("backup", "restore", done["backup_id"], real=True)
    assert counts(mail) == (0, 0, 0) and mail.dump() == before


def test_bad_files_are_refused_in_one_sentence(mail: MailStack, tmp_path: Path) -> None:
    mail.ok("domain", "create", "b.example", real=True)
    before = mail.dump()
    for text, said in [
            ("u1@b.example,Name\n", "must be a header"),
            ("address;colour\nu1@b.example;red\n", "unknown column 'colour'"),
            ("name,quota\nA,1\n", "no address column"),
            ("address\n", "no rows"),
            ("", "no CSV was given"),
            ("address,name,name\nx@b.example,a,b\n", "twice")]:
        reply = mail.daemon.request(["user", "import"], execute_real=True, stdin=text)
        assert not reply["ok"] and said in reply["message"], (text, reply["message"])
        assert "Traceback" not in reply["message"]
    assert mail.dump() == before
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("address,name\nj@b.example,J\xf6rg\n".encode("latin-1"))
    for argv, said in [
            (["user", "import", str(bad)], "is not UTF-8"),
            (["user", "import", str(tmp_path / "missing.csv")], "cannot read"),
            (["user", "import", str(bad), "--generate-passwords"], "--passwords-out"),
            (["user", "list", "--report", "x"], "go with an import command")]:
        done = mail.daemon.podoctl(*argv)
        assert done.returncode == 2 and said in done.stderr, (argv, done.stderr)
    assert mail.dump() == before


def test_bom_semicolons_and_aliases_with_loops_and_local_targets(mail: MailStack) -> None:
    mail.ok("domain", "create", "c.example", "--max-aliases", "3", real=True)
    mail.ok("domain", "create", "c2.example", real=True)
    users = "\ufeffAddress;Name;Password_Hash\nann@c.example;Ann;" + HASH + "\n"
    assert mail.ok("user", "import", stdin=users, real=True)["data"]["imported"] == 1
    aliases = ("address,targets\n"
               "a@c.example,b@c.example\n"          # 2: fine (b is in the file)
               "b@c.example,\"ann@c.example, x@remote.example\"\n"  # 3: fine
               "loop1@c.example,loop2@c.example\n"   # 4: loop
               "loop2@c.example,loop1@c.example\n"   # 5: loop
               "ghost@c.example,nobody@c.example\n"  # 6: no such local address
               "e@c.example,ann@c.example\n"         # 7: fine (the 3rd alias)
               "d@c.example,ann@c.example\n"         # 8: beyond --max-aliases 3
               "@c2.example,ann@c.example\n")        # 9: a catch-all, fine
    reply = mail.daemon.request(["alias", "import", "--on-error", "skip"], execute_real=True,
                                stdin=aliases)
    assert reply["ok"], reply
    got = {b["line"]: b["reason"] for b in reply["data"]["bad"]}
    assert set(got) == {4, 5, 6, 8}, "\n".join(f"{k}: {v}" for k, v in got.items())
    assert "loop" in got[4] and "loop" in got[5] and "no mailbox or alias" in got[6]
    assert "maximum of 3 aliases" in got[8]
    assert mail.sql("SELECT goto FROM alias WHERE address = 'b@c.example'") == \
        "ann@c.example,x@remote.example"
    assert reply["data"]["imported"] == 4
    assert mail.sql("SELECT goto FROM alias WHERE address = '@c2.example'") == "ann@c.example"


def test_export_delete_import_gives_the_same_database(mail: MailStack, tmp_path: Path
                                                      ) -> None:
    domains = ("domain,description,mailboxes,aliases,maxquota,quota,password_expiry\n"
               "one.example,First one,100,50,1024,10240,90\n"
               "two.example,\"Second, with comma\",0,0,0,0,0\n")
    assert mail.ok("domain", "import", stdin=domains, real=True)["data"]["imported"] == 2
    tricky = 'zoe@one.example,"Zoë ""Quoted"", Jr.",1G,,' + HASH + ",no\n"
    mail.ok("user", "import", stdin=users_csv("one.example", 40, plain=3) + tricky,
            real=True)
    mail.ok("user", "import", stdin=users_csv("two.example", 10).replace(",100,", ",0,"),
            real=True)
    mail.ok("alias", "import", real=True, stdin=(
        "address,targets,active\n"
        "team@one.example,\"u00001@one.example,u00002@one.example\",yes\n"
        "@two.example,u00000@two.example,no\n"))
    before = mail.dump()
    files = {kind: tmp_path / f"{kind}.csv" for kind in ("domain", "user", "alias")}
    for kind, path in files.items():
        done = mail.daemon.podoctl(kind, "export", "--csv", str(path))
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "{SHA512-CRYPT}" in files["user"].read_text()
    piped = mail.daemon.podoctl("user", "export", "--domain", "two.example")
    assert piped.stdout.startswith("address,name,quota,password_hash")
    assert piped.stdout.count("\n") == 11
    for domain in ("one.example", "two.example"):
        mail.ok("domain", "delete", domain, "--cascade", real=True)
    assert counts(mail) == (0, 0, 0)
    for kind in ("domain", "user", "alias"):
        done = mail.daemon.podoctl(kind, "import", str(files[kind]), "--execute-real",
                                   "--yes")
        assert done.returncode == 0, done.stderr + done.stdout
    assert mail.dump() == before


def send(daemon: DaemonProcess, argv: list[str], data: str, *, real: bool = True,
         until: str | None = None) -> dict[str, Any] | None:
    """A request whose file goes as the command's data input (answering the daemon's
    ``stdin`` call, as podoctl does). With ``until``: return None once the second progress
    message saying it arrives (or its last), with the connection still open."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(300)
    sock.connect(str(daemon.socket_path))
    sock.sendall(json.dumps({"argv": argv, "execute_real": real, "stdin_offer": True})
                 .encode() + b"\n")
    reader = sock.makefile("rb")
    seen = 0
    try:
        while True:
            line = reader.readline()
            assert line, "the daemon closed the connection"
            message: dict[str, Any] = json.loads(line)
            if message.get("type") == "stdin":
                sock.sendall(json.dumps({"stdin": data}).encode() + b"\n")
            elif message.get("type") == "progress":
                if until is not None and until in str(message.get("message")):
                    seen += 1
                    if seen >= 2 or message.get("done") == message.get("total"):
                        return None
            else:
                assert until is None, message
                return daemon.checked(argv, message)
    finally:
        reader.close()
        sock.close()


@pytest.mark.parametrize("moment", ["hashing passwords", "writing rows"])
def test_kill_9_in_the_middle_leaves_all_or_nothing_and_a_rerun_finishes(
        mail: MailStack, moment: str) -> None:
    mail.ok("domain", "create", "k.example", real=True)
    # The file's last five rows are there before (pre-hashed, as the file has them).
    mail.ok("user", "import", stdin=users_csv("k.example", 5, start=11_995), real=True)
    text = users_csv("k.example", 12_000, plain=400)
    send(mail.daemon, ["user", "import"], text, until=moment)
    assert mail.daemon.proc is not None
    os.kill(mail.daemon.proc.pid, signal.SIGKILL)
    mail.daemon.proc.wait(10)
    assert counts(mail) in ((5, 5, 5), (12_000, 12_000, 12_000))
    assert half_created(mail) == 0
    mail.daemon.start()
    reply = send(mail.daemon, ["user", "import"], text)
    assert reply is not None and reply["ok"], reply
    assert reply["data"]["imported"] + reply["data"]["skipped"] == 12_000
    assert reply["data"]["skipped"] >= 5
    assert counts(mail) == (12_000, 12_000, 12_000) and half_created(mail) == 0


def test_imported_users_log_in_to_dovecot_and_generated_passwords_stay_private(
        stack: MailStack, dovecot: Dovecot, tmp_path: Path) -> None:
    domain = new_domain(stack)
    text = (HEADER + f"plain@{domain},Plain,50,Plain-Pass-4711,,yes\n"
            f"hashed@{domain},Hashed,50,,{HASH},yes\n"
            f"made@{domain},Made,50,,,yes\n"
            f"off@{domain},Off,50,Off-Pass-4711x,,no\n")
    path, out = tmp_path / "u.csv", tmp_path / "passwords.csv"
    done = stack.daemon.podoctl("user", "import", str(path), "--generate-passwords",
                                "--passwords-out", str(out), "--execute-real", "--yes")
    assert done.returncode == 2 and "cannot read" in done.stderr
    path.write_text(text)
    done = stack.daemon.podoctl("user", "import", str(path), "--generate-passwords",
                                "--passwords-out", str(out), "--execute-real", "--yes")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = out.read_text().splitlines()
    assert rows[0] == "address,password" and len(rows) == 2
    made_address, made_password = rows[1].split(",", 1)
    assert made_address == f"made@{domain}"
    assert made_password not in done.stdout + done.stderr
    assert made_password not in stack.daemon.log()
    audit = stack.daemon.podoctl("--json", "audit", "list")
    assert made_password not in audit.stdout
    assert dovecot.auth_test(f"plain@{domain}", "Plain-Pass-4711")
    assert not dovecot.auth_test(f"plain@{domain}", "Plain-Pass-4712")
    assert dovecot.auth_test(f"hashed@{domain}", "Pre-Hashed-Pass-77")
    assert dovecot.auth_test(f"made@{domain}", made_password)
    assert not dovecot.auth_test(f"off@{domain}", "Off-Pass-4711x")
    assert dovecot.imap_login(f"plain@{domain}", "Plain-Pass-4711")


def test_a_domain_admin_imports_and_exports_only_their_domains(
        pg: PgCluster, mail: MailStack, tmp_path: Path, public_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to ask as another user")
    for name in ("mine.example", "theirs.example"):
        mail.ok("domain", "create", name, real=True)
    mail.ok("user", "import", stdin=users_csv("theirs.example", 3), real=True)
    root = tmp_path / "scoped"
    root.mkdir()
    config = make_mail_config(pg, root, mail.db, access={
        "unix_users": {"nobody": {"role": "domain-admin", "domains": ["mine.example"]}}},
        socket={"path": str(public_dir / "podod.sock"), "mode": "0666"})
    daemon = DaemonProcess(config).start()
    try:
        text = users_csv("mine.example", 2) + f"x@theirs.example,X,100,,{HASH},yes\n"
        refused = daemon.request_as(65534, ["user", "import"], execute_real=True, stdin=text)
        assert not refused["ok"]
        assert refused["data"]["bad"] == [{"line": 4, "key": "x@theirs.example", "reason":
                                           "unix:nobody may not manage the domain "
                                           "theirs.example"}]
        done = daemon.request_as(65534, ["user", "import", "--on-error", "skip"],
                                 execute_real=True, stdin=text)
        assert done["ok"] and done["data"]["imported"] == 2, done
        exported = daemon.request_as(65534, ["user", "export"])
        assert exported["data"]["rows"] == 2 and "theirs" not in exported["data"]["csv"]
        assert daemon.request_as(65534, ["user", "export", "--domain", "theirs.example"]
                                 )["code"] == "forbidden"
        assert daemon.request_as(65534, ["domain", "import"], execute_real=True,
                                 stdin="domain\nnew.example\n")["code"] == "forbidden"
    finally:
        daemon.stop()
    assert mail.sql("SELECT count(*) FROM mailbox WHERE domain = 'theirs.example'") == "3"


def test_an_import_into_a_database_postfixadmin_made(postfixadmin_db: PostfixAdminDb
                                                      ) -> None:
    """PostfixAdmin's schema has BEFORE INSERT triggers on quota2 that insert the row
    themselves: the COPY of an import goes through them as an INSERT does."""
    pfa = postfixadmin_db
    with DaemonProcess(pfa.config_path) as daemon:
        text = users_csv("example.com", 3).replace(",100,", ",10,")
        reply = daemon.request(["user", "import"], execute_real=True, stdin=text)
        assert reply["ok"] and reply["data"]["imported"] == 3, reply
        again = daemon.request(["user", "import"], execute_real=True, stdin=text)
        assert again["data"]["skipped"] == 3
    assert pfa.sql("SELECT count(*) FROM quota2 WHERE username LIKE 'u0%'") == "3"
    assert pfa.sql("SELECT count(*) FROM alias WHERE address LIKE 'u0%'") == "3"
