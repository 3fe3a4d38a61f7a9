"""Quota warnings: the ``mail_quota`` collector and the notices to mailbox owners.

Every run reads the mail database with ONE statement (usage from ``quota2``, the quota from
``mailbox.quota``; 0 is unlimited and never warns, nor does a switched-off mailbox or
domain) and publishes, per domain, how many
mailboxes have a quota (``mail_quota_mailboxes``) and how many use at least each threshold
(``mail_quota_mailboxes_over{threshold="80"}``). Never a series per mailbox: the addresses
travel as the sample's ``note`` (the first ``list_addresses``, fullest first, "and N more"),
which the alert rules of the default pack show and /metrics never sees.

With ``owner_notice.enabled``, the owner of a mailbox that crosses a threshold gets one
e-mail through the named e-mail notifier's SMTP settings. What was sent is kept in state.db
(area ``quota``), so a mailbox that stays over the mark is not mailed again, not even after
a restart; one that drops ``rearm_margin`` points under the mark is mailed again when it
crosses it again. A failed send is not recorded and is retried at the next run.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any

from podod.errors import PododError
from podod.monitor.model import Sample
from podod.plugins import Registry

if TYPE_CHECKING:
    from podod.alerts.settings import AlertSettings, QuotaWarningSettings
    from podod.monitor.collect import CollectContext
    from podod.state import StateDB

log = logging.getLogger(__name__)

COLLECTOR = "mail_quota"
SERVER = "podod"  # the mail database is no server of its own: podod's samples
DEFAULT_INTERVAL = 300.0

# One statement: a row per domain (its mailboxes with a quota, username NULL) and a row per
# mailbox at or above the lowest threshold minus the re-arm margin. An index-only read of
# mailbox and quota2, hashed together: no query per mailbox, nothing sorted.
QUERY = """
WITH usage AS MATERIALIZED (
    SELECT m.username, m.domain, m.name, m.quota, COALESCE(q.bytes, 0) AS used
    FROM mailbox m JOIN domain d ON d.domain = m.domain
    LEFT JOIN quota2 q ON q.username = m.username
    WHERE m.quota > 0 AND m.active AND d.active)
SELECT domain, NULL::text AS username, ''::text AS name, count(*)::bigint AS used,
       0::bigint AS quota
FROM usage GROUP BY domain
UNION ALL
SELECT domain, username, name, used, quota FROM usage
WHERE used::float8 * 100 >= quota::float8 * $1::float8
"""

STATE_STEPS = [
    """
    CREATE TABLE quota_notices (
        username TEXT NOT NULL,
        threshold INTEGER NOT NULL,
        notified_at REAL NOT NULL,
        PRIMARY KEY (username, threshold)
    )
    """,
]


@dataclass(frozen=True, slots=True)
class Usage:
    address: str
    domain: str
    name: str
    used: int
    quota: int

    @property
    def percent(self) -> float:
        return self.used * 100.0 / self.quota


@dataclass
class Reading:
    """One run's result: per-domain counts and the mailboxes near or over a threshold."""

    domains: dict[str, int]
    near: list[Usage]


def read_rows(rows: Iterable[Any]) -> Reading:
    domains: dict[str, int] = {}
    near: list[Usage] = []
    for row in rows:
        if row["username"] is None:
            domains[row["domain"]] = int(row["used"])
        else:
            near.append(Usage(row["username"], row["domain"], row["name"] or "",
                              int(row["used"]), int(row["quota"])))
    return Reading(domains, near)


def listing(usages: list[Usage], limit: int) -> str:
    """The first ``limit`` addresses, fullest first, and how many more: bounded text."""
    if not usages or limit <= 0:
        return f"{len(usages)} mailboxes" if usages else ""
    ordered = sorted(usages, key=lambda u: (-u.percent, u.address))
    shown = ", ".join(f"{u.address} ({u.percent:.0f}%)" for u in ordered[:limit])
    more = len(ordered) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def samples_of(reading: Reading, settings: QuotaWarningSettings, now: float) -> list[Sample]:
    """Per domain: mailboxes with a quota, and per threshold those at or above it."""
    over: dict[tuple[str, int], list[Usage]] = {}
    for usage in reading.near:
        pct = usage.percent
        for t in settings.thresholds:
            if pct >= t:
                over.setdefault((usage.domain, t), []).append(usage)
    out: list[Sample] = []
    for domain in sorted(reading.domains):
        out.append(Sample("mail_quota_mailboxes", SERVER, float(reading.domains[domain]),
                          Sample.labels_of(domain=domain), ts=now))
        for t in settings.thresholds:
            usages = over.get((domain, t), [])
            out.append(Sample("mail_quota_mailboxes_over", SERVER, float(len(usages)),
                              Sample.labels_of(domain=domain, threshold=str(t)), ts=now,
                              note=listing(usages, settings.list_addresses)))
    return out


# -- the owner notices ---------------------------------------------------------------------

def _load(conn: sqlite3.Connection) -> set[tuple[str, int]]:
    return {(r[0], int(r[1])) for r in conn.execute(
        "SELECT username, threshold FROM quota_notices")}


def _forget(conn: sqlite3.Connection, keys: list[tuple[str, int]]) -> None:
    conn.executemany("DELETE FROM quota_notices WHERE username=? AND threshold=?", keys)


def _remember(conn: sqlite3.Connection, keys: list[tuple[str, int]], when: float) -> None:
    conn.executemany("INSERT OR REPLACE INTO quota_notices(username, threshold, notified_at) "
                     "VALUES (?, ?, ?)", [(u, t, when) for u, t in keys])


