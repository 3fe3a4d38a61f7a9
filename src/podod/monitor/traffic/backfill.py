"""``traffic backfill``: count old and rotated mail logs (plain or .gz) into the store.

The files are read ON THE SERVER through its Runner (allow-listed ``cat``/``gzip -dc`` of
absolute paths inside the server's log folder or ``traffic.backfill_dirs``), so a remote
server's old logs are imported the same way as local ones.

Idempotent: a file is known by the digest of its first line and the number of bytes already
imported from it, so importing it again (or importing ``mail.log.2.gz`` after
``mail.log.1``, which is the same file compressed) adds nothing, and a file that grew since
adds only its new part. Lines from the moment podod started following the server's log
live are skipped: they were counted already. Backfilled counts fill the reports (hourly
counts and top lists), not the Prometheus counters, where a jump would look like a burst
of traffic now.
"""

from __future__ import annotations

import asyncio
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from podod.bus.context import Progress, _no_progress
from podod.errors import NotFound, Unavailable, ValidationError
from podod.monitor.traffic import sources
from podod.monitor.traffic.clock import LogClock
from podod.monitor.traffic.parser import MailLogParser
from podod.monitor.traffic.store import Batch, ImportRecord
from podod.monitor.traffic.tally import Tally

if TYPE_CHECKING:
    from podod.monitor.traffic.component import Traffic
    from podod.servers.settings import ServerConfig


@dataclass
class FileResult:
    file: str
    lines: int = 0
    counted: int = 0
    skipped_known: int = 0   # lines already imported earlier
    skipped_live: int = 0    # lines the follower counted
    totals: dict[str, int] = field(default_factory=dict)
    record: ImportRecord | None = None
    tally: Tally | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        keys = ("received", "delivered", "deferred", "deferrals", "bounced", "rejected")
        return {"file": self.file, "lines": self.lines, "counted_lines": self.counted,
                "already_imported_lines": self.skipped_known,
                "counted_live_lines": self.skipped_live, "note": self.note,
                **{k: self.totals.get(k, 0) for k in keys}}


def allowed_dirs(traffic: Traffic, server: ServerConfig) -> list[str]:
    dirs = list(traffic.settings.backfill_dirs)
    if server.mail_log and server.mail_log.startswith("/"):
        dirs.append(posixpath.dirname(server.mail_log))
    return dirs


def check_path(path: str, dirs: list[str]) -> str:
    if not path.startswith("/"):
        raise ValidationError(f"'{path}' is not an absolute path on the server")
    norm = posixpath.normpath(path)
    if norm != path.rstrip("/") or "/../" in path + "/":
        raise ValidationError(f"'{path}' must be a plain absolute path (no '..' or '//')")
    import re

    if not re.fullmatch(sources.LOG_PATH, norm):
        raise ValidationError(f"'{path}' contains characters podod does not pass to a server")
    if not any(norm.startswith(d.rstrip("/") + "/") for d in dirs):
        raise ValidationError(f"'{path}' is not inside the server's log folders "
                              f"({', '.join(dirs)}; see traffic.backfill_dirs)")
    return norm


async def backfill(traffic: Traffic, server: ServerConfig, runner: Any, files: list[str],
                   *, sandbox: bool, progress: Progress = _no_progress) -> list[FileResult]:
    store = traffic.store
    paths = [check_path(f, allowed_dirs(traffic, server)) for f in files]
    found = sources.parse_stat((await runner.run(sources.stat_argv(*paths),
                                                 timeout=60)).stdout)
    for path in paths:
        if path not in found:
            raise NotFound(f"{path}: no such file on {server.name} (or not readable)")
    position = await store.run(store.position, server.name)
    parser = MailLogParser(Tally(top_scope="hour", top_capacity=traffic.settings.top_candidates),
                           clock=LogClock(traffic.zone))
    parser.until = position.followed_since if position is not None else None
    results = []
    for done, path in enumerate(paths):
        await progress(f"reading {path} on {server.name}", done, len(paths))
        results.append(await _read_file(traffic, server, runner, parser, path,
                                        found[path][2]))
    await progress(f"read {len(paths)} file(s) on {server.name}", len(paths), len(paths))
    if not sandbox:
        for result in results:
            if result.record is not None and result.tally is not None and result.counted:
                await traffic.commit(Batch(server.name, result.tally, {},
                                           import_record=result.record))
    return results


async def _read_file(traffic: Traffic, server: ServerConfig, runner: Any,
                     parser: MailLogParser, path: str, mtime: int) -> FileResult:
    result = FileResult(path)
    argv = ["gzip", "-dc", "--", path] if path.endswith(".gz") else ["cat", "--", path]
    parser.start_file(float(mtime))
    skipped_before = parser.skipped_live
    malformed_before = parser.malformed
    head: str | None = None
    known = 0
    consumed = 0
    batch: list[str] = []
    try:
        async for raw in runner.stream(argv):
            if not raw.endswith(b"\n"):
                continue  # an unfinished last line is not counted (nor remembered)
            line = raw.decode("utf-8", "replace")
            if head is None:
                head = sources.head_digest(line)
                if head is not None:
                    known = await traffic.store.run(traffic.store.imported_bytes,
                                                    server.name, head)
            consumed += len(raw)
            result.lines += 1
            if consumed <= known:
                result.skipped_known += 1
                continue
            batch.append(line)
            if len(batch) >= 5000:
                parser.feed_lines(batch)
                batch.clear()
                await asyncio.sleep(0)
    except Unavailable:
        raise
    parser.feed_lines(batch)
    tally = parser.take_tally()
    parser.take_service_counts()
    result.skipped_live = parser.skipped_live - skipped_before
    fed = result.lines - result.skipped_known
    result.counted = fed - result.skipped_live
    if head is None:
        result.note = "empty (or not readable)"
        return result
    if fed and parser.malformed - malformed_before == fed:
        raise ValidationError(f"{path} does not look like a mail log (no line starts with a "
                              "syslog or RFC 3339 timestamp)")
    result.totals = tally.totals()
    result.tally = tally
    if result.skipped_known == result.lines:
        result.note = "already imported"
    elif result.skipped_live == fed:
        result.note = "counted live already"
    result.record = ImportRecord(head, path, known, consumed, result.counted)
    return result
