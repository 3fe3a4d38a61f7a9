"""The audit log: one record per request, hash-chained so that editing, inserting or
deleting a record shows in ``audit verify``.

Each record's hash is SHA-256 over the previous record's hash and the record's canonical
JSON. Secrets never reach it: the bus redacts secret parameters and never passes stdin.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from podod.state import StateDB

MIGRATIONS = [
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        request_id TEXT NOT NULL,
        actor TEXT NOT NULL,
        origin TEXT NOT NULL,
        command TEXT NOT NULL,
        args TEXT NOT NULL,
        execute_real INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        message TEXT NOT NULL,
        duration_ms REAL NOT NULL,
        backup_id TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_ts ON audit(ts)
    """,
]

GENESIS = "0" * 64
FIELDS = ("ts", "request_id", "actor", "origin", "command", "args", "execute_real", "outcome",
          "message", "duration_ms", "backup_id")


@dataclass
class AuditEntry:
    request_id: str
    actor: str
    origin: str
    command: str
    args: dict[str, Any]
    execute_real: bool
    outcome: str
    message: str
    duration_ms: float
    backup_id: str | None = None
    ts: float = 0.0


def _digest(prev: str, row: dict[str, Any]) -> str:
    body = json.dumps({k: row[k] for k in FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev + body).encode()).hexdigest()


def _append(conn: sqlite3.Connection, entry: AuditEntry) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        last = conn.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        prev = last[0] if last else GENESIS
        row = {
            "ts": round(entry.ts or time.time(), 6), "request_id": entry.request_id,
            "actor": entry.actor, "origin": entry.origin, "command": entry.command,
            "args": json.dumps(entry.args, sort_keys=True, default=str),
            "execute_real": int(entry.execute_real), "outcome": entry.outcome,
            "message": entry.message[:2000], "duration_ms": round(entry.duration_ms, 3),
            "backup_id": entry.backup_id,
        }
        digest = _digest(prev, row)
        cur = conn.execute(
            f"INSERT INTO audit ({', '.join(FIELDS)}, prev_hash, hash) "
            f"VALUES ({', '.join('?' * len(FIELDS))}, ?, ?)",
            [row[k] for k in FIELDS] + [prev, digest])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(cur.lastrowid or 0)


def _verify(conn: sqlite3.Connection) -> tuple[bool, int, str]:
    prev = GENESIS
    count = 0
    for row in conn.execute(f"SELECT id, {', '.join(FIELDS)}, prev_hash, hash FROM audit "
                            "ORDER BY id"):
        record = dict(row)
        if record["prev_hash"] != prev:
            return False, count, (f"record {record['id']} does not follow the one before it "
                                  "(a record was removed or inserted)")
        if _digest(prev, record) != record["hash"]:
            return False, count, f"record {record['id']} was changed after it was written"
        prev = record["hash"]
        count += 1
    return True, count, f"all {count} audit records are intact"


def _list(conn: sqlite3.Connection, limit: int, actor: str | None,
          command: str | None, since: float | None) -> list[dict[str, Any]]:
    where: list[str] = []
    params: list[object] = []
    if actor:
        where.append("actor = ?")
        params.append(actor)
    if command:
        where.append("command LIKE ?")
        params.append(command + "%")
    if since:
        where.append("ts >= ?")
        params.append(since)
    sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    return [dict(r) for r in conn.execute(sql, params)]


class AuditLog:
    def __init__(self, state: StateDB) -> None:
        self.state = state

    async def setup(self) -> None:
        await self.state.migrate("audit", MIGRATIONS)

    async def append(self, entry: AuditEntry) -> int:
        return await self.state.run(_append, entry)

    async def verify(self) -> tuple[bool, int, str]:
        return await self.state.run(_verify)

    async def list(self, limit: int = 50, actor: str | None = None,
                   command: str | None = None, since: float | None = None
                   ) -> list[dict[str, Any]]:
        return await self.state.run(_list, limit, actor, command, since)
