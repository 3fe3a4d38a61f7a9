"""Plan, then confirm: a sandbox run of a mutating command gets a short-lived plan id bound
to the actor and the exact request; ``confirm ID`` runs that same request for real. The chat
bot's confirmation, podoctl's prompt and a two-step API call all use this one mechanism."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from podod.bus.context import Actor
from podod.durations import format_duration
from podod.errors import NotFound, PermissionDenied


@dataclass
class Plan:
    id: str
    actor: Actor
    argv: list[str]
    stdin: str | None
    expires: float


class PlanBook:
    """In memory only: a plan may carry a secret (a password read from stdin)."""

    def __init__(self, ttl: float = 600.0, limit: int = 1000) -> None:
        self.ttl = ttl
        self.limit = limit
        self._plans: dict[str, Plan] = {}

    def issue(self, actor: Actor, argv: list[str], stdin: str | None) -> str:
        self._expire()
        if len(self._plans) >= self.limit:
            oldest = min(self._plans.values(), key=lambda p: p.expires)
            self._plans.pop(oldest.id, None)
        plan_id = secrets.token_hex(4)
        self._plans[plan_id] = Plan(plan_id, actor, list(argv), stdin, time.time() + self.ttl)
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
