"""Authorization: every request is checked against the command's permission before it runs.

Roles: ``admin`` may do everything; ``domain-admin`` may view, and may run domain-scoped
commands for the domains granted to them (the handler calls ``ctx.require_domain``);
``viewer`` may only run commands whose permission is ``viewer`` and that change nothing.
"""

from __future__ import annotations

from podod.bus.context import Actor
from podod.bus.spec import CommandSpec
from podod.errors import PermissionDenied

_RANK = {"viewer": 0, "domain-admin": 1, "admin": 2}


def authorize(actor: Actor, spec: CommandSpec) -> None:
    needed = _RANK[spec.permission]
    if spec.mutating:
        needed = max(needed, _RANK["domain-admin"])
    if _RANK.get(actor.role, -1) < needed:
        what = "change anything" if spec.mutating else f"run '{spec.name}'"
        raise PermissionDenied(
            f"{actor.name} ({actor.role}) may not {what}: '{spec.name}' needs the "
            f"{'admin' if needed == 2 else 'domain-admin'} role")


def may_run(actor: Actor, spec: CommandSpec) -> bool:
    """Whether ``authorize`` lets ``actor`` run ``spec`` (help lists only those)."""
    try:
        authorize(actor, spec)
    except PermissionDenied:
        return False
    return True
