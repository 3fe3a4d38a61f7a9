"""The audit log: one record per request, chained so that ``audit verify`` finds a record
that was edited, inserted, removed or rewritten.

Each record's hash covers the previous record's hash and the record's canonical JSON.
Records are signed: the hash is an HMAC-SHA256 with the **audit key**, a secret file
(``audit.key_file``) that is not in the database, so someone who has only the database file
cannot rewrite the chain and recompute it. Records written before podod had a key are plain
SHA-256 (scheme ``sha256``) and stay verifiable as such; none may follow a signed record.

The newest record is anchored outside the database: after every record podod replaces the
**head file** (``audit.head_file``) with the record's id and hash, signed with the key. A log
that ends before the head, or whose record at the head holds another hash, lost or rewrote
its newest records. When podod finds that at start (or before writing a record), it writes a
signed ``audit-broken`` record saying what it found, so the evidence stays in the chain after
the head moves on; ``audit verify`` fails on such a record.

Secrets never reach the log: the bus redacts secret parameters and never passes stdin.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podod.durable import replace, write_new
from podod.errors import PododError
from podod.state import StateDB

log = logging.getLogger(__name__)

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
    # Signed records: which scheme made the hash, and with which key (its id, not the key).
    """
    ALTER TABLE audit ADD COLUMN scheme TEXT NOT NULL DEFAULT 'sha256';
    ALTER TABLE audit ADD COLUMN key_id TEXT
    """,
]

GENESIS = "0" * 64
FIELDS = ("ts", "request_id", "actor", "origin", "command", "args", "execute_real", "outcome",
          "message", "duration_ms", "backup_id")
SHA256 = "sha256"
HMAC = "hmac-sha256"
BROKEN = "audit-altered"  # the outcome of the record podod writes when it finds the log
# altered (its command is "(audit)", its actor "podod")
NOTE_COMMAND = "(audit)"
SIGNING = "audit-signing"  # the first signed record after unsigned ones
KEY_BYTES = 32
MAX_MESSAGE = 2000


class AuditUnavailable(PododError):
    """The audit record of a real change could not be written: the change is refused."""

    code = "audit-failed"
    http_status = 503


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


@dataclass
class Head:
    id: int
    hash: str


@dataclass
class Verdict:
    """What ``audit verify`` found: ``intact`` and the sentences saying what was checked."""

    intact: bool
    records: int
    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return "\n".join(self.lines)


def key_id_of(key: bytes) -> str:
    """A short public name of a key (an HMAC of a constant): which key signed a record."""
    return hmac.new(key, b"podod audit key id", hashlib.sha256).hexdigest()[:16]


def _body(row: dict[str, Any]) -> str:
    return json.dumps({k: row[k] for k in FIELDS}, sort_keys=True, separators=(",", ":"))


def _sha256(prev: str, row: dict[str, Any]) -> str:
    return hashlib.sha256((prev + _body(row)).encode()).hexdigest()


def _hmac(key: bytes, prev: str, row: dict[str, Any]) -> str:
    message = f"{HMAC}\n{row['id']}\n{prev}\n{_body(row)}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _head_mac(key: bytes, head: Head) -> str:
    return hmac.new(key, f"podod audit head\n{head.id}\n{head.hash}".encode(),
                    hashlib.sha256).hexdigest()


# -- the key and the head file ----------------------------------------------------------------

def load_key(path: Path) -> tuple[bytes, bool]:
    """The audit key from ``path``, made (32 random bytes, hex, mode 0600) when there is no
    such file; returns the key and whether it was made now."""
    try:
        data = path.read_bytes()
        created = False
    except FileNotFoundError:
        data = secrets.token_hex(KEY_BYTES).encode() + b"\n"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_new(path, data)
        except OSError as exc:
            raise PododError(
                f"audit.key_file: cannot create {path} ({exc.strerror or exc}); create it "
                f"yourself (head -c 32 /dev/urandom > {path}; chmod 0400 {path}, owned by "
                "podod's user)", code="config") from None
        created = True
    except OSError as exc:
        raise PododError(f"audit.key_file: cannot read {path} ({exc.strerror or exc})",
                         code="config") from None
    key = data.rstrip(b"\r\n")
    if len(key) < KEY_BYTES:
        raise PododError(f"audit.key_file: {path} holds {len(key)} bytes; the audit key needs "
                         f"at least {KEY_BYTES} random bytes (head -c 32 /dev/urandom > {path})",
                         code="config")
    if path.stat().st_mode & 0o007:
        log.warning("the audit key %s can be read by every local user: chmod o-rwx it", path)
    return key, created


def read_head(path: Path, key: bytes) -> Head | str | None:
    """The head file: a Head, None when there is none, or a sentence saying why it is not
    one podod wrote with this key."""
    try:
        data = json.loads(path.read_text())
        head = Head(int(data["id"]), str(data["hash"]))
        mac = str(data["mac"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return f"the head file {path} cannot be read"
    if not hmac.compare_digest(mac, _head_mac(key, head)):
        return f"the head file {path} was not written with the audit key"
    return head


def write_head(path: Path, key: bytes, head: Head) -> None:
    """Replace the head file atomically (write, fsync, rename, fsync the folder)."""
    data = json.dumps({"id": head.id, "hash": head.hash, "mac": _head_mac(key, head)})
    replace(path, data.encode() + b"\n")


# -- on the database thread --------------------------------------------------------------------

class _Chain:
    """The signing state, used only on the database thread."""

    def __init__(self, key: bytes, key_file: Path, head_file: Path) -> None:
        self.key = key
        self.key_id = key_id_of(key)
        self.key_file = key_file
        self.head_file = head_file
        self.head: Head | None = None  # what podod last wrote (or found valid at start)

    def insert(self, conn: sqlite3.Connection, entry: AuditEntry) -> Head:
        """One signed record, inside the caller's transaction."""
        return self.insert_many(conn, [entry])

    def insert_many(self, conn: sqlite3.Connection, entries: list[AuditEntry]) -> Head:
        """Signed records in order, inside the caller's transaction: one read of the log's
        end and one statement for all (each call into SQLite hands the GIL back and forth
        with the event loop, so a group commit must not make one per record)."""
        last = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        prev = last[1] if last else GENESIS
        next_id = (last[0] if last else 0) + 1
        values: list[list[Any]] = []
        for entry in entries:
            row: dict[str, Any] = {
                "id": next_id,
                "ts": round(entry.ts or time.time(), 6), "request_id": entry.request_id,
                "actor": entry.actor, "origin": entry.origin, "command": entry.command,
                "args": json.dumps(entry.args, sort_keys=True, default=str),
                "execute_real": int(entry.execute_real), "outcome": entry.outcome,
                "message": entry.message[:MAX_MESSAGE],
                "duration_ms": round(entry.duration_ms, 3), "backup_id": entry.backup_id,
            }
            digest = _hmac(self.key, prev, row)
            values.append([row["id"]] + [row[k] for k in FIELDS] +
                          [prev, digest, HMAC, self.key_id])
            prev = digest
            next_id += 1
        conn.executemany(
            f"INSERT INTO audit (id, {', '.join(FIELDS)}, prev_hash, hash, scheme, key_id) "
            f"VALUES (?, {', '.join('?' * len(FIELDS))}, ?, ?, ?, ?)", values)
        return Head(next_id - 1, prev)

    def gap(self, conn: sqlite3.Connection) -> str | None:
        """What is wrong with the log's end compared with the head, if anything."""
        if self.head is None:
            return None
        row = conn.execute("SELECT hash FROM audit WHERE id = ?", (self.head.id,)).fetchone()
        if row is None:
            last = conn.execute("SELECT max(id) FROM audit").fetchone()[0] or 0
            return (f"the newest records were removed: the log ended at record {last}, but "
                    f"podod had written record {self.head.id} (head file {self.head_file})")
        if row[0] != self.head.hash:
            return (f"record {self.head.id} is not the one podod wrote (the head file "
                    f"{self.head_file} holds another hash): the log was rewritten")
        return None

    def append(self, conn: sqlite3.Connection, entries: list[AuditEntry]) -> int:
        """Write ``entries`` in one transaction, after a signed ``audit-broken`` record when
        the log no longer ends with the record podod wrote last; then move the head file to
        the newest record. Returns its id."""
        conn.execute("PRAGMA synchronous=FULL")  # a record the head names must survive a crash
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = self.gap(conn)
                todo = ([broken(found)] if found else []) + entries
                if not todo:
                    conn.execute("ROLLBACK")
                    return self.head.id if self.head else 0
                head = self.insert_many(conn, todo)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute("PRAGMA synchronous=NORMAL")
        if found:
            log.error("the audit log was altered: %s; recorded in audit record %d", found,
                      head.id - len(todo) + 1)
        self.head = head
        try:
            write_head(self.head_file, self.key, head)
        except OSError as exc:  # the record is written; the next one moves the head again
            log.error("cannot write the audit head file %s: %s", self.head_file, exc)
        return head.id


