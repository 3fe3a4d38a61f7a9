"""What the mail-log parser counts: per hour, a flat table of counters and bounded top lists.

A counter's key is a metric name, optionally followed by tab-separated label values:
``received``, ``delivery\\tsmtp\\tsent``, ``reject\\trbl\\t554``, ``login\\timap``. Flat string
keys keep the parser's hot path to one dictionary update per event, and the same keys are
the rows of the traffic store.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

from podod.monitor.traffic.top import TopCounter

# Message counts with pflogsumm's meanings.
RECEIVED = "received"          # smtpd "client=" or pickup "uid=/sender=" lines
DELIVERED = "delivered"        # status=sent recipient lines (not "forwarded as")
FORWARDED = "forwarded"        # status=sent ... forwarded as ...
DEFERRED = "deferred"          # messages deferred at least once
DEFERRALS = "deferrals"        # status=deferred recipient lines
BOUNCED = "bounced"            # status=bounced recipient lines
EXPIRED = "expired"            # qmgr "status=expired, returned to sender"
REJECTED = "rejected"          # smtpd/postscreen "reject:", cleanup content rejects
REJECT_WARNINGS = "reject_warnings"
HELD = "held"
DISCARDED = "discarded"
BYTES_RECEIVED = "bytes_received"
BYTES_DELIVERED = "bytes_delivered"
SASL_FAILURES = "sasl_auth_failures"

MESSAGE_KEYS = (RECEIVED, DELIVERED, FORWARDED, DEFERRED, DEFERRALS, BOUNCED, EXPIRED,
                REJECTED, REJECT_WARNINGS, HELD, DISCARDED, BYTES_RECEIVED, BYTES_DELIVERED,
                SASL_FAILURES)

# Labelled counters: prefix + "\t" + labels.
DELIVERY = "delivery"          # transport, status
REJECT = "reject"              # reason class, reply code
LOGIN = "login"                # protocol
AUTH_FAILURE = "auth_failure"  # protocol (Dovecot login processes)
AUTH_REJECT = "auth_reject"    # reason (Dovecot auth process: password, unknown-user)

TOP_KINDS = ("sender", "recipient", "sender_domain", "recipient_domain")


def key(metric: str, *labels: str) -> str:
    return "\t".join((metric, *labels))


def split_key(k: str) -> tuple[str, tuple[str, ...]]:
    metric, *labels = k.split("\t")
    return metric, tuple(labels)


class Tally:
    """Counts per hour (epoch second the hour starts at) and top lists.

    ``top_scope="hour"`` keeps a top list per hour (what the store keeps);
    ``"global"`` keeps one list for the whole run (``podod logparse``).
    """

    def __init__(self, *, top_capacity: int = 200, top_scope: str = "hour") -> None:
        self.hours: dict[int, defaultdict[str, int]] = {}
        self.tops: dict[int, dict[str, TopCounter]] = {}
        self.top_capacity = top_capacity
        self.top_scope = top_scope

    def bucket(self, hour: int) -> defaultdict[str, int]:
        """The counters of ``hour`` (a defaultdict: ``bucket[key] += 1`` is the fastest
        update Python has)."""
        bucket = self.hours.get(hour)
        if bucket is None:
            bucket = self.hours[hour] = defaultdict(int)
        return bucket

    def top_lists(self, hour: int) -> dict[str, TopCounter]:
        if self.top_scope != "hour":
            hour = 0
        lists = self.tops.get(hour)
        if lists is None:
            lists = self.tops[hour] = {k: TopCounter(self.top_capacity) for k in TOP_KINDS}
        return lists

    def add(self, hour: int, k: str, n: int = 1) -> None:
        self.bucket(hour)[k] += n

    def totals(self, since: int | None = None, until: int | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for hour, bucket in self.hours.items():
            if (since is not None and hour < since) or (until is not None and hour >= until):
                continue
            for k, n in bucket.items():
                out[k] = out.get(k, 0) + n
        return out

    def top(self, kind: str, limit: int | None = None, since: int | None = None,
            until: int | None = None) -> list[tuple[str, int]]:
        """The largest counts of ``kind`` over the hours in ``[since, until)`` (a global
        list ignores the range)."""
        if self.top_scope != "hour":
            lists = self.tops.get(0)
            return lists[kind].top(limit) if lists else []
        merged = TopCounter(max(self.top_capacity, 1000))
        for hour, lists in self.tops.items():
            if (since is None or hour >= since) and (until is None or hour < until):
                merged.merge(lists[kind].counts.items())
        return merged.top(limit)

    def items(self) -> Iterator[tuple[int, str, int]]:
        for hour, bucket in self.hours.items():
            for k, n in bucket.items():
                yield hour, k, n

    def merge(self, other: Tally) -> None:
        for hour, k, n in other.items():
            self.add(hour, k, n)
        for hour, lists in other.tops.items():
            mine = self.top_lists(hour)
            for kind, counter in lists.items():
                mine[kind].merge(counter.counts.items())

    def clear(self) -> None:
        self.hours.clear()
        self.tops.clear()

    def __bool__(self) -> bool:
        return bool(self.hours) or any(len(c) for lists in self.tops.values()
                                       for c in lists.values())


def labelled(totals: dict[str, int], metric: str) -> Iterable[tuple[tuple[str, ...], int]]:
    """The labelled counters of one metric: ``((label, ...), count)``."""
    prefix = metric + "\t"
    for k, n in totals.items():
        if k.startswith(prefix):
            yield tuple(k[len(prefix):].split("\t")), n
