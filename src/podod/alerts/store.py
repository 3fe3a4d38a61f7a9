"""Alert state in state.db (migration area ``alerts``): pending and firing alerts, what each
notifier was last told about each group, silences and maintenance windows, and history.

Everything here runs on the state database's own thread (``StateDB.run``); the engine calls
it with snapshots, so the event loop never waits on SQLite.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

PRUNE_STEP = 5000  # history rows deleted per transaction

MIGRATIONS = [
    """
    CREATE TABLE alert_state (
        fingerprint TEXT PRIMARY KEY,
        rule TEXT NOT NULL,
        server TEXT NOT NULL,
        instance TEXT NOT NULL,
        labels TEXT NOT NULL,
        state TEXT NOT NULL,
        active_since REAL NOT NULL,
        fired_at REAL,
        resolved_at REAL,
        last_true REAL NOT NULL,
        value REAL,
        annotations TEXT NOT NULL
    );
    CREATE TABLE alert_notify_log (
        group_key TEXT NOT NULL,
        notifier TEXT NOT NULL,
        firing TEXT NOT NULL,
        resolved TEXT NOT NULL,
        sent_at REAL NOT NULL,
        PRIMARY KEY (group_key, notifier)
    );
    CREATE TABLE alert_silences (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        matchers TEXT NOT NULL,
        starts REAL NOT NULL,
        ends REAL NOT NULL,
        reason TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created REAL NOT NULL,
        reminded INTEGER NOT NULL DEFAULT 0,
        ended_by TEXT,
        ended_at REAL
    );
    CREATE TABLE alert_history (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        event TEXT NOT NULL,
        rule TEXT NOT NULL,
        server TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        severity TEXT NOT NULL,
        value REAL,
        detail TEXT NOT NULL
    );
    CREATE INDEX alert_history_ts ON alert_history(ts)
    """,
]


@dataclass
class HistoryRow:
    ts: float
    event: str  # firing | resolved | notified | notify-failed | silence | unsilence | reminder
    rule: str
    server: str
    fingerprint: str
    severity: str
    value: float | None
    detail: str


def save(conn: sqlite3.Connection, alerts: list[dict[str, Any]], deleted: list[str],
         logs: list[tuple[str, str, list[str], list[str], float]],
         dropped_logs: list[str], history: list[HistoryRow],
         reminded: list[str] | None = None) -> None:
    """Write one batch of changes in one transaction."""
    conn.execute("BEGIN")
    try:
        if alerts:
            conn.executemany(
                "INSERT OR REPLACE INTO alert_state VALUES (:fingerprint, :rule, :server, "
                ":instance, :labels, :state, :active_since, :fired_at, :resolved_at, "
                ":last_true, :value, :annotations)", alerts)
        if deleted:
            conn.executemany("DELETE FROM alert_state WHERE fingerprint=?",
                             [(fp,) for fp in deleted])
        if logs:
            conn.executemany(
                "INSERT OR REPLACE INTO alert_notify_log VALUES (?, ?, ?, ?, ?)",
                [(g, n, json.dumps(sorted(f)), json.dumps(sorted(r)), t)
                 for g, n, f, r, t in logs])
        if dropped_logs:
            conn.executemany("DELETE FROM alert_notify_log WHERE group_key=?",
                             [(g,) for g in dropped_logs])
        if history:
            conn.executemany(
                "INSERT INTO alert_history(ts, event, rule, server, fingerprint, severity, "
                "value, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(h.ts, h.event, h.rule, h.server, h.fingerprint, h.severity, h.value,
                  h.detail) for h in history])
        if reminded:
            conn.executemany("UPDATE alert_silences SET reminded=1 WHERE id=?",
                             [(i,) for i in reminded])
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def load(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    alerts = [dict(r) for r in conn.execute("SELECT * FROM alert_state")]
    logs = [dict(r) for r in conn.execute("SELECT * FROM alert_notify_log")]
    return alerts, logs


def insert_silence(conn: sqlite3.Connection, row: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO alert_silences(id, kind, matchers, starts, ends, reason, created_by, "
        "created) VALUES (:id, :kind, :matchers, :starts, :ends, :reason, :created_by, "
        ":created)", row)


def end_silence(conn: sqlite3.Connection, silence_id: str, by: str, at: float) -> None:
    conn.execute("UPDATE alert_silences SET ended_by=?, ended_at=?, ends=min(ends, ?) "
                 "WHERE id=?", (by, at, at, silence_id))


def silences(conn: sqlite3.Connection, since: float) -> list[dict[str, Any]]:
    """Silences that end after ``since`` (the active and the future ones)."""
    return [dict(r) for r in conn.execute(
        "SELECT * FROM alert_silences WHERE ends > ? ORDER BY starts", (since,))]


def all_silences(conn: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(
        "SELECT * FROM alert_silences ORDER BY created DESC LIMIT ?", (limit,))]


def history(conn: sqlite3.Connection, since: float, limit: int, server: str | None,
            rule: str | None) -> list[dict[str, Any]]:
    query = "SELECT * FROM alert_history WHERE ts >= ?"
    args: list[Any] = [since]
    if server:
        query += " AND server = ?"
        args.append(server)
    if rule:
        query += " AND rule = ?"
        args.append(rule)
    query += " ORDER BY ts DESC, id DESC LIMIT ?"
    args.append(limit)
    return [dict(r) for r in conn.execute(query, args)]


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Drop history and ended silences older than ``before``, a bounded step at a time."""
    cur = conn.execute("DELETE FROM alert_history WHERE id IN (SELECT id FROM alert_history "
                       "WHERE ts < ? LIMIT ?)", (before, PRUNE_STEP))
    conn.execute("DELETE FROM alert_silences WHERE ends < ?", (before,))
    return cur.rowcount
