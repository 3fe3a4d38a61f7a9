"""Command declarations: a command is declared once, where it is handled, and that one
declaration drives parsing, validation, help (podoctl, chat) and the API's schema."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from podod.bus.context import Reply

Permission = Literal["viewer", "domain-admin", "admin"]
# The kinds of parameter; :data:`podod.bus.binding.KINDS` converts each from argv and JSON.
ParamKind = Literal["str", "secret", "address", "domain", "int", "size", "flag", "bool", "list",
                    "duration", "choice"]
Handler = Callable[..., Awaitable["Reply"]]
# What a command reads from standard input: nothing, a secret (a password: podoctl prompts
# for it twice on a terminal, and it never reaches the audit log) or data (a CSV file: read
# as it is, up to socket.max_data_bytes).
StdinKind = Literal["none", "secret", "data"]


@dataclass(frozen=True)
class Param:
    """One positional argument or ``--option`` of a command.

    ``name`` is the Python keyword the handler receives; the option is spelled with dashes
    (``quota_mb`` → ``--quota-mb``). ``secret`` values never reach the audit record. An
    ``int`` is checked against ``minimum``/``maximum`` by the parser, and always fits in 64
    bits (a database column), so a handler never sees an absurd number.
    """

    name: str
    help: str
    kind: ParamKind = "str"  # "secret" implies ``secret``
    positional: bool = False
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    secret: bool = False
    metavar: str | None = None
    minimum: int | None = None  # int options: the smallest and largest value accepted
    maximum: int | None = None

    def __post_init__(self) -> None:
        if self.kind == "secret" and not self.secret:
            object.__setattr__(self, "secret", True)

    @property
    def flag(self) -> str:
        return "--" + self.name.rstrip("_").replace("_", "-")  # for_ → --for

    @property
    def display(self) -> str:
        if self.positional:
            return self.metavar or self.name.upper()
        if self.kind == "flag":
            return self.flag
        meta = self.metavar or {
            "int": "N", "size": "N", "bool": "yes|no", "list": "A,B", "duration": "DURATION",
            "choice": "|".join(self.choices),
        }.get(self.kind, "TEXT")
        return f"{self.flag} {meta}"


def Arg(name: str, help: str, **kw: Any) -> Param:
    kw.setdefault("required", True)
    return Param(name, help, positional=True, **kw)


def Opt(name: str, help: str, **kw: Any) -> Param:
    return Param(name, help, positional=False, **kw)


@dataclass(frozen=True)
class CommandSpec:
    """Everything the bus needs to know about a command.

    ``mutating`` commands are sandboxed unless the request says ``execute_real``. A mutating
    command with a ``unit`` runs inside that unit of work (e.g. one mail-database
    transaction): the bus rolls it back in the sandbox, and commits it after the backup
    gate for real. A mutating command without a unit must itself honour ``ctx.sandbox``.
    """

    name: str
    summary: str
    handler: Handler
    params: tuple[Param, ...] = ()
    permission: Permission = "viewer"
    mutating: bool = False
    unit: str | None = None
    description: str = ""
    examples: tuple[str, ...] = ()
    reads_stdin: bool = False
    plugin: str = "core"
    # The JSON Schema of a successful reply's ``data`` (None: not declared, any value).
    reply: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Standard input, declared: what it is, and the flag that asks for it (e.g.
    # password_stdin); no flag: whenever the command runs. ``reads_stdin`` alone means a
    # secret.
    stdin: StdinKind = "none"
    stdin_option: str | None = None
    timeout: float | None = None  # seconds; None: commands.timeout

    @property
    def stdin_kind(self) -> StdinKind:
        if self.stdin == "none" and self.reads_stdin:
            return "secret"
        return self.stdin

    def wants_stdin(self, params: dict[str, Any]) -> StdinKind | None:
        """What this request reads from standard input, or None."""
        kind = self.stdin_kind
        if kind == "none":
            return None
        if self.stdin_option is not None and not params.get(self.stdin_option):
            return None
        return kind

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self.name.split())

    @property
    def usage(self) -> str:
        parts = [self.name]
        for p in self.params:
            text = p.display
            parts.append(text if p.required else f"[{text}]")  # required options too
        if self.mutating:
            parts.append("[--execute-real]")
        return " ".join(parts)

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None


