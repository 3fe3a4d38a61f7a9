"""Alert rule files: YAML in, compiled rules out, and one sentence for every mistake.

A rule file holds ``rules:`` (a list) and optionally ``inhibit:`` (a list)::

    rules:
      - name: QueueTooLarge
        series: postfix_queue_messages
        match: {queue: deferred}
        op: ">"
        threshold: 500
        for: 10m
        severity: warning
        summary: "{{ server }}: {{ value | round | int }} messages deferred"
    inhibit:
      - source: {alertname: ServerUnreachable}
        equal: [server]

docs/alerts.md explains every field. A broken file is reported as
``alerts.yaml: rule 'QueueTooLarge' (rules[3]): for: 'soon' is not a duration ...``.
"""

from __future__ import annotations

import functools
import glob
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from podod.alerts.matchers import Matcher, MatcherError, from_mapping
from podod.alerts.templates import Template, compile_template, deferred_template
from podod.durations import parse_duration
from podod.errors import ConfigError
from podod.settings_base import Duration, validation_message
from podod.yamlfile import read_yaml

Op = Literal[">", ">=", "<", "<=", "==", "!="]
Severity = Literal["critical", "warning", "info"]
Aggregate = Literal["sum", "min", "max", "avg", "count"]

_RULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
_SERIES = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_BYTES = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)$")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?")  # not nan, inf
MAX_THRESHOLD = 1e18
RESERVED_LABELS = ("alertname", "severity", "server")

DEFAULT_SUMMARY = "{{ rule }} on {{ server }} (value {{ value | humanize }})"


