"""The REST API's accounts, sessions, keys and known addresses in state.db (area ``api``):
the migrations, and the functions ``podod.api.auth`` runs on the state database's thread
(``StateDB.run``). Passwords are Argon2id hashes; refresh tokens, API keys and recovery codes
are stored as SHA-256 only."""

from __future__ import annotations

import hmac
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from podod.bus.context import Actor

AREA = "api"
MIGRATIONS = [
    """
    CREATE TABLE api_accounts (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        domains TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        generation INTEGER NOT NULL DEFAULT 0,
        totp_secret TEXT,
        totp_last_step INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        created_by TEXT NOT NULL,
        password_changed REAL NOT NULL,
        last_login REAL
    );
    CREATE TABLE api_recovery_codes (
        account TEXT NOT NULL REFERENCES api_accounts(name) ON DELETE CASCADE,
        code_hash TEXT NOT NULL,
        PRIMARY KEY (account, code_hash)
    );
    CREATE TABLE api_refresh_tokens (
        token_hash TEXT PRIMARY KEY,
        account TEXT NOT NULL REFERENCES api_accounts(name) ON DELETE CASCADE,
        session TEXT NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        used REAL
    );
    CREATE INDEX api_refresh_session ON api_refresh_tokens(session);
    CREATE INDEX api_refresh_account ON api_refresh_tokens(account);
    CREATE TABLE api_revoked_sessions (
        session TEXT PRIMARY KEY,
        until REAL NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        key_hash TEXT NOT NULL,
        role TEXT NOT NULL,
        domains TEXT NOT NULL,
        created REAL NOT NULL,
        created_by TEXT NOT NULL,
        expires REAL
    );
    CREATE TABLE api_known_addresses (
        account TEXT NOT NULL REFERENCES api_accounts(name) ON DELETE CASCADE,
        address TEXT NOT NULL,
        last_login REAL NOT NULL,
        PRIMARY KEY (account, address)
    )
    """,
]


@dataclass
class Account:
    name: str
    role: str
    domains: tuple[str, ...]
    disabled: bool
    generation: int
    totp: bool

    @property
    def actor(self) -> Actor:
        return Actor(f"api:{self.name}", self.role, self.domains)  # type: ignore[arg-type]


@dataclass
class ApiKey:
    id: str
    name: str
    key_hash: str
    role: str
    domains: tuple[str, ...]
    created: float
    created_by: str
    expires: float | None

    @property
    def actor(self) -> Actor:
        return Actor(f"apikey:{self.name}", self.role, self.domains)  # type: ignore[arg-type]



def load_all(conn: sqlite3.Connection, now: float
              ) -> tuple[list[Account], list[ApiKey], dict[str, float]]:
    accounts = [Account(r["name"], r["role"], tuple(json.loads(r["domains"])),
                        bool(r["disabled"]), r["generation"], r["totp_secret"] is not None)
                for r in conn.execute("SELECT * FROM api_accounts")]
    keys = [ApiKey(r["id"], r["name"], r["key_hash"], r["role"], tuple(json.loads(r["domains"])),
                   r["created"], r["created_by"], r["expires"])
            for r in conn.execute("SELECT * FROM api_keys")]
    conn.execute("DELETE FROM api_revoked_sessions WHERE until < ?", (now,))
    conn.execute("DELETE FROM api_refresh_tokens WHERE expires < ?", (now,))
    revoked = {r[0]: r[1] for r in conn.execute("SELECT session, until FROM "
                                                "api_revoked_sessions")}
    return accounts, keys, revoked


