"""One grammar for chat, podoctl and the API: ``noun verb positional --option value``.

``parse`` turns argv into a command spec and the handler's keyword arguments; every
problem is a :class:`UsageError` whose message names the command and the offending word.
Help text is rendered from the same specs, so it cannot disagree with the parser.
"""

from __future__ import annotations

import difflib
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from podod.bus import binding
from podod.bus.binding import INT_LIMIT, KINDS, ParseError
from podod.bus.spec import CommandSpec, Param
from podod.durations import format_duration
from podod.errors import UsageError

GLOBAL_FLAGS = ("--execute-real",)
HELP_FLAGS = ("-h", "--help")
UNKNOWN_COMMAND = "(unknown command)"
HIDDEN = "?"  # what the audit keeps of a word of a request that did not parse
MAX_NAME_WORDS = 4  # a command's name: "api account 2fa enable"
AUDIT_MAX_WORDS = 50  # of such a request's argv; the rest is counted
AUDIT_MAX_TEXT = 200  # characters of one parsed value in the audit record
AUDIT_MAX_ITEMS = 50  # items of one parsed list value in the audit record


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


def leading_words(argv: list[str]) -> list[str]:
    """The words before the first option, lower-case: where a command's name is read."""
    words = []
    for token in argv:
        if token.startswith("-"):
            break
        words.append(token.lower())
    return words


def command_name(words: list[str], names: Container[str]) -> str | None:
    """The longest leading run of ``words`` (at most :data:`MAX_NAME_WORDS`) that is a
    command's name."""
    for size in range(min(len(words), MAX_NAME_WORDS), 0, -1):
        name = " ".join(words[:size])
        if name in names:
            return name
    return None


