"""The real mail stack accepts what podod writes: Dovecot authenticates and applies quotas,
Postfix routes through its pgsql maps, SOGo logs users in and changes passwords through the
``sogo_users`` view. Dovecot and Postfix read with the SELECT-only role, SOGo with its own
role; both were created by ``podod db init --roles``. The map and query text is the one
config/ ships (rendered from podod.mail.serverconfig)."""

from __future__ import annotations

import imaplib
import smtplib
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from conftest import (
    QUOTA_PW,
    QUOTA_ROLE,
    READER,
    READER_PW,
    SOGO_PW,
    SOGO_ROLE,
    STACK_DB,
    MailStack,
    make_mail_config,
    new_domain,
)
from testbed.daemon import DaemonProcess
from testbed.dovecot import Dovecot
from testbed.postfix import Postfix
from testbed.sogo import SOGo

PASSWORD = "Correct-Horse-7-Battery"
NEW_PASSWORD = "Staple-Another-42-Horse"


def podoctl_create(stack: MailStack, address: str, password: str, *extra: str) -> None:
    result = stack.daemon.podoctl("--execute-real", "--yes", "user", "create", address,
                                  "--password-stdin", *extra, input=password + "\n")
    assert result.returncode == 0, result.stderr


def inbox_count(dovecot: Dovecot, user: str, password: str) -> int:
    with imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=10) as imap:
        imap.login(user, password)
        _, data = imap.select("INBOX", readonly=True)
        imap.logout()
    return int(data[0] or 0)


# --- Dovecot --------------------------------------------------------------------------------

