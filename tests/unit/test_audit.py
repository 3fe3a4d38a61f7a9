"""The audit chain shows edits, insertions, deletions, removed newest records and a chain
rewritten without the key."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from podod.bus.audit import FIELDS, GENESIS, MIGRATIONS, AuditEntry, AuditLog
from podod.errors import PododError
from podod.state import StateDB


def entry(n: int) -> AuditEntry:
    return AuditEntry(request_id=f"r{n}", actor="unix:root", origin="socket",
                      command="user create", args={"address": f"u{n}@example.com"},
                      execute_real=False, outcome="sandbox", message="ok", duration_ms=1.0)


async def make(tmp_path: Path, count: int) -> tuple[StateDB, AuditLog]:
    state = StateDB(tmp_path / "state.db")
    await state.open()
    audit = AuditLog(state)
    await audit.setup()
    for n in range(count):
        await audit.append(entry(n))
    return state, audit


async def verify(audit: AuditLog) -> tuple[bool, int, str]:
    verdict = await audit.verify()
    return verdict.intact, verdict.records, verdict.lines[0]


async def test_intact_chain(tmp_path: Path) -> None:
    state, audit = await make(tmp_path, 5)
    verdict = await audit.verify()
    assert (verdict.intact, verdict.records) == (True, 5)
    key_id = verdict.data["key_id"]
    assert verdict.lines == [
        "all 5 audit records are intact",
        f"- records 1-5: signed with the audit key {tmp_path / 'audit.key'} (HMAC-SHA256, key "
        f"id {key_id}): none was changed, inserted, reordered or removed in between, unless "
        "by someone who has the key",
        f"- the log reaches record 5, the newest one the head file {tmp_path / 'audit.head'} "
        "names: no newest record was removed (unless the head file was replaced by an older "
        "copy of itself)"]
    assert (tmp_path / "audit.key").stat().st_mode & 0o777 == 0o600
    await state.close()


async def test_records_that_arrive_together_share_one_commit_and_stay_in_order(
        tmp_path: Path) -> None:
    """Group commit: 60 requests audited at once cost a few transactions, not 60; each
    caller gets its own record's id, in order, and the chain verifies."""
    import asyncio

    state, audit = await make(tmp_path, 1)
    transactions = 0
    real_append = audit.chain.append

    def counting(conn: sqlite3.Connection, entries: list[AuditEntry]) -> int:
        nonlocal transactions
        transactions += 1
        return real_append(conn, entries)

    audit.chain.append = counting  # type: ignore[method-assign]
    ids = await asyncio.gather(*(audit.append(entry(n)) for n in range(1, 61)))
    assert ids == list(range(2, 62))
    assert transactions <= 3
    records = await audit.list(limit=100)
    assert [r["request_id"] for r in reversed(records)] == [f"r{n}" for n in range(61)]
    assert await verify(audit) == (True, 61, "all 61 audit records are intact")
    await state.close()


async def test_edit_and_delete_are_detected(tmp_path: Path) -> None:
    state, audit = await make(tmp_path, 5)
    await state.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute("UPDATE audit SET actor='unix:mallory' WHERE id=3")
    state, audit = await make(tmp_path, 0)
    ok, _count, message = await verify(audit)
    assert not ok and message == "the audit log is NOT intact: record 3 was changed after it " \
                                 "was written"
    await state.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute("UPDATE audit SET actor='unix:root' WHERE id=3")
        conn.execute("DELETE FROM audit WHERE id=2")
    state, audit = await make(tmp_path, 0)
    ok, _count, message = await verify(audit)
    assert not ok
    assert message == "the audit log is NOT intact: record 3 does not follow the one before it " \
                      "(a record was removed or inserted)"
    await state.close()


async def test_a_request_cancelled_while_its_record_waits_is_still_audited(
        tmp_path: Path) -> None:
    """Shutdown cancels in-flight requests; a record already handed to the database thread,
    but queued behind other work, is written all the same (and before the database closes)."""
    import asyncio
    import time

    state, audit = await make(tmp_path, 1)
    busy = asyncio.ensure_future(state.run(lambda conn: time.sleep(0.3)))
    await asyncio.sleep(0.05)
    writing = asyncio.ensure_future(audit.append(entry(1)))
    await asyncio.sleep(0.05)
    writing.cancel()
    await busy
    await state.close()
    state, audit = await make(tmp_path, 0)
    assert await verify(audit) == (True, 2, "all 2 audit records are intact")
    await state.close()