def find_command(argv: list[str], commands: Mapping[str, CommandSpec]
                 ) -> tuple[CommandSpec, list[str]]:
    """The longest leading run of words that names a command, and what follows it."""
    words = leading_words(argv)
    name = command_name(words, commands)
    if name is not None:
        return commands[name], argv[len(name.split()):]
    if not words:
        raise ParseError("no command given; try 'help' for the list of commands")
    nouns = {name.split()[0]: [] for name in commands}  # type: dict[str, list[str]]
    for name in commands:
        parts = name.split()
        if len(parts) > 1:
            nouns[parts[0]].append(" ".join(parts[1:]))
    if words[0] in nouns and nouns[words[0]]:
        # The longest run of words that begins command names ("api account" of "api account
        # 2fa enable"), and what may follow it.
        size = 1
        while size < len(words) and size < MAX_NAME_WORDS - 1 and any(
                name.startswith(" ".join(words[:size + 1]) + " ") for name in commands):
            size += 1
        noun = " ".join(words[:size])
        verbs = sorted(name[len(noun) + 1:] for name in commands
                       if name.startswith(noun + " "))
        if len(words) == size:
            raise ParseError(f"'{noun}' needs one of the words {', '.join(verbs)} "
                             f"(see 'help {noun}')")
        attempt = words[size]
        close = difflib.get_close_matches(attempt, verbs, n=1)
        hint = f"; did you mean '{noun} {close[0]}'?" if close else ""
        raise ParseError(f"unknown command '{noun} {attempt}': '{noun}' has "
                         f"{', '.join(verbs)}{hint}",
                         f"unknown command: '{words[0]}' has no such word")
    close = difflib.get_close_matches(" ".join(words[:2]), list(commands), n=1) or \
        difflib.get_close_matches(words[0], list(nouns), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else "; try 'help' for the list of commands"
    raise ParseError(f"unknown command '{words[0]}'{hint}", "unknown command")


def _convert(spec: CommandSpec, param: Param, raw: str) -> Any:
    return KINDS[param.kind].from_argv(spec, param, raw)  # the binding's one table of kinds


def parse(argv: list[str], commands: Mapping[str, CommandSpec]) -> Parsed:
    if any("\x00" in token for token in argv):
        raise ParseError(binding.NUL)
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
        if token in HELP_FLAGS:
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
                    _once(spec, negated, params)
                    params[negated.name] = False
                    continue
                known = ", ".join(options) or "none"
                close = difflib.get_close_matches(flag, list(options), n=1)
                hint = f"; did you mean {close[0]}?" if close else f" (options: {known})"
                raise ParseError(f"{spec.name}: unknown option {flag}{hint}",
                                 f"{spec.name}: unknown option (options: {known})")
            if param.kind != "list":
                _once(spec, param, params)
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
                raise ParseError(f"{spec.name}: {flag} needs a value")
            converted = _convert(spec, param, value)
            if param.kind == "list" and param.name in params:
                params[param.name].extend(converted)  # in place: n repeats stay linear
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
        raise ParseError(f"{spec.name}: unexpected argument '{extra}' (usage: {spec.usage})",
                         f"{spec.name}: unexpected argument (usage: {spec.usage})")
    for param, raw in zip(positionals, pos_values, strict=False):
        params[param.name] = _convert(spec, param, raw)
    binding.fill_missing(spec, params)
    return Parsed(spec, params, execute_real)


def _once(spec: CommandSpec, param: Param, params: Mapping[str, Any]) -> None:
    """An option other than a list may be given once: which of two values was meant?"""
    if param.name in params:
        raise ParseError(f"{spec.name}: {param.flag} is given twice; give it once")


def redact(spec: CommandSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as the audit record keeps them: secrets replaced, long values cut."""
    out = {}
    for name, value in params.items():
        param = spec.param(name)
        out[name] = "***" if (param is not None and param.secret and value) else _bounded(value)
    return out


def _bounded(value: Any) -> Any:
    if isinstance(value, str) and len(value) > AUDIT_MAX_TEXT:
        return f"{value[:AUDIT_MAX_TEXT]}... ({len(value)} characters)"
    if isinstance(value, list | tuple):
        items = [_bounded(v) for v in value[:AUDIT_MAX_ITEMS]]
        if len(value) > AUDIT_MAX_ITEMS:
            items.append(f"... ({len(value) - AUDIT_MAX_ITEMS} more)")
        return items
    return value


def audit_argv(argv: list[str], commands: Mapping[str, CommandSpec]) -> tuple[str, list[str]]:
    """The command and the argv of a request that did not parse (or asked for help), as the
    audit record keeps them: only words the grammar knows. The command's own words, the
    names of options it declares and the global flags stay; anything else (a value, a
    positional, an unknown option, the ``=value`` of any option) becomes ``?``. Such a
    request may hold a password typed in the wrong place; it must not reach the log.
    A command that does not exist is recorded as ``(unknown command)``."""
    words: list[str] = []
    for token in argv:
        if token.startswith("-") or len(words) == 3:
            break
        words.append(token.lower())
    spec = None
    for size in range(len(words), 0, -1):
        spec = commands.get(" ".join(words[:size]))
        if spec is not None:
            break
    if spec is None:
        command, rest, kept = UNKNOWN_COMMAND, argv, [UNKNOWN_COMMAND]
        declared: set[str] = set()
    else:
        command, rest, kept = spec.name, argv[len(spec.words):], list(spec.words)
        declared = {p.flag for p in spec.params if not p.positional}
        declared |= {"--no-" + p.flag[2:] for p in spec.params
                     if not p.positional and p.kind in ("flag", "bool")}
    for token in rest[:AUDIT_MAX_WORDS]:
        flag, eq, _ = token.partition("=")
        if token in GLOBAL_FLAGS or token in HELP_FLAGS:
            kept.append(token)
        elif flag in declared:
            kept.append(flag + ("=" + HIDDEN if eq else ""))
        else:
            kept.append(HIDDEN)
    if len(rest) > AUDIT_MAX_WORDS:
        kept.append(f"... ({len(rest) - AUDIT_MAX_WORDS} more)")
    return command, kept


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
        "input_schema": binding.input_schema(spec),
        "reply_schema": binding.reply_schema(spec),
    }


__all__ = ["INT_LIMIT", "ParseError", "Parsed", "UsageError", "audit_argv", "command_help",
           "find_command", "help_data", "overview", "parse", "redact", "split_globals"]