def test_dovecot_authenticates_a_podoctl_user_and_only_its_current_password(
        stack: MailStack, dovecot: Dovecot) -> None:
    domain = new_domain(stack)
    user = f"alice@{domain}"
    podoctl_create(stack, user, PASSWORD, "--name", "Alice Doe")
    assert dovecot.auth_test(user, PASSWORD)
    assert not dovecot.auth_test(user, "Wrong-Password-99")
    assert not dovecot.auth_test(user, "-3" + PASSWORD)  # a password, not an option
    assert dovecot.auth_test(user.upper(), PASSWORD)  # auth_username_format = %Lu
    assert dovecot.imap_login(user, PASSWORD)
    assert not dovecot.imap_login(user, "Wrong-Password-99")

    result = stack.daemon.podoctl("--execute-real", "--yes", "user", "reset-password", user,
                                  "--password-stdin", input=NEW_PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    assert dovecot.auth_test(user, NEW_PASSWORD)
    assert not dovecot.auth_test(user, PASSWORD)
    assert dovecot.imap_login(user, NEW_PASSWORD)
    assert not dovecot.imap_login(user, PASSWORD)

    generated = stack.ok("user", "reset-password", user, "--generate-password", real=True)
    assert dovecot.auth_test(user, str(generated["secret"]))
    assert not dovecot.auth_test(user, NEW_PASSWORD)


def test_dovecot_refuses_a_deactivated_user_or_domain(stack: MailStack,
                                                      dovecot: Dovecot) -> None:
    domain = new_domain(stack)
    user = f"bob@{domain}"
    stack.ok("user", "create", user, "--password-stdin", stdin=PASSWORD, real=True)
    assert dovecot.imap_login(user, PASSWORD)
    stack.ok("user", "update", user, "--active", "no", real=True)
    assert not dovecot.auth_test(user, PASSWORD)
    assert not dovecot.imap_login(user, PASSWORD)
    stack.ok("user", "update", user, "--active", "yes", real=True)
    assert dovecot.auth_test(user, PASSWORD)
    stack.ok("domain", "update", domain, "--active", "no", real=True)
    assert not dovecot.auth_test(user, PASSWORD)
    stack.ok("domain", "update", domain, "--active", "yes", real=True)
    assert dovecot.imap_login(user, PASSWORD)
    stack.ok("user", "delete", user, real=True)
    assert not dovecot.auth_test(user, PASSWORD)


def test_dovecot_applies_the_quota_podod_sets(stack: MailStack, dovecot: Dovecot) -> None:
    domain = new_domain(stack)
    user = f"carol@{domain}"
    stack.ok("user", "create", user, "--quota-mb", "100", "--password-stdin",
             stdin=PASSWORD, real=True)
    assert dovecot.quota_limit_kib(user) == str(100 * 1024)
    stack.ok("user", "update", user, "--quota-mb", "2048", real=True)
    assert dovecot.quota_limit_kib(user) == str(2048 * 1024)
    stack.ok("user", "update", user, "--quota-mb", "0", real=True)  # PostfixAdmin: unlimited
    assert dovecot.quota_limit_kib(user) == "-"


def test_the_sandbox_is_invisible_to_dovecot_and_postfix(stack: MailStack, dovecot: Dovecot,
                                                         postfix: Postfix) -> None:
    domain = new_domain(stack)
    user = f"dave@{domain}"
    before = stack.dump()
    reply = stack.ok("user", "create", user, "--password-stdin", stdin=PASSWORD)
    assert reply["sandbox"] is True
    stack.ok("alias", "create", f"@{domain}", "--to", "someone@remote.example")
    stack.ok("domain", "create", "sandbox-only.example")
    assert stack.dump() == before
    assert not dovecot.auth_test(user, PASSWORD)
    assert postfix.resolve("virtual_mailbox_maps", user) is None
    assert postfix.resolve("virtual_alias_maps", f"@{domain}") is None
    assert postfix.resolve("virtual_mailbox_domains", "sandbox-only.example") is None

    stack.ok("user", "create", user, "--password-stdin", stdin=PASSWORD, real=True)
    stack.ok("user", "reset-password", user, "--password-stdin", stdin=NEW_PASSWORD)
    stack.ok("user", "update", user, "--active", "no")
    assert dovecot.auth_test(user, PASSWORD)  # the sandbox changed nothing
    assert not dovecot.auth_test(user, NEW_PASSWORD)


# --- Postfix --------------------------------------------------------------------------------

def test_postfix_maps_resolve_domains_mailboxes_and_every_alias(stack: MailStack,
                                                                postfix: Postfix) -> None:
    domain = new_domain(stack)
    old = f"old-{domain}"
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    for user in (alice, bob):
        stack.ok("user", "create", user, "--password-stdin", stdin=PASSWORD, real=True)
    stack.ok("alias", "create", f"team@{domain}", "--to",
             f"{alice},{bob},carol@remote.example", real=True)
    stack.ok("alias", "create", f"postmaster@{domain}", "--to", alice, real=True)
    stack.ok("alias", "create", f"@{domain}", "--to", f"postmaster@{domain}", real=True)
    stack.ok("domain-alias", "create", old, "--to", domain, real=True)

    assert postfix.resolve("virtual_mailbox_domains", domain) == domain
    assert postfix.resolve("virtual_mailbox_domains", old) == old
    assert postfix.resolve("virtual_mailbox_domains", "unknown.example") is None

    assert postfix.resolve("virtual_mailbox_maps", alice) == f"{domain}/alice/"
    assert postfix.resolve("virtual_mailbox_maps", f"alice@{old}") == f"{domain}/alice/"
    assert postfix.resolve("virtual_mailbox_maps", f"team@{domain}") is None

    aliases = {
        alice: alice,  # the mailbox's own row, which a catch-all cannot override
        f"team@{domain}": f"{alice},{bob},carol@remote.example",
        f"postmaster@{domain}": alice,
        f"@{domain}": f"postmaster@{domain}",
        f"team@{old}": f"{alice},{bob},carol@remote.example",
        f"bob@{old}": bob,
        f"@{old}": f"postmaster@{domain}",
    }
    for key, targets in aliases.items():
        assert postfix.resolve("virtual_alias_maps", key) == targets, key
    assert postfix.resolve("virtual_alias_maps", f"nobody@{domain}") is None

    stack.ok("alias", "update", f"team@{domain}", "--remove", "carol@remote.example",
             "--active", "no", real=True)
    assert postfix.resolve("virtual_alias_maps", f"team@{domain}") is None
    stack.ok("alias", "update", f"team@{domain}", "--active", "yes", real=True)
    assert postfix.resolve("virtual_alias_maps", f"team@{domain}") == f"{alice},{bob}"
    stack.ok("domain", "update", domain, "--active", "no", real=True)
    assert postfix.resolve("virtual_mailbox_domains", domain) is None
    stack.ok("domain-alias", "delete", old, real=True)
    assert postfix.resolve("virtual_mailbox_domains", old) is None
    assert postfix.resolve("virtual_alias_maps", f"team@{old}") is None


def test_mail_through_postfix_reaches_the_dovecot_mailbox(stack: MailStack, postfix: Postfix,
                                                          dovecot: Dovecot) -> None:
    domain = new_domain(stack)
    old = f"old-{domain}"
    user = f"erin@{domain}"
    stack.ok("user", "create", user, "--password-stdin", stdin=PASSWORD, real=True)
    stack.ok("alias", "create", f"sales@{domain}", "--to", user, real=True)
    stack.ok("domain-alias", "create", old, "--to", domain, real=True)
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=10) as smtp:
        for rcpt in (user, f"sales@{domain}", f"sales@{old}", f"ERIN@{old}"):
            refused = smtp.sendmail("sender@remote.example", [rcpt],
                                    f"Subject: to {rcpt}\r\n\r\nhello\r\n")
            assert refused == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused_info:
            smtp.sendmail("sender@remote.example", [f"ghost@{domain}"], "Subject: x\r\n\r\nx\r\n")
        code, text = refused_info.value.recipients[f"ghost@{domain}"]
        assert code == 550 and b"User unknown in virtual" in text
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and inbox_count(dovecot, user, PASSWORD) < 4:
        time.sleep(0.05)
    assert inbox_count(dovecot, user, PASSWORD) == 4, postfix.output()


