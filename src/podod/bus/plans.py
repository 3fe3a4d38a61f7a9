"""Plan, then confirm: a sandbox run of a mutating command gets a short-lived plan id bound
to the actor, the exact request and what it would change; ``confirm ID`` runs that same
request for real and applies it only if it still changes exactly that (otherwise nothing is
changed and the confirmation is refused). The chat bot's confirmation, podoctl's prompt and a
two-step API call all use this one mechanism."""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from podod.bus.context import Actor, Change
from podod.durations import format_duration
from podod.errors import Conflict, NotFound, PermissionDenied

# Details of a change that differ from one run of the same request to the next without the
# change being another one: row timestamps, and the end of a silence ("now + 2h").
VOLATILE_DETAILS = frozenset({"created", "modified", "until"})

# One change as a plan compares it: action, target, key, and its details as sorted JSON
# (secrets never reach a Change's details: password columns show as "(changed)").
Entry = tuple[str, str, str, str]


def fingerprint(changes: Iterable[Change]) -> tuple[Entry, ...]:
    """The canonical form of a change list: independent of order and of volatile details."""
    return tuple(sorted(
        (c.action, c.target, c.key,
         json.dumps({k: v for k, v in c.detail.items() if k not in VOLATILE_DETAILS},
                    sort_keys=True, default=str))
        for c in changes))


def _summary(entries: Sequence[Entry]) -> str:
    """'delete 1 mailbox, 1 alias; insert 1 quota2' in the order the changes came."""
    by_action: dict[str, Counter[str]] = {}
    for action, target, _key, _detail in entries:
        by_action.setdefault(action, Counter())[target] += 1
    return "; ".join(f"{action} " + ", ".join(f"{n} {t}" for t, n in targets.items())
                     for action, targets in by_action.items())


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def differences(planned: Sequence[Entry], now: Sequence[Entry]) -> str | None:
    """What the change list ``now`` has that the plan did not, briefly; None if the same."""
    if sorted(planned) == sorted(now):
        return None
    before, after = Counter(planned), Counter(now)
    extra, gone = list((after - before).elements()), list((before - after).elements())
    gone_keys = {e[:3] for e in gone}
    extra_keys = {e[:3] for e in extra}
    differ = [e for e in extra if e[:3] in gone_keys]
    extra = [e for e in extra if e[:3] not in gone_keys]
    gone = [e for e in gone if e[:3] not in extra_keys]
    parts = []
    if extra:
        parts.append(f"it would make {_n(len(extra), 'more change')} ({_summary(extra)})")
    if gone:
        parts.append(f"{_n(len(gone), 'planned change')} would no longer happen "
                     f"({_summary(gone)})")
    if differ:
        parts.append(f"{_n(len(differ), 'change')} would differ ({_summary(differ)})")
    return " and ".join(parts)


@dataclass
class Plan:
    id: str
    actor: Actor
    argv: list[str]
    stdin: str | None
    expires: float
    changes: tuple[Entry, ...] = ()
    ttl: float = 600.0

    def check(self, changes: Iterable[Change]) -> None:
        """Refuse (nothing is changed) when the request would now change something else."""
        what = differences(self.changes, fingerprint(changes))
        if what is not None:
            raise Conflict(f"plan {self.id} no longer matches: since it was made, {what}; "
                           "nothing was changed; run the command again to see the new plan",
                           code="plan-changed")


class PlanBook:
    """In memory only: a plan may carry a secret (a password read from stdin)."""

    def __init__(self, ttl: float = 600.0, limit: int = 1000) -> None:
        self.ttl = ttl
        self.limit = limit
        self._plans: dict[str, Plan] = {}

    def issue(self, actor: Actor, argv: list[str], stdin: str | None,
              changes: Iterable[Change] = (), ttl: float | None = None) -> str:
        """A new plan id, valid ``ttl`` seconds (default: the book's; the bus passes the
        origin's, ``commands.plan_ttl_by_origin``, as configured now)."""
        self._expire()
        if len(self._plans) >= self.limit:
            oldest = min(self._plans.values(), key=lambda p: p.expires)
            self._plans.pop(oldest.id, None)
        plan_id = secrets.token_hex(4)
        ttl = self.ttl if ttl is None else ttl
        self._plans[plan_id] = Plan(plan_id, actor, list(argv), stdin, time.time() + ttl,
                                    fingerprint(changes), ttl)
        return plan_id

    def take(self, plan_id: str, actor: Actor) -> Plan:
        self._expire()
        plan = self._plans.get(plan_id.strip().lower())
        if plan is None:
            raise NotFound(f"there is no pending plan {plan_id} (plans expire after "
                           f"{format_duration(self.ttl)}; run the command again)")
        if plan.actor.name != actor.name:
            raise PermissionDenied(f"plan {plan_id} belongs to {plan.actor.name}, not to you")
        del self._plans[plan.id]
        return plan

    def _expire(self) -> None:
        now = time.time()
        for key in [k for k, p in self._plans.items() if p.expires < now]:
            del self._plans[key]
