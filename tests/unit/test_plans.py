"""Plans: bound to the actor, used once, gone after their time."""

from __future__ import annotations

import time

import pytest

from podod.bus.context import Actor, Change
from podod.bus.plans import PlanBook, differences, fingerprint
from podod.errors import Conflict, NotFound, PermissionDenied

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


def test_a_plan_compares_changes_without_order_or_volatile_details() -> None:
    planned = [Change("delete", "mailbox", "a@x.org"), Change("delete", "alias", "a@x.org"),
               Change("insert", "silence", "server=mx1", {"until": "10:00", "reason": "r"})]
    now = [Change("insert", "silence", "server=mx1", {"until": "10:05", "reason": "r"}),
           Change("delete", "alias", "a@x.org"), Change("delete", "mailbox", "a@x.org")]
    assert differences(fingerprint(planned), fingerprint(now)) is None
    book = PlanBook(ttl=30)
    plan = book.take(book.issue(ALICE, ["x", "y"], None, planned), ALICE)
    plan.check(now)
    later = [*now, Change("delete", "mailbox", "b@x.org"), Change("delete", "quota2", "b@x.org"),
             Change("update", "domain", "x.org", {"quota": 5})]
    with pytest.raises(Conflict) as refused:
        plan.check(later)
    assert refused.value.code == "plan-changed"
    assert refused.value.message == (
        f"plan {plan.id} no longer matches: since it was made, it would make 3 more changes "
        "(delete 1 mailbox, 1 quota2; update 1 domain); nothing was changed; run the command "
        "again to see the new plan")


def test_differences_name_changed_and_vanished_rows_by_count() -> None:
    planned = fingerprint([Change("update", "alias", "i@x.org", {"goto": "a@x.org"}),
                           Change("delete", "alias", "j@x.org")])
    now = fingerprint([Change("update", "alias", "i@x.org", {"goto": "a@x.org,b@x.org"})])
    assert differences(planned, now) == ("1 planned change would no longer happen (delete 1 "
                                         "alias) and 1 change would differ (update 1 alias)")
