"""What a domain-admin may see of rows that span domains (podod/bus/scope.py)."""

from __future__ import annotations

from podod.bus.context import Actor
from podod.bus.scope import domain_scope, visible


def test_admins_and_viewers_see_every_domain() -> None:
    assert domain_scope(Actor("unix:root", "admin")) is None
    assert domain_scope(Actor("unix:v", "viewer", ("a.example",))) is None


def test_a_domain_admin_sees_addresses_and_domains_of_their_domains_only() -> None:
    scope = domain_scope(Actor("unix:pda", "domain-admin", ("a.example",)))
    assert scope == frozenset({"a.example"})
    assert visible(scope, "Alice@A.Example", address=True)
    assert visible(scope, "a.example.", address=False)
    for item in ("bob@b.example", "x@sub.a.example", "", "MAILER-DAEMON", "a.example"):
        assert not visible(scope, item, address=True), item  # a bare word is no address
    assert not visible(scope, "b.example", address=False)
