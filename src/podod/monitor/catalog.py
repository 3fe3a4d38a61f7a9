"""The catalogue of series: every series podod's own collectors emit, declared once.

The names are Prometheus-style without the ``podod_`` prefix (/metrics adds it); every
sample also carries its ``server``, which is never listed among the labels here. Base units,
``_total`` on counters, and no unbounded labels (no addresses, no queue ids). /metrics reads
HELP and TYPE from here, docs/metrics.md lists the same entries, and plugins add theirs with
``registry.declare_series``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SeriesKind = Literal["gauge", "counter"]


@dataclass(frozen=True)
class SeriesInfo:
    name: str
    kind: SeriesKind
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""
    plugin: str = "core"
    about_podod: bool = False  # its ``server`` label is "podod" (podod itself), not a server


_G: SeriesKind = "gauge"
_C: SeriesKind = "counter"

_BUILTIN: list[tuple[str, SeriesKind, str, tuple[str, ...]]] = [
    # -- connections (servers/) -----------------------------------------------------------
    ("ssh_connected", _G, "1 while podod's SSH connection to the server is up (always 1 "
     "for the machine podod runs on)", ()),
    ("ssh_rtt_seconds", _G, "Round-trip time of a no-op command on the server", ()),
    ("ssh_reconnects_total", _C, "Connections podod had to re-establish", ()),
    # -- services (monitor/collectors) ------------------------------------------------------
    ("service_up", _G, "1 when systemctl reports the unit active", ("service",)),
    ("systemd_available", _G, "1 when systemctl answers on the server; 0 where no systemd "
     "runs (service_up is then not reported)", ()),
    ("probe_success", _G, "1 when the protocol probe got a valid answer", ("probe",)),
    ("probe_duration_seconds", _G, "How long the protocol probe took", ("probe",)),
    # -- the Postfix queue -------------------------------------------------------------------
    ("postfix_queue_messages", _G, "Messages in the Postfix queue", ("queue",)),
    ("postfix_queue_size_bytes", _G, "Total size of the messages in the queue", ("queue",)),
    ("postfix_queue_oldest_message_age_seconds", _G,
     "Age of the oldest message in the queue (0 when empty)", ("queue",)),
    ("postfix_queue_unparsed_lines", _G, "Lines of the last postqueue -j output that were "
     "not a queue entry (skipped)", ()),
    # -- mail traffic from the logs ----------------------------------------------------------
    ("postfix_messages_received_total", _C, "Messages Postfix received, as pflogsumm counts "
     "them: smtpd accepted one from a client, or pickup took one from the sendmail command",
     ()),
    ("postfix_deliveries_total", _C, "Delivery attempts by transport and outcome "
     "(sent, deferred, bounced, expired)", ("transport", "status")),
    ("postfix_smtpd_rejects_total", _C, "Rejects by Postfix (smtpd, postscreen, and cleanup's "
     "header/body/milter checks), by reply code and reason class", ("code", "reason")),
    ("postfix_sasl_auth_failures_total", _C, "SASL authentication failures at smtpd", ()),
    ("dovecot_auth_failures_total", _C, "Failed Dovecot login attempts by protocol",
     ("protocol",)),
    ("dovecot_logins_total", _C, "Successful Dovecot logins by protocol", ("protocol",)),
    ("log_lines_total", _C, "Mail log lines read, by service", ("service",)),
    ("log_lines_unparsed_total", _C, "Mail log lines of a known service that the parser "
     "did not recognise", ("service",)),
    # -- the host (node_exporter-like names) -------------------------------------------------
    ("node_load1", _G, "1-minute load average", ()),
    ("node_load5", _G, "5-minute load average", ()),
    ("node_load15", _G, "15-minute load average", ()),
    ("node_cpus", _G, "Number of CPUs", ()),
    ("node_load1_per_cpu", _G, "1-minute load average divided by the number of CPUs", ()),
    ("node_cpu_seconds_total", _C, "CPU time spent in each mode, summed over all CPUs",
     ("mode",)),
    ("node_cpu_busy_ratio", _G, "Share of CPU time not idle since the previous reading", ()),
    # snake_case, not node_exporter's MemTotal: promtool check metrics rejects camelCase
    ("node_memory_mem_total_bytes", _G, "Total memory (MemTotal)", ()),
    ("node_memory_mem_available_bytes", _G, "Memory available for new work (MemAvailable)",
     ()),
    ("node_memory_used_ratio", _G, "1 - MemAvailable / MemTotal", ()),
    ("node_memory_swap_total_bytes", _G, "Total swap (SwapTotal)", ()),
    ("node_memory_swap_free_bytes", _G, "Free swap (SwapFree)", ()),
    ("node_filesystem_size_bytes", _G, "Size of the mounted file system", ("mountpoint",)),
    ("node_filesystem_avail_bytes", _G, "Space available to unprivileged users",
     ("mountpoint",)),
    ("node_filesystem_used_ratio", _G, "Used share of the file system (as df shows it)",
     ("mountpoint",)),
    ("node_network_receive_bytes_total", _C, "Bytes received", ("device",)),
    ("node_network_transmit_bytes_total", _C, "Bytes sent", ("device",)),
    # -- PostgreSQL ---------------------------------------------------------------------------
    ("postgres_up", _G, "1 when SELECT 1 succeeded", ()),
    ("postgres_connections", _G, "Backends by state", ("state",)),
    ("postgres_max_connections", _G, "The max_connections setting", ()),
    ("postgres_connections_used_ratio", _G, "Backends / max_connections", ()),
    ("postgres_database_size_bytes", _G, "Size of the database", ("database",)),
    ("postgres_longest_transaction_seconds", _G, "Age of the oldest open transaction", ()),
    ("postgres_replication_lag_seconds", _G, "Replay lag on a replica (absent on a primary)",
     ()),
    # -- Dovecot's own statistics (doveadm stats dump; metrics defined in dovecot.conf) ------
    ("dovecot_stats_events_total", _C, "Events a Dovecot stats metric counted (reset when "
     "Dovecot reloads)", ("metric",)),
    ("dovecot_stats_duration_seconds_total", _C, "Summed duration of the events a Dovecot "
     "stats metric counted", ("metric",)),
    ("dovecot_stats_field_total", _C, "Summed value of another field a Dovecot stats metric "
     "lists (bytes_in, bytes_out, ...)", ("metric", "field")),
    # -- mailbox quotas (alerts/quota.py; server="podod": the mail database) ----------------
    ("mail_quota_mailboxes", _G, "Active mailboxes with a quota (0 is unlimited: not "
     "counted), per domain", ("domain",)),
    ("mail_quota_mailboxes_over", _G, "Mailboxes using at least threshold percent of their "
     "quota (quota2 against mailbox.quota), per domain and threshold (alerts.quota_warnings."
     "thresholds)", ("domain", "threshold")),
    ("mail_quota_owner_notices_total", _C, "Quota notices e-mailed to mailbox owners since "
     "podod started, by result (sent, failed)", ("result",)),
    # -- podod itself (server="podod" unless the metric is about a server) ------------------
    ("build_info", _G, "Always 1: the running podod's version", ("version",)),
    ("commands_total", _C, "Requests the command bus handled, by command, frontend and "
     "outcome (ok, sandbox, or the error code)", ("command", "origin", "result")),
    ("collector_errors_total", _C, "Collector runs that failed, per server", ("collector",)),
    ("collector_cycle_seconds", _G, "Cycle time of the collector's last closed cycle: the "
     "longest any of its runs took from its turn to its end (waiting for a slot plus "
     "running); at or above the interval the cycle overran", ("collector",)),
    ("collector_interval_seconds", _G, "The collector's interval", ("collector",)),
    ("collector_cycle_jobs", _G, "Jobs (servers) due in the collector's last closed cycle",
     ("collector",)),
    ("collector_cycle_runs", _G, "Runs of the collector's last closed cycle by outcome (ok, "
     "failed, skipped, overran)", ("collector", "outcome")),
    ("backup_last_success_timestamp_seconds", _G, "When the newest verified backup before a "
     "real change was taken (Unix time)", ()),
    ("backup_last_success_age_seconds", _G, "Seconds since the newest verified backup", ()),
    ("alerts_firing", _G, "Alerts firing now, per server (muted ones included)",
     ("rule", "severity")),
    ("notifications_total", _C, "Notifications by notifier and outcome (sent, failed after "
     "every retry, dropped from a full queue)", ("notifier", "result")),
    ("after_actions_total", _C, "After-actions run after a committed change (auth cache "
     "flushes, quota recalculations, SOGo cache deletions, maildir moves), by kind and "
     "result (done, failed)", ("action", "result")),
    ("matrix_up", _G, "1 while podod's Matrix account syncs, 0 while it backs off or is "
     "stopped (a refused token)", ()),
    ("matrix_sync_age_seconds", _G, "Seconds since the Matrix sync last returned (a long "
     "poll returns at least every matrix.sync_timeout)", ()),
    ("matrix_sync_lag_seconds", _G, "Seconds from the homeserver's timestamp of the last "
     "Matrix event to podod reading it", ()),
    ("matrix_messages_sent_total", _C, "Messages podod posted to Matrix (replies, progress, "
     "alerts)", ()),
    ("matrix_send_failures_total", _C, "Messages podod could not post to Matrix", ()),
    ("api_requests_total", _C, "REST API requests by route (its template, e.g. "
     "/api/users/{email}), method and HTTP status", ("route", "method", "status")),
    ("api_request_duration_seconds_total", _C, "Time spent answering REST API requests, "
     "by route and method (divide by the requests for the mean)", ("route", "method")),
    ("api_request_duration_p99_seconds", _G, "The 99th percentile of the last 1024 REST "
     "API requests' durations, by route and method", ("route", "method")),
]


def builtin_series() -> dict[str, SeriesInfo]:
    return {name: SeriesInfo(name, kind, help, labels)
            for name, kind, help, labels in _BUILTIN}
