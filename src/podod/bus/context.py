"""What flows through the bus: the request, the actor, the context a handler gets, the reply."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, Protocol

from podod.bus.status import STATUSES
from podod.bus.status import exit_code as status_exit_code
from podod.bus.status import http_status as status_http
from podod.errors import PermissionDenied

if TYPE_CHECKING:
    from pathlib import Path

    from podod.bus.core import CommandBus
    from podod.bus.plans import Plan
    from podod.bus.spec import CommandSpec
    from podod.config import Config
    from podod.events import EventBus
    from podod.plugins import Registry
    from podod.state import StateDB

Role = Literal["admin", "domain-admin", "viewer"]


class BusRuntime(Protocol):
    """What the bus and its handlers use of the running daemon (podod.runtime.Runtime is
    one). A protocol, so the bus does not import the runtime that holds it."""

    config: Config
    config_path: Path | None
    events: EventBus
    registry: Registry
    state: StateDB
    started_at: float
    version: str
    components: dict[str, Any]
    bus: CommandBus | None

    def component(self, name: str) -> Any: ...


class Progress(Protocol):
    """How a long command reports: a sentence, and how far it is (``done`` of ``total``
    items, either unknown as None). A frontend shows it as it can (podoctl: a progress bar);
    it never waits on a slow client, so reporting inside a transaction holds nothing."""

    def __call__(self, message: str, done: int | None = None,
                 total: int | None = None) -> Awaitable[None]: ...


@dataclass(frozen=True)
class Naming:
    """How a frontend names a command to its user: ``podoctl user list``, ``!podo user
    list``, or an HTTP path. Replies and notes that tell the user what to run next use it,
    so no chat reply says "podoctl"."""

    prefix: str = "podoctl "
    join: str = " "
    # A frontend whose commands are not words (HTTP: "POST /v1/backups/ID/restore") spells
    # them with its own function of the command line.
    spell: Callable[[str], str] | None = None

    def command(self, words: str) -> str:
        if self.spell is not None:
            return self.spell(words)
        return self.prefix + self.join.join(words.split())


PODOCTL = Naming("podoctl ")
CHAT = Naming("!podo ")


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
    stdin: str | None = None  # input the command declares (spec.stdin); never audited
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    # The plan a confirmation applies: the real run must change exactly what it showed.
    plan: Plan | None = None
    naming: Naming = PODOCTL  # how the frontend names commands (for "undo with: ...")
    # Set by the bus when the request is cancelled (podod stopping): the honest reply
    # (a committed change is reported as committed), for the frontend to send if it can.
    interrupted: Reply | None = None


@dataclass(slots=True)
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
class Secret:
    """A value shown once to the requester (a generated password): never audited, logged,
    or kept in a plan; a frontend shows it only to the person who asked."""

    label: str  # e.g. "Generated password", "password of bob@example.com"
    value: str


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
    secrets: list[Secret] = field(default_factory=list)  # shown once; never audited
    notes: list[str] = field(default_factory=list)
    status: str = ""  # podod.bus.status; empty: derived from ok, code and exit_code

    def resolved_status(self) -> str:
        """The status a frontend maps (exit code, HTTP status): set by the bus from the
        error's class, else derived, so a handler's own failure reply maps too."""
        if self.status:
            return self.status
        if self.ok:
            return "ok"
        if self.code in STATUSES:
            return self.code
        return "invalid" if self.exit_code == 2 else "failed"
    # A listing's page when more rows follow: shown, more, next (the command), the cursor.
    page: dict[str, Any] | None = None
    # Set when ``changes`` lists only the first of more (a bulk import's thousands): how many
    # there are in all; the notes count them per action and table.
    changes_total: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict. Shallow on purpose: ``dataclasses.asdict`` deep-copies ``data``
        and the table (124 ms for a 10 000-mailbox list); the encoder walks them anyway."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["changes"] = [asdict(c) for c in self.changes]
        if self.table is not None:
            out["table"] = {"columns": self.table.columns, "rows": self.table.rows,
                            "title": self.table.title}
        status = self.resolved_status()
        out["status"] = status
        out["exit_code"] = status_exit_code(status) if self.status else self.exit_code
        out["http_status"] = status_http(status)
        out["secrets"] = [asdict(s) for s in self.secrets]
        if not self.secrets:
            out.pop("secrets")
        else:  # clients of before the list read one "secret"
            out["secret"] = self.secrets[0].value
        if self.page is None:
            out.pop("page")
        if self.changes_total is None:
            out.pop("changes_total")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reply:
        data = dict(data)
        table = data.pop("table", None)
        changes = data.pop("changes", None) or []
        secrets = data.pop("secrets", None) or []
        old_secret = data.pop("secret", None)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        reply = cls(**known)
        reply.table = Table(**table) if table else None
        reply.changes = [Change(**c) for c in changes]
        reply.secrets = [Secret(**s) for s in secrets]
        if not reply.secrets and isinstance(old_secret, str):
            reply.secrets = [Secret("Generated password", old_secret)]
        return reply


class UnitOfWork(Protocol):
    """A transaction the bus drives: sandbox rolls it back, a real run commits after backup."""

    async def begin(self) -> None: ...

    def changes(self) -> list[Change]: ...

    async def commit(self, ctx: CommandContext) -> None:
        """Commit (the bus has run the pre-change gates, e.g. the backup, before)."""
        ...

    async def rollback(self) -> None: ...


@dataclass
class AfterAction:
    """What to do after a real commit. ``run`` may return a short text (its output) that the
    reply shows after "done"; ``kind`` names the sort of action for the counter
    ``podod_after_actions_total`` (a fixed word, never free text)."""

    description: str
    run: Callable[[], Awaitable[str | None]]
    kind: str = "other"


async def _no_progress(message: str, done: int | None = None,
                       total: int | None = None) -> None:
    return None


@dataclass
class CommandContext:
    """Handed to every handler: who asks, whether this is real, and where to record changes."""

    request: Request
    spec: CommandSpec
    runtime: BusRuntime
    progress: Progress = _no_progress
    unit: Any = None
    changes: list[Change] = field(default_factory=list)
    after_actions: list[AfterAction] = field(default_factory=list)
    backup_id: str | None = None
    started: float = field(default_factory=time.monotonic)
    # Where a real run stands, so a time limit or a stop never misreports a commit:
    # "none" (nothing committed), "committing" (outcome unknown), "committed", or
    # "running" (a command without a unit of work changes things as it goes).
    commit_state: str = "none"
    reply: Reply | None = None  # the handler's reply, kept for after the commit
    gate_records: dict[str, str] = field(default_factory=dict)  # a plugin gate's record ids

    @property
    def actor(self) -> Actor:
        return self.request.actor

    @property
    def execute_real(self) -> bool:
        return self.request.execute_real

    @property
    def sandbox(self) -> bool:
        return not self.request.execute_real

    def command_ref(self, words: str) -> str:
        """A command as the requester's frontend spells it (``podoctl backup list``)."""
        return self.request.naming.command(words)

    def record(self, action: str, target: str, key: str, **detail: Any) -> None:
        self.changes.append(Change(action, target, key, detail))

    def all_changes(self, reply: Reply) -> list[Change]:
        """What this run changes: its unit's rows and recorded changes, then the reply's."""
        return self.changes + [c for c in reply.changes if c not in self.changes]

    def after(self, description: str, run: Callable[[], Awaitable[str | None]], *,
              kind: str = "other") -> None:
        """Run ``run`` after a real commit (cache flush, reload); skipped in the sandbox.
        What it returns (a short text) is shown after "done" in the reply's notes."""
        self.after_actions.append(AfterAction(description, run, kind))

    def require_domain(self, domain: str) -> None:
        """Refuse a domain-admin acting outside the domains granted to them."""
        if not self.actor.may_manage(domain):
            if self.actor.role == "viewer":
                raise PermissionDenied(f"{self.actor.name} may only view, not change anything")
            raise PermissionDenied(f"{self.actor.name} may not manage the domain {domain}")
