"""Generated mail logs for the traffic tests: their lines (bench/loggen.py's consistent mail
flows), the totals podod's parser gives them, and writing them the way syslog does."""

from __future__ import annotations

import io
import sys
import time
from datetime import UTC
from pathlib import Path

from podod.monitor.traffic.clock import LogClock
from podod.monitor.traffic.parser import MailLogParser
from podod.monitor.traffic.tally import Tally

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import loggen

TOTALS = ("received", "delivered", "deferred", "deferrals", "bounced", "rejected")


def lines_of(n: int, seed: int, days: float = 1.0) -> list[str]:
    """``n`` syslog lines of mail flows over ``days`` days from loggen's fixed start
    (30 December, 20:00 UTC). Syslog lines carry no year, so they are dated to the last
    30 December that is not more than a day ahead: always in the past year, never in the
    last hour, except for a run on 29-31 December."""
    out = io.StringIO()
    loggen.generate(out, lines=n, days=days, seed=seed)
    return out.getvalue().splitlines(keepends=True)


def truth(lines: list[str], keys: tuple[str, ...] | None = TOTALS) -> dict[str, int]:
    """What the parser counts in ``lines`` read in one go (every counter when ``keys`` is
    None): what a follower must arrive at, however the lines reach it."""
    parser = MailLogParser(Tally(), clock=LogClock(UTC, reference=time.time()))
    parser.feed_lines(lines)
    totals = parser.tally.totals()
    return dict(totals) if keys is None else {k: totals.get(k, 0) for k in keys}


def append(path: Path, lines: list[str]) -> None:
    with open(path, "a") as f:
        f.writelines(lines)
