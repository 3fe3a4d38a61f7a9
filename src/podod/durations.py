"""Durations as people write them in configs and commands: ``90s``, ``5m``, ``2h``, ``7d``."""

from __future__ import annotations

import math
import re

MAX_DURATION = 36500 * 86400.0  # 100 years: beyond any retention, well inside datetime's range
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_BARE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?")  # no nan, inf, 1_0
_HINT = "a duration such as 30s, 5m, 2h or 7d"


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``; a bare number is seconds. Raises ValueError with a plain message.

    A duration is finite and at most :data:`MAX_DURATION` (100 years): ``nan``, ``inf`` or
    ``1e300`` would break later arithmetic with dates and timestamps."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"must be {_HINT}")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value} is not {_HINT}")
        return _bounded(float(max(min(value, MAX_DURATION + 1), -1)), value)  # no huge float
    text = value.strip().lower().replace(" ", "")
    if not text:
        raise ValueError(f"must be {_HINT}")
    if _BARE.fullmatch(text):
        return _bounded(float(text), value)
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"'{_shown(value)}' is not {_HINT}")
    return _bounded(total, value)


def _bounded(seconds: float, value: str | int | float) -> float:
    if seconds < 0:
        raise ValueError("must not be negative")
    if not seconds <= MAX_DURATION:  # also inf, from digits too many for a float
        raise ValueError(f"must be at most 36500d (100 years), not {_shown(value)}")
    return seconds + 0.0  # -0.0 → 0.0


def _shown(value: str | int | float) -> str:
    """The value as given, cut short, so that a message stays one readable line."""
    text = str(value)
    return text if len(text) <= 40 else text[:40] + "…"


def format_duration(seconds: float) -> str:
    """A short human form: ``3d4h``, ``5m``, ``12s``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
        if len(parts) == 2:
            break
    return "".join(parts)
