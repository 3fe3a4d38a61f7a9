"""The allow-list of commands podod may run on a server (over SSH, or locally).

No frontend can run an arbitrary shell command: a runner refuses any argv that no entry
matches. An entry names the program and a regular expression per argument (each must match
the whole argument); ``rest`` admits any number of further arguments matching it. A *script*
is a fixed shell snippet run by name (``runner.run_script("system-snapshot")``), for the few
readings that should cost one round trip; its text comes from code, never from a request.

Entries are declared where they are used: ``registry.remote_command(...)`` and
``registry.remote_script(...)`` in a module's or plugin's ``setup``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from podod.errors import PermissionDenied

# An argument that cannot start an option or reach the shell's special characters.
SAFE_WORD = r"[A-Za-z0-9@%+=:,./_-]+"
UNIT = r"[A-Za-z0-9@:._-]+"
ABS_PATH = r"/[A-Za-z0-9@%+=:,./_-]*"


@dataclass(frozen=True)
class AllowedCommand:
    program: str
    args: tuple[re.Pattern[str], ...]
    rest: re.Pattern[str] | None
    purpose: str
    plugin: str = "core"

    def matches(self, argv: Sequence[str]) -> bool:
        if not argv or argv[0] != self.program:
            return False
        args = list(argv[1:])
        if len(args) < len(self.args) or (self.rest is None and len(args) != len(self.args)):
            return False
        for pattern, arg in zip(self.args, args, strict=False):
            if not pattern.fullmatch(arg):
                return False
        rest = args[len(self.args):]
        return all(self.rest.fullmatch(a) for a in rest) if self.rest is not None else True

    @property
    def usage(self) -> str:
        parts = [self.program, *(p.pattern for p in self.args)]
        if self.rest is not None:
            parts.append(f"[{self.rest.pattern} ...]")
        return " ".join(parts)


@dataclass(frozen=True)
class AllowedScript:
    name: str
    text: str
    purpose: str
    plugin: str = "core"


class AllowList:
    def __init__(self) -> None:
        self.commands: dict[str, list[AllowedCommand]] = {}
        self.scripts: dict[str, AllowedScript] = {}

    def allow(self, program: str, *args: str, rest: str | None = None, purpose: str,
              plugin: str = "core") -> None:
        entry = AllowedCommand(program, tuple(re.compile(a) for a in args),
                               re.compile(rest) if rest is not None else None, purpose, plugin)
        entries = self.commands.setdefault(program, [])
        if not any(e.usage == entry.usage for e in entries):
            entries.append(entry)

    def script(self, name: str, text: str, *, purpose: str, plugin: str = "core") -> None:
        existing = self.scripts.get(name)
        if existing is not None and existing.text != text:
            raise ValueError(f"remote script '{name}' is already registered by "
                             f"{existing.plugin}")
        self.scripts[name] = AllowedScript(name, text, purpose, plugin)

    def check(self, argv: Sequence[str]) -> None:
        """Refuse ``argv`` unless an entry admits it, with a sentence naming the command."""
        if not argv:
            raise PermissionDenied("an empty command cannot be run")
        for entry in self.commands.get(argv[0], ()):
            if entry.matches(argv):
                return
        shown = shlex.join(argv)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        raise PermissionDenied(f"the command '{shown}' is not on podod's allow-list of "
                               "server commands")

    def get_script(self, name: str) -> AllowedScript:
        script = self.scripts.get(name)
        if script is None:
            raise PermissionDenied(f"there is no allow-listed script named '{name}'")
        return script

    def copy(self) -> AllowList:
        other = AllowList()
        other.commands = {k: list(v) for k, v in self.commands.items()}
        other.scripts = dict(self.scripts)
        return other

    def describe(self) -> list[dict[str, str]]:
        """Every entry, for docs and ``server commands``."""
        out = [{"command": e.usage, "purpose": e.purpose, "plugin": e.plugin}
               for entries in self.commands.values() for e in entries]
        out += [{"command": f"script {s.name}", "purpose": s.purpose, "plugin": s.plugin}
                for s in self.scripts.values()]
        return sorted(out, key=lambda d: d["command"])


def default_allowlist() -> AllowList:
    """What podod's core needs everywhere; collectors add their own in their setup."""
    allowed = AllowList()
    allowed.allow("true", purpose="measure the round-trip time of a connection")
    allowed.allow("systemctl", "is-active", rest=UNIT, purpose="whether services run")
    return allowed
