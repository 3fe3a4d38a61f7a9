"""The alert engine's sense of time, injectable so tests can move it by hand.

Every decision of the engine (``for:``, ``keep_firing_for:``, group timers, silences,
maintenance windows) reads :meth:`Clock.now`; nothing in the engine calls ``time.time()``.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to: ``clock.advance(90)``."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        self._now += seconds
        return self._now

    def set(self, value: float) -> None:
        self._now = float(value)
