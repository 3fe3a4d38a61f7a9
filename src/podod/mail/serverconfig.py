"""What Postfix, Dovecot and SOGo need to read the podod mail database: the pgsql map files,
Dovecot's SQL passdb/userdb (2.3 and 2.4 syntax) and SOGo's SQL user source.

The query text lives here once. ``config/postfix``, ``config/dovecot`` and ``config/sogo``
are rendered from it (``python -m podod.mail.serverconfig config``; a unit test fails when
they differ), and the test beds in the checkout's ``testbed/`` render their configs from it too, so
the documented configuration is exactly the one the tests run against real daemons.

The queries are PostfixAdmin's (same tables, same meanings), with boolean ``active`` columns
and two additions an administrator expects: a switched-off domain stops authenticating its
mailboxes, and a backup-MX domain is not a local mailbox domain.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SqlLogin:
    """How a mail server reaches the database: the SELECT-only role for Postfix and
    Dovecot (``mail.roles.readonly``), the SOGo role for SOGo (``mail.roles.sogo``)."""

    host: str = "127.0.0.1"
    port: int = 5432
    dbname: str = "mail"
    user: str = "mailreader"
    password: str = "CHANGE-ME"


EXAMPLE_READONLY = SqlLogin()
EXAMPLE_SOGO = SqlLogin(user="sogo")
EXAMPLE_QUOTA = SqlLogin(user="mailquota")

# --- Postfix ------------------------------------------------------------------------------
# file name -> (what it answers, query). Postfix expands %s (the whole key), %u (local part)
# and %d (domain), escaped for SQL. A map whose query uses %u is skipped for "@domain" keys,
# which is why catch-alls of alias domains need a map of their own.
POSTFIX_MAPS: dict[str, tuple[str, str]] = {
    "virtual_mailbox_domains.cf": (
        "domains (and alias domains) podod hosts: virtual_mailbox_domains",
        "SELECT domain FROM domain WHERE domain = '%s' AND active = true "
        "AND backupmx = false"),
    "virtual_mailbox_maps.cf": (
        "mailboxes: virtual_mailbox_maps",
        "SELECT maildir FROM mailbox WHERE username = '%s' AND active = true"),
    "virtual_alias_domain_mailbox_maps.cf": (
        "mailboxes addressed through an alias domain: virtual_mailbox_maps",
        "SELECT maildir FROM mailbox, alias_domain "
        "WHERE alias_domain.alias_domain = '%d' "
        "AND mailbox.username = '%u' || '@' || alias_domain.target_domain "
        "AND mailbox.active = true AND alias_domain.active = true"),
    "virtual_alias_maps.cf": (
        "aliases, mailboxes' own alias rows and catch-alls (@domain): virtual_alias_maps",
        "SELECT goto FROM alias WHERE address = '%s' AND active = true"),
    "virtual_alias_domain_maps.cf": (
        "aliases addressed through an alias domain: virtual_alias_maps",
        "SELECT goto FROM alias, alias_domain "
        "WHERE alias_domain.alias_domain = '%d' "
        "AND alias.address = '%u' || '@' || alias_domain.target_domain "
        "AND alias.active = true AND alias_domain.active = true"),
    "virtual_alias_domain_catchall_maps.cf": (
        "the target domain's catch-all, for an alias domain: virtual_alias_maps",
        "SELECT goto FROM alias, alias_domain "
        "WHERE alias_domain.alias_domain = '%d' "
        "AND alias.address = '@' || alias_domain.target_domain "
        "AND alias.active = true AND alias_domain.active = true"),
    "relay_domains.cf": (
        "backup MX domains, whose mail Postfix relays to their primary MX: relay_domains",
        "SELECT domain FROM domain WHERE domain = '%s' AND active = true "
        "AND backupmx = true"),
    "transport_maps.cf": (
        "a domain's transport (domain create|update --transport): transport_maps; "
        "'virtual' (PostfixAdmin's default) and none keep virtual_transport",
        "SELECT transport FROM domain WHERE domain = '%s' AND active = true "
        "AND transport IS NOT NULL AND transport <> '' AND transport <> 'virtual'"),
}

# main.cf parameter -> the map files it lists, in lookup order.
POSTFIX_PARAMETERS: dict[str, list[str]] = {
    "virtual_mailbox_domains": ["virtual_mailbox_domains.cf"],
    "virtual_mailbox_maps": ["virtual_mailbox_maps.cf",
                             "virtual_alias_domain_mailbox_maps.cf"],
    "virtual_alias_maps": ["virtual_alias_maps.cf", "virtual_alias_domain_maps.cf",
                           "virtual_alias_domain_catchall_maps.cf"],
    "relay_domains": ["relay_domains.cf"],
    "transport_maps": ["transport_maps.cf"],
}


def postfix_map(name: str, login: SqlLogin) -> str:
    """One ``pgsql:`` map file (mode 0640 root:postfix: it holds a password)."""
    purpose, query = POSTFIX_MAPS[name]
    return (f"# podod: {purpose}\n"
            f"hosts = inet:{login.host}:{login.port}\n"
            f"user = {login.user}\n"
            f"password = {login.password}\n"
            f"dbname = {login.dbname}\n"
            f"query = {query}\n")


def postfix_main_cf(map_dir: str | Path, *, proxy: bool = True) -> str:
    """The main.cf lines that use the maps (``proxy:`` shares connections in production)."""
    kind = "proxy:pgsql:" if proxy else "pgsql:"
    lines = []
    for parameter, files in POSTFIX_PARAMETERS.items():
        maps = ",\n    ".join(f"{kind}{Path(map_dir) / name}" for name in files)
        lines.append(f"{parameter} =\n    {maps}")
    return "\n".join(lines) + "\n"


# --- Dovecot ------------------------------------------------------------------------------
# Dovecot 2.3 expands %u; 2.4 spells it %{user}. Both escape it for SQL.
DOVECOT_PASSWORD_QUERY = (
    "SELECT mailbox.username AS user, mailbox.password FROM mailbox "
    "JOIN domain ON domain.domain = mailbox.domain "
    "WHERE mailbox.username = '{user}' AND mailbox.active = true AND domain.active = true")
# 2.3: quota_rule, "*:bytes=0" is unlimited (PostfixAdmin's 0).
DOVECOT_USER_QUERY_23 = (
    "SELECT '*:bytes=' || mailbox.quota AS quota_rule FROM mailbox "
    "JOIN domain ON domain.domain = mailbox.domain "
    "WHERE mailbox.username = '{user}' AND mailbox.active = true AND domain.active = true")
# 2.4: the quota plugin's settings are userdb fields; 0 means unlimited in PostfixAdmin.
DOVECOT_USER_QUERY_24 = (
    "SELECT CASE WHEN mailbox.quota > 0 THEN mailbox.quota || 'B' ELSE 'unlimited' END "
    "AS quota_storage_size FROM mailbox "
    "JOIN domain ON domain.domain = mailbox.domain "
    "WHERE mailbox.username = '{user}' AND mailbox.active = true AND domain.active = true")
DOVECOT_ITERATE_QUERY = (
    "SELECT mailbox.username AS user FROM mailbox "
    "JOIN domain ON domain.domain = mailbox.domain "
    "WHERE mailbox.active = true AND domain.active = true")


def dovecot_sql_conf(login: SqlLogin, scheme: str = "SHA512-CRYPT") -> str:
    """Dovecot 2.3's ``dovecot-sql.conf.ext`` (passdb and userdb ``driver = sql``; mode
    0600 root, it holds a password)."""
    user = "%u"
    return (
        "# podod: Dovecot 2.3 SQL passdb and userdb on the podod mail database.\n"
        "# Used by passdb { driver = sql  args = /etc/dovecot/dovecot-sql.conf.ext } and the\n"
        "# same userdb { ... }. Stored hashes carry their {SCHEME} prefix; the default only\n"
        "# applies to hashes without one.\n"
        "driver = pgsql\n"
        f"connect = host={login.host} port={login.port} dbname={login.dbname} "
        f"user={login.user} password={login.password}\n"
        f"default_pass_scheme = {scheme}\n"
        f"password_query = {DOVECOT_PASSWORD_QUERY.format(user=user)}\n"
        f"user_query = {DOVECOT_USER_QUERY_23.format(user=user)}\n"
        f"iterate_query = {DOVECOT_ITERATE_QUERY}\n")


def dovecot24_conf(login: SqlLogin, scheme: str = "SHA512-CRYPT") -> str:
    """The same for Dovecot 2.4, whose SQL settings live in dovecot.conf itself."""
    user = "%{user}"
    return (
        "# podod: Dovecot 2.4 SQL passdb and userdb on the podod mail database\n"
        "# (a conf.d file; 2.4 renamed default_pass_scheme, %u and the quota settings).\n"
        "sql_driver = pgsql\n"
        f"pgsql {login.host} {{\n"
        "  parameters {\n"
        f"    port = {login.port}\n"
        f"    dbname = {login.dbname}\n"
        f"    user = {login.user}\n"
        f"    password = {login.password}\n"
        "  }\n"
        "}\n"
        "passdb sql {\n"
        f"  default_password_scheme = {scheme}\n"
        f"  query = {DOVECOT_PASSWORD_QUERY.format(user=user)}\n"
        "}\n"
        "userdb sql {\n"
        f"  query = {DOVECOT_USER_QUERY_24.format(user=user)}\n"
        f"  iterate_query = {DOVECOT_ITERATE_QUERY}\n"
        "}\n")


# --- Dovecot's quota usage in quota2 --------------------------------------------------------
# Dovecot's dict keys -> quota2's columns (PostfixAdmin's table: username, bytes, messages).
QUOTA_MAPS = {"priv/quota/storage": "bytes", "priv/quota/messages": "messages"}
QUOTA_DICT = "sqlquota"


def dovecot_dict_sql_conf(login: SqlLogin) -> str:
    """Dovecot 2.3's ``dovecot-dict-sql.conf.ext``: the quota dict writes usage into
    ``quota2`` with the quota role (``mail.roles.quota``). The dict process reads it as
    Dovecot's internal user: mode 0640 root:dovecot (it holds a password)."""
    maps = "".join(
        "map {\n"
        f"  pattern = {pattern}\n"
        "  table = quota2\n"
        "  username_field = username\n"
        f"  value_field = {column}\n"
        "}\n" for pattern, column in QUOTA_MAPS.items())
    return (
        "# podod: Dovecot 2.3 quota dict -> the quota2 table of the podod mail database.\n"
        f"# Used by dict {{ {QUOTA_DICT} = pgsql:/etc/dovecot/dovecot-dict-sql.conf.ext }}.\n"
        f"connect = host={login.host} port={login.port} dbname={login.dbname} "
        f"user={login.user} password={login.password}\n"
        + maps)


