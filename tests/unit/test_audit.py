"""The audit chain shows edits, insertions and deletions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from podod.bus.audit import AuditEntry, AuditLog
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


async def test_intact_chain(tmp_path: Path) -> None:
    state, audit = await make(tmp_path, 5)
    assert await audit.verify() == (True, 5, "all 5 audit records are intact")
    await state.close()


async def test_edit_and_delete_are_detected(tmp_path: Path) -> None:
    state, audit = await make(tmp_path, 5)
    await state.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute("UPDATE audit SET actor='unix:mallory' WHERE id=3")
    state, audit = await make(tmp_path, 0)
    ok, _count, message = await audit.verify()
    assert not ok and message == "record 3 was changed after it was written"
    await state.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute("UPDATE audit SET actor='unix:root' WHERE id=3")
        conn.execute("DELETE FROM audit WHERE id=2")
    state, audit = await make(tmp_path, 0)
    ok, _count, message = await audit.verify()
    assert not ok
    assert message == "record 3 does not follow the one before it (a record was removed or " \
                      "inserted)"
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
    assert await audit.verify() == (True, 2, "all 2 audit records are intact")
    await state.close()
