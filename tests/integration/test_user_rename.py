"""``user rename`` against the real mail stack of the session: a mailbox that received mail over
LMTP is renamed (in its domain, and into another one) by a daemon whose maildir server is
the session's sshd (moves as vmail through the sudoers rule podod renders; ``doveadm kick``
and the auth-cache flush as root through the services' line). Afterwards the real Dovecot
logs the new address in with the same password and shows the old mail, the real Postfix
routes the old aliases to it, and the old address is gone (or an alias, --keep-alias).
Every refusal is one sentence and changes nothing: the database dump and the maildirs are
compared before and after."""

from __future__ import annotations

import imaplib
import os
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_mail_servers import PASSWORD, inbox_count

from conftest import (
    OWNER,
    PFA_PASSWORDS,
    STACK_DB,
    MailStack,
    PostfixAdminDb,
    make_mail_config,
    new_domain,
)
from podod.mail.maildirs import MaildirLayout, sudoers_rule
from podod.servers.services import sudoers_line
from podod.servers.settings import ServerConfig
from testbed.daemon import DaemonProcess
from testbed.dovecot import Dovecot
from testbed.postfix import Postfix
from testbed.sshd import Sshd
from testbed.sudoers import SudoersRule
from testbed.waiting import poll as wait_for

NOBODY = 65534
# The domains a domain-admin (the local user nobody) is granted, and one they are not.
MINE, THEIRS = "rename-mine.example", "rename-theirs.example"


def control(dovecot: Dovecot) -> dict[str, Any]:
    return {"doveadm_config": str(dovecot.config), "services": ["dovecot"],
            "flush_auth_cache": True, "kick_sessions": True}


@pytest.fixture(scope="module")
def daemon(stack: MailStack, dovecot: Dovecot, sshd: Sshd,
           daemons_tmp: Path) -> Iterator[DaemonProcess]:
    """One daemon for the module: mx1 (the session's sshd) holds the maildirs and runs the
    after-actions, with the sudoers lines podod renders for exactly that."""
    root = daemons_tmp / "rename"
    root.mkdir()
    os.chmod(root, 0o711)  # the domain-admin (nobody) reaches the socket
    trash = f"{dovecot.mail_dir}/.trash-rename"
    entry = sshd.server_entry("mx1", control=control(dovecot))
    rules = [sudoers_rule(MaildirLayout(str(dovecot.mail_dir), trash, "vmail"), sshd.user),
             sudoers_line(ServerConfig.model_validate(entry), sshd.user)]
    path = make_mail_config(stack.pg, root, STACK_DB, servers=[entry],
                            socket={"path": str(root / "podod.sock"), "mode": "0666"},
                            access={"unix_users": {"nobody": {"role": "domain-admin",
                                                              "domains": [MINE]}}})
    config = yaml.safe_load(path.read_text())
    config["mail"]["maildir"] = {"server": "mx1", "root": str(dovecot.mail_dir),
                                 "trash": trash, "purge_interval": 0}
    path.write_text(yaml.safe_dump(config))
    for name in (MINE, THEIRS):
        stack.ok("domain", "create", name, real=True)
    with SudoersRule("\n".join(rules)), DaemonProcess(path) as started:
        assert wait_for(lambda: started.request(["server", "show", "mx1"])["data"]["state"]
                        == "connected")
        yield started


def ok(daemon: DaemonProcess, *argv: str, real: bool = False) -> dict[str, Any]:
    reply = daemon.request(list(argv), execute_real=real)
    assert reply["ok"], reply["message"]
    return reply


def refused(daemon: DaemonProcess, stack: MailStack, dovecot: Dovecot, *argv: str,
            uid: int | None = None) -> str:
    """The refusal's sentence, after checking it is one and that nothing changed."""
    before, homes = stack.dump(), maildirs(dovecot)
    if uid is None:
        reply = daemon.request(list(argv), execute_real=True)
    else:
        reply = daemon.request_as(uid, list(argv), execute_real=True)
    assert not reply["ok"], reply
    message = str(reply["message"])
    assert "\n" not in message and "Traceback" not in message, message
    assert stack.dump() == before and maildirs(dovecot) == homes
    return message