def dovecot_quota_conf(dict_sql_path: str | Path = "/etc/dovecot/dovecot-dict-sql.conf.ext",
                       mail_user: str = "vmail") -> str:
    """Dovecot 2.3's dovecot.conf lines: the quota plugin on the SQL dict (through the dict
    proxy, whose socket the mail processes, running as ``mail_user``, must reach). The
    limit still comes from the userdb's ``quota_rule``."""
    return (
        "# podod: quota usage in quota2, through the SQL dict (Dovecot 2.3)\n"
        "mail_plugins = $mail_plugins quota\n"
        "plugin {\n"
        f"  quota = dict:User quota::proxy::{QUOTA_DICT}\n"
        "}\n"
        "dict {\n"
        f"  {QUOTA_DICT} = pgsql:{dict_sql_path}\n"
        "}\n"
        "service dict {\n"
        "  unix_listener dict {\n"
        "    mode = 0600\n"
        f"    user = {mail_user}\n"
        "  }\n"
        "}\n"
        "protocol imap {\n"
        "  mail_plugins = $mail_plugins imap_quota\n"
        "}\n")


def dovecot24_quota_conf(login: SqlLogin, mail_user: str = "vmail") -> str:
    """The same for Dovecot 2.4, which dropped the dict quota backend: the count driver
    enforces, quota_clone copies the usage into quota2."""
    maps = "".join(
        f"    dict_map {pattern} {{\n"
        "      sql_table = quota2\n"
        "      username_field = username\n"
        f"      value_field {column} {{\n"
        "        type = uint\n"
        "      }\n"
        "    }\n" for pattern, column in QUOTA_MAPS.items())
    return (
        "# podod: Dovecot 2.4 quota (count) with its usage cloned into quota2\n"
        "mail_plugins {\n"
        "  quota = yes\n"
        "  quota_clone = yes\n"
        "}\n"
        "quota \"User quota\" {\n"
        "  driver = count\n"
        "}\n"
        "dict_server {\n"
        f"  dict {QUOTA_DICT} {{\n"
        "    driver = sql\n"
        "    sql_driver = pgsql\n"
        f"    pgsql {login.host} {{\n"
        "      parameters {\n"
        f"        port = {login.port}\n"
        f"        dbname = {login.dbname}\n"
        f"        user = {login.user}\n"
        f"        password = {login.password}\n"
        "      }\n"
        "    }\n"
        + maps +
        "  }\n"
        "}\n"
        "quota_clone {\n"
        "  dict proxy {\n"
        f"    name = {QUOTA_DICT}\n"
        "  }\n"
        "}\n"
        "service dict {\n"
        "  unix_listener dict {\n"
        "    mode = 0600\n"
        f"    user = {mail_user}\n"
        "  }\n"
        "}\n")


