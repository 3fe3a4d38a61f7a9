"""Numbers, durations and sizes are finite and of a sane size, wherever they come from: every
registered command's options, the configuration and alert rules. ``nan``, ``inf`` or ``1e309``
used to pass as a duration and end as "failed on an internal error" later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from podod.alerts.rules import load_rule_files, parse_threshold
from podod.builtins import BUILTIN_MODULES
from podod.bus import grammar
from podod.bus.spec import CommandSpec, Param
from podod.config import load_config
from podod.durations import parse_duration
from podod.errors import ConfigError, UsageError
from podod.plugins import Registry, load_builtins, load_plugins

REPO = Path(__file__).resolve().parents[2]
NUMERIC = ("int", "size", "duration")  # every kind the grammar converts to a number
ABSURD = ["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "1e300", "-1e309", "1e30",
          "9" * 5000]


def registry_commands() -> dict[str, CommandSpec]:
    registry = Registry()
    load_builtins(registry, BUILTIN_MODULES)
    load_plugins(registry, [REPO / "plugins"], use_entry_points=False, disabled=[])
    return registry.commands


def _fill(param: Param) -> list[str]:
    """A harmless valid value for a required parameter that is not under test."""
    value = {"int": "1", "size": "1", "duration": "1h", "bool": "yes", "list": "x",
             "choice": param.choices[0] if param.choices else "x"}.get(param.kind, "x")
    return [value] if param.positional else [param.flag, value]


def numeric_cases() -> list[tuple[str, str, str]]:
    cases = []
    for name, spec in sorted(registry_commands().items()):
        for param in spec.params:
            if param.kind in NUMERIC:
                cases += [(name, param.name, value) for value in ABSURD]
    return cases


def test_the_registry_has_numeric_parameters_to_check() -> None:
    kinds = {p.kind for spec in registry_commands().values() for p in spec.params}
    assert set(NUMERIC) <= kinds
    assert kinds <= set(NUMERIC) | {"str", "address", "domain", "secret", "flag", "bool", "list",
                                    "choice"}, \
        "a new parameter kind: decide whether it is a number and add it to NUMERIC"
    assert len(numeric_cases()) >= 20 * len(ABSURD)


@pytest.mark.parametrize(("command", "param_name", "value"), numeric_cases())
def test_every_numeric_parameter_refuses_non_finite_and_absurd_values(
        command: str, param_name: str, value: str) -> None:
    commands = registry_commands()
    spec = commands[command]
    argv = command.split()
    for param in spec.params:
        if param.name == param_name:
            argv += [value] if param.positional else [param.flag, value]
        elif param.required:
            argv += _fill(param)
    with pytest.raises(UsageError) as info:
        grammar.parse(argv, commands)
    message = str(info.value)
    assert info.value.exit_code == 2
    assert message.startswith(f"{command}: "), message
    assert "\n" not in message and len(message) < 200, message


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("1.5h", 5400.0), ("7d", 604800.0), ("2w", 1209600.0), ("250ms", 0.25),
    ("90", 90.0), ("1e3", 1000.0), (" 5 m ", 300.0), ("0", 0.0), ("-0", 0.0),
    ("36500d", 36500 * 86400.0), (12, 12.0), (2.5, 2.5)])
def test_durations_people_write_still_parse(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("value", "message"), [
    ("nan", "'nan' is not a duration such as 30s, 5m, 2h or 7d"),
    ("inf", "'inf' is not a duration"),
    ("-inf", "'-inf' is not a duration"),
    ("1_000", "'1_000' is not a duration"),
    (float("nan"), "nan is not a duration"),
    (float("inf"), "inf is not a duration"),
    ("1e309", "must be at most 36500d (100 years), not 1e309"),
    ("1e300", "must be at most 36500d (100 years), not 1e300"),
    ("36501d", "must be at most 36500d (100 years), not 36501d"),
    ("9" * 400 + "w", "must be at most 36500d (100 years), not " + "9" * 40 + "…"),
    (10**400, "must be at most 36500d (100 years)"),
    (-(10**400), "must not be negative"),
    ("-5", "must not be negative"),
])
def test_absurd_durations_are_one_sentence(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize("value", ["nan%", 10**400, float("nan"), float("inf"), 1e19,
                                   "9" * 400 + "kb"])
def test_alert_thresholds_are_finite(value: Any) -> None:
    with pytest.raises(ValueError, match=r"is not a number|must be a finite number"):
        parse_threshold(value)


def test_alert_thresholds_people_write_still_parse() -> None:
    assert parse_threshold("90%") == 0.9
    assert parse_threshold("10GiB") == 10 * 1024**3
    assert parse_threshold("14d") == 14 * 86400.0
    assert parse_threshold(-3.5) == -3.5


@pytest.mark.parametrize(("text", "message"), [
    ("commands: {timeout: .nan}\n", "podod.yaml: commands.timeout: nan is not a duration"),
    ("commands: {timeout: 1e300}\n", "podod.yaml: commands.timeout: must be at most 36500d"),
    ("commands: {timeout: 1000000000000000000000000000000}\n",
     "podod.yaml: commands.timeout: must be at most 36500d"),
    ("monitor: {interval: .inf}\n", "podod.yaml: monitor.interval: inf is not a duration"),
])
def test_config_durations_are_finite(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "podod.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


RULE = """\
rules:
  - name: QueueTooLarge
    series: postfix_queue_messages
    aggregate: sum
    op: ">"
    threshold: 500
    divided_by: {series: postfix_queue_messages, min: 1}
    for: 10m
"""


@pytest.mark.parametrize(("old", "new", "message"), [
    ("threshold: 500", "threshold: .nan", "threshold: must be a finite number"),
    ("threshold: 500", "threshold: .inf", "threshold: must be a finite number"),
    ("threshold: 500", "threshold: nan%", "threshold: 'nan%' is not a number"),
    ("for: 10m", "for: .nan", "for: nan is not a duration"),
    ("min: 1", "min: .nan", "divided_by.min: must be a finite number"),
])
def test_alert_rule_numbers_are_finite(tmp_path: Path, old: str, new: str,
                                       message: str) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(RULE.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_rule_files([path])
    assert message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_the_alert_rule_above_is_good(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(RULE)
    assert [r.name for r in load_rule_files([path]).rules] == ["QueueTooLarge"]
