"""The command reference tells the truth: every command and option the docs show exists as
shown, and every command of the bus, mail and backup areas is documented with all its
options. (Help is generated from the same declarations, so it cannot drift; the docs can.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from podod.builtins import BUILTIN_MODULES
from podod.bus.grammar import MAX_NAME_WORDS
from podod.bus.spec import CommandSpec
from podod.plugins import Registry, load_builtins, load_plugins
from podod.podoctl import CLIENT_OPTIONS

REPO = Path(__file__).resolve().parents[2]
PAGES = ["commands.md", "mail.md", "backup.md", "api-auth.md"]
GLOBAL_OPTIONS = {"--socket": True, "--json": False, "--execute-real": False, "--yes": False,
                  "-y": False, "--help": False, "-h": False,  # flag -> takes a value
                  # podoctl's own files (an import's report and passwords, an export's CSV)
                  **dict.fromkeys(CLIENT_OPTIONS, True)}
AREAS = {"bus-commands", "mail-commands", "backup-commands", "api-commands"}


@pytest.fixture(scope="module")
def commands() -> dict[str, CommandSpec]:
    registry = Registry()
    load_builtins(registry, BUILTIN_MODULES)
    load_plugins(registry, [REPO / "plugins"], use_entry_points=False, disabled=[])
    return registry.commands


def _match(words: list[str], commands: dict[str, CommandSpec]) -> str | None:
    for size in range(MAX_NAME_WORDS, 0, -1):
        name = " ".join(words[:size])
        if len(words) >= size and name in commands:
            return name
    return None


def podoctl_lines(text: str) -> list[tuple[str, list[str], bool]]:
    """Every podoctl invocation a page shows: code-block lines (``$ podoctl ...``) and
    `podoctl ...` code spans; prose that merely mentions podoctl does not count."""
    found = []
    in_block = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        explicit = re.findall(r"`podoctl\s+([^`]+)`", line)
        if in_block:
            explicit += re.findall(r"^\s*(?:\$\s*)?podoctl\s+([^#|>]+)", line)
        # `maildir list [--domain D]` in prose documents a command as much as podoctl does
        spans = re.findall(r"`(?!podoctl)([a-z][a-z-]* [a-z][a-z-]*[^`]*)`", line)
        found += [(line.strip(), c.split(), True) for c in explicit]
        found += [(line.strip(), c.split(), False) for c in spans]
    return found


def _strip_globals(tokens: list[str]) -> list[str]:
    out, skip = [], False
    for token in tokens:
        if skip:
            skip = False
            continue
        flag = token.split("=", 1)[0]
        if flag in GLOBAL_OPTIONS:
            skip = GLOBAL_OPTIONS[flag] and "=" not in token
            continue
        if token in (">", "|", "&&", ";"):
            break
        out.append(token)
    return out


def wrong_lines(page: str, text: str, commands: dict[str, CommandSpec]) -> list[str]:
    problems = []
    for line, tokens, explicit in podoctl_lines(text):
        words = _strip_globals(tokens)
        if not words or words[0].startswith(("[", "-", "NOUN", "COMMAND", "<")):
            continue  # the grammar's own placeholders
        name = _match([w.lower() for w in words], commands)
        if name is None:
            if explicit:
                problems.append(f"{page}: no command for: {line}")
            continue
        spec = commands[name]
        options = {p.flag for p in spec.params if not p.positional}
        negatable = {"--no-" + p.flag[2:] for p in spec.params
                     if not p.positional and p.kind in ("flag", "bool")}
        for token in words:
            flag = token.split("=", 1)[0].strip("[]().,;")
            if flag.startswith("--") and flag not in options | negatable:
                problems.append(f"{page}: {name} has no option {flag}: {line}")
    return problems


@pytest.mark.parametrize("page", PAGES)
def test_every_podoctl_line_in_the_docs_parses(page: str,
                                               commands: dict[str, CommandSpec]) -> None:
    problems = wrong_lines(page, (REPO / "docs" / page).read_text(), commands)
    assert problems == [], "\n".join(problems)


def test_the_checker_finds_wrong_lines(commands: dict[str, CommandSpec]) -> None:
    text = ("Run `podoctl user create a@b.org --quota 5` or\n```\n$ podoctl --yes usr list\n"
            "```\nand `domain update x.org --activ no`; `podoctl --json user list` is fine.\n")
    assert wrong_lines("x.md", text, commands) == [
        "x.md: user create has no option --quota: Run `podoctl user create a@b.org --quota 5` "
        "or",
        "x.md: no command for: $ podoctl --yes usr list",
        "x.md: domain update has no option --activ: and `domain update x.org --activ no`; "
        "`podoctl --json user list` is fine."]


def _rows(text: str) -> dict[str, str]:
    """Table rows whose first cell is `a command ...`: the command's name → the row."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        cell = re.match(r"\|\s*`([a-z][a-z-]*(?: [a-z0-9][a-z0-9-]*){0,3})(?=[ `/])", line)
        if cell:
            rows[cell.group(1)] = rows.get(cell.group(1), "") + line
    return rows


def test_every_command_is_documented_with_its_options(commands: dict[str, CommandSpec]
                                                      ) -> None:
    text = "\n".join((REPO / "docs" / page).read_text() for page in PAGES)
    rows = _rows(text)
    invocations: dict[str, str] = {}
    for line, tokens, _explicit in podoctl_lines(text):
        name = _match([w.lower() for w in _strip_globals(tokens)], commands)
        if name:
            invocations[name] = invocations.get(name, "") + line
    problems = []
    for name, spec in sorted(commands.items()):
        if spec.plugin not in AREAS:
            continue
        shown = rows.get(name, "") + invocations.get(name, "")
        # A row may document several commands at once: `backup verify ID` / `... --all`.
        shown += "".join(row for key, row in rows.items() if f"`{name}" in row)
        if not shown:
            problems.append(f"{name} is neither in a table nor in an example of "
                            f"{', '.join(PAGES)}")
            continue
        for param in spec.params:
            if not param.positional and param.flag not in shown:
                problems.append(f"{name}: {param.flag} is neither in its row nor in an "
                                "example")
    assert problems == [], "\n".join(problems)