# --- SOGo ---------------------------------------------------------------------------------
SOGO_ALGORITHMS = {"SHA512-CRYPT": "sha512-crypt", "BLF-CRYPT": "blf-crypt",
                   "ARGON2ID": "argon2id"}


def sogo_user_source(login: SqlLogin, scheme: str = "SHA512-CRYPT",
                     address_book: bool = True) -> str:
    """The ``SOGoUserSources`` entry for sogo.conf / sogod.plist (the view ``sogo_users``).

    ``prependPasswordScheme`` makes SOGo read the ``{SCHEME}`` prefix podod stores and write
    it when a user changes the password, so Dovecot keeps accepting it."""
    url = (f"postgresql://{login.user}:{login.password}@{login.host}:{login.port}/"
           f"{login.dbname}/sogo_users")
    return (
        "SOGoUserSources = (\n"
        "  {\n"
        "    type = sql;\n"
        "    id = mailboxes;\n"
        f"    viewURL = \"{url}\";\n"
        "    canAuthenticate = YES;\n"
        f"    isAddressBook = {'YES' if address_book else 'NO'};\n"
        "    displayName = \"Mailboxes\";\n"
        f"    userPasswordAlgorithm = {SOGO_ALGORITHMS[scheme]};\n"
        "    prependPasswordScheme = YES;\n"
        "  }\n"
        ");\n")