def maildirs(dovecot: Dovecot) -> set[str]:
    return {f"{d.name}/{m.name}" for d in dovecot.mail_dir.iterdir() if d.is_dir()
            for m in d.iterdir()}


def lmtp_deliver(dovecot: Dovecot, user: str, subject: str) -> None:
    with smtplib.LMTP("127.0.0.1", dovecot.lmtp_port, timeout=10) as lmtp:
        lmtp.sendmail("sender@remote.example", [user],
                      f"Subject: {subject}\r\n\r\nkeep me\r\n")


def mailbox_with_mail(stack: MailStack, dovecot: Dovecot, user: str, *extra: str) -> Path:
    stack.ok("user", "create", user, "--password-stdin", *extra, stdin=PASSWORD, real=True)
    lmtp_deliver(dovecot, user, "before the rename")
    assert wait_for(lambda: inbox_count(dovecot, user, PASSWORD) == 1)
    assert wait_for(lambda: stack.sql(
        f"SELECT messages FROM quota2 WHERE username = '{user}'").strip() == "1")
    local, domain = user.split("@")
    home = dovecot.mail_dir / domain / local
    assert (home / "Maildir").is_dir()
    return home


def row(stack: MailStack, query: str) -> str:
    return stack.sql(query).strip()


def test_rename_carries_mail_password_aliases_and_quota(
        daemon: DaemonProcess, stack: MailStack, dovecot: Dovecot, postfix: Postfix) -> None:
    domain = new_domain(stack)
    old, new = f"alice@{domain}", f"alice.doe@{domain}"
    home = mailbox_with_mail(stack, dovecot, old, "--name", "Alice Doe", "--quota-mb", "64")
    created = row(stack, f"SELECT created FROM mailbox WHERE username = '{old}'")
    targets = f"bob@remote.example,{old},carol@remote.example"
    stack.ok("alias", "create", f"list@{domain}", "--to", targets, real=True)
    stack.ok("alias", "create", f"team@{domain}", "--to", old, real=True)
    # Written by hand: addresses podod's checks would not let through (not yet there).
    stack.sql(f"INSERT INTO alias (address, goto, domain) VALUES ('both@{domain}', "
              f"'{old},{new}', '{domain}'), ('near@{domain}', 'x{old},{old}.org', "
              f"'{domain}')")  # substrings only
    session = imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=10)
    session.login(old, PASSWORD)

    before = stack.dump()
    plan = ok(daemon, "user", "rename", old, new)
    assert plan["sandbox"] is True and plan["message"] == f"mailbox {old} would be renamed to {new}"
    assert (f"Would move the maildir {home} to {dovecot.mail_dir}/{domain}/alice.doe on mx1 "
            "after the backup, just before the commit (and back if the commit fails)."
            ) in plan["notes"]
    changes = {(c["action"], c["target"], c["key"]) for c in plan["changes"]}
    assert changes == {
        ("insert", "mailbox", new), ("delete", "mailbox", old),
        ("insert", "alias", new), ("delete", "alias", old),
        ("update", "alias", f"list@{domain}"), ("update", "alias", f"team@{domain}"),
        ("update", "alias", f"both@{domain}"),
        ("insert", "quota2", new), ("delete", "quota2", old),
        ("move", "maildir", str(home))}
    assert stack.dump() == before and home.is_dir()

    real = ok(daemon, "user", "rename", old, new, real=True)
    assert real["message"] == f"mailbox {old} renamed to {new}", real
    assert real["data"] == {"old": old, "new": new, "aliases": 3, "maildir_moved": True,
                            "keep_alias": False}
    after = [n for n in real["notes"] if n.startswith("after: ")]
    assert f"after: check the maildir move of {old} to {new} on mx1: done ({home} → " \
           f"{dovecot.mail_dir}/{domain}/alice.doe)" in after, after
    assert not any("FAILED" in n for n in after), after
    for user in (old, new):  # neither a cached old login nor a cached "unknown user" stays
        assert any(n.startswith(f"after: flush {user} from Dovecot's auth cache on mx1 "
                                "(mailbox renamed): done") for n in after), after
    assert any(n.startswith(f"after: end the Dovecot sessions of {old} on mx1 (mailbox "
                            f"renamed): done ({old} kicked") for n in after), after
    # The row: new name, same password, quota, name and creation time.
    assert row(stack, f"SELECT username, local_part, domain, maildir, quota, name, created "
                      f"FROM mailbox WHERE username = '{new}'") == (
        f"{new}|alice.doe|{domain}|{domain}/alice.doe/|{64 << 20}|Alice Doe|{created}")
    assert row(stack, f"SELECT goto FROM alias WHERE address = '{new}'") == new
    assert row(stack, f"SELECT messages FROM quota2 WHERE username = '{new}'") == "1"
    # The old address exists nowhere.
    for table, column in (("mailbox", "username"), ("alias", "address"),
                          ("quota2", "username")):
        assert row(stack, f"SELECT count(*) FROM {table} WHERE {column} = '{old}'") == "0"
    assert row(stack, f"SELECT count(*) FROM alias WHERE goto ~ '(^|,){old}(,|$)'") == "0"
    # Each alias edited at its element, in its order, without a second copy.
    assert row(stack, f"SELECT goto FROM alias WHERE address = 'list@{domain}'") == (
        f"bob@remote.example,{new},carol@remote.example")
    assert row(stack, f"SELECT goto FROM alias WHERE address = 'both@{domain}'") == new
    assert row(stack, f"SELECT goto FROM alias WHERE address = 'near@{domain}'") == (
        f"x{old},{old}.org")
    # The maildir moved, and the real Dovecot and Postfix see the rename.
    assert not home.exists() and (dovecot.mail_dir / domain / "alice.doe" / "Maildir").is_dir()
    assert dovecot.imap_login(new, PASSWORD) and not dovecot.imap_login(old, PASSWORD)
    assert inbox_count(dovecot, new, PASSWORD) == 1
    assert postfix.resolve("virtual_alias_maps", f"list@{domain}") == (
        f"bob@remote.example,{new},carol@remote.example")
    assert postfix.resolve("virtual_alias_maps", f"team@{domain}") == new
    assert postfix.resolve("virtual_mailbox_maps", new) is not None
    assert postfix.resolve("virtual_mailbox_maps", old) is None
    assert postfix.resolve("virtual_alias_maps", old) is None
    # The old address's IMAP session was ended (doveadm kick).
    assert wait_for(lambda: _closed(session))
    session.shutdown()
    lmtp_deliver(dovecot, new, "after the rename")
    assert wait_for(lambda: inbox_count(dovecot, new, PASSWORD) == 2)
    assert not home.exists()

    # The change's backup restores the old mailbox (the maildir is the operator's to move).
    ok(daemon, "backup", "restore", str(real["backup_id"]), "--overwrite-later-changes",
       real=True)
    assert row(stack, f"SELECT maildir FROM mailbox WHERE username = '{old}'") == (
        f"{domain}/alice/")
    assert row(stack, f"SELECT count(*) FROM mailbox WHERE username = '{new}'") == "0"
    assert row(stack, f"SELECT goto FROM alias WHERE address = 'list@{domain}'") == targets


