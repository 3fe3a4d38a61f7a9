"""mail.databases in the configuration, and the merge of listing pages across databases
(the integration side: tests/integration/test_several_databases.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from podod.bus.paging import Page, Sort, merge_pages
from podod.config import parse_config
from podod.errors import ConfigError

DSN = "postgresql://podod@127.0.0.1:5432/mail"


def _config(mail: dict[str, Any]) -> Any:
    return parse_config({"mail": mail}, source="podod.yaml")


def test_mail_database_alone_is_the_one_database_named_main() -> None:
    config = _config({"database": {"dsn": DSN}})
    assert list(config.mail.all_databases()) == ["main"]
    assert config.mail.all_databases()["main"].dsn == DSN
    assert config.mail.option("main") == "mail.database"
    assert _config({}).mail.all_databases() == {}


def test_several_databases_by_name() -> None:
    config = _config({"databases": {"mx1": {"dsn": DSN}, "mx2": {
        "dsn": DSN.replace("mail", "mail2"), "via_server": "mx2", "max_pool": 3}}})
    every = config.mail.all_databases()
    assert list(every) == ["mx1", "mx2"]
    assert every["mx2"].via_server == "mx2" and every["mx2"].max_pool == 3
    assert config.mail.option("mx2") == "mail.databases.mx2"


@pytest.mark.parametrize(("mail", "sentence"), [
    ({"database": {"dsn": DSN}, "databases": {"mx1": {"dsn": DSN}}},
     "give either mail.database (one mail database) or mail.databases (several, by name), "
     "not both"),
    ({"databases": {"MX 1": {"dsn": DSN}}}, "'MX 1' is not a database name"),
    ({"databases": {"mx1": {}}}, "mx1: dsn is required"),
    ({"databases": {"mx1": {"dsn": "postgresql://podod:secret@db/mail"}}},
     "must not hold the password"),
    ({"databases": {"mx1": {"dsn": DSN, "min_pool": 4, "max_pool": 2}}},
     "min_pool must not be larger than max_pool"),
])
def test_a_bad_databases_section_is_one_sentence(mail: dict[str, Any], sentence: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(mail)
    assert sentence in info.value.message
    assert "\n" not in info.value.message.strip()


def _pages(page: Page, per_db: dict[str, list[tuple[Any, str]]], more: dict[str, int]
           ) -> list[tuple[str, tuple[list[Any], int, str]]]:
    out = []
    for name, rows in per_db.items():
        dicts = [{"_sort": v, "username": k} if page.by else {"username": k} for v, k in rows]
        out.append((name, (dicts, more.get(name, 0), "")))
    return out


def test_pages_of_several_databases_merge_in_byte_order_and_count_the_rest() -> None:
    page = Page.of("user list", 3, None, False)
    merged, more, last = asyncio.run(merge_pages(page, _pages(page, {
        "a": [(None, "Zed@x.org"), (None, "a.b@x.org"), (None, "ab@x.org")],
        "b": [(None, "a-c@y.org"), (None, "b@y.org")]}, {"a": 4, "b": 1}), key="m.username"))
    # Python's str order is PostgreSQL's COLLATE "C" (UTF-8 bytes): capitals first.
    assert [(r["username"], r["database"]) for r in merged] == [
        ("Zed@x.org", "a"), ("a-c@y.org", "b"), ("a.b@x.org", "a")]
    assert more == 4 + 1 + 2  # each database's rest, and the rows fetched but not shown
    assert last == "a.b@x.org"


def test_a_sorted_merge_follows_the_sort_value_then_the_key_and_drops_it() -> None:
    page = Page.of("user list", 2, None, False, sort="-quota",
                   sorts={"address": Sort(), "quota": Sort("m.quota", "int")})
    merged, more, last = asyncio.run(merge_pages(page, _pages(page, {
        "a": [(5, "b@x.org"), (1, "a@x.org")], "b": [(5, "c@y.org"), (3, "d@y.org")]}, {}),
        key="m.username"))
    assert [r["username"] for r in merged] == ["c@y.org", "b@x.org"]
    assert all("_sort" not in r for r in merged)
    assert more == 2 and last == '[5, "b@x.org"]'


def test_maildir_and_sogo_databases_must_name_configured_ones() -> None:
    from pydantic import ValidationError as Invalid

    from podod.mail.settings import MailSettings

    databases = {"mx1": {"dsn": "postgresql://podod@127.0.0.1/mail"},
                 "mx2": {"dsn": "postgresql://podod@127.0.0.1/mail2"}}
    fine = MailSettings.model_validate({"databases": databases,
                                        "maildir": {"databases": ["mx1"]},
                                        "sogo": {"databases": ["mx2"]}})
    assert fine.maildir.databases == ["mx1"]
    for key in ("maildir", "sogo"):
        with pytest.raises(Invalid) as caught:
            MailSettings.model_validate({"databases": databases, key: {"databases": ["mx3"]}})
        assert (f"{key}.databases: there is no mail database named mx3 (the configured ones: "
                "mx1, mx2)") in str(caught.value)
