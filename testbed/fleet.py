"""A realistic live state for a fleet of mail servers: every catalogued series with the label
sets a real server has, for /metrics and alert tests and benchmarks (bench/metrics.py,
bench/alerts.py) when real collectors are not the point."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable

from podod.monitor.catalog import SeriesInfo, builtin_series
from podod.monitor.model import Sample

#: Typical label values per label name (a server with four services, three mounts, ...).
TYPICAL: dict[str, tuple[str, ...]] = {
    "service": ("postfix", "dovecot", "sogo", "postgresql", "nginx"),
    "probe": ("smtp", "submission", "imap", "imaps", "sogo", "postgres"),
    "queue": ("active", "deferred", "hold", "incoming", "maildrop"),
    "transport": ("smtp", "lmtp", "relay"),
    "status": ("sent", "deferred", "bounced", "expired"),
    "code": ("450", "454", "550", "554"),
    "reason": ("rbl", "unknown_user", "relay_denied", "helo", "sender"),
    "protocol": ("imap", "pop3", "submission"),
    "mode": ("user", "system", "idle", "iowait", "irq", "softirq", "steal", "nice"),
    "mountpoint": ("/", "/var", "/var/vmail"),
    "device": ("eth0", "eth1"),
    "state": ("active", "idle", "idle in transaction"),
    "database": ("mail", "sogo"),
    "endpoint": ("smtp", "submission", "imaps", "https"),
    "collector": ("system", "services", "queue", "postgres", "tls"),
    "command": ("status", "user list"),
    "origin": ("socket",),
    "result": ("ok",),
    "rule": ("DiskAlmostFull",),
    "severity": ("warning",),
    "version": ("0.1.0",),
    "notifier": ("webhook",),
}

#: Series about podod itself: /metrics adds them from its own counters, and the scheduler
#: publishes the collector cycles once (server "podod"), not per server.
SELF_SERIES = {"build_info", "commands_total", "backup_last_success_timestamp_seconds",
               "backup_last_success_age_seconds", "alerts_firing", "notifications_total",
               "collector_errors_total", "collector_cycle_seconds",
               "collector_interval_seconds", "collector_cycle_jobs", "collector_cycle_runs",
               "matrix_up", "matrix_sync_age_seconds", "matrix_sync_lag_seconds",
               "matrix_messages_sent_total", "matrix_send_failures_total",
               "api_requests_total", "api_request_duration_seconds_total",
               "api_request_duration_p99_seconds", "mail_quota_mailboxes",
               "mail_quota_mailboxes_over", "mail_quota_owner_notices_total"}

TLS_SERIES = [
    SeriesInfo("tls_cert_not_after_timestamp_seconds", "gauge", "", ("endpoint",)),
    SeriesInfo("tls_cert_valid", "gauge", "", ("endpoint",)),
    SeriesInfo("tls_probe_success", "gauge", "", ("endpoint",)),
    SeriesInfo("tls_probe_duration_seconds", "gauge", "", ("endpoint",)),
]


def _label_sets(labels: tuple[str, ...]) -> list[dict[str, str]]:
    sets: list[dict[str, str]] = [{}]
    for name in labels:
        values = TYPICAL.get(name, ("a", "b"))
        sets = [{**s, name: v} for s in sets for v in values]
    return sets


def _value(info: SeriesInfo, rng: random.Random, now: float) -> float:
    name = info.name
    if name.endswith("_timestamp_seconds"):
        return now + rng.uniform(20, 80) * 86400
    if name in ("ssh_connected", "service_up", "probe_success", "postgres_up",
                "tls_cert_valid", "tls_probe_success"):
        return 1.0
    if name.endswith("_ratio"):
        return rng.uniform(0.05, 0.7)
    if name.endswith("_bytes"):
        return float(rng.randrange(1 << 20, 1 << 36))
    if name.endswith("_seconds"):
        return rng.uniform(0.001, 2.0)
    if info.kind == "counter":
        return float(rng.randrange(0, 10_000_000))
    return float(rng.randrange(0, 500))


def server_series(extra: Iterable[SeriesInfo] = TLS_SERIES) -> list[SeriesInfo]:
    """Every series a server has: the catalogue minus podod's own, plus the tls plugin's."""
    catalog = builtin_series()
    out = [info for name, info in catalog.items() if name not in SELF_SERIES]
    out += [info for info in extra if info.name not in catalog]
    return out


def fleet_samples(servers: Iterable[str], *, now: float | None = None, seed: int = 1,
                  series: list[SeriesInfo] | None = None) -> list[Sample]:
    """One sample of every series and typical label set, for every server."""
    now = time.time() if now is None else now
    rng = random.Random(seed)
    infos = series if series is not None else server_series()
    shapes = [(info, [Sample.labels_of(**s) for s in _label_sets(info.labels)])
              for info in infos]
    out: list[Sample] = []
    for server in servers:
        for info, label_sets in shapes:
            for labels in label_sets:
                out.append(Sample(info.name, server, _value(info, rng, now), labels,
                                  info.kind, now))
    return out


def fleet_names(count: int) -> list[str]:
    return [f"mx{i:03d}.example.org" for i in range(count)]