def sha256_chain(db: Path, scheme: str = "sha256") -> None:
    """What someone with the database file but not the key can do: rewrite records and
    recompute every hash with SHA-256, as the records before the key were chained."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        prev = GENESIS
        for row in list(conn.execute("SELECT * FROM audit ORDER BY id")):
            record = dict(row)
            record["actor"] = "unix:mallory"
            body = json.dumps({k: record[k] for k in FIELDS}, sort_keys=True,
                              separators=(",", ":"))
            digest = hashlib.sha256((prev + body).encode()).hexdigest()
            conn.execute("UPDATE audit SET actor=?, prev_hash=?, hash=?, scheme=? WHERE id=?",
                         (record["actor"], prev, digest, scheme, record["id"]))
            prev = digest


async def test_removed_newest_records_are_found_and_recorded(tmp_path: Path) -> None:
    state, audit = await make(tmp_path, 5)
    await state.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute("DELETE FROM audit WHERE id >= 4")
    state, audit = await make(tmp_path, 0)  # the start finds it, and writes it down
    ok, count, message = await verify(audit)
    assert not ok and count == 4
    assert message == ("the audit log is NOT intact: record 4: the newest records were "
                       "removed: the log ended at record 3, but podod had written record 5 "
                       f"(head file {tmp_path / 'audit.head'})")
    await audit.append(entry(9))  # the evidence stays when the head moves on
    assert (await verify(audit))[2] == message
    await state.close()


async def test_a_chain_rewritten_without_the_key_is_found(tmp_path: Path) -> None:
    for scheme in ("sha256", "hmac-sha256"):
        root = tmp_path / scheme
        root.mkdir()
        state, audit = await make(root, 4)
        await state.close()
        sha256_chain(root / "state.db", scheme)
        state = StateDB(root / "state.db")
        await state.open()
        audit = AuditLog(state)
        await audit.setup()
        ok, _count, message = await verify(audit)
        assert not ok, scheme
        assert message.startswith("the audit log is NOT intact: record "), message
        await state.close()


async def test_the_head_names_a_removed_record_even_without_a_restart(tmp_path: Path) -> None:
    state, audit = await make(tmp_path, 3)
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute("DELETE FROM audit WHERE id = 3")
    ok, _count, message = await verify(audit)
    assert not ok and message == (
        "the audit log is NOT intact: the newest records were removed: the log ends at record "
        f"2, but the head file {tmp_path / 'audit.head'} names record 3")
    await state.close()


async def test_unsigned_records_stay_verifiable_and_signing_starts_after_them(
        tmp_path: Path) -> None:
    """A log written before the audit key: its SHA-256 records verify as such, the first
    signed record says where signing starts, and verify says what each part proves."""
    db = tmp_path / "state.db"
    state, audit = await make(tmp_path, 3)
    await state.close()
    sha256_chain(db)  # as an older podod wrote them: SHA-256 only
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit SET key_id = NULL")
    (tmp_path / "audit.head").unlink()
    (tmp_path / "audit.key").unlink()
    state, audit = await make(tmp_path, 2)
    verdict = await audit.verify()
    assert verdict.intact and verdict.records == 6, verdict.lines
    assert verdict.data["unsigned"] == 3 and verdict.data["signed"] == 3
    assert verdict.lines[1].startswith("- records 1-3: unchanged since written, by their "
                                       "SHA-256 chain only")
    assert verdict.lines[2].startswith("- records 4-6: signed with the audit key")
    first = (await audit.list(limit=3))[-1]
    assert first["outcome"] == "audit-signing" and first["scheme"] == "hmac-sha256"
    assert first["message"].endswith("the 3 records before it have a SHA-256 chain only")
    await state.close()
    with sqlite3.connect(db) as conn:  # unsigned again, after signed ones: a rewrite
        conn.execute("UPDATE audit SET scheme = 'sha256' WHERE id = 5")
    state, audit = await make(tmp_path, 0)
    ok, _count, message = await verify(audit)
    assert not ok and message == ("the audit log is NOT intact: record 5 claims to be older "
                                  "than the audit key but follows signed records: the log was "
                                  "rewritten")
    await state.close()


async def test_a_lost_key_is_recorded_and_its_records_cannot_be_checked(tmp_path: Path) -> None:
    state, audit = await make(tmp_path, 3)
    old_id = (await audit.verify()).data["key_id"]
    await state.close()
    (tmp_path / "audit.key").unlink()
    state, audit = await make(tmp_path, 0)
    verdict = await audit.verify()
    assert not verdict.intact
    assert verdict.lines[0].startswith(
        f"the audit log is NOT intact: record 4: the audit key {tmp_path / 'audit.key'} "
        f"(key id {verdict.data['key_id']}) was made now, the file was missing: records up "
        f"to 3, signed with key id {old_id}, can no longer be checked")
    assert f"- records 1-3 were signed with another audit key (key id {old_id})" in \
        verdict.message
    await state.close()


async def test_a_short_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "audit.key").write_text("short\n")
    state = StateDB(tmp_path / "state.db")
    await state.open()
    with pytest.raises(PododError, match="holds 5 bytes; the audit key needs at least 32"):
        await AuditLog(state).setup()
    await state.close()


async def test_a_log_of_an_older_podod_is_migrated_and_stays_verifiable(tmp_path: Path) -> None:
    """state.db as podod wrote it before records were signed (schema 1, plain SHA-256)."""
    db = tmp_path / "state.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE schema_versions (area TEXT PRIMARY KEY, version INTEGER)")
        for statement in MIGRATIONS[0].split(";\n"):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_versions VALUES ('audit', 1)")
        prev = GENESIS
        for n in range(1, 4):
            row = {"ts": 1700000000.0 + n, "request_id": f"r{n}", "actor": "unix:root",
                   "origin": "socket", "command": "status", "args": "{}", "execute_real": 0,
                   "outcome": "ok", "message": "podod is running", "duration_ms": 1.0,
                   "backup_id": None}
            body = json.dumps({k: row[k] for k in FIELDS}, sort_keys=True,
                              separators=(",", ":"))
            digest = hashlib.sha256((prev + body).encode()).hexdigest()
            conn.execute(f"INSERT INTO audit ({', '.join(FIELDS)}, prev_hash, hash) "
                         f"VALUES ({', '.join('?' * len(FIELDS))}, ?, ?)",
                         [row[k] for k in FIELDS] + [prev, digest])
            prev = digest
    state, audit = await make(tmp_path, 1)
    verdict = await audit.verify()
    assert verdict.intact and verdict.records == 5, verdict.lines
    assert (verdict.data["unsigned"], verdict.data["signed"]) == (3, 2)
    await state.close()