def _closed(session: imaplib.IMAP4) -> bool:
    try:
        session.noop()
    except (imaplib.IMAP4.abort, OSError):
        return True
    return False


def test_keep_alias_and_another_domain(daemon: DaemonProcess, stack: MailStack,
                                       dovecot: Dovecot, postfix: Postfix) -> None:
    domain, other = new_domain(stack), new_domain(stack)
    old, new = f"bob@{domain}", f"robert@{other}"
    mailbox_with_mail(stack, dovecot, old)
    stack.ok("alias", "create", f"sales@{domain}", "--to", old, real=True)
    plan = ok(daemon, "user", "rename", old, new, "--keep-alias")
    real = ok(daemon, "confirm", str(plan["plan_id"]))  # exactly the plan, maildir move too
    assert real["sandbox"] is False and real["data"]["keep_alias"] is True
    assert [c for c in real["changes"] if c["target"] == "maildir"] == [
        c for c in plan["changes"] if c["target"] == "maildir"] != []
    assert row(stack, f"SELECT goto, domain FROM alias WHERE address = '{old}'") == (
        f"{new}|{domain}")
    assert row(stack, f"SELECT domain, maildir FROM mailbox WHERE username = '{new}'") == (
        f"{other}|{other}/robert/")
    assert postfix.resolve("virtual_alias_maps", old) == new
    assert postfix.resolve("virtual_alias_maps", f"sales@{domain}") == new
    assert inbox_count(dovecot, new, PASSWORD) == 1
    assert not dovecot.imap_login(old, PASSWORD)
    assert row(stack, f"SELECT count(*) FROM mailbox WHERE username = '{old}'") == "0"
    assert (dovecot.mail_dir / other / "robert" / "Maildir").is_dir()
    assert not (dovecot.mail_dir / domain / "bob").exists()


