"""Label matchers, shared by rules (``match:``), inhibit rules, silences, maintenance windows
and notifier routes.

One syntax everywhere, as in Alertmanager: ``label=value``, ``label!=value``,
``label=~regex``, ``label!~regex`` (regexes are anchored at both ends). In YAML a mapping
``{queue: deferred, service: "=~postfix|dovecot", state: "!=idle"}`` means the same: a
plain value is an exact match, a value starting with ``!=``, ``=~`` or ``!~`` uses that
operator. ``server`` and ``alertname`` are labels like any other here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Op = Literal["=", "!=", "=~", "!~"]
_OPS: tuple[Op, ...] = ("!=", "=~", "!~")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class MatcherError(ValueError):
    """A matcher that cannot be used; the message is one plain sentence."""


@dataclass(frozen=True)
class Matcher:
    label: str
    op: Op
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, label: str, op: Op, value: str) -> Matcher:
        if not _LABEL.match(label):
            raise MatcherError(f"'{label}' is not a label name (letters, digits and _)")
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(value)
            except re.error as exc:
                raise MatcherError(f"{label}: '{value}' is not a valid regular expression "
                                   f"({exc})") from None
        return cls(label, op, value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None
        hit = self._regex.fullmatch(actual) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.label}{self.op}{self.value}"

    def to_dict(self) -> dict[str, str]:
        return {"label": self.label, "op": self.op, "value": self.value}


def parse_value(label: str, raw: Any) -> Matcher:
    """A YAML mapping entry: ``queue: deferred`` or ``service: "=~postfix|dovecot"``."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise MatcherError(f"{label}: must be a text value such as 'deferred' or "
                           "'=~postfix|dovecot'")
    text = str(raw)
    for op in _OPS:
        if text.startswith(op):
            return Matcher.make(label, op, text[len(op):])
    return Matcher.make(label, "=", text)


def from_mapping(data: Mapping[str, Any]) -> tuple[Matcher, ...]:
    return tuple(parse_value(str(label), raw) for label, raw in data.items())


def parse_text(text: str) -> Matcher:
    """``label=value``, ``label!=value``, ``label=~regex`` or ``label!~regex``."""
    match = re.match(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)(.*)$", text)
    if match is None:
        raise MatcherError(f"'{text}' is not a matcher such as server=mx1, "
                           "severity=~warning|critical or queue!=hold")
    label, op, value = match.groups()
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return Matcher.make(label, op, value)  # type: ignore[arg-type]


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def describe(matchers: Iterable[Matcher]) -> str:
    return ",".join(str(m) for m in matchers) or "(everything)"


def from_dicts(items: Iterable[Mapping[str, str]]) -> tuple[Matcher, ...]:
    return tuple(Matcher.make(i["label"], i["op"], i["value"])  # type: ignore[arg-type]
                 for i in items)
