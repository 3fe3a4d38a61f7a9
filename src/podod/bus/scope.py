"""What a domain-admin may see of data that spans domains: mail traffic, the Postfix queue,
notes about other rows. Admins and viewers see every domain; a domain-admin sees the rows of
the domains granted to them, and rows of other domains are left out or summed up as
:data:`OTHER_DOMAINS`, never named (as in PostfixAdmin, other domains stay invisible)."""

from __future__ import annotations

from podod.bus.context import Actor

OTHER_DOMAINS = "(other domains)"


def domain_scope(actor: Actor) -> frozenset[str] | None:
    """None when ``actor`` sees every domain; else the domains granted to them."""
    if actor.role != "domain-admin":
        return None
    return frozenset(d.lower().rstrip(".") for d in actor.domains)


def domain_of(item: str, *, address: bool) -> str:
    """The domain of an address (``local@domain``), or ``item`` itself when it is a domain;
    '' for an address without one (the null sender, ``MAILER-DAEMON``)."""
    if address:
        _local, at, domain = item.rpartition("@")
        item = domain if at else ""
    return item.lower().rstrip(".")


def visible(scope: frozenset[str] | None, item: str, *, address: bool) -> bool:
    """Whether a row about ``item`` (an address, or a domain) may be shown."""
    return scope is None or domain_of(item, address=address) in scope


def scope_note(scope: frozenset[str] | None) -> list[str]:
    """The note a scoped reply carries, so nobody takes it for the whole picture."""
    if scope is None:
        return []
    return [f"Only rows of your domains ({', '.join(sorted(scope)) or 'none'}) are shown; "
            "other domains are left out or counted together as "
            f"'{OTHER_DOMAINS}'."]