def test_a_mailbox_without_a_maildir_yet(daemon: DaemonProcess, stack: MailStack,
                                         dovecot: Dovecot) -> None:
    domain = new_domain(stack)
    old, new = f"carl@{domain}", f"karl@{domain}"
    stack.ok("user", "create", old, "--password-stdin", stdin=PASSWORD, real=True)
    real = ok(daemon, "user", "rename", old, new, real=True)
    assert real["data"]["maildir_moved"] is False
    assert (f"after: end the Dovecot sessions of {old} on mx1 (mailbox renamed): done (no "
            "open session)") in real["notes"]
    assert (f"There is no maildir {dovecot.mail_dir}/{domain}/carl on mx1 yet (the mailbox "
            "never received mail nor logged in): nothing to move.") in real["notes"]
    assert dovecot.imap_login(new, PASSWORD)


def test_bad_renames_are_one_sentence_and_change_nothing(
        daemon: DaemonProcess, stack: MailStack, dovecot: Dovecot) -> None:
    domain = new_domain(stack)
    full = new_domain(stack, max_mailboxes="1", max_aliases="1")
    small = new_domain(stack, max_quota_mb="10")
    user = f"dora@{domain}"
    mailbox_with_mail(stack, dovecot, user, "--quota-mb", "50")
    stack.ok("user", "create", f"erin@{domain}", "--password-stdin", stdin=PASSWORD, real=True)
    stack.ok("user", "create", f"fay@{full}", "--password-stdin", stdin=PASSWORD, real=True)
    stack.ok("alias", "create", f"info@{domain}", "--to", user, real=True)
    stack.ok("alias", "create", f"info@{full}", "--to", f"fay@{full}", real=True)
    stack.ok("domain", "create", f"alias-of-{domain}", real=True)
    stack.ok("domain-alias", "create", f"alias-of-{domain}", "--to", domain, real=True)

    def bad(*argv: str) -> str:
        return refused(daemon, stack, dovecot, "user", "rename", *argv)

    assert bad(user, f"erin@{domain}") == f"the mailbox erin@{domain} exists already; " \
                                          "nothing was changed"
    assert bad(user, f"info@{domain}").startswith(f"info@{domain} is an alias already;")
    assert bad(user, f"dora@alias-of-{domain}").startswith(
        f"alias-of-{domain} is an alias domain (its addresses are those of its target domain)")
    assert bad(user, "dora@nowhere.example").startswith(
        "the domain nowhere.example does not exist")
    assert bad(user, user) == f"{user} is the mailbox's address already; nothing to rename"
    assert bad(user, f"DORA@{domain.upper()}") == (
        f"{user} is the mailbox's address already; nothing to rename")
    assert "local part" in bad(user, f"do ra@{domain}")
    assert "@" in bad(user, "no-at-sign")
    assert bad(f"nobody@{domain}", f"x@{domain}") == f"there is no mailbox nobody@{domain}"
    # The domains' limits: its mailboxes, a mailbox's largest quota, the old domain's aliases.
    assert bad(user, f"dora@{full}") == f"the domain {full} already has its maximum of 1 mailbox"
    assert bad(user, f"dora@{small}").startswith(
        f"the quota of {user} (50 MB) does not fit the domain {small}: a mailbox of {small} "
        "may have at most 10 MB")
    assert bad(f"fay@{full}", f"fay.x@{full}", "--keep-alias") == (
        f"the domain {full} already has its maximum of 1 alias")
    # A maildir already at the new place is never merged into.
    stray = dovecot.mail_dir / domain / "dora.new"
    stray.mkdir(parents=True)
    try:
        assert bad(user, f"dora.new@{domain}") == (
            f"a maildir {stray} is already on mx1 (left by a deleted mailbox "
            f"dora.new@{domain}?), and {user}'s mail would be mixed with it; move it aside "
            "first; nothing was changed")
    finally:
        stray.rmdir()
    assert inbox_count(dovecot, user, PASSWORD) == 1


