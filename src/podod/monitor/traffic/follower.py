"""Following one server's mail log without losing or double counting a line.

:class:`LogFollower` reads the log through the server's Runner, parses it in batches, and
hands each batch to ``commit`` together with the position it was read up to (file inode,
byte offset and first-line digest, or journal cursor). ``commit`` writes counts and
position in one transaction, so whatever happens (a dropped SSH connection, a restart of
podod, kill -9), the next session resumes exactly after the last committed line.

A file session (``_file_session``) decides where to start from the saved position:

- same file (inode and first line unchanged) and at least as long: resume at the offset;
- same inode but shorter, or a different first line: the file was truncated or rewritten
  (copytruncate): the rest of the copy (``PATH.1``, recognised by its first line) is read
  first, then the file from its beginning;
- another inode: the log was rotated: the rest of the old file (``PATH.1``, or
  ``PATH.1.gz`` when it was compressed already) is read from the saved offset, then the
  new file from its beginning. When the old file is gone, the loss is logged.

While following, podod checks every ``rotation_check`` seconds whether the path still names
the file it follows; after a rotation it keeps reading the old file until it has been quiet
for ``rotation_grace`` seconds (the writer has reopened), then starts a new session, which
finishes the old file and moves on. A truncation is reported by tail in band, at the exact
place in the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from podod.monitor.traffic import sources
from podod.monitor.traffic.clock import LogClock, iso_seconds, syslog_seconds
from podod.monitor.traffic.parser import MailLogParser
from podod.monitor.traffic.settings import TrafficSettings
from podod.monitor.traffic.store import Batch, Position
from podod.monitor.traffic.tally import Tally

log = logging.getLogger(__name__)

Commit = Callable[[Batch], Awaitable[None]]


class Restart(Exception):
    """End the session and start a new one (rotation, truncation, a changed file)."""


@dataclass
class FollowerStatus:
    source: str = ""
    state: str = "starting"
    since: float = field(default_factory=time.time)
    last_error: str | None = None
    lines: int = 0
    last_line_at: float | None = None


def line_time(line: str, clock: LogClock) -> int | None:
    """The epoch second of a log line (for "followed since")."""
    if line[:1].isdigit():
        end = line.find(" ")
        hour = clock.iso_hour(line, end) if end >= 19 else None
        return hour + iso_seconds(line) if hour is not None else None
    hour = clock.syslog_hour(line[:9]) if len(line) > 16 and line[15] == " " else None
    return hour + syslog_seconds(line) if hour is not None else None


class LogFollower:
    def __init__(self, server: str, log_spec: str, runner: Any, settings: TrafficSettings,
                 commit: Commit, *, clock: LogClock, position: Position | None,
                 pending: list[tuple[str, int, int, int, str]],
                 ready: Callable[[float], Awaitable[None]] | None = None,
                 reload: Callable[[], Awaitable[tuple[Position | None,
                                                      list[tuple[str, int, int, int, str]]]]]
                 | None = None) -> None:
        self.server = server
        self.spec = log_spec
        self.runner = runner
        self.settings = settings
        self.commit_batch = commit
        self.ready = ready  # waits (bounded) until the server is reachable again
        self.reload = reload  # the committed position and messages in flight, from the store
        self._broken = False  # a commit failed: parser state is ahead of the store
        self.clock = clock
        self.position = position
        self.followed_since = position.followed_since if position is not None else None
        self.parser = self._new_parser(pending)
        self.status = FollowerStatus(source=log_spec)
        self._lines: list[str] = []
        self._pending_position: Position | None = None
        self._last_flush = time.monotonic()
        self._last_data = time.monotonic()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    def _new_parser(self, pending: list[tuple[str, int, int, int, str]]) -> MailLogParser:
        parser = MailLogParser(
            Tally(top_scope="hour", top_capacity=self.settings.top_candidates),
            clock=self.clock, max_messages=self.settings.max_messages, track_changes=True)
        parser.restore(pending)
        return parser

    async def _resync(self) -> None:
        """After a failed commit: back to exactly what the store has."""
        if self.reload is None:
            return
        position, pending = await self.reload()
        self.position = position
        self.parser = self._new_parser(pending)
        self._lines = []
        self._pending_position = None
        self._broken = False

    @property
    def is_journal(self) -> bool:
        return self.spec == "journal" or self.spec.startswith("journal:")

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        delay = 1.0
        while True:
            started = self.status.lines
            try:
                if self._broken:
                    await self._resync()
                if self.is_journal:
                    await self._journal_session()
                else:
                    await self._file_session()
                self.status.state = "reconnecting"
            except Restart as exc:
                log.info("traffic %s: %s", self.server, exc)
                with contextlib.suppress(Exception):
                    await self.flush()
                delay = 1.0
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dropped connection, a refused command, ...
                reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                self.status.state = "retrying"
                self.status.last_error = reason
                log.warning("traffic %s: following %s failed: %s", self.server, self.spec,
                            reason)
            with contextlib.suppress(Exception):
                await self.flush()
            if self.status.lines > started:
                delay = 1.0
            if self.ready is not None:  # back as soon as the connection is
                await self.ready(delay)
                await asyncio.sleep(0.05)
            else:
                await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max)

    # -- batching --------------------------------------------------------------------------

    def _add(self, line: str, position: Position) -> None:
        self._lines.append(line)
        self._pending_position = position
        self.status.lines += 1
        self.status.last_line_at = time.time()
        self._last_data = time.monotonic()

    async def _maybe_flush(self) -> None:
        if len(self._lines) >= self.settings.batch_lines or \
                time.monotonic() - self._last_flush >= self.settings.flush_interval:
            await self.flush()

    async def flush(self) -> None:
        """Parse what was read and commit it with its position (one transaction)."""
        async with self._lock:
            self._last_flush = time.monotonic()
            position = self._pending_position
            if position is None:
                return
            lines, self._lines = self._lines, []
            parser = self.parser
            for start in range(0, len(lines), 2000):  # parse in slices: the loop breathes
                parser.feed_lines(lines[start:start + 2000])
                if start:
                    await asyncio.sleep(0)
            parser.fold_tops()
            parser.bound_pending()
            tally = parser.take_tally()
            kept, gone = parser.take_changes()
            totals = tally.totals()
            for name, (n_lines, n_unparsed) in parser.take_service_counts().items():
                if n_lines:
                    totals[f"lines\t{name}"] = totals.get(f"lines\t{name}", 0) + n_lines
                if n_unparsed:
                    totals[f"unparsed\t{name}"] = \
                        totals.get(f"unparsed\t{name}", 0) + n_unparsed
            if self.followed_since is None and lines:
                self.followed_since = line_time(lines[0], LogClock(
                    self.clock.zone, reference=time.time())) or int(time.time())
            position.followed_since = self.followed_since
            batch = Batch(self.server, tally, totals, position, kept, gone)
            try:
                await self.commit_batch(batch)
            except BaseException:
                # Nothing of the batch is stored: the next session re-reads it from the
                # committed position, with the parser state the store has (a full disk
                # simply pauses counting; the log is the buffer).
                self._broken = True
                self._lines = []
                self._pending_position = None
                raise
            self.position = position
            if self._pending_position is position:
                # (lines read while the commit ran have a newer position: keep it)
                self._pending_position = None
            # The interval counts from the end of a commit: a slow one (a busy disk) must
            # not make every following line a commit of its own.
            self._last_flush = time.monotonic()

    # -- files -----------------------------------------------------------------------------

    async def _stat(self, *paths: str) -> dict[str, tuple[int, int, int]]:
        result = await self.runner.run(sources.stat_argv(*paths), timeout=30)
        return sources.parse_stat(result.stdout)

    async def _head(self, path: str) -> str | None:
        result = await self.runner.run(["head", "-c", "4096", "--", path], timeout=30)
        return sources.head_digest(sources.first_line(result.stdout))

    async def _file_session(self) -> None:
        path = self.spec
        self.status.state = "checking"
        found = await self._stat(path, f"{path}.1", f"{path}.1.gz")
        current = found.get(path)
        if current is None:
            self.status.state = "waiting for the file"
            await asyncio.sleep(self.settings.rotation_check)
            return
        inode, size, _mtime = current
        pos = self.position if self.position is not None and \
            self.position.source == "file" and self.position.path == path else None
        if pos is None:
            start = Position("file", path, inode, 0, None, None, None)
        else:
            same = pos.inode == inode and (pos.head is None or
                                           await self._head(path) == pos.head)
            if same and size >= pos.offset:
                start = pos
            else:
                # Rotated (another inode) or truncated/rewritten (copytruncate): finish the
                # old content from the rotated copy first.
                await self._finish_old(pos, found)
                start = Position("file", path, inode, 0, None, None, None)
        await self._read(path, start, follow=True)

    async def _finish_old(self, pos: Position, found: dict[str, tuple[int, int, int]]
                          ) -> None:
        path = self.spec
        old = found.get(f"{path}.1")
        if old is not None and (old[0] == pos.inode or
                                await self._head(f"{path}.1") == pos.head) and \
                old[1] >= pos.offset:
            if old[1] > pos.offset:
                await self._read(f"{path}.1", Position("file", path, old[0], pos.offset,
                                                       pos.head, None, None), follow=False)
                await self.flush()
            return
        if f"{path}.1.gz" in found and pos.head is not None and await self._read_gz_rest(pos):
            return
        if pos.offset:
            log.warning("traffic %s: %s was rotated while podod was away and its rest is "
                        "gone (no %s.1 with the same first line): lines after byte %d of "
                        "the old file could not be counted", self.server, path, path,
                        pos.offset)

    async def _read_gz_rest(self, pos: Position) -> bool:
        """Read the compressed rotated file from the saved offset, if it is the same file."""
        consumed = 0
        head_checked = False
        async for raw in self._stream(["gzip", "-dc", "--", f"{self.spec}.1.gz"]):
            if not raw.endswith(b"\n"):
                break
            line = raw.decode("utf-8", "replace")
            if not head_checked:
                if sources.head_digest(line) != pos.head:
                    return False
                head_checked = True
            consumed += len(raw)
            if consumed > pos.offset:
                self._add(line, Position("file", self.spec, pos.inode, consumed, pos.head,
                                         None, None))
                await self._maybe_flush()
        await self.flush()
        return head_checked

    async def _stream(self, argv: list[str]) -> AsyncIterator[bytes]:
        async for raw in self.runner.stream(argv):
            yield raw

    async def _race(self, *coros: Awaitable[None]) -> None:
        """Run the coroutines until the first one ends; cancel the others; re-raise."""
        tasks = [asyncio.ensure_future(c) for c in coros]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for task in done:
            task.result()

    async def _read(self, file: str, start: Position, *, follow: bool) -> None:
        """Read ``file`` from ``start.offset`` (``start`` describes that file); with
        ``follow``, until it is rotated, truncated or the stream ends."""
        self.status.state = "following" if follow else f"finishing {file}"
        if follow:
            await self._race(self._consume(file, start, True),
                             self._watch_rotation(start.inode))
        else:
            await self._consume(file, start, False)

    async def _consume(self, file: str, start: Position, follow: bool) -> None:
        offset = start.offset
        head = start.head
        inode = start.inode
        header = True
        async for raw in self._stream(sources.follow_argv(file, offset,
                                                          "follow" if follow else "rest")):
            if header:
                header = False
                parts = raw.split()
                if len(parts) != 3 or parts[0] != b"podod-logtail":
                    raise RuntimeError(f"unexpected answer from the log reader: {raw[:80]!r}")
                if int(parts[1]) != inode:
                    raise Restart(f"{file} was replaced while opening it")
                continue
            if sources.TRUNCATED in raw:
                raise Restart(f"{file} was truncated (copytruncate)")
            if not raw.endswith(b"\n"):
                break  # a partial last line: it is read again next time
            line = raw.decode("utf-8", "replace")
            if offset == 0:
                head = sources.head_digest(line)
            offset += len(raw)
            self._add(line, Position("file", self.spec, inode, offset, head, None, None))
            await self._maybe_flush()

    async def _watch_rotation(self, inode: int | None) -> None:
        """Flush on time, and end the session once the path names another file and the
        old one has been quiet for ``rotation_grace`` seconds."""
        rotated_at: float | None = None
        next_check = time.monotonic() + self.settings.rotation_check
        while True:
            await asyncio.sleep(min(self.settings.flush_interval, 1.0))
            if self._lines and time.monotonic() - self._last_flush >= \
                    self.settings.flush_interval:
                await self.flush()
            now = time.monotonic()
            if rotated_at is None and now >= next_check:
                next_check = now + self.settings.rotation_check
                found = await self._stat(self.spec)
                current = found.get(self.spec)
                if current is not None and current[0] != inode:
                    rotated_at = now
                elif current is not None and self.position is not None and \
                        self.position.inode == inode and current[1] < self.position.offset:
                    raise Restart(f"{self.spec} is shorter than what was read (truncated)")
            if rotated_at is not None and now - self._last_data >= \
                    self.settings.rotation_grace and now - rotated_at >= \
                    self.settings.rotation_grace:
                raise Restart(f"{self.spec} was rotated")

    # -- the journal -----------------------------------------------------------------------

    async def _journal_session(self) -> None:
        directory = self.spec.split(":", 1)[1] if ":" in self.spec else None
        pos = self.position if self.position is not None and \
            self.position.source == "journal" and self.position.path == self.spec else None
        argv = sources.journal_argv(pos.cursor if pos else None,
                                    self.settings.journal_backlog, directory)
        self.status.state = "following"
        await self._race(self._consume_journal(argv), self._flush_on_time())

    async def _consume_journal(self, argv: list[str]) -> None:
        async for raw in self._stream(argv):
            entry = sources.journal_line(raw)
            if entry is None:
                continue
            line, cursor, stamp = entry
            if self.followed_since is None:
                self.followed_since = int(stamp)
            self._add(line, Position("journal", self.spec, None, 0, None, cursor, None))
            await self._maybe_flush()

    async def _flush_on_time(self) -> None:
        while True:
            await asyncio.sleep(min(self.settings.flush_interval, 1.0))
            if self._lines and time.monotonic() - self._last_flush >= \
                    self.settings.flush_interval:
                await self.flush()
