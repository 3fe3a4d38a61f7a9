"""Plans: bound to the actor, used once, gone after their time."""

from __future__ import annotations

import time

import pytest

from podod.bus.context import Actor
from podod.bus.plans import PlanBook
from podod.errors import NotFound, PermissionDenied

ALICE, BOB = Actor("unix:alice", "admin"), Actor("unix:bob", "admin")


def test_a_plan_is_for_its_actor_and_used_once() -> None:
    book = PlanBook(ttl=30)
    plan = book.issue(ALICE, ["domain", "create", "x.org"], None)
    with pytest.raises(PermissionDenied, match=f"plan {plan} belongs to unix:alice"):
        book.take(plan, BOB)
    assert book.take(plan.upper(), ALICE).argv == ["domain", "create", "x.org"]
    with pytest.raises(NotFound, match=r"plans expire after 30s; run the command again"):
        book.take(plan, ALICE)


def test_a_plan_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    book = PlanBook(ttl=600)
    plan = book.issue(ALICE, ["status"], "secret from stdin")
    later = time.time() + 601
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(NotFound, match=r"expire after 10m"):
        book.take(plan, ALICE)
