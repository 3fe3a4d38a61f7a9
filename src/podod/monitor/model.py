"""What measurements look like as they travel: samples, the events that carry them, and the
live state (latest value of every series) that /metrics and the alert engine read."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from podod.events import Event

# Samples are defined beside the event bus (podod.samples) so that servers/ can publish its
# ssh_* samples without importing monitor/; they are part of this module's vocabulary.
from podod.samples import Kind as Kind
from podod.samples import LabelKey as LabelKey
from podod.samples import Sample as Sample
from podod.samples import SamplesCollected as SamplesCollected


@dataclass(frozen=True, kw_only=True)
class CollectorFailed(Event):
    collector: str
    server: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class StoreDegraded(Event):
    """The metrics store cannot write (full disk, ...): samples are kept in memory."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class StoreRecovered(Event):
    """Writes work again; the backlog kept in memory was written (``dropped``: samples lost
    because the backlog was full)."""

    flushed: int = 0
    dropped: int = 0


@dataclass(frozen=True, kw_only=True)
class StoreReset(Event):
    """metrics.db failed its integrity check at start: it was moved aside, a new one began."""

    reason: str
    moved_to: str


class LiveState:
    """The latest sample of every (series, server, labels); fed from SamplesCollected."""

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str, LabelKey], Sample] = {}
        self.collector_errors: dict[tuple[str, str], int] = {}  # (collector, server)

    def update(self, samples: tuple[Sample, ...] | list[Sample]) -> None:
        latest = self._latest
        for s in samples:
            latest[(s.series, s.server, s.labels)] = s

    def forget_server(self, server: str) -> None:
        for key in [k for k in self._latest if k[1] == server]:
            del self._latest[key]

    def samples(self, series: str | None = None) -> Iterator[Sample]:
        for (name, _server, _labels), sample in self._latest.items():
            if series is None or name == series:
                yield sample

    def snapshot(self) -> dict[tuple[str, str, LabelKey], Sample]:
        """A copy of (series, server, labels) → latest sample, safe to read on another
        thread while the live state goes on changing (a dict copy allocates no tuples)."""
        return dict(self._latest)

    def get(self, series: str, server: str, **labels: str) -> Sample | None:
        return self._latest.get((series, server, Sample.labels_of(**labels)))

    def __len__(self) -> int:
        return len(self._latest)
