"""Sorted listings (issue 15, "Lists page and filter"): ``--sort FIELD`` / ``--sort -FIELD``
on user, alias and domain list, through a real daemon on a real PostgreSQL. Walking every
page under a sort gives every row exactly once, in the sort's order, ties (equal values
across a page boundary) broken by the key."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import OWNER, MailStack, make_mail_config
from testbed.daemon import DaemonProcess
from testbed.postgres import PgCluster

DIGEST = "{SHA512-CRYPT}$6$rounds=5000$abcdefgh$" + "x" * 86
NAMES = ["Charlie", "Alpha", "Bravo", ""]  # every name 6 or 7 times; "" sorts first
COUNT = 25


@pytest.fixture(scope="module")
def stack(pg: PgCluster, mail_template: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailStack]:
    """One daemon for the module, on 25 mailboxes (s.example) whose names and quotas repeat,
    created in one statement (so they share one creation time), and 3 more domains."""
    root: Path = tmp_path_factory.mktemp("sorting")
    db = "sorting"
    pg.psql(f'CREATE DATABASE "{db}" TEMPLATE "{mail_template}" OWNER "{OWNER}"')
    daemon = DaemonProcess(make_mail_config(pg, root, db)).start()
    mail = MailStack(pg, db, root, root / "podod.yaml", daemon)
    names = "ARRAY[" + ", ".join(f"'{n}'" for n in NAMES) + "]"
    mail.sql(
        "INSERT INTO domain (domain, description, quota) VALUES ('s.example', 'b', 10), "
        "('t.example', 'a', 30), ('u.example', 'b', 20), ('v.example', 'a', 10);"
        "INSERT INTO mailbox (username, password, name, maildir, quota, local_part, domain) "
        f"SELECT 'user' || lpad(i::text, 2, '0') || '@s.example', '{DIGEST}', "
        f"({names})[1 + i % 4], 's.example/' || i || '/', (i % 3) * 1048576, "
        "'user' || lpad(i::text, 2, '0'), 's.example' FROM generate_series(1, 25) AS i;"
        "INSERT INTO alias (address, goto, domain) "
        "SELECT 'a' || lpad(i::text, 2, '0') || '@s.example', "
        "'user0' || (i % 3 + 1) || '@s.example', 's.example' FROM generate_series(1, 10) i;"
        "UPDATE mailbox SET active = false WHERE username IN "
        "('user05@s.example', 'user17@s.example');")
    yield mail
    daemon.stop()
    pg.drop_database(db)


def _user(i: int) -> str:
    return f"user{i:02d}@s.example"


def _walk(mail: MailStack, *argv: str, key: str) -> tuple[list[str], list[str]]:
    """Every page of a listing, following each reply's next-page command: the keys in the
    order shown, and the next-page commands."""
    reply = mail.ok(*argv)
    keys = [str(r[key]) for r in reply["data"]]  # type: ignore[attr-defined]
    commands: list[str] = []
    while "page" in reply:
        command = str(reply["page"]["next"])  # type: ignore[index]
        commands.append(command)
        words = shlex.split(command)
        assert words[0] == "podoctl"
        reply = mail.ok(*words[1:])
        keys += [str(r[key]) for r in reply["data"]]  # type: ignore[attr-defined]
    return keys, commands


@pytest.mark.parametrize(("sort", "order"), [
    ("name", lambda i: (NAMES[i % 4], _user(i))),
    ("quota", lambda i: (i % 3, _user(i))),
    ("active", lambda i: (i not in (5, 17), _user(i))),
    ("address", lambda i: (_user(i),)),
])
def test_user_list_walks_every_page_once_in_the_sorted_order(
        stack: MailStack, sort: str, order: object) -> None:
    expected = sorted(range(1, COUNT + 1), key=order)  # type: ignore[arg-type]
    for descending in (False, True):
        wanted = [_user(i) for i in (reversed(expected) if descending else expected)]
        word = ("-" if descending else "") + sort
        keys, commands = _walk(stack, "user", "list", "--domain", "s.example", "--sort", word,
                               "--limit", "4", key="username")
        assert keys == wanted, word
        assert len(commands) == 6  # 25 rows, 4 a page
        assert all(shlex.split(c)[1:7] == ["user", "list", "--domain", "s.example", "--sort",
                                           word] for c in commands)


def test_equal_sort_values_are_ordered_by_the_key_across_pages(stack: MailStack) -> None:
    # All 25 mailboxes were created at the same instant: the address breaks every tie.
    keys, _ = _walk(stack, "user", "list", "--sort", "-created", "--limit", "3",
                           key="username")
    assert keys == [_user(i) for i in range(COUNT, 0, -1)]
    first = stack.ok("user", "list", "--sort", "name", "--limit", "5")
    assert first["message"] == "5 mailboxes shown, 20 more"
    page = first["page"]
    assert page["sort"] == "name"  # type: ignore[index]
    # The cursor names the last row's name and address; the names "" hold rows 3, 7, ... 23.
    assert page["after"] == '["", "user19@s.example"]'  # type: ignore[index]
    assert first["notes"] == [
        "20 more mailboxes after these; the next 5: podoctl user list --sort name --limit 5 "
        "--after '[\"\", \"user19@s.example\"]' (or --limit N, or --all for every one)"]
    rest = stack.ok("user", "list", "--sort", "name", "--after", str(page["after"]))  # type: ignore
    assert [r["username"] for r in rest["data"]][:2] == [  # type: ignore[attr-defined]
        "user23@s.example", "user01@s.example"]  # the last "", then the first "Alpha"
    assert len(rest["data"]) == 20 and "page" not in rest  # type: ignore[arg-type]


def test_alias_and_domain_lists_sort_too(stack: MailStack) -> None:
    keys, _ = _walk(stack, "alias", "list", "--sort", "-goto", "--limit", "3", key="address")
    wanted = sorted(range(1, 11), key=lambda i: (i % 3 + 1, f"a{i:02d}"), reverse=True)
    assert keys == [f"a{i:02d}@s.example" for i in wanted]
    keys, _ = _walk(stack, "domain", "list", "--sort", "description", "--limit", "1",
                    key="domain")
    assert keys == ["t.example", "v.example", "s.example", "u.example"]
    keys, _ = _walk(stack, "domain", "list", "--sort=-quota", "--limit", "2", key="domain")
    assert keys == ["t.example", "u.example", "v.example", "s.example"]
    everything = stack.ok("domain", "list", "--sort", "-domain", "--all")
    assert [d["domain"] for d in everything["data"]] == [  # type: ignore[attr-defined]
        "v.example", "u.example", "t.example", "s.example"]


def test_an_unknown_sort_field_or_a_foreign_cursor_is_refused_in_one_sentence(
        stack: MailStack) -> None:
    before = stack.dump()
    for argv, said in [
        (["user", "list", "--sort", "size"],
         "user list: --sort must be one of address, -address, name, -name, quota, -quota, "
         "domain, -domain, active, -active, created, -created, modified, -modified, "
         "not 'size'"),
        (["alias", "list", "--sort", "-name"],
         "alias list: --sort must be one of address, -address, goto, -goto, domain, -domain, "
         "active, -active, created, -created, modified, -modified, not '-name'"),
        (["user", "list", "--sort", "quota", "--after", "user03@s.example"],
         "user list: --after must be the value the previous page named for --sort quota, "
         "e.g. [VALUE, KEY]"),
        (["user", "list", "--sort", "quota", "--after", '["lots", "user03@s.example"]'],
         "user list: --after must be the value the previous page named for --sort quota, "
         "e.g. [VALUE, KEY]"),
        (["domain", "list", "--sort", "created", "--after", '["yesterday", "s.example"]'],
         "domain list: --after must be the value the previous page named for --sort "
         "created, e.g. [VALUE, KEY]"),
        (["user", "list", "--sort", "active", "--after", '[1, "user03@s.example"]'],
         "user list: --after must be the value the previous page named for --sort active, "
         "e.g. [VALUE, KEY]"),
    ]:
        result = stack.daemon.podoctl(*argv)
        assert result.returncode == 2, (argv, result.stdout, result.stderr)
        assert result.stderr.strip() == f"Error: {said}", argv
        assert "Traceback" not in result.stderr
    assert stack.dump() == before