def parse_threshold(value: Any) -> float:
    """A number, a percentage (``90%``), a duration (``14d``) or a size (``10GiB``)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, a percentage (90%), a duration (14d) or a size "
                         "(10GiB)")
    if isinstance(value, int | float):
        return _finite(value, value)
    if not isinstance(value, str):
        raise ValueError("must be a number, a percentage (90%), a duration (14d) or a size "
                         "(10GiB)")
    text = value.strip().lower()
    if text.endswith("%") and _NUMBER.fullmatch(text[:-1]):
        return _finite(float(text[:-1]) / 100.0, value)
    size = _SIZE.match(text)
    if size:
        return _finite(float(size.group(1)) * _BYTES[size.group(2)], value)
    try:
        return parse_duration(text)
    except ValueError:
        pass
    raise ValueError(f"'{value}' is not a number, a percentage (90%), a duration (14d) or a "
                     "size (10GiB)")


def _finite(number: float, value: Any) -> float:
    """A threshold is a finite number of at most 1e18 (no nan, no inf, nothing that
    overflows when compared or scaled)."""
    if isinstance(number, int) and abs(number) > MAX_THRESHOLD:  # a huge int: no float
        number = math.inf
    if not math.isfinite(number) or abs(number) > MAX_THRESHOLD:
        raise ValueError(f"must be a finite number between -1e18 and 1e18, not "
                         f"'{str(value)[:40]}'")
    return float(number)


def _series_name(value: str) -> str:
    value = value.strip().removeprefix("podod_")
    if not _SERIES.match(value):
        raise ValueError(f"'{value}' is not a series name such as postfix_queue_messages")
    return value


def _matchers(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of label to value, e.g. {queue: deferred}")
    try:
        from_mapping(value)
    except MatcherError as exc:
        raise ValueError(str(exc)) from None
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class SelectorSpec(_Strict):
    """The denominator of a ratio (``divided_by``)."""

    series: str
    match: dict[str, Any] = Field(default_factory=dict)
    min: float = 0.0

    @field_validator("series")
    @classmethod
    def _series(cls, value: str) -> str:
        return _series_name(value)

    @field_validator("match", mode="before")
    @classmethod
    def _match(cls, value: Any) -> dict[str, Any]:
        return _matchers(value)


class RuleSpec(_Strict):
    name: str
    series: str
    match: dict[str, Any] = Field(default_factory=dict)
    rate: Duration | None = None
    increase: Duration | None = None
    aggregate: Aggregate | None = None
    by: list[str] = Field(default_factory=list)
    divided_by: SelectorSpec | None = None
    relative_to_now: bool = False
    op: Op
    threshold: float
    for_: Duration = Field(default=0.0, alias="for")
    keep_firing_for: Duration = 0.0
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = DEFAULT_SUMMARY
    description: str = ""
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _RULE_NAME.match(value):
            raise ValueError("must be letters, digits and _ (e.g. QueueTooLarge)")
        return value

    @field_validator("series")
    @classmethod
    def _series(cls, value: str) -> str:
        return _series_name(value)

    @field_validator("match", mode="before")
    @classmethod
    def _match(cls, value: Any) -> dict[str, Any]:
        return _matchers(value)

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, value: Any) -> float:
        return parse_threshold(value)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key in value:
                if str(key) in RESERVED_LABELS:
                    raise ValueError(f"'{key}' is set by podod itself and cannot be a rule "
                                     "label")
                if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", str(key)):
                    raise ValueError(f"'{key}' is not a label name (letters, digits and _)")
            return {str(k): str(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RuleSpec:
        if self.rate is not None and self.increase is not None:
            raise ValueError("give either rate or increase, not both")
        for key in ("rate", "increase"):
            window = getattr(self, key)
            if window is not None and window <= 0:
                raise ValueError(f"{key}: must be a window longer than 0s, e.g. 5m")
        if self.by and self.aggregate is None:
            raise ValueError("by: needs aggregate (sum, min, max, avg or count)")
        if self.divided_by is not None and self.aggregate is None:
            raise ValueError("divided_by: needs aggregate (usually sum), so numerator and "
                             "denominator line up per server")
        if self.relative_to_now and (self.rate or self.increase):
            raise ValueError("relative_to_now: cannot be combined with rate or increase")
        if self.relative_to_now and self.divided_by is not None:
            raise ValueError("relative_to_now: cannot be combined with divided_by")
        return self


class InhibitSpec(_Strict):
    source: dict[str, Any]
    target: dict[str, Any] = Field(default_factory=dict)
    equal: list[str] = Field(default_factory=lambda: ["server"])

    @field_validator("source", "target", mode="before")
    @classmethod
    def _match(cls, value: Any) -> dict[str, Any]:
        return _matchers(value)


class RuleFileSpec(_Strict):
    rules: list[dict[str, Any]] = Field(default_factory=list)
    inhibit: list[dict[str, Any]] = Field(default_factory=list)


# -- compiled -------------------------------------------------------------------------------

_COMPARE = {
    ">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__,
    "==": float.__eq__, "!=": float.__ne__,
}


@dataclass(frozen=True)
class Selector:
    series: str
    matchers: tuple[Matcher, ...]
    min: float = 0.0


@dataclass
class Rule:
    """A rule ready for the engine."""

    name: str
    series: str
    matchers: tuple[Matcher, ...]
    op: Op
    threshold: float
    for_: float
    keep_firing_for: float
    severity: Severity
    labels: dict[str, str]
    summary: Template
    description: Template | None
    annotations: dict[str, Template]
    rate: float | None = None
    increase: float | None = None
    aggregate: Aggregate | None = None
    by: tuple[str, ...] = ()
    divided_by: Selector | None = None
    relative_to_now: bool = False
    source: str = ""
    index: int = 0
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def window(self) -> float | None:
        return self.rate if self.rate is not None else self.increase

    def compare(self, value: float) -> bool:
        return bool(_COMPARE[self.op](value, self.threshold))

    @property
    def condition(self) -> str:
        """The condition in one line, PromQL-like, for lists and docs."""
        sel = self.series + _selector(self.matchers)
        if self.rate is not None:
            sel = f"rate({sel}[{_dur(self.rate)}])"
        elif self.increase is not None:
            sel = f"increase({sel}[{_dur(self.increase)}])"
        if self.relative_to_now:
            sel = f"{sel} - time()"
        by = f"by (server{''.join(', ' + b for b in self.by)})"
        if self.aggregate:
            sel = f"{self.aggregate} {by} ({sel})"
        if self.divided_by is not None:
            d = self.divided_by
            den = d.series + _selector(d.matchers)
            if self.window is not None:
                den = f"{'rate' if self.rate else 'increase'}({den}[{_dur(self.window)}])"
            sel = f"{sel} / {self.aggregate} {by} ({den})"
        raw = self.spec.get("threshold", self.threshold)
        threshold = raw if isinstance(raw, str) else f"{self.threshold:g}"
        return f"{sel} {self.op} {threshold}"


def _selector(matchers: tuple[Matcher, ...]) -> str:
    if not matchers:
        return ""
    return "{" + ",".join(f'{m.label}{m.op}"{m.value}"' for m in matchers) + "}"


def _dur(seconds: float) -> str:
    from podod.durations import format_duration

    return format_duration(seconds)


@dataclass(frozen=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]
    origin: str = ""


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)
    inhibit: list[InhibitRule] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def by_name(self) -> dict[str, Rule]:
        return {r.name: r for r in self.rules}


# -- loading ----------------------------------------------------------------------------------

def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and "[" not in part:
            out += ("." if out else "") + ("for" if part == "for_" else part)
    return out


def _problem(exc: pydantic.ValidationError) -> tuple[str, str]:
    error = exc.errors()[0]
    return _loc(tuple(error["loc"])), validation_message(error)


def _compile(spec: RuleSpec, source: str, index: int, raw: dict[str, Any], *,
             deferred: bool = False) -> Rule:
    def template(key: str, text: str) -> Template:
        if deferred:
            return deferred_template(text)
        try:
            return compile_template(text)
        except ValueError as exc:
            raise ConfigError(f"{source}: rule '{spec.name}' (rules[{index}]): {key}: "
                              f"{exc}") from None

    divided = None
    if spec.divided_by is not None:
        divided = Selector(spec.divided_by.series, from_mapping(spec.divided_by.match),
                           spec.divided_by.min)
    return Rule(
        name=spec.name, series=spec.series, matchers=from_mapping(spec.match), op=spec.op,
        threshold=spec.threshold, for_=spec.for_, keep_firing_for=spec.keep_firing_for,
        severity=spec.severity, labels=dict(spec.labels),
        summary=template("summary", spec.summary),
        description=template("description", spec.description) if spec.description else None,
        annotations={k: template(f"annotations.{k}", v) for k, v in spec.annotations.items()},
        rate=spec.rate, increase=spec.increase, aggregate=spec.aggregate, by=tuple(spec.by),
        divided_by=divided, relative_to_now=spec.relative_to_now, source=source, index=index,
        spec=raw,
    )


def parse_rule_file(data: Any, source: str, *, deferred_templates: bool = False) -> RuleSet:
    """Validate one file's YAML data; ``source`` names it in messages.

    ``deferred_templates``: only for the packaged pack, whose templates a test compiles;
    they then compile at their first render (no Jinja2 import at start-up)."""
    if data is None:
        return RuleSet()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a rule file must be a mapping with a 'rules:' list")
    try:
        top = RuleFileSpec.model_validate(data)
    except pydantic.ValidationError as exc:
        where, what = _problem(exc)
        if where.startswith("rules[") or where.startswith("inhibit["):
            what = "must be a mapping of keys to values" if "mapping" in what or \
                "dict" in what else what
        raise ConfigError(f"{source}: {where}: {what}") from None
    ruleset = RuleSet()
    for index, raw in enumerate(top.rules):
        name = raw.get("name") if isinstance(raw.get("name"), str) else None
        label = f"rule '{name}' (rules[{index}])" if name else f"rules[{index}]"
        try:
            spec = RuleSpec.model_validate(raw)
        except pydantic.ValidationError as exc:
            where, what = _problem(exc)
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{source}: {label}: {prefix}{what}") from None
        ruleset.rules.append(_compile(spec, source, index, raw, deferred=deferred_templates))
    for index, raw in enumerate(top.inhibit):
        try:
            inhibit = InhibitSpec.model_validate(raw)
        except pydantic.ValidationError as exc:
            where, what = _problem(exc)
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{source}: inhibit[{index}]: {prefix}{what}") from None
        ruleset.inhibit.append(InhibitRule(
            from_mapping(inhibit.source), from_mapping(inhibit.target), tuple(inhibit.equal),
            origin=f"{source}: inhibit[{index}]"))
    return ruleset


def read_rule_file(path: Path, *, deferred_templates: bool = False) -> RuleSet:
    source = path.name
    data = read_yaml(path, "rule file")
    ruleset = parse_rule_file(data, source, deferred_templates=deferred_templates)
    ruleset.files = [path]
    return ruleset


def expand(paths: list[Path]) -> list[Path]:
    """Rule file entries may be globs (``rules.d/*.yaml``); a plain path must exist."""
    out: list[Path] = []
    for path in paths:
        text = str(path)
        if any(ch in text for ch in "*?["):
            out.extend(Path(p) for p in sorted(glob.glob(text)))
        else:
            out.append(path)
    return out


def merge(rulesets: list[RuleSet]) -> RuleSet:
    merged = RuleSet()
    seen: dict[str, Rule] = {}
    for ruleset in rulesets:
        for rule in ruleset.rules:
            if rule.name in seen:
                first = seen[rule.name]
                raise ConfigError(
                    f"{rule.source}: rule '{rule.name}' (rules[{rule.index}]): name: is "
                    f"already used by rules[{first.index}] in {first.source}")
            seen[rule.name] = rule
            merged.rules.append(rule)
        merged.inhibit.extend(ruleset.inhibit)
        merged.files.extend(ruleset.files)
    return merged


def load_rule_files(paths: list[Path]) -> RuleSet:
    """Read, validate and merge every rule file; the first problem is a ConfigError."""
    return merge([read_rule_file(p) for p in expand(paths)])


DEFAULT_RULES = Path(__file__).with_name("default_rules.yaml")


@functools.lru_cache(maxsize=1)
def _default_rules() -> RuleSet:
    return read_rule_file(DEFAULT_RULES, deferred_templates=True)


def default_rules() -> RuleSet:
    """The packaged default pack, read and compiled once per process (rules are never
    changed after compilation; every caller gets its own lists)."""
    pack = _default_rules()
    return RuleSet(list(pack.rules), list(pack.inhibit), list(pack.files))


def combine(base: RuleSet, files: RuleSet) -> RuleSet:
    """``base`` (the default pack, plugin packs) with the rule files on top: a rule in a
    rule file replaces the base rule of the same name; inhibit rules add up."""
    own = {r.name for r in files.rules}
    out = RuleSet([r for r in base.rules if r.name not in own] + list(files.rules),
                  list(base.inhibit) + list(files.inhibit), list(base.files) + list(files.files))
    return out