def broken(message: str) -> AuditEntry:
    return AuditEntry(request_id="-", actor="podod", origin="daemon", command=NOTE_COMMAND,
                      args={}, execute_real=False, outcome=BROKEN, message=message,
                      duration_ms=0.0)


def _setup(conn: sqlite3.Connection, chain: _Chain, key_created: bool) -> None:
    """Check the log's end against the head file and the key against the signed records;
    record what does not match (signed), and the start of signing after unsigned records."""
    last = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    signed = conn.execute("SELECT id, key_id FROM audit WHERE scheme = ? "
                          "ORDER BY id DESC LIMIT 1", (HMAC,)).fetchone()
    head = read_head(chain.head_file, chain.key)
    notes: list[AuditEntry] = []
    if signed is not None and signed[1] != chain.key_id:
        what = "was made now, the file was missing" if key_created else "is another key"
        notes.append(broken(
            f"the audit key {chain.key_file} (key id {chain.key_id}) {what}: records up to "
            f"{signed[0]}, signed with key id {signed[1]}, can no longer be checked"))
    elif signed is not None and head is None:
        notes.append(broken(f"the head file {chain.head_file} was missing: records removed "
                            "from the end of the log before this start cannot be ruled out"))
    elif isinstance(head, str):
        notes.append(broken(f"{head}: records removed from the end of the log before this "
                            "start cannot be ruled out"))
    elif isinstance(head, Head):
        chain.head = head  # append() compares the log's end with it
    if signed is None and last is not None:
        notes.append(AuditEntry(
            request_id="-", actor="podod", origin="daemon", command=NOTE_COMMAND, args={},
            execute_real=False, outcome=SIGNING, duration_ms=0.0,
            message=f"from this record on, records are signed with the audit key (key id "
                    f"{chain.key_id}); the {last[0]} records before it have a SHA-256 chain "
                    "only"))
    chain.append(conn, notes)  # nothing, unless the log's end does not match the head


