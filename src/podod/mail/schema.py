"""The mail database schema: PostfixAdmin 3.3-compatible tables (same names, columns,
meanings and units) and a ``sogo_users`` view for SOGo's SQL user source.

Units, as PostfixAdmin has them: ``mailbox.quota`` in bytes; ``domain.maxquota`` (largest
mailbox) and ``domain.quota`` (all mailboxes together) in MB; 0 means unlimited, and
``domain.mailboxes``/``domain.aliases`` 0 means unlimited too. ``quota2`` is written by
Dovecot (quota dict); podod starts a new mailbox's row at 0, reads it, and deletes it with
the mailbox.
"""

from __future__ import annotations

import re

# Each step is applied once, in order, inside one transaction; podod_schema holds the version.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS domain (
        domain varchar(255) NOT NULL PRIMARY KEY,
        description varchar(255) NOT NULL DEFAULT '',
        aliases integer NOT NULL DEFAULT 0,
        mailboxes integer NOT NULL DEFAULT 0,
        maxquota bigint NOT NULL DEFAULT 0,
        quota bigint NOT NULL DEFAULT 0,
        transport varchar(255) DEFAULT NULL,
        backupmx boolean NOT NULL DEFAULT false,
        created timestamp with time zone NOT NULL DEFAULT now(),
        modified timestamp with time zone NOT NULL DEFAULT now(),
        active boolean NOT NULL DEFAULT true,
        password_expiry integer NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS mailbox (
        username varchar(255) NOT NULL PRIMARY KEY,
        password varchar(255) NOT NULL DEFAULT '',
        name varchar(255) NOT NULL DEFAULT '',
        maildir varchar(255) NOT NULL DEFAULT '',
        quota bigint NOT NULL DEFAULT 0,
        local_part varchar(255) NOT NULL,
        domain varchar(255) NOT NULL REFERENCES domain(domain),
        created timestamp with time zone NOT NULL DEFAULT now(),
        modified timestamp with time zone NOT NULL DEFAULT now(),
        active boolean NOT NULL DEFAULT true,
        phone varchar(30) NOT NULL DEFAULT '',
        email_other varchar(255) NOT NULL DEFAULT '',
        token varchar(255) NOT NULL DEFAULT '',
        token_validity timestamp with time zone NOT NULL DEFAULT '2000-01-01 00:00:00+00',
        password_expiry timestamp with time zone NOT NULL DEFAULT '2000-01-01 00:00:00+00'
    );
    CREATE INDEX IF NOT EXISTS mailbox_domain_idx ON mailbox(domain);
    CREATE TABLE IF NOT EXISTS alias (
        address varchar(255) NOT NULL PRIMARY KEY,
        goto text NOT NULL,
        domain varchar(255) NOT NULL REFERENCES domain(domain),
        created timestamp with time zone NOT NULL DEFAULT now(),
        modified timestamp with time zone NOT NULL DEFAULT now(),
        active boolean NOT NULL DEFAULT true
    );
    CREATE INDEX IF NOT EXISTS alias_domain_idx ON alias(domain);
    CREATE TABLE IF NOT EXISTS alias_domain (
        alias_domain varchar(255) NOT NULL PRIMARY KEY REFERENCES domain(domain)
            ON DELETE CASCADE,
        target_domain varchar(255) NOT NULL REFERENCES domain(domain) ON DELETE CASCADE,
        created timestamp with time zone NOT NULL DEFAULT now(),
        modified timestamp with time zone NOT NULL DEFAULT now(),
        active boolean NOT NULL DEFAULT true
    );
    CREATE INDEX IF NOT EXISTS alias_domain_target_idx ON alias_domain(target_domain);
    CREATE TABLE IF NOT EXISTS quota2 (
        username varchar(100) NOT NULL PRIMARY KEY,
        bytes bigint NOT NULL DEFAULT 0,
        messages integer NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS log (
        id serial PRIMARY KEY,
        timestamp timestamp with time zone NOT NULL DEFAULT now(),
        username varchar(255) NOT NULL DEFAULT '',
        domain varchar(255) NOT NULL DEFAULT '',
        action varchar(255) NOT NULL DEFAULT '',
        data text NOT NULL DEFAULT ''
    );
    CREATE OR REPLACE VIEW sogo_users AS
        SELECT username AS c_uid, username AS c_name, password AS c_password,
               name AS c_cn, username AS mail, domain
        FROM mailbox WHERE active = true
    """,
    # 2: a switched-off domain hides its mailboxes from SOGo too (Dovecot's and Postfix's
    # queries check domain.active). A subquery in WHERE keeps the view auto-updatable, and
    # it runs with the view owner's rights, so SOGo's role needs no grant on domain.
    """
    CREATE OR REPLACE VIEW sogo_users AS
        SELECT username AS c_uid, username AS c_name, password AS c_password,
               name AS c_cn, username AS mail, domain
        FROM mailbox
        WHERE active = true AND domain IN (SELECT domain FROM domain WHERE active = true)
    """,
]

# The sogo_users view as the newest migration defines it: what ``podod db init --sogo-view``
# adds to a PostfixAdmin database (a unit test keeps it equal to the last migration of it).
SOGO_VIEW = MIGRATIONS[1].strip()

# What a PostfixAdmin-compatible database must have, for checking an existing one: the tables
# and columns podod reads and writes. PostfixAdmin's other tables and columns are left alone.
# type families: text (varchar/text), int (integer/bigint/smallint), bool, time.
REQUIRED: dict[str, dict[str, str]] = {
    "domain": {"domain": "text", "description": "text", "aliases": "int", "mailboxes": "int",
               "maxquota": "int", "quota": "int", "transport": "text", "backupmx": "bool",
               "created": "time", "modified": "time", "active": "bool",
               "password_expiry": "int"},
    "mailbox": {"username": "text", "password": "text", "name": "text", "maildir": "text",
                "quota": "int", "local_part": "text", "domain": "text", "created": "time",
                "modified": "time", "active": "bool", "password_expiry": "time"},
    "alias": {"address": "text", "goto": "text", "domain": "text", "created": "time",
              "modified": "time", "active": "bool"},
    "alias_domain": {"alias_domain": "text", "target_domain": "text", "created": "time",
                     "modified": "time", "active": "bool"},
    "quota2": {"username": "text", "bytes": "int", "messages": "int"},
    "log": {"timestamp": "time", "username": "text", "domain": "text", "action": "text",
            "data": "text"},
}
# Views podod's own schema has; on a PostfixAdmin database a missing one is only a warning
# (managing mailboxes does not need it), which says how to add it.
VIEWS = {"sogo_users": ["c_uid", "c_name", "c_password", "c_cn", "mail", "domain"]}

_FAMILIES = {
    "character varying": "text", "text": "text", "character": "text",
    "integer": "int", "bigint": "int", "smallint": "int",
    "boolean": "bool", "timestamp with time zone": "time",
    "timestamp without time zone": "time",
}

# Primary keys of the tables podod changes (the unit of work and restore use them).
PRIMARY_KEYS = {"domain": "domain", "mailbox": "username", "alias": "address",
                "alias_domain": "alias_domain", "quota2": "username"}


def family(data_type: str) -> str:
    return _FAMILIES.get(data_type, data_type)


_CREATE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\s*\);", re.S)
_TEXT_COLUMN = re.compile(r"^\s*(\w+) (?:varchar\((\d+)\)|text\b)", re.M)


def text_columns(scripts: list[str]) -> dict[str, dict[str, int | None]]:
    """Each table's text columns with their length (``varchar(n)``: n; ``text``: None, no
    limit), read from the CREATE TABLE statements of ``scripts``."""
    tables: dict[str, dict[str, int | None]] = {}
    for script in scripts:
        for table, body in _CREATE.findall(script):
            tables[table] = {column: int(length) if length else None
                             for column, length in _TEXT_COLUMN.findall(body)}
    return tables


# The one table of column lengths podod checks values against before writing them (the
# address limits in addresses.py are derived from it), read from the schema itself so the
# two cannot drift apart; a test compares it with a database made by 'podod db init'.
TEXT_COLUMNS = text_columns(MIGRATIONS)
