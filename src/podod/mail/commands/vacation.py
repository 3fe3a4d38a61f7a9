"""``user vacation set|show|clear``: out-of-office replies (docs/sogo.md, "Vacation").

The message lives where the user sees and edits it: SOGo's ``Vacation`` user default, the
same keys SOGo's own preferences page writes. podod writes it with ``sogo-tool
user-preferences set ... -p CREDENTIALS``, so SOGo itself writes the user's Sieve script
(``sogo``) over ManageSieve, and Dovecot's Pigeonhole answers the mail: the script a user
gets from podod is the script SOGo would write for the same settings.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from podod.bus.context import CommandContext, Reply, Table
from podod.bus.shapes import BOOL, INT, STR, arr, nullable, obj
from podod.bus.spec import Arg, Opt
from podod.errors import NotFound, ValidationError
from podod.mail.addresses import normalize_address
from podod.mail.commands.common import maildb, not_served, reader, serves
from podod.mail.sogo import SogoOps, sieve_missing, sogo_of
from podod.plugins import Registry

MAX_SUBJECT = 255
MAX_MESSAGE = 10_000  # characters: a vacation reply is a few lines
DAY = 86400
MAX_DAYS = 30  # the choices of SOGo's preferences page
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

VACATION_REPLY = obj({
    "address": STR, "enabled": BOOL, "subject": nullable(STR), "message": nullable(STR),
    "from": nullable(STR), "until": nullable(STR), "interval_days": nullable(INT),
    "addresses": arr(STR, "the addresses the reply is for (SOGo's list)")},
    description="the Vacation user default as SOGo keeps it; dates YYYY-MM-DD")


def check_subject(subject: str) -> str:
    if not subject.strip():
        raise ValidationError("--subject must not be empty")
    if len(subject) > MAX_SUBJECT:
        raise ValidationError(f"--subject may have at most {MAX_SUBJECT} characters, not "
                              f"{len(subject)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in subject):
        raise ValidationError("--subject must not contain control characters such as a line "
                              "break or a tab")
    return subject.strip()


def check_message(message: str) -> str:
    text = message.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise ValidationError("--message must not be empty")
    if len(text) > MAX_MESSAGE:
        raise ValidationError(f"--message may have at most {MAX_MESSAGE} characters, not "
                              f"{len(text)}")
    if _CONTROL.search(text):
        raise ValidationError("--message must not contain control characters other than "
                              "line breaks and tabs")
    for number, line in enumerate(text.split("\n"), 1):
        if line.startswith("."):
            # SOGo puts the text into the Sieve script as it is, and a line "." ends it
            # there: the script would not compile.
            raise ValidationError(f"line {number} of --message starts with '.', which SOGo "
                                  "cannot put into a Sieve script; start it differently")
    return text.strip("\n")


def parse_day(option: str, value: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(f"{option} must be a date as YYYY-MM-DD, not '{value[:40]}'"
                              ) from None


def interval_days(seconds: float | None) -> int:
    if seconds is None:
        return 1
    days = seconds / DAY
    if days != int(days) or not 1 <= days <= MAX_DAYS:
        raise ValidationError(f"--interval must be whole days from 1d to {MAX_DAYS}d (Sieve "
                              "counts the days between two replies to the same sender)")
    return int(days)


def _stamp(day: date) -> int:
    """SOGo keeps a date as a Unix time; noon UTC is the same date in every time zone from
    UTC-11 to UTC+11, where SOGo turns it back into a date for the Sieve script."""
    return int(datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp())


def _day(value: Any) -> str | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return datetime.fromtimestamp(value, UTC).date().isoformat()


def shown(address: str, value: dict[str, Any] | None) -> dict[str, Any]:
    value = value or {}
    addresses = value.get("autoReplyEmailAddresses")
    days = value.get("daysBetweenResponse")
    return {
        "address": address, "enabled": bool(value.get("enabled")),
        "subject": str(value["customSubject"]) if value.get("customSubjectEnabled")
        and value.get("customSubject") is not None else None,
        "message": str(value["autoReplyText"]) if value.get("autoReplyText") is not None
        else None,
        "from": _day(value.get("startDate")) if value.get("startDateEnabled") else None,
        "until": _day(value.get("endDate")) if value.get("endDateEnabled") else None,
        "interval_days": int(days) if isinstance(days, int | float) else None,
        "addresses": [str(a) for a in addresses] if isinstance(addresses, list) else []}


def vacation_value(current: dict[str, Any] | None, address: str, subject: str,
                   message: str, start: date | None, end: date | None,
                   days: int) -> dict[str, Any]:
    """The Vacation default with podod's changes; whatever else the user set in SOGo
    (the addresses, always-send, discard) is kept."""
    value = dict(current or {})
    value.update({"enabled": 1, "autoReplyText": message, "customSubjectEnabled": 1,
                  "customSubject": subject, "daysBetweenResponse": days})
    if not value.get("autoReplyEmailAddresses"):
        value["autoReplyEmailAddresses"] = [address]
    value.setdefault("ignoreLists", 1)
    for key, day in (("startDate", start), ("endDate", end)):
        if day is None:
            value[f"{key}Enabled"] = 0
            value.pop(key, None)
        else:
            value[f"{key}Enabled"] = 1
            value[key] = _stamp(day)
    return value


async def _target(ctx: CommandContext, address: str, why: str) -> tuple[str, SogoOps]:
    username = normalize_address(address)
    ctx.require_domain(username.split("@")[1])
    database = await maildb(ctx, username.split("@")[1])
    async with reader(ctx, database=database) as db:
        exists = await db.fetchval("SELECT 1 FROM mailbox WHERE username = $1", username)
    if not exists:
        raise NotFound(f"there is no mailbox {username}; nothing was changed")
    manager = sogo_of(ctx.runtime)
    if manager.settings is not None and not serves(manager.settings.databases, database):
        raise ValidationError(f"{not_served('the SOGo of mail.sogo', 'sogo', database)}, so "
                              f"podod cannot manage the vacation reply of {username}; nothing "
                              "was changed")
    return username, manager.ops(why)


async def _write(ctx: CommandContext, ops: SogoOps, username: str, value: dict[str, Any],
                 switched: str, done: str) -> Reply:
    """Record and (in a real run) write SOGo's Vacation value; SOGo writes the Sieve script."""
    ctx.record("update", "sogo vacation", username, server=ops.server)
    data = shown(username, value)
    if ctx.sandbox:
        return Reply(message=f"the vacation message of {username} would be switched "
                             f"{switched} in SOGo on {ops.server}", data=data,
                     table=_table(data))
    await ops.set_vacation(username, value)
    return Reply(message=f"the vacation message of {username} is {done}", data=data,
                 table=_table(data))