def quota2(stack: MailStack, user: str) -> tuple[int, int] | None:
    row = stack.sql(f"SELECT bytes || ' ' || messages FROM quota2 WHERE username = '{user}'")
    if not row:
        return None
    used, messages = row.split()
    return int(used), int(messages)


def quota2_at(stack: MailStack, user: str, messages: int, timeout: float
              ) -> tuple[int, int] | None:
    """quota2 once it counts ``messages`` (or whatever it holds when ``timeout`` is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        usage = quota2(stack, user)
        if usage is not None and usage[1] >= messages:
            return usage
        time.sleep(0.1)
    return quota2(stack, user)


def test_dovecot_writes_usage_into_quota2_and_podoctl_reports_it(
        stack: MailStack, postfix: Postfix, dovecot: Dovecot) -> None:
    """Dovecot's quota dict (the rendered dovecot-dict-sql.conf.ext, on the quota role)
    counts what LMTP delivers; user show and user list read it back."""
    domain = new_domain(stack)
    user = f"quinn@{domain}"
    stack.ok("user", "create", user, "--quota-mb", "10", "--password-stdin", stdin=PASSWORD,
             real=True)
    body = "x" * 2000
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=10) as smtp:
        for n in (1, 2):
            smtp.sendmail("sender@remote.example", [user],
                          f"Subject: quota {n}\r\n\r\n{body}\r\n")

    usage = quota2_at(stack, user, 2, timeout=20)
    assert usage is not None and usage[1] == 2, (usage, postfix.output(), dovecot.output())
    used = usage[0]
    assert 4000 < used < 8000  # two messages of a little over 2000 bytes
    shown = stack.ok("user", "show", user)
    assert shown["data"]["used"] == used and shown["data"]["messages"] == 2
    rows = dict(shown["table"]["rows"])
    assert rows["used"] == f"{used / 1024:.1f} KB, 2 messages (0 % of the quota)"
    listed = stack.ok("user", "list", "--domain", domain)
    assert [(r["username"], r["used"], r["messages"]) for r in listed["data"]] == [
        (user, used, 2)]
    text = stack.daemon.podoctl("user", "list", "--domain", domain).stdout
    assert f"{used / 1024:.1f} KB" in text and "messages" in text
    # Dovecot reads the same usage back (the dict is its quota), and the limit from userdb.
    quota = dovecot.doveadm("-f", "tab", "quota", "get", "-u", user).stdout
    assert f"STORAGE\t{-(-used // 1024)}\t{10 * 1024}" in quota, quota  # KiB, rounded up
    assert "MESSAGE\t2\t" in quota, quota


def test_a_new_mailboxs_first_deliveries_arriving_at_once_are_all_counted(
        stack: MailStack, postfix: Postfix, dovecot: Dovecot) -> None:
    """user create starts quota2 at 0, so Dovecot's quota dict only adds to it. Without that
    row, each concurrent first delivery recalculates the usage and the last one to write
    wins, losing the others' counts."""
    domain = new_domain(stack)
    user = f"burst@{domain}"
    sandbox = stack.ok("user", "create", user, "--password-stdin", stdin=PASSWORD)
    assert ("insert", "quota2", user) in [(c["action"], c["target"], c["key"])
                                          for c in sandbox["changes"]]
    stack.ok("user", "create", user, "--password-stdin", stdin=PASSWORD, real=True)
    assert quota2(stack, user) == (0, 0)
    assert stack.ok("user", "show", user)["data"]["messages"] == 0

    def send(n: int) -> None:
        with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=10) as smtp:
            smtp.sendmail("sender@remote.example", [user], f"Subject: burst {n}\r\n\r\nhi\r\n")

    burst = 12
    with ThreadPoolExecutor(burst) as pool:
        list(pool.map(send, range(burst)))
    quota2_at(stack, user, burst, timeout=30)
    time.sleep(0.5)  # a lost count would show as fewer; a recount could still land
    on_disk = len(list((dovecot.mail_dir / domain / "burst" / "Maildir" / "new").iterdir()))
    assert on_disk == burst, postfix.output()
    usage = quota2(stack, user)
    assert usage is not None and usage[1] == burst, (usage, dovecot.output())


