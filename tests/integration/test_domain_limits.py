"""A domain's limits (mailboxes, aliases, total and per-mailbox quota, with PostfixAdmin's
0 = unlimited and -1 = none) hold through the real daemon on a real PostgreSQL, also when
the requests arrive at the same time (issue 11)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conftest import MailStack


def at_once(mail: MailStack, argvs: list[list[str]]) -> list[dict[str, Any]]:
    """Send every request for real at the same time, each on its own connection."""
    with ThreadPoolExecutor(len(argvs)) as pool:
        return list(pool.map(lambda argv: mail.daemon.request(argv, execute_real=True),
                             argvs))


def test_concurrent_creates_stop_at_max_mailboxes(mail: MailStack) -> None:
    mail.ok("domain", "create", "a.example", "--max-mailboxes", "2", real=True)
    replies = at_once(mail, [["user", "create", f"r{i}@a.example", "--generate-password"]
                             for i in range(1, 5)])
    assert sum(r["ok"] for r in replies) == 2, replies
    refused = [r for r in replies if not r["ok"]]
    assert [r["message"] for r in refused] == \
        ["the domain a.example already has its maximum of 2 mailboxes"] * 2
    assert {r["code"] for r in refused} == {"invalid"}
    assert mail.sql("SELECT count(*) FROM mailbox WHERE domain = 'a.example'") == "2"
    shown = {row[0]: row[1] for row in mail.ok("domain", "show", "a.example")["table"]["rows"]}
    assert shown["mailboxes"] == "2 of 2"


def test_concurrent_creates_stop_at_max_aliases(mail: MailStack) -> None:
    mail.ok("domain", "create", "a.example", "--max-aliases", "2", real=True)
    replies = at_once(mail, [["alias", "create", f"list{i}@a.example", "--to",
                              "someone@remote.example"] for i in range(1, 5)])
    assert sum(r["ok"] for r in replies) == 2, replies
    assert [r["message"] for r in replies if not r["ok"]] == \
        ["the domain a.example already has its maximum of 2 aliases"] * 2
    assert mail.sql("SELECT count(*) FROM alias WHERE domain = 'a.example'") == "2"


def test_concurrent_quota_raises_stay_within_the_domain_total(mail: MailStack) -> None:
    mail.ok("domain", "create", "q.example", "--quota-mb", "100", real=True)
    for user in ("u1", "u2"):
        mail.ok("user", "create", f"{user}@q.example", "--quota-mb", "10",
                "--generate-password", real=True)
    replies = at_once(mail, [["user", "update", f"{user}@q.example", "--quota-mb", "80"]
                             for user in ("u1", "u2")])
    assert sum(r["ok"] for r in replies) == 1, replies
    assert [r["message"] for r in replies if not r["ok"]] == \
        ["the domain q.example has 20 MB of its 100 MB quota left, not 80 MB"]
    assert mail.sql("SELECT (sum(quota) / 1048576)::int FROM mailbox") == "90"


def test_a_total_quota_gives_new_mailboxes_a_quota_and_refuses_unlimited(
        mail: MailStack) -> None:
    mail.ok("domain", "create", "q.example", "--quota-mb", "100", real=True)
    # The case: no --quota-mb planned "quota unlimited" on a domain with a total.
    assert mail.ok("user", "create", "u1@q.example", "--generate-password")["message"] == \
        "mailbox u1@q.example would be created (quota 100 MB)"
    before = mail.dump()
    unlimited = ("mailboxes of q.example need a quota of a share of its 100 MB total; "
                 "unlimited (--quota-mb 0) is not allowed")
    assert mail.fail("user", "create", "u1@q.example", "--quota-mb", "0",
                     "--generate-password") == unlimited
    assert mail.dump() == before
    mail.ok("user", "create", "u1@q.example", "--quota-mb", "30", "--generate-password",
            real=True)
    # Without --quota-mb: what is left of the total (PostfixAdmin's default).
    assert mail.ok("user", "create", "u2@q.example", "--generate-password",
                   real=True)["message"] == "mailbox u2@q.example created (quota 70 MB)"
    before = mail.dump()
    assert mail.fail("user", "create", "u3@q.example", "--generate-password") == (
        "the domain q.example has no quota left (all 100 MB are allotted to its mailboxes); "
        "lower a mailbox's quota or raise the domain's with 'domain update q.example "
        "--quota-mb N'")
    assert mail.fail("user", "update", "u1@q.example", "--quota-mb", "0") == unlimited
    assert mail.fail("user", "update", "u1@q.example", "--quota-mb", "31") == \
        "the domain q.example has 30 MB of its 100 MB quota left, not 31 MB"
    assert mail.dump() == before
    mail.ok("user", "update", "u1@q.example", "--quota-mb", "20", real=True)


def test_the_largest_mailbox_quota_is_the_default_within_the_total(mail: MailStack) -> None:
    mail.ok("domain", "create", "m.example", "--quota-mb", "100", "--max-quota-mb", "40",
            real=True)
    quotas = [mail.ok("user", "create", f"u{i}@m.example", "--generate-password",
                      real=True)["data"]["quota"] // 1048576 for i in range(1, 4)]
    assert quotas == [40, 40, 20]
    assert mail.fail("user", "create", "u9@m.example", "--quota-mb", "0",
                     "--generate-password") == \
        ("mailboxes of m.example need a quota of at most 40 MB; unlimited (--quota-mb 0) "
         "is not allowed")


def test_minus_one_means_none_allowed(mail: MailStack) -> None:
    mail.ok("domain", "create", "n.example", "--max-aliases", "-1", "--max-mailboxes", "-1",
            real=True)
    before = mail.dump()
    assert mail.fail("alias", "create", "info@n.example", "--to", "a@remote.example") == (
        "the domain n.example may have no aliases (its limit is -1, switched off; "
        "'domain update n.example --max-aliases N' allows some)")
    assert mail.fail("user", "create", "u@n.example", "--generate-password") == (
        "the domain n.example may have no mailboxes (its limit is -1, switched off; "
        "'domain update n.example --max-mailboxes N' allows some)")
    assert mail.dump() == before
    shown = {row[0]: row[1] for row in mail.ok("domain", "show", "n.example")["table"]["rows"]}
    assert (shown["mailboxes"], shown["aliases"]) == ("0 of none", "0 of none")
    assert mail.fail("domain", "update", "n.example", "--max-aliases", "-2") == \
        "domain update: --max-aliases must be at least -1, not -2"


def test_limits_cannot_be_lowered_below_what_the_domain_uses(mail: MailStack) -> None:
    mail.ok("domain", "create", "a.example", real=True)
    for user, quota in (("u1", "30"), ("u2", "0")):
        mail.ok("user", "create", f"{user}@a.example", "--quota-mb", quota,
                "--generate-password", real=True)
    mail.ok("alias", "create", "info@a.example", "--to", "u1@a.example", real=True)
    before = mail.dump()
    for argv, refused in [
        (["--max-mailboxes", "1"], "the domain a.example has 2 mailboxes, so --max-mailboxes "
         "1 (at most 1) would not hold; delete mailboxes first or give at least 2"),
        (["--max-aliases", "-1"], "the domain a.example has 1 alias, so --max-aliases -1 "
         "(none) would not hold; delete aliases first or give at least 1"),
        (["--quota-mb", "100"], "1 mailbox of a.example has an unlimited quota, so "
         "--quota-mb 100 would not hold; give it a quota first"),
        (["--max-quota-mb", "20"], "2 mailboxes of a.example have an unlimited quota or one "
         "above 20 MB, so --max-quota-mb 20 would not hold; change their quotas first"),
        (["--quota-mb", "50", "--max-quota-mb", "60"], "the largest mailbox quota (60 MB) "
         "cannot be larger than the domain's total quota (50 MB)"),
    ]:
        assert mail.fail("domain", "update", "a.example", *argv) == refused, argv
    assert mail.dump() == before
    mail.ok("user", "update", "u2@a.example", "--quota-mb", "40", real=True)
    assert mail.fail("domain", "update", "a.example", "--quota-mb", "60") == (
        "the mailboxes of a.example have 70 MB of quota allotted, so --quota-mb 60 would not "
        "hold; lower their quotas first or give at least 70")
    mail.ok("domain", "update", "a.example", "--quota-mb", "70", "--max-quota-mb", "40",
            "--max-mailboxes", "2", real=True)
    # A domain already over a limit (set outside podod) can still get a new description.
    mail.sql("UPDATE domain SET mailboxes = 1, maxquota = 100 WHERE domain = 'a.example'")
    mail.ok("domain", "update", "a.example", "--description", "A", real=True)


def test_a_mailbox_forwarding_a_copy_is_not_counted_as_an_alias(mail: MailStack) -> None:
    mail.ok("domain", "create", "a.example", "--max-aliases", "1", real=True)
    mail.ok("user", "create", "alice@a.example", "--generate-password", real=True)
    mail.ok("alias", "update", "alice@a.example", "--add", "alice@home.example", real=True)
    mail.ok("alias", "create", "info@a.example", "--to", "alice@a.example", real=True)
    shown = {row[0]: row[1] for row in mail.ok("domain", "show", "a.example")["table"]["rows"]}
    assert shown["aliases"] == "1 of 1"
    assert mail.fail("alias", "create", "sales@a.example", "--to", "alice@a.example") == \
        "the domain a.example already has its maximum of 1 alias"


def test_the_same_address_sent_at_once_is_refused_in_words(mail: MailStack) -> None:
    mail.ok("domain", "create", "a.example", real=True)
    replies = at_once(mail, [["user", "create", "same@a.example", "--generate-password"]] * 3)
    assert sum(r["ok"] for r in replies) == 1, replies
    assert [r["message"] for r in replies if not r["ok"]] == \
        ["the mailbox same@a.example already exists"] * 2
