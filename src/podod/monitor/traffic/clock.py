"""Mail-log timestamps to hours: traditional syslog (``Nov 25 01:02:03``, no year, no zone),
RFC 3339 (``2026-11-25T01:02:03.123456+00:00``) and ``journalctl -o short-iso``
(``2026-11-25T01:02:03+0000``).

The parser needs the hour of a line (counts are kept per hour) far more often than its
second, and consecutive lines share their hour, so the clock caches by the line's hour
prefix and only parses when it changes.

Syslog lines carry no year: the first one is placed in the year that puts it at most a day
after the reference time (the file's modification time, or now when following), and a
month going back from December to January moves to the next year.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, tzinfo

MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def local_zone(name: str | None = None) -> tzinfo:
    """The zone naive syslog timestamps are read in: ``name``, else this machine's."""
    if name:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # (only here: its import costs)

        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{name}' is not a known time zone (such as Europe/Berlin)") \
                from None
    zone = datetime.now().astimezone().tzinfo
    return zone if zone is not None else UTC


class LogClock:
    """Turns the timestamp prefix of a line into the epoch second its hour starts at."""

    def __init__(self, zone: tzinfo | None = None, reference: float | None = None) -> None:
        self.zone = zone if zone is not None else local_zone()
        self.reference = reference if reference is not None else time.time()
        self.year: int | None = None
        self.last_month = 0
        self._cache: dict[str, int] = {}

    def set_reference(self, reference: float) -> None:
        """A new file (or stream) starts: infer its first syslog year afresh."""
        self.reference = reference
        self.year = None
        self.last_month = 0
        self._cache.clear()

    def syslog_hour(self, key: str) -> int | None:
        """``key`` is the first 9 characters: ``Nov 25 01`` (the day may be space-padded)."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        month = MONTHS.get(key[:3])
        try:
            day = int(key[4:6])
            hour = int(key[7:9])
        except ValueError:
            return None
        if month is None or key[3] != " " or key[6] != " " or not 1 <= day <= 31 \
                or not 0 <= hour <= 23:
            return None
        if self.year is None:
            ref = datetime.fromtimestamp(self.reference, self.zone)
            year = ref.year
            try:
                candidate = datetime(year, month, day, hour, tzinfo=self.zone)
            except ValueError:  # 29 February in a common year
                candidate = datetime(year, month, 28, hour, tzinfo=self.zone)
            if candidate - ref > timedelta(days=1):
                year -= 1
            self.year = year
        elif month < self.last_month and self.last_month - month > 6:
            self.year += 1  # December → January
            self._cache.clear()
        self.last_month = month
        try:
            start = int(datetime(self.year, month, day, hour, tzinfo=self.zone).timestamp())
        except ValueError:
            return None
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = start
        return start

    def iso_hour(self, line: str, end: int) -> int | None:
        """The hour of an RFC 3339 / short-iso timestamp ``line[:end]``."""
        offset = _offset(line, end)
        if offset is None:
            return None
        key = line[:13] + offset
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            naive = datetime(int(line[0:4]), int(line[5:7]), int(line[8:10]), int(line[11:13]))
        except ValueError:
            return None
        if line[4] != "-" or line[7] != "-" or line[10] != "T":
            return None
        if offset == "Z":
            delta = 0
        else:
            sign = -1 if offset[0] == "-" else 1
            digits = offset[1:].replace(":", "")
            if len(digits) != 4 or not digits.isdigit():
                return None
            delta = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
        start = int(naive.replace(tzinfo=UTC).timestamp()) - delta
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = start
        return start


def _offset(line: str, end: int) -> str | None:
    """The zone part of an ISO timestamp ending at ``end``: ``+00:00``, ``+0000`` or ``Z``."""
    if line[end - 1] == "Z":
        return "Z"
    if end >= 6 and line[end - 6] in "+-" and line[end - 3] == ":":
        return line[end - 6:end]
    if end >= 5 and line[end - 5] in "+-":
        return line[end - 5:end]
    return None


def syslog_seconds(line: str) -> int:
    """Minutes and seconds of a syslog timestamp, as seconds into its hour."""
    try:
        return int(line[10:12]) * 60 + int(line[13:15])
    except ValueError:
        return 0


def iso_seconds(line: str) -> int:
    try:
        return int(line[14:16]) * 60 + int(line[17:19])
    except ValueError:
        return 0
