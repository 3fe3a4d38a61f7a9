"""Templates for alert summaries and notification bodies: Jinja2 in its sandbox.

A rule's ``summary`` sees ``server``, ``value``, ``threshold``, ``rule``, ``severity`` and
``labels`` (every label of the alert); notification templates see the whole notification
(``status``, ``alerts``, ``group_labels``, ...). Filters for people: ``duration`` (3d4h),
``bytes`` (1.5 GiB), ``percent`` (93.2%), ``humanize`` (1.2k). An undefined name renders as
an empty string, so a label a series does not carry leaves a gap rather than an error.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from podod.durations import format_duration


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def duration(value: Any) -> str:
    number = _number(value)
    if number is None:
        return str(value)
    sign = "-" if number < 0 else ""
    return sign + format_duration(abs(number))


def human_bytes(value: Any) -> str:
    number = _number(value)
    if number is None:
        return str(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(number) < 1024 or unit == "TiB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return str(value)  # pragma: no cover


def percent(value: Any, digits: int = 1) -> str:
    number = _number(value)
    if number is None:
        return str(value)
    return f"{number * 100:.{digits}f}%"


def humanize(value: Any) -> str:
    number = _number(value)
    if number is None:
        return str(value)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(number) >= size:
            return f"{number / size:.1f}{unit}"
    return f"{number:.4g}"


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)
    env.filters.update(duration=duration, bytes=human_bytes, percent=percent,
                       humanize=humanize)
    return env


class Template:
    """A compiled template; :meth:`render` never raises."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._template = environment().from_string(source)

    def render(self, **context: Any) -> str:
        try:
            return self._template.render(**context)
        except (TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            return f"(template error: {exc})"

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    def __copy__(self) -> Template:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Template:
        return self  # compiled and never changed: a copy of a config may share it


def compile_template(source: str) -> Template:
    """Compile ``source``; a syntax error is a ValueError with one plain sentence."""
    try:
        return Template(source)
    except TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error at line {exc.lineno}: {exc.message}") from None
