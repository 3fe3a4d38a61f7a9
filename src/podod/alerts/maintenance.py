"""Recurring maintenance windows: a crontab schedule in a time zone, plus a duration.

The schedule is read by APScheduler 3.x's ``CronTrigger.from_crontab`` (alerts/cron.py, which
also translates crontab's numeric weekdays).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from podod.alerts.cron import cron_trigger
from podod.alerts.matchers import Matcher, from_mapping, matches_all

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

    from podod.alerts.settings import MaintenanceWindowSettings


@dataclass
class RecurringWindow:
    """A configured window, ready to answer "is it on now, and until when?"."""

    name: str
    schedule: str
    duration: float
    timezone: str
    servers: tuple[str, ...]
    matchers: tuple[Matcher, ...]
    reason: str
    trigger: CronTrigger

    @classmethod
    def from_settings(cls, s: MaintenanceWindowSettings) -> RecurringWindow:
        return cls(name=s.name, schedule=s.schedule, duration=s.duration, timezone=s.timezone,
                   servers=tuple(s.servers), matchers=from_mapping(s.match), reason=s.reason,
                   trigger=cron_trigger(s.schedule, s.timezone))

    def active_until(self, now: float) -> float | None:
        """The end of the window that contains ``now``, or None when none does."""
        start = datetime.fromtimestamp(now - self.duration, UTC)
        fire = self.trigger.get_next_fire_time(None, start)
        end: float | None = None
        while fire is not None and fire.timestamp() <= now:
            end = fire.timestamp() + self.duration
            fire = self.trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
        return end if end is not None and end > now else None

    def next_start(self, now: float) -> float | None:
        fire = self.trigger.get_next_fire_time(None, datetime.fromtimestamp(now, UTC))
        return fire.timestamp() if fire is not None else None

    def covers(self, labels: dict[str, str]) -> bool:
        if self.servers and labels.get("server") not in self.servers:
            return False
        return matches_all(self.matchers, labels)