def dovecot_sieve_conf(*, managesieve_port: int = 4190,
                       master_users: str | Path = "/etc/dovecot/master-users",
                       submission_host: str | None = None) -> str:
    """Pigeonhole for Dovecot 2.3 (docs/sogo.md): the sieve plugin in LMTP, so a user's
    active script (SOGo's ``sogo``) runs on delivery; ManageSieve on loopback, where SOGo
    writes the script; and the master users SOGo logs in as for ``sogo-tool ... -p``
    (``user vacation set``), from a passwd-file readable by Dovecot only."""
    submission = (f"submission_host = {submission_host}\n" if submission_host else
                  "# Vacation replies leave through sendmail_path (/usr/sbin/sendmail, Postfix),\n"
                  "# or through SMTP with: submission_host = 127.0.0.1:25\n")
    return (
        "protocols = $protocols sieve\n"
        "service managesieve-login {\n"
        "  inet_listener sieve {\n"
        "    address = 127.0.0.1\n"
        f"    port = {managesieve_port}\n"
        "  }\n"
        "}\n"
        "protocol lmtp {\n"
        "  mail_plugins = $mail_plugins sieve\n"
        "}\n"
        "plugin {\n"
        "  sieve = file:~/sieve;active=~/.dovecot.sieve\n"
        "  sieve_vacation_min_period = 1d\n"
        "  sieve_vacation_max_period = 30d\n"
        "  # mail to an alias is answered too (Postfix passes the original recipient)\n"
        "  sieve_vacation_use_original_recipient = yes\n"
        "}\n"
        f"{submission}"
        "# SOGo's master user (sogo-tool -p FILE holds 'name:password'), one line\n"
        "# 'name:{SHA512-CRYPT}hash' in the file below (doveadm pw -s SHA512-CRYPT),\n"
        "# mode 0640 root:dovecot. It may log in as any user: keep its password secret.\n"
        "auth_master_user_separator = *\n"
        "passdb {\n"
        "  driver = passwd-file\n"
        f"  args = {master_users}\n"
        "  master = yes\n"
        "  result_success = continue\n"
        "}\n")


