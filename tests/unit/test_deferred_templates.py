"""The packaged default rule pack compiles its templates when they first render, so loading
the configuration does not import Jinja2 (docs/architecture.md, "Start-up budget"). That is
safe only because this test compiles every one of them; a user's own templates still
compile (and fail) when the configuration is read."""

from __future__ import annotations

import subprocess
import sys

import pytest

from podod.alerts.rules import DEFAULT_RULES, default_rules, read_rule_file
from podod.config import parse_config
from podod.errors import ConfigError

CONTEXT = {"server": "mx1", "value": 0.93, "threshold": 0.9, "rule": "DiskFull",
           "severity": "warning", "labels": {"mountpoint": "/var/mail"}}


def test_every_template_of_the_default_pack_compiles_and_renders_as_deferred() -> None:
    compiled = read_rule_file(DEFAULT_RULES)  # compiles now: a syntax error raises here
    deferred = default_rules()
    assert [r.name for r in compiled.rules] == [r.name for r in deferred.rules]
    for eager, lazy in zip(compiled.rules, deferred.rules, strict=True):
        pairs = [(eager.summary, lazy.summary)]
        if eager.description is not None and lazy.description is not None:
            pairs.append((eager.description, lazy.description))
        pairs += [(eager.annotations[k], lazy.annotations[k]) for k in eager.annotations]
        for a, b in pairs:
            text = a.render(**CONTEXT)
            assert not text.startswith("(template error"), (eager.name, text)
            assert b.render(**CONTEXT) == text, eager.name


def test_loading_the_config_with_the_default_pack_does_not_import_jinja2() -> None:
    code = ("import sys; from podod.config import parse_config; "
            "c = parse_config({}, source='podod.yaml'); "
            "assert c.alerts.ruleset.rules; print('jinja2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_a_users_template_is_still_checked_when_the_config_is_read() -> None:
    with pytest.raises(ConfigError, match="template syntax error at line 1"):
        parse_config({"alerts": {"notifiers": [{"type": "webhook", "url": "http://a/",
                                                "template": "{{ oops"}]}},
                     source="podod.yaml")