def test_user_create_keeps_a_quota2_row_left_by_a_mailbox_deleted_elsewhere(
        stack: MailStack) -> None:
    """A quota2 row without its mailbox (deleted outside podod, its maildir maybe kept) is
    Dovecot's figure for that maildir: a new mailbox of the same name keeps it."""
    domain = new_domain(stack)
    user = f"again@{domain}"
    stack.sql(f"INSERT INTO quota2 (username, bytes, messages) VALUES ('{user}', 4096, 3)")
    created = stack.ok("user", "create", user, "--generate-password", real=True)
    assert "quota2" not in {c["target"] for c in created["changes"]}
    assert quota2(stack, user) == (4096, 3)


# --- SOGo -----------------------------------------------------------------------------------

def test_sogo_logs_the_user_in_and_refuses_a_deactivated_one(stack: MailStack,
                                                             sogo: SOGo) -> None:
    domain = new_domain(stack)
    user = f"frank@{domain}"
    stack.ok("user", "create", user, "--name", "Frank", "--password-stdin", stdin=PASSWORD,
             real=True)
    assert sogo.session().login(user, PASSWORD) == 200
    assert sogo.session().login(user, "Wrong-Password-99") == 403
    stack.ok("user", "update", user, "--active", "no", real=True)
    assert sogo.session().login(user, PASSWORD) == 403
    stack.ok("user", "update", user, "--active", "yes", real=True)
    assert sogo.session().login(user, PASSWORD) == 200
    stack.ok("domain", "update", domain, "--active", "no", real=True)
    assert sogo.session().login(user, PASSWORD) == 403
    stack.ok("domain", "update", domain, "--active", "yes", real=True)
    stack.ok("user", "reset-password", user, "--password-stdin", stdin=NEW_PASSWORD,
             real=True)  # SOGo caches no old password: the new one counts at once
    assert sogo.session().login(user, PASSWORD) == 403
    assert sogo.session().login(user, NEW_PASSWORD) == 200


def test_a_password_changed_in_sogo_goes_through_the_view_with_the_sogo_role(
        stack: MailStack, sogo: SOGo, dovecot: Dovecot) -> None:
    domain = new_domain(stack)
    user = f"grace@{domain}"
    stack.ok("user", "create", user, "--password-stdin", stdin=PASSWORD, real=True)
    session = sogo.session()
    assert session.login(user, PASSWORD) == 200
    status, body = session.change_password(user, PASSWORD, NEW_PASSWORD)
    assert status == 204, (body, sogo.output())
    stored = stack.sql(f"SELECT password FROM mailbox WHERE username = '{user}'")
    assert stored.lower().startswith("{sha512-crypt}$6$")
    assert dovecot.auth_test(user, NEW_PASSWORD) and not dovecot.auth_test(user, PASSWORD)
    assert sogo.session().login(user, NEW_PASSWORD) == 200
    shown = stack.ok("user", "show", user)
    assert shown["data"]["username"] == user


