"""Requests per actor, limited before the bus runs anything: a token bucket per actor name
(``commands.rate_limit``), read from the configuration at each check so a reload applies.
Any frontend calls :meth:`RateLimiter.check` with the actor it identified."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from podod.config import RateLimitSettings
from podod.errors import RateLimited

_MAX_ACTORS = 10_000  # buckets kept; the least recently seen goes first (bounded memory)


class RateLimiter:
    def __init__(self, settings: Callable[[], RateLimitSettings],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, actor: str) -> None:
        """Take one request from ``actor``'s bucket, or refuse with one sentence."""
        settings = self._settings()
        if settings.per_minute == 0 or actor in settings.exempt:
            return
        now = self._clock()
        rate = settings.per_minute / 60.0
        tokens, last = self._buckets.pop(actor, (float(settings.burst), now))
        tokens = min(float(settings.burst), tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[actor] = (tokens, now)
            wait = (1.0 - tokens) / rate
            raise RateLimited(f"{actor} sent more than {settings.per_minute} requests a "
                              f"minute; try again in {max(1, round(wait))} s")
        self._buckets[actor] = (tokens - 1.0, now)
        while len(self._buckets) > _MAX_ACTORS:
            self._buckets.popitem(last=False)
