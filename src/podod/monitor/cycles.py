"""Cycle statistics: does every server get measured once per interval?

A collector with interval I has one *turn* per job (server) in every interval, at the job's
fixed phase (see :func:`podod.monitor.scheduler.spread`). Cycle k of the collector holds the
turns due in ``[k·I, (k+1)·I)``: one per job. For each cycle this module records when its
first run started and its last run ended, the runs that succeeded, failed, were skipped (the
turn came while the job's previous run was still waiting or running) and *overran* (ended
after the job's next turn was due: its wait for a free slot plus its own time exceeded the
interval), the slowest run and its server, and the **cycle time**: the longest any run of the
cycle took from its turn to its end. With runs spread over the interval, "first start to last
end" is always close to the interval and says nothing; the cycle time is what must stay under
it. A cycle *fits* when every job had its run, none was skipped and none overran (then its
cycle time is under the interval).

A cycle closes when every job has reported for it, or one interval after its last turn
could have overrun (runs still going then count as overran).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

KEEP = 120  # closed cycles kept per collector (an hour at 30 s)


def cycle_of(turn: float, interval: float) -> int:
    return math.floor(turn / interval + 1e-9)


@dataclass
class Cycle:
    collector: str
    index: int
    interval: float
    jobs: int = 0  # jobs due in this cycle (fixed when it closes)
    first_start: float | None = None
    last_end: float | None = None
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    overran: int = 0
    cycle_time: float = 0.0  # longest turn -> end of a run
    longest_wait: float = 0.0  # longest turn -> start (waiting for a free slot)
    slowest: float = 0.0  # longest run (start -> end)
    slowest_server: str | None = None
    closed_at: float | None = None
    reported: set[str] = field(default_factory=set)
    running: dict[str, float] = field(default_factory=dict)  # server -> turn

    @property
    def window_start(self) -> float:
        return self.index * self.interval

    @property
    def span(self) -> float | None:
        if self.first_start is None or self.last_end is None:
            return None
        return self.last_end - self.first_start

    @property
    def runs(self) -> int:
        return self.ok + self.failed

    @property
    def fits(self) -> bool:
        return (self.skipped == 0 and self.overran == 0 and self.runs >= self.jobs
                and self.cycle_time < self.interval)

    def to_dict(self) -> dict[str, Any]:
        return {"collector": self.collector, "cycle": self.index,
                "interval": self.interval, "window_start": self.window_start,
                "jobs": self.jobs, "first_start": self.first_start,
                "last_end": self.last_end, "span": self.span, "cycle_time": self.cycle_time,
                "longest_wait": self.longest_wait, "slowest": self.slowest,
                "slowest_server": self.slowest_server, "ok": self.ok,
                "failed": self.failed, "skipped": self.skipped, "overran": self.overran,
                "fits": self.fits, "closed_at": self.closed_at}


class CycleStats:
    """Open and recently closed cycles of every collector.

    ``expected(collector, index)`` tells how many jobs have a turn in that cycle (jobs
    planned in the middle of a cycle start with the next one, and servers come and go).
    """

    def __init__(self, expected: Callable[[str, int], int], keep: int = KEEP) -> None:
        self.expected = expected
        self.keep = keep
        self._open: dict[str, dict[int, Cycle]] = {}
        self.closed: dict[str, deque[Cycle]] = {}

    def _cycle(self, collector: str, interval: float, turn: float) -> Cycle | None:
        index = cycle_of(turn, interval)
        cycles = self._open.setdefault(collector, {})
        cycle = cycles.get(index)
        if cycle is None:
            last = self.closed.get(collector)
            if last and last[-1].index >= index and last[-1].interval == interval:
                return None  # that cycle closed already (a straggler)
            cycle = cycles[index] = Cycle(collector, index, interval)
        return cycle

    def started(self, collector: str, server: str, interval: float, turn: float,
                at: float) -> None:
        cycle = self._cycle(collector, interval, turn)
        if cycle is None:
            return
        cycle.running[server] = turn
        if cycle.first_start is None or at < cycle.first_start:
            cycle.first_start = at
        cycle.longest_wait = max(cycle.longest_wait, at - turn)

    def finished(self, collector: str, server: str, interval: float, turn: float,
                 started: float, ended: float, ok: bool) -> list[Cycle]:
        """A run of the cycle ended; returns the cycles that closed."""
        cycle = self._cycle(collector, interval, turn)
        if cycle is not None and server not in cycle.reported:
            cycle.running.pop(server, None)
            cycle.reported.add(server)
            if ok:
                cycle.ok += 1
            else:
                cycle.failed += 1
            if cycle.last_end is None or ended > cycle.last_end:
                cycle.last_end = ended
            cycle.cycle_time = max(cycle.cycle_time, ended - turn)
            if ended - started >= cycle.slowest:
                cycle.slowest, cycle.slowest_server = ended - started, server
            if ended > turn + interval:
                cycle.overran += 1
        return self.close_due(collector, ended)

    def cancelled(self, collector: str, server: str, interval: float, turn: float) -> None:
        """The run was stopped with its job (reload, shutdown): it does not count."""
        cycle = self._open.get(collector, {}).get(cycle_of(turn, interval))
        if cycle is not None:
            cycle.running.pop(server, None)

    def skipped(self, collector: str, server: str, interval: float, turns: list[float],
                now: float) -> list[Cycle]:
        for turn in turns:
            cycle = self._cycle(collector, interval, turn)
            if cycle is not None and server not in cycle.reported:
                cycle.reported.add(server)
                cycle.skipped += 1
        return self.close_due(collector, now)

    def close_due(self, collector: str, now: float) -> list[Cycle]:
        """Close the collector's cycles that are complete or past their time."""
        out = []
        cycles = self._open.get(collector, {})
        for index in sorted(cycles):
            cycle = cycles[index]
            expected = self.expected(collector, index)
            complete = not cycle.running and len(cycle.reported) >= expected
            # every run of this cycle has overrun by then, if it has not ended
            late = now >= (index + 2) * cycle.interval + 1.0
            if not (complete or late):
                continue
            cycle.overran += len(cycle.running)
            if cycle.running:
                cycle.cycle_time = max(cycle.cycle_time,
                                       max(now - t for t in cycle.running.values()))
            cycle.jobs = max(expected, len(cycle.reported) + len(cycle.running))
            cycle.closed_at = now
            del cycles[index]
            kept = self.closed.setdefault(collector, deque(maxlen=self.keep))
            kept.append(cycle)
            out.append(cycle)
        return out

    def close_all_due(self, now: float) -> list[Cycle]:
        out = []
        for collector in list(self._open):
            out += self.close_due(collector, now)
        return out

    def forget(self, collector: str) -> None:
        """The collector is gone (its plugin unloaded, monitoring switched off)."""
        self._open.pop(collector, None)
        self.closed.pop(collector, None)

    def summary(self, collector: str, last: int | None = None) -> dict[str, Any]:
        """The closed cycles of ``collector`` (newest last) and figures over them."""
        kept = list(self.closed.get(collector, ()))
        full = [c for c in kept if c.jobs and c.runs + c.skipped >= c.jobs]
        times = [c.cycle_time for c in full]
        spans = [c.span for c in full if c.span is not None]
        shown = kept[-last:] if last else kept
        return {
            "cycles": len(kept),
            "cycle_time_median": statistics.median(times) if times else None,
            "cycle_time_max": max(times) if times else None,
            "span_median": statistics.median(spans) if spans else None,
            "span_max": max(spans) if spans else None,
            "not_fitting": sum(1 for c in kept if not c.fits),
            "runs": sum(c.runs for c in kept), "failed": sum(c.failed for c in kept),
            "skipped": sum(c.skipped for c in kept), "overran": sum(c.overran for c in kept),
            "recent": [c.to_dict() for c in shown],
        }
