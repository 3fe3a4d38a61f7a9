"""Bounded "top senders / recipients" counting.

A mail server sees an unbounded number of addresses (spam runs invent them), so a count per
address cannot be kept for every address. :class:`TopCounter` keeps at most ``capacity``
candidates: when the table holds twice that, it keeps the ``capacity`` largest and
remembers the largest count it dropped (``floor``). A new address then starts at that
floor, as in the space-saving algorithm: a reported count is never below the true count
and at most ``floor`` above it, and it is exact while the distinct addresses fit
(``floor`` stays 0).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class TopCounter:
    __slots__ = ("capacity", "counts", "floor")

    def __init__(self, capacity: int = 200) -> None:
        self.capacity = max(1, capacity)
        self.counts: dict[str, int] = {}
        self.floor = 0

    def add(self, key: str, n: int = 1) -> None:
        counts = self.counts
        value = counts.get(key)
        if value is None:
            counts[key] = self.floor + n
            if len(counts) >= 2 * self.capacity:
                self._prune()
        else:
            counts[key] = value + n

    def merge(self, items: Iterable[tuple[str, int]]) -> None:
        """Add many (key, count) pairs: the bulk form of :meth:`add`."""
        counts = self.counts
        limit = 2 * self.capacity
        if not counts and self.floor == 0:
            items = list(items)
            if len(items) < limit:  # the common first merge: a plain copy (in C)
                counts.update(items)
                return
        get = counts.get
        for key, n in items:
            value = get(key)
            if value is None:
                counts[key] = self.floor + n
                if len(counts) >= limit:
                    self._prune()
            else:
                counts[key] = value + n

    def _prune(self) -> None:
        counts = self.counts
        ranked = sorted(counts, key=counts.__getitem__, reverse=True)
        if len(ranked) > self.capacity:
            self.floor = max(self.floor, counts[ranked[self.capacity]])
        for key in ranked[self.capacity:]:  # in place: callers may hold the dictionary
            del counts[key]

    def top(self, limit: int | None = None) -> list[tuple[str, int]]:
        """The ``limit`` largest counts, ties by key. Only the candidates at or above the
        ``limit``-th largest count are sorted (a report's top 10 of 100 000 addresses)."""
        counts = self.counts
        if limit is not None and 0 < limit < len(counts):
            least = heapq.nlargest(limit, counts.values())[-1]
            items = [(k, n) for k, n in counts.items() if n >= least]
        else:
            items = list(counts.items())
        ranked = sorted(items, key=_rank)
        return ranked if limit is None else ranked[:limit]

    def __len__(self) -> int:
        return len(self.counts)


def _rank(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]