@dataclass
class Due:
    usage: Usage
    threshold: int  # the highest newly crossed one: the notice names it
    crossed: list[int]  # every threshold it is over: all recorded as notified


def plan_notices(near: list[Usage], notified: set[tuple[str, int]],
                 settings: QuotaWarningSettings) -> tuple[list[tuple[str, int]], list[Due]]:
    """What to forget (mailboxes back under a mark by the margin, or gone) and whom to
    notify (a threshold crossed that was not notified since it was last re-armed)."""
    by_address = {u.address: u for u in near}
    forget = []
    for address, t in notified:
        usage = by_address.get(address)
        if usage is None or usage.percent < t - settings.rearm_margin:
            forget.append((address, t))
    dropped = set(forget)
    due = []
    for usage in sorted(near, key=lambda u: (-u.percent, u.address)):
        crossed = [t for t in settings.thresholds if usage.percent >= t]
        new = [t for t in crossed if (usage.address, t) not in notified
               or (usage.address, t) in dropped]
        if new:
            due.append(Due(usage, max(new), crossed))
    return forget, due


class OwnerNotices:
    """Sends the owner notices; keeps what was sent in state.db."""

    def __init__(self, state: StateDB) -> None:
        self.state = state
        self.migrated = False
        self.sent = 0
        self.failed = 0

    async def run(self, near: list[Usage], alerts: AlertSettings) -> None:
        settings = alerts.quota_warnings
        notice = settings.owner_notice
        if not self.migrated:
            await self.state.migrate("quota", STATE_STEPS)
            self.migrated = True
        notified = await self.state.run(_load)
        forget, due = plan_notices(near, notified, settings)
        if forget:
            await self.state.run(_forget, forget)
        entry = alerts.email_notifier(notice.notifier)
        if not due or entry is None:
            return
        from podod.alerts.notifiers.email import EmailNotifier
        from podod.alerts.notify import NotifyError
        from podod.alerts.settings import DEFAULT_NOTICE_BODY
        from podod.alerts.templates import compile_template

        notifier = EmailNotifier(entry)
        subject = compile_template(notice.subject)
        body = compile_template(notice.body or DEFAULT_NOTICE_BODY)
        sender = notice.sender or entry.sender
        if len(due) > notice.max_per_run:
            log.info("quota warnings: %d owner notices due, %d sent now, the rest at the next "
                     "run (owner_notice.max_per_run)", len(due), notice.max_per_run)
        for item in due[:notice.max_per_run]:
            try:
                msg = message(item, sender, subject.render(**context(item)),
                              body.render(**context(item)))
            except (ValueError, TypeError) as exc:  # an address a header cannot hold
                self.failed += 1
                log.warning("quota warnings: no notice to %r: %s", item.usage.address, exc)
                continue
            try:
                await notifier.deliver(msg)
            except NotifyError as exc:
                self.failed += 1
                log.warning("quota warnings: the notice to %s was not sent (retried at the "
                            "next run): %s", item.usage.address, exc)
                return  # the SMTP server is the problem: the rest wait for the next run
            self.sent += 1
            await self.state.run(_remember, [(item.usage.address, t) for t in item.crossed],
                                 time.time())


def context(item: Due) -> dict[str, Any]:
    u = item.usage
    return {"address": u.address, "name": u.name, "domain": u.domain, "used": u.used,
            "quota": u.quota, "percent": f"{u.percent:.0f}%", "threshold": item.threshold}


def message(item: Due, sender: str, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = " ".join(subject.split())[:250]
    msg["From"] = sender
    msg["To"] = item.usage.address
    msg["Date"] = formatdate(time.time(), localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"  # no vacation reply to it (RFC 3834)
    msg["X-Podod-Quota-Threshold"] = str(item.threshold)
    msg.set_content(body.rstrip("\n") + "\n")
    return msg


# -- the collector ---------------------------------------------------------------------------

async def collect(ctx: CollectContext) -> list[Sample]:
    runtime = ctx.runtime
    alerts = runtime.config.alerts
    settings = alerts.quota_warnings
    databases = runtime.component("maildb")  # podod.mail.databases.MailDatabases
    if not settings.enabled or databases is None:
        return []
    lowest = max(settings.thresholds[0] - settings.rearm_margin, 0)
    rows: list[Any] = []
    # One statement per mail database (mail.databases); a domain lives in one of them.
    # One that does not answer is skipped (its own sentence in the log; its domains keep
    # their last alerts until it answers); the run fails only when none answers.
    members = list(databases.members.values())
    failures: list[str] = []
    for database in members:
        try:
            pool = await database.pool()
            async with pool.acquire() as conn:
                rows.extend(await conn.fetch(QUERY, float(lowest)))
        except PododError as exc:
            failures.append(exc.message)
            log.warning("quota warnings: %s", exc.message)
    if failures and len(failures) == len(members):
        raise RuntimeError(failures[0])
    reading = read_rows(rows)
    samples = samples_of(reading, settings, time.time())
    notices: OwnerNotices | None = ctx.state.get("notices")
    if notices is None:
        notices = ctx.state["notices"] = OwnerNotices(runtime.state)
    if settings.owner_notice.enabled:
        await notices.run(reading.near, alerts)
    samples.append(Sample("mail_quota_owner_notices_total", SERVER, float(notices.sent),
                          Sample.labels_of(result="sent"), "counter"))
    samples.append(Sample("mail_quota_owner_notices_total", SERVER, float(notices.failed),
                          Sample.labels_of(result="failed"), "counter"))
    return samples


def setup(registry: Registry) -> None:
    registry.collector(COLLECTOR, interval=DEFAULT_INTERVAL, per_server=False)(collect)
