"""How long to wait before the next connection attempt.

Exponential (``minimum · 2ⁿ`` after the n-th consecutive failure), capped at ``maximum``, with
"equal jitter": the wait is between half and all of that, so a fleet that lost its network at
once does not reconnect in lock-step, yet the wait never collapses to nothing.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, minimum: float, maximum: float, *, rng: random.Random | None = None
                 ) -> None:
        self.minimum = max(minimum, 0.01)
        self.maximum = max(maximum, self.minimum)
        self.failures = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The un-jittered wait after the current number of failures."""
        if self.failures == 0:
            return 0.0
        exponent = min(self.failures - 1, 60)
        return min(self.maximum, self.minimum * 2.0 ** exponent)

    def failed(self) -> float:
        """Record a failure; return the wait before the next attempt."""
        self.failures += 1
        ceiling = self.ceiling()
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0