def account_row(conn: sqlite3.Connection, name: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute("SELECT * FROM api_accounts WHERE name = ?",
                                           (name,)).fetchone()
    return row


def is_known(conn: sqlite3.Connection, name: str, address: str, since: float) -> bool:
    return conn.execute("SELECT 1 FROM api_known_addresses WHERE account = ? AND address = ? "
                        "AND last_login >= ?", (name, address, since)).fetchone() is not None


def use_totp(conn: sqlite3.Connection, name: str, secret: str, code: str, now: float) -> bool:
    """A code of the current 30 s step or the one before or after, never a step used
    before (a code seen over someone's shoulder cannot be replayed)."""
    import pyotp

    code = code.strip().replace(" ", "")
    if not code.isdigit():
        return False
    totp = pyotp.TOTP(secret)
    step = totp.timecode(utc(now))
    last = conn.execute("SELECT totp_last_step FROM api_accounts WHERE name = ?",
                        (name,)).fetchone()[0]
    for offset in (0, -1, 1):
        candidate = step + offset
        if candidate > last and hmac.compare_digest(totp.generate_otp(candidate), code):
            conn.execute("UPDATE api_accounts SET totp_last_step = ? WHERE name = ?",
                         (candidate, name))
            return True
    return False


def utc(ts: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)


def use_recovery_code(conn: sqlite3.Connection, name: str, code_hash: str) -> int | None:
    """The codes left after using this one, or None when it is not one of them."""
    cur = conn.execute("DELETE FROM api_recovery_codes WHERE account = ? AND code_hash = ?",
                       (name, code_hash))
    if cur.rowcount != 1:
        return None
    left: int = conn.execute("SELECT count(*) FROM api_recovery_codes WHERE account = ?",
                             (name,)).fetchone()[0]
    return left


def set_password_hash(conn: sqlite3.Connection, name: str, digest: str) -> None:
    conn.execute("UPDATE api_accounts SET password_hash = ? WHERE name = ?", (digest, name))


def new_session(conn: sqlite3.Connection, name: str, session: str, token_hash: str,
                 now: float, expires: float, address: str) -> None:
    conn.execute("BEGIN")
    try:
        conn.execute("INSERT INTO api_refresh_tokens(token_hash, account, session, created, "
                     "expires) VALUES (?, ?, ?, ?, ?)", (token_hash, name, session, now,
                                                         expires))
        conn.execute("INSERT INTO api_known_addresses(account, address, last_login) VALUES "
                     "(?, ?, ?) ON CONFLICT(account, address) DO UPDATE SET "
                     "last_login = excluded.last_login", (name, address[:100], now))
        conn.execute("UPDATE api_accounts SET last_login = ? WHERE name = ?", (now, name))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def rotate_refresh(conn: sqlite3.Connection, old_hash: str, new_hash: str, now: float,
                    expires: float, revoke_until: float
                    ) -> tuple[str, str | None, str | None]:
    """(outcome, account, session): ``ok`` (the old token is spent, the new one stored),
    ``reused`` (it was spent before: its whole session is revoked), ``expired``,
    ``unknown``."""
    row = conn.execute("SELECT account, session, expires, used FROM api_refresh_tokens WHERE "
                       "token_hash = ?", (old_hash,)).fetchone()
    if row is None:
        return "unknown", None, None
    account, session = row["account"], row["session"]
    if row["used"] is not None:
        revoke_sessions(conn, [session], revoke_until)
        return "reused", account, session
    if row["expires"] <= now:
        return "expired", account, session
    conn.execute("BEGIN")
    try:
        conn.execute("UPDATE api_refresh_tokens SET used = ? WHERE token_hash = ?",
                     (now, old_hash))
        conn.execute("INSERT INTO api_refresh_tokens(token_hash, account, session, created, "
                     "expires) VALUES (?, ?, ?, ?, ?)", (new_hash, account, session, now,
                                                         expires))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return "ok", account, session


def session_of(conn: sqlite3.Connection, token_hash: str) -> tuple[str, str] | None:
    row = conn.execute("SELECT account, session FROM api_refresh_tokens WHERE token_hash = ? "
                       "AND used IS NULL", (token_hash,)).fetchone()
    return (row[0], row[1]) if row else None


def revoke_sessions(conn: sqlite3.Connection, sessions: list[str], until: float) -> int:
    ended = 0
    for session in sessions:
        ended += conn.execute("DELETE FROM api_refresh_tokens WHERE session = ? AND "
                              "used IS NULL", (session,)).rowcount
        conn.execute("DELETE FROM api_refresh_tokens WHERE session = ?", (session,))
        conn.execute("INSERT INTO api_revoked_sessions(session, until) VALUES (?, ?) "
                     "ON CONFLICT(session) DO UPDATE SET until = excluded.until",
                     (session, until))
    return ended


def bump_generation(conn: sqlite3.Connection, name: str) -> int:
    conn.execute("UPDATE api_accounts SET generation = generation + 1 WHERE name = ?", (name,))
    ended: int = conn.execute("SELECT count(DISTINCT session) FROM api_refresh_tokens WHERE "
                              "account = ?", (name,)).fetchone()[0]
    conn.execute("DELETE FROM api_refresh_tokens WHERE account = ?", (name,))
    return ended


def insert_account(conn: sqlite3.Connection, name: str, role: str, domains: str,
                    digest: str, now: float, created_by: str, generation: int) -> None:
    conn.execute("INSERT INTO api_accounts(name, role, domains, password_hash, created, "
                 "created_by, password_changed, generation) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (name, role, domains, digest, now, created_by, now, generation))


def set_password(conn: sqlite3.Connection, name: str, digest: str, now: float) -> None:
    conn.execute("UPDATE api_accounts SET password_hash = ?, password_changed = ? WHERE "
                 "name = ?", (digest, now, name))
    bump_generation(conn, name)


def set_disabled(conn: sqlite3.Connection, name: str, disabled: bool) -> None:
    conn.execute("UPDATE api_accounts SET disabled = ? WHERE name = ?", (int(disabled), name))
    bump_generation(conn, name)


def delete_account(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("DELETE FROM api_accounts WHERE name = ?", (name,))


def set_totp(conn: sqlite3.Connection, name: str, secret: str | None,
              code_hashes: list[str]) -> None:
    conn.execute("BEGIN")
    try:
        conn.execute("UPDATE api_accounts SET totp_secret = ?, totp_last_step = 0 WHERE "
                     "name = ?", (secret, name))
        conn.execute("DELETE FROM api_recovery_codes WHERE account = ?", (name,))
        conn.executemany("INSERT INTO api_recovery_codes(account, code_hash) VALUES (?, ?)",
                         [(name, h) for h in code_hashes])
        bump_generation(conn, name)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def list_accounts(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    now = time.time()
    rows = conn.execute(
        "SELECT a.name, a.role, a.domains, a.disabled, a.totp_secret IS NOT NULL AS totp, "
        "a.created, a.created_by, a.last_login, (SELECT count(*) FROM api_recovery_codes r "
        "WHERE r.account = a.name) AS recovery_codes, (SELECT count(DISTINCT session) FROM "
        "api_refresh_tokens t WHERE t.account = a.name AND t.used IS NULL AND t.expires > ?) "
        "AS sessions FROM api_accounts a ORDER BY a.name", (now,)).fetchall()
    return [{"name": r["name"], "role": r["role"], "domains": json.loads(r["domains"]),
             "disabled": bool(r["disabled"]), "two_factor": bool(r["totp"]),
             "recovery_codes": r["recovery_codes"], "sessions": r["sessions"],
             "created": r["created"], "created_by": r["created_by"],
             "last_login": r["last_login"]} for r in rows]


def insert_key(conn: sqlite3.Connection, key: ApiKey) -> None:
    conn.execute("INSERT INTO api_keys(id, name, key_hash, role, domains, created, created_by, "
                 "expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (key.id, key.name, key.key_hash, key.role, json.dumps(key.domains),
                  key.created, key.created_by, key.expires))


def delete_key(conn: sqlite3.Connection, key_id: str) -> None:
    conn.execute("DELETE FROM api_keys WHERE id = ?", (key_id,))