def test_a_domain_admin_renames_within_their_domains_only(
        daemon: DaemonProcess, stack: MailStack, dovecot: Dovecot) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to ask as another user")
    user = f"gus@{MINE}"
    stack.ok("user", "create", user, "--password-stdin", stdin=PASSWORD, real=True)
    assert refused(daemon, stack, dovecot, "user", "rename", user, f"gus@{THEIRS}",
                   uid=NOBODY) == f"unix:nobody may not manage the domain {THEIRS}"
    assert refused(daemon, stack, dovecot, "user", "rename", f"x@{THEIRS}", f"gus2@{MINE}",
                   uid=NOBODY) == f"unix:nobody may not manage the domain {THEIRS}"
    # An alias of a domain they do not manage forwards to the mailbox: not without
    # --keep-alias (it would be changed behind their back, or left pointing nowhere).
    stack.ok("alias", "create", f"gus@{THEIRS}", "--to", user, real=True)
    assert refused(daemon, stack, dovecot, "user", "rename", user, f"gustav@{MINE}",
                   uid=NOBODY) == (
        f"1 alias of domains you do not manage forwards to {user}; rename it with "
        "--keep-alias (they keep delivering through the old address), or ask an admin; "
        "nothing was changed")
    reply = daemon.request_as(NOBODY, ["user", "rename", user, f"gustav@{MINE}",
                                       "--keep-alias"], execute_real=True)
    assert reply["ok"], reply
    assert THEIRS not in str(reply["changes"]) and THEIRS not in " ".join(reply["notes"])
    assert row(stack, f"SELECT goto FROM alias WHERE address = 'gus@{THEIRS}'") == user
    assert row(stack, f"SELECT goto FROM alias WHERE address = '{user}'") == f"gustav@{MINE}"


def test_a_failed_commit_moves_the_maildir_back(daemon: DaemonProcess, stack: MailStack,
                                                dovecot: Dovecot) -> None:
    """The database refuses the change only at COMMIT (a deferred constraint trigger), after
    the maildir was moved: it is moved back, and the old mailbox keeps its mail."""
    domain = new_domain(stack)
    old, new = f"hank@{domain}", f"hank.fails@{domain}"
    home = mailbox_with_mail(stack, dovecot, old)
    stack.sql("""
        CREATE FUNCTION rename_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'check_violation';
        END $$;
        CREATE CONSTRAINT TRIGGER rename_test_refuse AFTER INSERT ON mailbox
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            WHEN (NEW.username LIKE 'hank.fails@%') EXECUTE FUNCTION rename_test_refuse();
    """)
    try:
        message = refused(daemon, stack, dovecot, "user", "rename", old, new)
    finally:
        stack.sql("DROP TRIGGER rename_test_refuse ON mailbox; "
                  "DROP FUNCTION rename_test_refuse()")
    assert message.startswith("the database refused the change: refused at commit"), message
    assert message.endswith(f"; the maildir was moved back to {home}"), message
    assert (home / "Maildir").is_dir()
    assert inbox_count(dovecot, old, PASSWORD) == 1


def test_rows_podod_cannot_carry_refuse_the_rename(daemon: DaemonProcess, stack: MailStack,
                                                   dovecot: Dovecot) -> None:
    """A PostfixAdmin database's vacation reply of the old address (a table podod's schema
    does not have) is not left behind under the old name."""
    domain = new_domain(stack)
    user = f"ida@{domain}"
    stack.ok("user", "create", user, "--password-stdin", stdin=PASSWORD, real=True)
    stack.sql("CREATE TABLE vacation (email varchar(255) PRIMARY KEY, subject text, "
              f"body text, domain varchar(255)); INSERT INTO vacation VALUES ('{user}', "
              f"'away', 'back soon', '{domain}'); ALTER TABLE vacation OWNER TO {OWNER}")
    try:
        assert refused(daemon, stack, dovecot, "user", "rename", user, f"ida2@{domain}") == (
            f"{user} has a vacation reply in PostfixAdmin's table vacation, which podod does "
            "not carry to a new address; remove them first (and set them up again for the "
            "new address); nothing was changed")
    finally:
        stack.sql("DROP TABLE vacation")


