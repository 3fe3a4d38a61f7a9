"""The default alert pack can fire on what podod's collectors really emit.

A rule that names a series no collector emits, a label the series does not have, or a label
value the collector never produces (``queue: defered``) loads without complaint and then
never fires. These tests hold every default rule against the catalogue and against the
samples the real collectors make from real input (a saved ``postqueue -j``, a real
/proc + df snapshot, a real Postfix log).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from podod.alerts.matchers import Matcher
from podod.alerts.rules import Rule, load_rule_files
from podod.monitor.catalog import SeriesInfo
from podod.monitor.collectors.queue import parse_postqueue, queue_samples
from podod.monitor.collectors.system import parse_snapshot
from podod.monitor.collectors.system import samples_of as system_samples
from podod.monitor.model import Sample
from podod.monitor.settings import SystemCollectorSettings
from podod.monitor.traffic.component import samples_of as traffic_samples
from podod.monitor.traffic.logparse import parse_files
from podod.plugins import Registry, load_builtins, load_plugins

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "config" / "alerts.example.yaml"
FIXTURES = REPO / "tests" / "fixtures"
NOW = 1_800_000_000.0


def catalogue() -> dict[str, SeriesInfo]:
    from podod.builtins import BUILTIN_MODULES

    registry = Registry()
    load_builtins(registry, BUILTIN_MODULES)
    load_plugins(registry, [REPO / "plugins"], use_entry_points=False)
    return registry.series


def emitted() -> list[Sample]:
    """What the queue, system and traffic collectors make of real input."""
    queue = queue_samples(parse_postqueue((FIXTURES / "postqueue-j.txt").read_text()),
                          "mx1", NOW)
    system = system_samples(parse_snapshot((FIXTURES / "system-snapshot.txt").read_text()),
                            "mx1", SystemCollectorSettings(), {}, NOW)
    run = parse_files([REPO / "tests" / "data" / "maillog" / "postfix-3.7.log",
                       REPO / "tests" / "data" / "maillog" / "dovecot-2.3.log"])
    traffic = traffic_samples("mx1", run.tally.totals(), NOW)
    return [*queue, *system, *traffic]


RULES = load_rule_files([PACK]).rules
RAW = {r["name"]: r for r in yaml.safe_load(PACK.read_text())["rules"]}


def _labels(sample: Sample) -> dict[str, str]:
    return {**dict(sample.labels), "server": sample.server}


def _selectors(rule: Rule) -> list[tuple[str, tuple[Matcher, ...]]]:
    out = [(rule.series, rule.matchers)]
    if rule.divided_by is not None:
        out.append((rule.divided_by.series, rule.divided_by.matchers))
    return out


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_every_default_rule_watches_a_catalogued_series_with_its_labels(rule: Rule) -> None:
    series = catalogue()
    for name, matchers in _selectors(rule):
        info = series.get(name)
        assert info is not None, f"{rule.name}: {name} is not in the catalogue"
        labels = {"server", *info.labels}
        for matcher in matchers:
            assert matcher.label in labels, f"{rule.name}: {name} has no label {matcher.label}"
        # a rate or an increase only makes sense on a counter, a gauge needs neither
        assert (rule.window is not None) == (info.kind == "counter"), rule.name
    kept = set(rule.by) if rule.aggregate else set(series[rule.series].labels)
    for label in rule.by:
        assert label in series[rule.series].labels, f"{rule.name}: by {label}"
    # the summary and description only name labels the alert will carry
    text = " ".join(str(RAW[rule.name].get(k, "")) for k in ("summary", "description"))
    for label in re.findall(r"labels\.([A-Za-z_][A-Za-z0-9_]*)", text):
        assert label in kept | set(rule.labels), \
            f"{rule.name}: its text names labels.{label}, which its alerts do not carry"


def test_every_default_rule_with_matchers_selects_what_collectors_emit() -> None:
    samples = emitted()
    by_series: dict[str, list[dict[str, str]]] = {}
    for s in samples:
        by_series.setdefault(s.series, []).append(_labels(s))
    checked = 0
    for rule in RULES:
        for name, matchers in _selectors(rule):
            if name not in by_series:
                continue  # the fixtures do not cover it (ssh, probes, tls, postgres)
            hits = [labels for labels in by_series[name]
                    if all(m.matches(labels) for m in matchers)]
            assert hits, (f"{rule.name}: no {name} sample a collector emits matches "
                          f"{', '.join(map(str, matchers))}")
            if matchers:
                checked += 1
    # the queue, deferral and bounce rules are among those checked against real samples
    assert checked >= 5


def test_inhibit_rules_name_existing_rules_and_labels_alerts_carry() -> None:
    ruleset = load_rule_files([PACK])
    names = {r.name for r in ruleset.rules}
    series = catalogue()
    carried = {r.name: {"server", "alertname", "severity", *r.labels,
                        *(r.by if r.aggregate else series[r.series].labels)}
               for r in ruleset.rules}
    for inhibit in ruleset.inhibit:
        sources = [r for r in ruleset.rules
                   if all(m.matches({"alertname": r.name, "severity": r.severity})
                          for m in inhibit.source if m.label in ("alertname", "severity"))]
        for m in (*inhibit.source, *inhibit.target):
            if m.label == "alertname" and m.op == "=":
                assert m.value in names, f"inhibit names no rule {m.value}"
        assert sources, f"inhibit {inhibit.origin}: no rule can be its source"
        for label in inhibit.equal:
            assert all(label in carried[r.name] for r in sources), \
                f"inhibit {inhibit.origin}: its sources do not all carry {label}"
