"""Crontab schedules for maintenance windows (alerts/maintenance.py) and their validation in
the ``alerts:`` settings (alerts/settings.py), which must not import each other.

The schedule is read by APScheduler 3.x's ``CronTrigger.from_crontab``. APScheduler 3 counts
weekdays from Monday = 0 while crontab counts from Sunday = 0 (its issue 286, fixed only in
4.x), so numeric weekdays are translated to names first: ``0 3 * * 0`` means Sunday 03:00
here, as in crontab.
"""

from __future__ import annotations

import zoneinfo

from apscheduler.triggers.cron import CronTrigger

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_HINT = "(five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * sun')"


def _weekday(token: str) -> int:
    number = int(token)
    if not 0 <= number <= 7:
        raise ValueError(f"weekday {number} is out of range 0-7")
    return number % 7


def crontab_weekdays(field: str) -> str:
    """Crontab's day-of-week field with numbers replaced by day names."""
    out: list[str] = []
    for part in field.lower().split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step {step_text} must be at least 1")
        if base == "*" and step == 1:
            out.append("*")
            continue
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            left, right = base.split("-", 1)
            if not (left.isdigit() and right.isdigit()):
                if step != 1:
                    raise ValueError(f"'{part}': a step needs numeric weekdays")
                out.append(base)
                continue
            low, high = int(left), int(right)
            if not (0 <= low <= 7 and 0 <= high <= 7) or low > high:
                raise ValueError(f"weekday range '{base}' is not within 0-7")
        elif base.isdigit():
            low = high = int(base)
            if step != 1:
                high = 6
        else:
            if step != 1:
                raise ValueError(f"'{part}': a step needs numeric weekdays")
            out.append(base)
            continue
        out.extend(_DAYS[_weekday(str(n))] for n in range(low, high + 1, step))
    seen: list[str] = []
    for item in out:
        if item not in seen:
            seen.append(item)
    return ",".join(seen)


def cron_trigger(schedule: str, timezone: str) -> CronTrigger:
    """A CronTrigger for a crontab line; a ValueError names what is wrong."""
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"'{schedule}' is not a crontab schedule {_HINT}")
    try:
        tz = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"'{timezone}' is not a time zone such as UTC or "
                         "Europe/Berlin") from None
    try:
        fields[4] = crontab_weekdays(fields[4])
        return CronTrigger.from_crontab(" ".join(fields), timezone=tz)
    except ValueError as exc:
        raise ValueError(f"'{schedule}' is not a crontab schedule {_HINT}: {exc}") from None
