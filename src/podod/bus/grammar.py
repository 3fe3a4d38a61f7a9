"""One grammar for chat, podoctl and the API: ``noun verb positional --option value``.

``parse`` turns argv into a command spec and the handler's keyword arguments; every
problem is a :class:`UsageError` whose message names the command and the offending word.
Help text is rendered from the same specs, so it cannot disagree with the parser.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from podod.bus.spec import CommandSpec, Param
from podod.durations import format_duration, parse_duration
from podod.errors import UsageError

GLOBAL_FLAGS = ("--execute-real",)
INT_LIMIT = 2**63 - 1  # what a bigint column and SQLite hold
_TRUE = {"yes", "true", "on", "1", "y"}
_FALSE = {"no", "false", "off", "0", "n"}


@dataclass
class Parsed:
    spec: CommandSpec
    params: dict[str, Any]
    execute_real: bool
    help: bool = False


def split_globals(argv: Iterable[str]) -> tuple[list[str], bool]:
    """Remove ``--execute-real`` wherever it stands; return the rest and whether it was there."""
    rest, real = [], False
    for token in argv:
        if token in GLOBAL_FLAGS:
            real = True
        else:
            rest.append(token)
    return rest, real


def find_command(argv: list[str], commands: Mapping[str, CommandSpec]
                 ) -> tuple[CommandSpec, list[str]]:
    """The longest leading run of words that names a command, and what follows it."""
    words = []
    for token in argv:
        if token.startswith("-"):
            break
        words.append(token.lower())
    for size in range(min(len(words), 3), 0, -1):
        name = " ".join(words[:size])
        if name in commands:
            return commands[name], argv[size:]
    if not words:
        raise UsageError("no command given; try 'help' for the list of commands")
    nouns = {name.split()[0]: [] for name in commands}  # type: dict[str, list[str]]
    for name in commands:
        parts = name.split()
        if len(parts) > 1:
            nouns[parts[0]].append(" ".join(parts[1:]))
    if words[0] in nouns and nouns[words[0]]:
        verbs = sorted(nouns[words[0]])
        if len(words) == 1:
            raise UsageError(f"'{words[0]}' needs one of the words {', '.join(verbs)} "
                             f"(see 'help {words[0]}')")
        attempt = words[1]
        close = difflib.get_close_matches(attempt, verbs, n=1)
        hint = f"; did you mean '{words[0]} {close[0]}'?" if close else ""
        raise UsageError(f"unknown command '{words[0]} {attempt}': '{words[0]}' has "
                         f"{', '.join(verbs)}{hint}")
    close = difflib.get_close_matches(" ".join(words[:2]), list(commands), n=1) or \
        difflib.get_close_matches(words[0], list(nouns), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else "; try 'help' for the list of commands"
    raise UsageError(f"unknown command '{words[0]}'{hint}")


def _convert(spec: CommandSpec, param: Param, raw: str) -> Any:
    label = param.display.split()[0] if not param.positional else param.display
    if param.kind == "int":
        shown = raw if len(raw) <= 40 else raw[:40] + "…"  # one readable line
        try:
            number = int(raw)  # never nan, inf or 1e309; over 4300 digits: ValueError
        except ValueError:
            raise UsageError(f"{spec.name}: {label} must be a whole number, not '{shown}'"
                             ) from None
        least = param.minimum if param.minimum is not None else -INT_LIMIT
        most = param.maximum if param.maximum is not None else INT_LIMIT
        if number < least:
            raise UsageError(f"{spec.name}: {label} must be at least {least}, not {shown}")
        if number > most:
            raise UsageError(f"{spec.name}: {label} must be at most {most}, not {shown}")
        return number
    if param.kind == "bool":
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise UsageError(f"{spec.name}: {label} must be yes or no, not '{raw}'")
    if param.kind == "duration":
        try:
            return parse_duration(raw)
        except ValueError as exc:
            raise UsageError(f"{spec.name}: {label} {exc}") from None
    if param.kind == "choice":
        if raw.lower() not in param.choices:
            raise UsageError(f"{spec.name}: {label} must be one of "
                             f"{', '.join(param.choices)}, not '{raw}'")
        return raw.lower()
    if param.kind == "list":
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def parse(argv: list[str], commands: Mapping[str, CommandSpec]) -> Parsed:
    argv, execute_real = split_globals(argv)
    spec, rest = find_command(argv, commands)
    params: dict[str, Any] = {}
    positionals = [p for p in spec.params if p.positional]
    options = {p.flag: p for p in spec.params if not p.positional}
    pos_values: list[str] = []
    i = 0
    while i < len(rest):
        token = rest[i]
        i += 1
        if token in ("-h", "--help"):
            return Parsed(spec, {}, execute_real, help=True)
        if token == "--":
            pos_values.extend(rest[i:])
            break
        if token.startswith("--") and len(token) > 2:
            flag, eq, inline = token.partition("=")
            param = options.get(flag)
            if param is None:
                negated = options.get("--" + flag[5:]) if flag.startswith("--no-") else None
                if negated is not None and negated.kind in ("flag", "bool") and not eq:
                    params[negated.name] = False
                    continue
                known = ", ".join(options) or "none"
                close = difflib.get_close_matches(flag, list(options), n=1)
                hint = f"; did you mean {close[0]}?" if close else f" (options: {known})"
                raise UsageError(f"{spec.name}: unknown option {flag}{hint}")
            if param.kind == "flag":
                if eq:
                    params[param.name] = _convert(
                        spec, Param(param.name, "", kind="bool"), inline)
                else:
                    params[param.name] = True
                continue
            if eq:
                value = inline
            elif i < len(rest):
                value = rest[i]
                i += 1
            else:
                raise UsageError(f"{spec.name}: {flag} needs a value")
            converted = _convert(spec, param, value)
            if param.kind == "list" and param.name in params:
                params[param.name] = params[param.name] + converted
            else:
                params[param.name] = converted
            continue
        pos_values.append(token)
    if positionals and positionals[-1].kind == "list" and len(pos_values) > len(positionals):
        # A list as the last positional takes all remaining values: "FILE...".
        last = len(positionals) - 1
        params[positionals[last].name] = [v for v in pos_values[last:] if v]
        pos_values = pos_values[:last]
    if len(pos_values) > len(positionals):
        extra = pos_values[len(positionals)]
        raise UsageError(f"{spec.name}: unexpected argument '{extra}' "
                         f"(usage: {spec.usage})")
    for param, raw in zip(positionals, pos_values, strict=False):
        params[param.name] = _convert(spec, param, raw)
    for param in spec.params:
        if param.name in params:
            continue
        if param.required:
            what = param.display if param.positional else param.flag
            raise UsageError(f"{spec.name}: {what} is required (usage: {spec.usage})")
        params[param.name] = param.default if param.kind != "flag" else bool(param.default)
    return Parsed(spec, params, execute_real)


def redact(spec: CommandSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as the audit record keeps them: secrets replaced."""
    out = {}
    for name, value in params.items():
        param = spec.param(name)
        out[name] = "***" if (param is not None and param.secret and value) else value
    return out


