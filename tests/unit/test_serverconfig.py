"""The Postfix, Dovecot and SOGo files under config/ are exactly what podod.mail.serverconfig
renders, the text the test beds run against the real daemons: the docs cannot drift."""

from __future__ import annotations

from pathlib import Path

from podod.mail.serverconfig import (
    POSTFIX_MAPS,
    POSTFIX_PARAMETERS,
    SqlLogin,
    dovecot24_quota_conf,
    dovecot_dict_sql_conf,
    dovecot_quota_conf,
    dovecot_sql_conf,
    example_files,
    postfix_map,
)

CONFIG = Path(__file__).resolve().parents[2] / "config"


def test_shipped_examples_are_the_rendered_ones() -> None:
    shipped = {str(p.relative_to(CONFIG)): p.read_text()
               for folder in ("postfix", "dovecot", "sogo") for p in (CONFIG / folder).iterdir()}
    rendered = example_files()
    assert sorted(shipped) == sorted(rendered), \
        "run: python -m podod.mail.serverconfig config"
    for name, text in rendered.items():
        assert shipped[name] == text, f"config/{name} differs; run: python -m " \
                                      "podod.mail.serverconfig config"


def test_every_map_is_used_by_main_cf_once() -> None:
    used = [name for names in POSTFIX_PARAMETERS.values() for name in names]
    assert sorted(used) == sorted(POSTFIX_MAPS)


def test_logins_are_rendered_into_the_files() -> None:
    login = SqlLogin(host="db.example", port=6432, dbname="mx", user="reader", password="s3")
    text = postfix_map("virtual_alias_maps.cf", login)
    assert "hosts = inet:db.example:6432\nuser = reader\npassword = s3\ndbname = mx\n" in text
    assert "query = SELECT goto FROM alias WHERE address = '%s' AND active = true" in text
    sql = dovecot_sql_conf(login, scheme="BLF-CRYPT")
    assert "connect = host=db.example port=6432 dbname=mx user=reader password=s3\n" in sql
    assert "default_pass_scheme = BLF-CRYPT\n" in sql
    assert "username = '%u'" in sql


def test_the_quota_dict_writes_quota2_with_the_quota_role() -> None:
    login = SqlLogin(host="db.example", port=6432, dbname="mx", user="quota", password="s3")
    text = dovecot_dict_sql_conf(login)
    assert "connect = host=db.example port=6432 dbname=mx user=quota password=s3\n" in text
    for key, column in (("storage", "bytes"), ("messages", "messages")):
        assert (f"map {{\n  pattern = priv/quota/{key}\n  table = quota2\n  username_field = "
                f"username\n  value_field = {column}\n}}\n") in text
    conf = dovecot_quota_conf("/etc/dovecot/x.ext", mail_user="mail")
    assert "  quota = dict:User quota::proxy::sqlquota\n" in conf
    assert "  sqlquota = pgsql:/etc/dovecot/x.ext\n" in conf and "    user = mail\n" in conf
    v24 = dovecot24_quota_conf(login)
    assert "quota_clone = yes" in v24 and "    pgsql db.example {\n" in v24
    assert "      sql_table = quota2\n" in v24 and "      value_field bytes {\n" in v24