def _table(data: dict[str, Any]) -> Table:
    rows = [["address", data["address"]], ["on", "yes" if data["enabled"] else "no"],
            ["subject", data["subject"] or "-"], ["from", data["from"] or "-"],
            ["until", data["until"] or "-"],
            ["interval", f"{data['interval_days']} d" if data["interval_days"] else "-"],
            ["for addresses", ", ".join(data["addresses"]) or "-"],
            ["message", data["message"] or "-"]]
    return Table(["item", "value"], rows, title=f"vacation message of {data['address']}")


def setup(registry: Registry) -> None:
    @registry.command(
        "user vacation set", "Switch on an out-of-office reply for a mailbox",
        params=[Arg("address", "the mailbox", kind="address"),
                Opt("subject", "the reply's subject", required=True),
                Opt("message", "the reply's text (line breaks allowed)", required=True),
                Opt("from_", "first day of the absence, YYYY-MM-DD (default: now)"),
                Opt("until", "last day of the absence, YYYY-MM-DD (default: until cleared)"),
                Opt("interval", "answer the same sender at most once per this many days "
                    f"(whole days, 1d to {MAX_DAYS}d; default 1d)", kind="duration")],
        permission="domain-admin", mutating=True, reply=VACATION_REPLY,
        examples=['user vacation set alice@example.com --subject "Out of office" '
                  '--message "Back on Monday." --from 2026-12-21 --until 2027-01-04 '
                  "--interval 7d --execute-real"],
        description="Written into SOGo's Vacation preference, where the user sees and can "
                    "change it; SOGo writes the Sieve script Dovecot answers the mail with.")
    async def user_vacation_set(ctx: CommandContext, address: str, subject: str,
                                message: str, from_: str | None, until: str | None,
                                interval: float | None) -> Reply:
        start_text, end_text = from_, until
        subject = check_subject(subject)
        message = check_message(message)
        days = interval_days(interval)
        start = parse_day("--from", start_text) if start_text is not None else None
        end = parse_day("--until", end_text) if end_text is not None else None
        if start is not None and end is not None and end < start:
            raise ValidationError(f"--until {end} is before --from {start}; nothing was "
                                  "changed")
        today = datetime.now(UTC).date()
        if end is not None and end < today:
            raise ValidationError(f"--until {end} is in the past; nothing was changed")
        username, ops = await _target(ctx, address, "user vacation set")
        if ops.settings.sieve_credentials_file is None:
            raise ValidationError(sieve_missing())
        current = await ops.vacation(username)
        value = vacation_value(current, username, subject, message, start, end, days)
        return await _write(ctx, ops, username, value, "on", f"on (SOGo on {ops.server} "
                            "wrote its Sieve script)")

    @registry.command(
        "user vacation show", "Show a mailbox's out-of-office reply as SOGo keeps it",
        params=[Arg("address", "the mailbox", kind="address")],
        permission="domain-admin", reply=VACATION_REPLY)
    async def user_vacation_show(ctx: CommandContext, address: str) -> Reply:
        username, ops = await _target(ctx, address, "user vacation show")
        data = shown(username, await ops.vacation(username))
        state = "on" if data["enabled"] else "off"
        return Reply(message=f"the vacation message of {username} is {state}", data=data,
                     table=_table(data))

    @registry.command(
        "user vacation clear", "Switch off a mailbox's out-of-office reply",
        params=[Arg("address", "the mailbox", kind="address")],
        permission="domain-admin", mutating=True, reply=VACATION_REPLY,
        description="As SOGo's preferences page does: the text is kept (switched off), "
                    "SOGo removes the Sieve script's vacation rule.")
    async def user_vacation_clear(ctx: CommandContext, address: str) -> Reply:
        username, ops = await _target(ctx, address, "user vacation clear")
        if ops.settings.sieve_credentials_file is None:
            raise ValidationError(sieve_missing())
        current = await ops.vacation(username)
        if not current or not current.get("enabled"):
            data = shown(username, current)
            return Reply(message=f"the vacation message of {username} is off already; "
                                 "nothing was changed", data=data, table=_table(data))
        return await _write(ctx, ops, username, {**current, "enabled": 0}, "off", "off")