def redact_argv(argv: list[str], commands: Mapping[str, CommandSpec]) -> list[str]:
    """argv with the values of secret options masked, for logs of unparseable requests."""
    secret_flags = {p.flag for s in commands.values() for p in s.params if p.secret}
    out, hide = [], False
    for token in argv:
        if hide:
            out.append("***")
            hide = False
            continue
        flag, eq, _ = token.partition("=")
        if flag in secret_flags:
            if eq:
                out.append(flag + "=***")
            else:
                out.append(token)
                hide = True
            continue
        out.append(token)
    return out


# -- help ----------------------------------------------------------------------------------

def command_help(spec: CommandSpec) -> str:
    lines = [f"Usage: {spec.usage}", "", spec.summary]
    if spec.description:
        lines += ["", spec.description]
    if spec.params:
        lines += ["", "Arguments and options:"]
        width = max(len(p.display) for p in spec.params)
        for p in spec.params:
            default = ""
            if not p.positional and p.default not in (None, False, [], (), ""):
                shown = format_duration(p.default) if p.kind == "duration" and \
                    isinstance(p.default, int | float) else p.default
                default = f" (default: {shown})"
            lines.append(f"  {p.display.ljust(width)}  {p.help}{default}")
    lines += ["", f"Permission: {spec.permission}."]
    if spec.mutating:
        lines.append("Changes data: runs as a sandbox dry run unless --execute-real is given.")
    if spec.examples:
        lines += ["", "Examples:"] + [f"  {e}" for e in spec.examples]
    return "\n".join(lines)


def overview(commands: Mapping[str, CommandSpec], prefix: str = "") -> list[tuple[str, str]]:
    return [(name, commands[name].summary) for name in sorted(commands)
            if not prefix or name == prefix or name.startswith(prefix + " ")]


def help_data(spec: CommandSpec) -> dict[str, Any]:
    return {
        "command": spec.name, "usage": spec.usage, "summary": spec.summary,
        "description": spec.description, "permission": spec.permission,
        "mutating": spec.mutating, "examples": list(spec.examples),
        "params": [{"name": p.name, "flag": None if p.positional else p.flag,
                    "positional": p.positional, "kind": p.kind, "required": p.required,
                    "help": p.help, "default": p.default, "choices": list(p.choices),
                    "minimum": p.minimum, "maximum": p.maximum}
                   for p in spec.params],
    }