def sogo_sieve_defaults(sieve_url: str = "sieve://127.0.0.1:4190") -> str:
    """The sogo.conf lines that let SOGo (and sogo-tool) write users' Sieve scripts."""
    return (f'SOGoSieveServer = "{sieve_url}";\n'
            "SOGoVacationEnabled = YES;\n"
            "SOGoForwardEnabled = YES;\n"
            "SOGoSieveScriptsEnabled = YES;\n")


def example_files() -> dict[str, str]:
    """The files shipped under config/ (with placeholder logins)."""
    files = {f"postfix/{name}": postfix_map(name, EXAMPLE_READONLY) for name in POSTFIX_MAPS}
    files["postfix/main.cf.podod"] = (
        "# podod: the main.cf lines that use the pgsql maps of this folder\n"
        "# (copy the .cf files to /etc/postfix/pgsql/, mode 0640 root:postfix).\n"
        + postfix_main_cf("/etc/postfix/pgsql"))
    files["dovecot/dovecot-sql.conf.ext"] = dovecot_sql_conf(EXAMPLE_READONLY)
    files["dovecot/dovecot24-sql.conf"] = dovecot24_conf(EXAMPLE_READONLY)
    files["dovecot/dovecot-dict-sql.conf.ext"] = dovecot_dict_sql_conf(EXAMPLE_QUOTA)
    files["dovecot/quota.conf"] = dovecot_quota_conf()
    files["dovecot/dovecot24-quota.conf"] = dovecot24_quota_conf(EXAMPLE_QUOTA)
    files["dovecot/sieve.conf"] = (
        "# podod: Pigeonhole (dovecot-sieve, dovecot-managesieved) for vacation replies\n"
        "# that SOGo writes as Sieve scripts (conf.d/90-podod-sieve.conf)\n"
        + dovecot_sieve_conf())
    files["sogo/sogo-sieve.conf"] = (
        "/* podod: SOGo writes Sieve scripts over ManageSieve (in /etc/sogo/sogo.conf) */\n"
        + sogo_sieve_defaults())
    files["sogo/sogo-user-source.conf"] = (
        "/* podod: SOGo's SQL user source on the sogo_users view (in /etc/sogo/sogo.conf) */\n"
        + sogo_user_source(EXAMPLE_SOGO))
    return files


def write_examples(folder: Path) -> list[Path]:
    written = []
    for name, text in example_files().items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":  # python -m podod.mail.serverconfig config
    for written_path in write_examples(Path(sys.argv[1] if len(sys.argv) > 1 else "config")):
        print(written_path)