async def _try(user: str, password: str, port: int, sql: str) -> str:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user=user, password=password,
                                 database=STACK_DB)
    try:
        await conn.execute(sql)
        return "ok"
    except asyncpg.InsufficientPrivilegeError:
        return "denied"
    finally:
        await conn.close()


async def test_the_server_roles_have_only_the_grants_they_need(stack: MailStack) -> None:
    port = stack.pg.port
    assert await _try(READER, READER_PW, port, "SELECT * FROM mailbox, alias, alias_domain, "
                      "domain, quota2 LIMIT 1") == "ok"
    for sql in ("UPDATE mailbox SET name = name", "DELETE FROM alias",
                "INSERT INTO domain (domain) VALUES ('x.example')",
                "UPDATE sogo_users SET c_cn = c_cn"):
        assert await _try(READER, READER_PW, port, sql) == "denied", sql
    assert await _try(SOGO_ROLE, SOGO_PW, port,
                      "UPDATE sogo_users SET c_password = c_password WHERE false") == "ok"
    for sql in ("SELECT * FROM mailbox", "UPDATE mailbox SET name = name",
                "SELECT * FROM alias", "DELETE FROM sogo_users"):
        assert await _try(SOGO_ROLE, SOGO_PW, port, sql) == "denied", sql
    # Dovecot's quota dict: its upsert and unset on quota2, nothing anywhere else.
    for sql in ("INSERT INTO quota2 (username, bytes) VALUES ('q@x.example', 1) ON CONFLICT "
                "(username) DO UPDATE SET bytes = quota2.bytes + 1",
                "UPDATE quota2 SET messages = messages WHERE false",
                "DELETE FROM quota2 WHERE username = 'q@x.example'"):
        assert await _try(QUOTA_ROLE, QUOTA_PW, port, sql) == "ok", sql
    for sql in ("SELECT * FROM mailbox", "UPDATE mailbox SET quota = quota",
                "SELECT * FROM sogo_users", "DELETE FROM alias"):
        assert await _try(QUOTA_ROLE, QUOTA_PW, port, sql) == "denied", sql


# --- password schemes -----------------------------------------------------------------------

@pytest.mark.parametrize(("scheme", "prefix"), [
    ("SHA512-CRYPT", "{SHA512-CRYPT}$6$rounds=70000$"),
    ("BLF-CRYPT", "{BLF-CRYPT}$2y$10$"),
    ("ARGON2ID", "{ARGON2ID}$argon2id$v=19$"),
])
def test_every_password_scheme_is_accepted_by_dovecot_and_sogo(
        stack: MailStack, dovecot: Dovecot, sogo: SOGo, tmp_path: Path, scheme: str,
        prefix: str) -> None:
    """Each scheme podod offers, at its production strength, through a daemon configured
    for it on the same database."""
    path = make_mail_config(stack.pg, tmp_path, STACK_DB, passwords={"scheme": scheme})
    with DaemonProcess(path) as daemon:
        domain = f"{scheme.lower()}.example"
        assert daemon.request(["domain", "create", domain], execute_real=True)["ok"]
        user = f"henry@{domain}"
        reply = daemon.request(["user", "create", user, "--password-stdin"],
                               execute_real=True, stdin=PASSWORD)
        assert reply["ok"], reply
    assert stack.sql(f"SELECT password FROM mailbox WHERE username = '{user}'") \
        .startswith(prefix)
    assert dovecot.auth_test(user, PASSWORD) and not dovecot.auth_test(user, NEW_PASSWORD)
    assert dovecot.imap_login(user, PASSWORD)
    assert sogo.session().login(user, PASSWORD) == 200
    assert sogo.session().login(user, NEW_PASSWORD) == 403


def test_db_init_roles_is_repeatable(stack: MailStack) -> None:
    again = subprocess.run([sys.executable, "-m", "podod.cli", "db", "init", "--roles", "-c",
                            str(stack.config_path)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[1:] == [f"granted {READER}", f"granted {SOGO_ROLE}",
                                             f"granted {QUOTA_ROLE}"]