def _verify(conn: sqlite3.Connection, chain: _Chain) -> Verdict:
    prev = GENESIS
    count = unsigned = signed = 0
    seen_signed = False
    seen_current = False
    other: dict[str, list[int]] = {}  # key id -> first and last record it signed
    last_id = 0
    problems: list[str] = []
    columns = f"id, {', '.join(FIELDS)}, prev_hash, hash, scheme, key_id"
    for raw in conn.execute(f"SELECT {columns} FROM audit ORDER BY id"):
        row = dict(raw)
        rid = row["id"]
        if row["prev_hash"] != prev:
            problems.append(f"record {rid} does not follow the one before it (a record was "
                            "removed or inserted)")
            break
        if row["scheme"] == SHA256:
            if seen_signed:
                problems.append(f"record {rid} claims to be older than the audit key but "
                                "follows signed records: the log was rewritten")
                break
            if _sha256(prev, row) != row["hash"]:
                problems.append(f"record {rid} was changed after it was written")
                break
            unsigned += 1
        elif row["scheme"] == HMAC:
            seen_signed = True
            if row["key_id"] == chain.key_id:
                seen_current = True
                if not hmac.compare_digest(_hmac(chain.key, prev, row), row["hash"]):
                    problems.append(f"record {rid} was changed after it was written")
                    break
                signed += 1
                if row["outcome"] == BROKEN and row["command"] == NOTE_COMMAND:
                    problems.append(f"record {rid}: {row['message']}")
            elif seen_current:
                problems.append(f"record {rid} names another audit key than the records "
                                "before it: the log was rewritten")
                break
            else:
                span = other.setdefault(str(row["key_id"]), [rid, rid])
                span[1] = rid
        else:
            problems.append(f"record {rid} has an unknown scheme: the log was rewritten")
            break
        prev = row["hash"]
        last_id = rid
        count += 1
    for key_id, (first, last) in other.items():
        problems.append(f"records {first}-{last} were signed with another audit key (key id "
                        f"{key_id}), which podod does not have: they cannot be checked")
    head = read_head(chain.head_file, chain.key)
    head_line = ""
    if isinstance(head, str):
        problems.append(head)
    elif head is None:
        if seen_signed:
            problems.append(f"the head file {chain.head_file} is missing, so removed newest "
                            "records cannot be ruled out")
    elif head.id > last_id and not problems:
        problems.append(f"the newest records were removed: the log ends at record {last_id}, "
                        f"but the head file {chain.head_file} names record {head.id}")
    elif not problems:
        row = conn.execute("SELECT hash FROM audit WHERE id = ?", (head.id,)).fetchone()
        if row is None or row[0] != head.hash:
            problems.append(f"record {head.id} is not the one podod wrote (the head file "
                            f"{chain.head_file} holds another hash): the log was rewritten")
        else:
            head_line = (f"- the log reaches record {head.id}, the newest one the head file "
                         f"{chain.head_file} names: no newest record was removed (unless the "
                         "head file was replaced by an older copy of itself)")
    data = {"intact": not problems, "records": count, "unsigned": unsigned, "signed": signed,
            "key_id": chain.key_id, "head": head.id if isinstance(head, Head) else None,
            "problems": problems}
    if problems:
        return Verdict(False, count, [f"the audit log is NOT intact: {problems[0]}",
                                      *[f"- {p}" for p in problems[1:]]], data)
    lines = [f"all {count} audit records are intact"]
    if unsigned:
        lines.append(f"- records 1-{unsigned}: unchanged since written, by their SHA-256 "
                     "chain only (written before the audit key; anyone who could write the "
                     "database file could have rewritten them)")
    if signed:
        lines.append(f"- records {unsigned + 1}-{count}: signed with the audit key "
                     f"{chain.key_file} (HMAC-SHA256, key id {chain.key_id}): none was "
                     "changed, inserted, reordered or removed in between, unless by someone "
                     "who has the key")
    if head_line:
        lines.append(head_line)
    return Verdict(True, count, lines, data)


