"""Templates for alert summaries and notification bodies: Jinja2 in its sandbox.

A rule's ``summary`` sees ``server``, ``value``, ``threshold``, ``rule``, ``severity``,
``labels`` (every label of the alert) and ``note`` (the sample's text for people);
notification templates see the whole notification (``status``, ``alerts``,
``group_labels``, ...). Filters for people: ``duration`` (3d4h),
``bytes`` (1.5 GiB), ``percent`` (93.2%), ``humanize`` (1.2k). An undefined name renders as
an empty string, so a label a series does not carry leaves a gap rather than an error.

Jinja2 is imported by the first compilation, not with this module: the packaged default rule
pack's templates (whose syntax a test checks) compile when they first render, so a podod
with no template of its own and no alert yet has not loaded Jinja2 at all (see "Start-up
budget" in docs/architecture.md).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from podod.durations import format_duration

if TYPE_CHECKING:
    from jinja2 import Template as JinjaTemplate
    from jinja2.sandbox import SandboxedEnvironment

# What a failing render may raise; Jinja2's TemplateError joins once Jinja2 is loaded.
_RENDER_ERRORS: tuple[type[Exception], ...] = (TypeError, ValueError, ArithmeticError)


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
    global _RENDER_ERRORS
    from jinja2 import TemplateError
    from jinja2.sandbox import SandboxedEnvironment

    _RENDER_ERRORS = (TemplateError, *_RENDER_ERRORS)
    env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)
    env.filters.update(duration=duration, bytes=human_bytes, percent=percent,
                       humanize=humanize)
    return env


class Template:
    """A compiled template; :meth:`render` never raises.

    ``deferred=True`` is for templates known to compile (the packaged default pack): they
    compile at their first render instead of now."""

    def __init__(self, source: str, *, deferred: bool = False) -> None:
        self.source = source
        self._template: JinjaTemplate | None = (
            None if deferred else environment().from_string(source))

    def render(self, **context: Any) -> str:
        try:
            if self._template is None:
                self._template = environment().from_string(self.source)
            return self._template.render(**context)
        except _RENDER_ERRORS as exc:
            return f"(template error: {exc})"

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    def __copy__(self) -> Template:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Template:
        return self  # compiled and never changed: a copy of a config may share it


def compile_template(source: str) -> Template:
    """Compile ``source``; a syntax error is a ValueError with one plain sentence."""
    from jinja2 import TemplateSyntaxError

    try:
        return Template(source)
    except TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error at line {exc.lineno}: {exc.message}") from None


def deferred_template(source: str) -> Template:
    """A template whose syntax is known to be right (a test compiles the packaged default
    pack): compiled at its first render, so loading the pack does not import Jinja2."""
    return Template(source, deferred=True)
