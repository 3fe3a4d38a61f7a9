"""What a measurement looks like as it travels: one sample, and the event that carries a
collector run's samples. Shared by monitor/ (collectors, store, /metrics, alerts) and servers/
(the ssh_* samples of every connection); monitor.model re-exports them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from podod.events import Event

Kind = Literal["gauge", "counter"]
LabelKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one series on one server.

    ``series`` is the Prometheus-style name without the ``podod_`` prefix (for example
    ``postfix_queue_messages``); ``labels`` never includes ``server``, which is its own
    field. Counters are monotonic totals (the store and the alert engine handle resets).
    ``note`` is text for people that goes with the value (the alert engine hands it to a
    rule's templates as ``note``, e.g. which mailboxes a count is made of); the store and
    /metrics never see it, so it can name what a label must not (addresses).
    """

    series: str
    server: str
    value: float
    labels: LabelKey = ()
    kind: Kind = "gauge"
    ts: float = field(default_factory=time.time)
    note: str = ""

    @staticmethod
    def labels_of(**labels: str) -> LabelKey:
        return tuple(sorted((k, str(v)) for k, v in labels.items()))


@dataclass(frozen=True, kw_only=True)
class SamplesCollected(Event):
    collector: str
    server: str
    samples: tuple[Sample, ...]