def _list(conn: sqlite3.Connection, limit: int | None, actor: str | None,
          command: str | None, since: float | None, before: int | None = None
          ) -> tuple[list[dict[str, Any]], int]:
    """The newest records (before id ``before``), at most ``limit`` (None: all), and how
    many more older ones match."""
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
    if before is not None:
        where.append("id < ?")
        params.append(before)
    clause = " WHERE " + " AND ".join(where) if where else ""
    records = [dict(r) for r in conn.execute(
        f"SELECT * FROM audit{clause} ORDER BY id DESC LIMIT ?",
        [*params, -1 if limit is None else limit + 1])]
    if limit is None or len(records) <= limit:
        return records, 0
    records = records[:limit]
    more = conn.execute(f"SELECT count(*) FROM audit{clause}{' AND' if where else ' WHERE'} "
                        "id < ?", [*params, records[-1]["id"]]).fetchone()[0]
    return records, int(more)


_BATCH = 500  # records at most in one group commit


class AuditLog:
    def __init__(self, state: StateDB, key_file: Path | None = None,
                 head_file: Path | None = None) -> None:
        self.state = state
        self.key_file = key_file or state.path.parent / "audit.key"
        self.head_file = head_file or state.path.parent / "audit.head"
        self._chain: _Chain | None = None
        # Group commit: records that arrive while a write is under way wait together for
        # the next one (one transaction, one head-file write for all of them).
        self._pending: list[tuple[AuditEntry, asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None

    @property
    def chain(self) -> _Chain:
        if self._chain is None:
            raise RuntimeError("the audit log is not set up")
        return self._chain

    async def setup(self) -> None:
        await self.state.migrate("audit", MIGRATIONS)
        key, created = await self.state.run(lambda _c: load_key(self.key_file))
        if created:
            log.info("made the audit key %s (keep a copy where the database's copies are not)",
                     self.key_file)
        self._chain = _Chain(key, self.key_file, self.head_file)
        await self.state.run(_setup, self._chain, created)

    async def append(self, entry: AuditEntry) -> int:
        """Write ``entry`` and return its id once it is on disk (and the head file names it,
        or a newer record). Records that arrive while a write is under way are written
        together in the next transaction (group commit: under load, one commit and one
        head-file write serve many requests); each caller still waits for its own record,
        and a failed write fails every record of it. Like ``state.run``, a record whose
        caller is cancelled is still written."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._pending.append((entry, future))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_pending(), name="audit-writer")
        return await asyncio.shield(future)

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
            try:
                last = await self.state.run(self.chain.append, [e for e, _f in batch])
            except asyncio.CancelledError:
                for _entry, future in batch + self._pending:
                    future.cancel()
                self._pending = []
                raise
            except Exception as exc:
                for _entry, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            first = last - len(batch) + 1
            for offset, (_entry, future) in enumerate(batch):
                if not future.done():
                    future.set_result(first + offset)

    async def verify(self) -> Verdict:
        return await self.state.run(_verify, self.chain)

    async def list(self, limit: int = 50, actor: str | None = None,
                   command: str | None = None, since: float | None = None
                   ) -> list[dict[str, Any]]:
        records, _more = await self.page(limit, actor, command, since)
        return records

    async def page(self, limit: int | None = 50, actor: str | None = None,
                   command: str | None = None, since: float | None = None,
                   before: int | None = None) -> tuple[builtins.list[dict[str, Any]], int]:
        """The newest records before id ``before`` (at most ``limit``; None: all) and how
        many older ones match too."""
        return await self.state.run(_list, limit, actor, command, since, before)


__all__ = ["AuditEntry", "AuditLog", "AuditUnavailable", "Verdict"]
