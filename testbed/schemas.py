"""Check every reply a test receives against the reply schema its command declares.

Switched on by ``PODOD_CHECK_REPLY_SCHEMAS=1`` (the integration suite's conftest sets it):
:class:`testbed.daemon.DaemonProcess` then validates each reply of ``request``,
``request_as`` and ``podoctl --json`` with ``jsonschema`` against the reply schema of its
command, as ``podoctl help --json`` gives it. A reply that does not match its declaration
fails the test that received it.

The schemas come from the daemon's own declarations, loaded the way the daemon loads them
(the built-in modules and the plugins its config names), not from a ``help`` request: that
request would be one more audit record in tests that count them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from podod.bus import grammar

ENV = "PODOD_CHECK_REPLY_SCHEMAS"
SAMPLE = 500  # items of a list checked: a 100 000-row reply is checked on its first ones
HELP_FLAGS = ("-h", "--help")


def enabled() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


def command_of(argv: list[str], names: set[str]) -> str | None:
    """The command ``argv`` names (the longest leading run of words, as the grammar reads
    it); ``help`` for a request of a command's help; None for no known command."""
    argv = [t for t in argv if t != "--execute-real"]
    rest = argv[:argv.index("--")] if "--" in argv else argv
    if any(t in HELP_FLAGS for t in rest):
        return "help"  # the reply is the command's help
    return grammar.command_name(grammar.leading_words(argv), names)


def _sample(value: Any) -> Any:
    if isinstance(value, list):
        return [_sample(v) for v in value[:SAMPLE]]
    if isinstance(value, dict):
        return {k: _sample(v) for k, v in value.items()}
    return value


class ReplySchemas:
    """The reply schemas of one daemon's commands, read from its ``help`` reply."""

    def __init__(self, help_data: list[dict[str, Any]]) -> None:
        import jsonschema  # a test dependency: only when the check is switched on

        self.validators: dict[str, Callable[[Any], None]] = {}
        for entry in help_data:
            schema = entry["reply_schema"]
            jsonschema.Draft202012Validator.check_schema(schema)
            self.validators[entry["command"]] = jsonschema.Draft202012Validator(
                schema).validate

    @classmethod
    def from_config(cls, config_path: Path) -> ReplySchemas:
        """The commands a daemon started with ``config_path`` declares."""
        from podod.builtins import BUILTIN_MODULES
        from podod.bus import grammar
        from podod.config import load_config
        from podod.plugins import Registry, load_builtins, load_plugins

        config = load_config(config_path)
        registry = Registry(config.plugins.settings)
        with warnings.catch_warnings():  # a plugin's warnings are the daemon's to show
            warnings.simplefilter("ignore")
            load_builtins(registry, BUILTIN_MODULES)
            load_plugins(registry, config.plugins.dirs,
                         use_entry_points=config.plugins.entry_points,
                         disabled=config.plugins.disabled)
        return cls([grammar.help_data(spec) for spec in registry.commands.values()])

    @classmethod
    def from_help(cls, reply: dict[str, Any]) -> ReplySchemas:
        if not reply.get("ok") or not isinstance(reply.get("data"), list):
            raise AssertionError(f"'help' did not list the commands: {reply.get('message')}")
        return cls(reply["data"])

    def check(self, argv: list[str], reply: dict[str, Any]) -> None:
        """Raise AssertionError naming the command and the mismatch."""
        import jsonschema

        name = command_of(argv, set(self.validators))
        if name is None:
            return  # no such command: the refusal is the grammar's, checked by its tests
        body = {k: v for k, v in reply.items() if k != "type"}
        try:
            self.validators[name](_sample(body))
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(the reply)"
            raise AssertionError(f"the reply of '{name}' does not match its declared reply "
                                 f"schema at {where}: {exc.message}") from None
