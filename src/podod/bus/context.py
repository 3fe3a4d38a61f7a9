"""What flows through the bus: the request, the actor, the context a handler gets, the reply."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, Protocol

from podod.errors import PermissionDenied

if TYPE_CHECKING:
    from podod.bus.plans import Plan
    from podod.bus.spec import CommandSpec
    from podod.runtime import Runtime

Role = Literal["admin", "domain-admin", "viewer"]
Progress = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Actor:
    """Who is asking: ``name`` is qualified by origin (``unix:alice``, ``@bob:example.org``)."""

    name: str
    role: Role
    domains: tuple[str, ...] = ()

    def may_manage(self, domain: str) -> bool:
        return self.role == "admin" or (
            self.role == "domain-admin" and domain.lower() in self.domains
        )


@dataclass
class Request:
    argv: list[str]
    actor: Actor
    origin: str  # "socket", "chat", "api", ...
    execute_real: bool = False
    stdin: str | None = None  # secret input (e.g. a password); never audited
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    # The plan a confirmation applies: the real run must change exactly what it showed.
    plan: Plan | None = None


@dataclass
class Change:
    """One row (or object) a command changes or would change."""

    action: str  # insert | update | delete | ...
    target: str  # table or kind of object
    key: str
    detail: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.detail.items())
        return f"{self.action} {self.target} {self.key}" + (f" ({extra})" if extra else "")


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    title: str | None = None


@dataclass
class Reply:
    """A structured answer every frontend renders its own way."""

    ok: bool = True
    message: str = ""
    data: Any = None
    table: Table | None = None
    sandbox: bool = False
    changes: list[Change] = field(default_factory=list)
    backup_id: str | None = None
    plan_id: str | None = None
    code: str = "ok"
    exit_code: int = 0
    secret: str | None = None  # shown once to the requester; never audited or logged
    notes: list[str] = field(default_factory=list)
    # A listing's page when more rows follow: shown, more, next (the command), the cursor.
    page: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict. Shallow on purpose: ``dataclasses.asdict`` deep-copies ``data``
        and the table (124 ms for a 10 000-mailbox list); the encoder walks them anyway."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["changes"] = [asdict(c) for c in self.changes]
        if self.table is not None:
            out["table"] = {"columns": self.table.columns, "rows": self.table.rows,
                            "title": self.table.title}
        if self.secret is None:
            out.pop("secret")
        if self.page is None:
            out.pop("page")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reply:
        data = dict(data)
        table = data.pop("table", None)
        changes = data.pop("changes", None) or []
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        reply = cls(**known)
        reply.table = Table(**table) if table else None
        reply.changes = [Change(**c) for c in changes]
        return reply


class UnitOfWork(Protocol):
    """A transaction the bus drives: sandbox rolls it back, a real run commits after backup."""

    async def begin(self) -> None: ...

    def changes(self) -> list[Change]: ...

    async def commit(self, ctx: CommandContext) -> str | None:
        """Take and verify the backup, then commit; return the backup id."""
        ...

    async def rollback(self) -> None: ...


@dataclass
class AfterAction:
    description: str
    run: Callable[[], Awaitable[None]]


async def _no_progress(message: str) -> None:
    return None


@dataclass
class CommandContext:
    """Handed to every handler: who asks, whether this is real, and where to record changes."""

    request: Request
    spec: CommandSpec
    runtime: Runtime
    progress: Progress = _no_progress
    unit: Any = None
    changes: list[Change] = field(default_factory=list)
    after_actions: list[AfterAction] = field(default_factory=list)
    backup_id: str | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def actor(self) -> Actor:
        return self.request.actor

    @property
    def execute_real(self) -> bool:
        return self.request.execute_real

    @property
    def sandbox(self) -> bool:
        return not self.request.execute_real

    def record(self, action: str, target: str, key: str, **detail: Any) -> None:
        self.changes.append(Change(action, target, key, detail))

    def all_changes(self, reply: Reply) -> list[Change]:
        """What this run changes: its unit's rows and recorded changes, then the reply's."""
        return self.changes + [c for c in reply.changes if c not in self.changes]

    def after(self, description: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run`` after a real commit (cache flush, reload); skipped in the sandbox."""
        self.after_actions.append(AfterAction(description, run))

    def require_domain(self, domain: str) -> None:
        """Refuse a domain-admin acting outside the domains granted to them."""
        if not self.actor.may_manage(domain):
            if self.actor.role == "viewer":
                raise PermissionDenied(f"{self.actor.name} may only view, not change anything")
            raise PermissionDenied(f"{self.actor.name} may not manage the domain {domain}")