def test_a_maildir_that_cannot_be_moved_changes_nothing(
        daemon: DaemonProcess, stack: MailStack, dovecot: Dovecot) -> None:
    """The move fails on the server (the new domain's folder cannot be made: a file is in
    its way): nothing is committed, and the mailbox keeps its mail where its row says."""
    domain, other = new_domain(stack), new_domain(stack)
    old, new = f"jo@{domain}", f"jo@{other}"
    home = mailbox_with_mail(stack, dovecot, old)
    blocker = dovecot.mail_dir / other
    blocker.write_text("not a folder")
    try:
        message = refused(daemon, stack, dovecot, "user", "rename", old, new)
    finally:
        blocker.unlink()
    assert message.startswith(f"the maildir {home} could not be moved to {blocker}/jo on mx1 "
                              "("), message
    assert message.endswith("; nothing was changed"), message
    assert (home / "Maildir").is_dir() and inbox_count(dovecot, old, PASSWORD) == 1


def test_a_postfixadmin_database(postfixadmin_db: PostfixAdminDb) -> None:
    """On the database PostfixAdmin 3.3 built (its merge_quota2 trigger, its extra mailbox
    columns and tables): PostfixAdmin shows the renamed mailbox, takes its password and sees
    its alias follow; a vacation reply in PostfixAdmin's own table refuses the rename of its
    mailbox. The maildirs are on this machine (a ``local: true`` maildir server)."""
    pfa = postfixadmin_db
    root = pfa.root / "vmail"
    (root / "example.com" / "alice" / "Maildir" / "cur").mkdir(parents=True)
    config = yaml.safe_load(pfa.config_path.read_text())
    config["servers"] = [{"name": "local", "local": True}]
    config["mail"]["maildir"] = {"server": "local", "root": str(root),
                                 "trash": str(root / ".trash"), "run_as": None,
                                 "purge_interval": 0}
    pfa.config_path.write_text(yaml.safe_dump(config))
    pfa.sql("INSERT INTO quota2 (username, bytes, messages) VALUES "
            "('alice@example.com', 2048, 2)")
    old, new = "alice@example.com", "alice.pfa@example.com"
    with DaemonProcess(pfa.config_path) as daemon:
        real = ok(daemon, "user", "rename", old, new, real=True)
        assert real["data"]["aliases"] == 1 and real["data"]["maildir_moved"] is True
        assert (root / "example.com" / "alice.pfa" / "Maildir" / "cur").is_dir()
        assert pfa.sql(f"SELECT bytes, messages FROM quota2 WHERE username = '{new}'") == (
            "2048|2")
        assert pfa.sql(f"SELECT count(*) FROM quota2 WHERE username = '{old}'") == "0"
        shown = pfa.admin.view("mailbox", new)
        assert (shown["Name"], shown["Quota"], shown["Active"]) == ("Alice Pfa", "50", "YES")
        assert pfa.admin.login(new, PFA_PASSWORDS[old])
        assert not pfa.admin.login(old, PFA_PASSWORDS[old])
        assert pfa.admin.view("alias", "info@example.com")["To"] == new

        bob = "bob@example.com"
        pfa.sql(f"INSERT INTO vacation (email, subject, body, domain) VALUES ('{bob}', "
                "'away', 'back soon', 'example.com')")
        before = pfa.pg.dump(pfa.db)
        reply = daemon.request(["user", "rename", bob, "robert@example.com"],
                               execute_real=True)
        assert not reply["ok"] and reply["message"] == (
            f"{bob} has a vacation reply in PostfixAdmin's table vacation, which podod does "
            "not carry to a new address; remove them first (and set them up again for the "
            "new address); nothing was changed")
        assert pfa.pg.dump(pfa.db) == before
