"""Rule files, notifier and maintenance settings: good input loads, and every mistake is one
sentence naming the file, the rule and the key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from podod.alerts.cron import cron_trigger, crontab_weekdays
from podod.alerts.matchers import MatcherError, parse_text
from podod.alerts.rules import load_rule_files, parse_threshold
from podod.alerts.templates import compile_template
from podod.config import load_config, parse_config
from podod.errors import ConfigError
from podod.plugins import Registry

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
rules:
  - name: QueueTooLarge
    series: postfix_queue_messages
    match: {queue: deferred}
    op: ">"
    threshold: 500
    for: 10m
    summary: "{{ server }}: {{ value }}"
"""


def write(tmp_path: Path, text: str, name: str = "alerts.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_default_pack_loads_and_covers_the_issue() -> None:
    ruleset = load_rule_files([REPO / "config" / "alerts.example.yaml"])
    assert (REPO / "config" / "alerts.example.yaml").resolve() == \
        (REPO / "src" / "podod" / "alerts" / "default_rules.yaml").resolve()
    series = {r.series for r in ruleset.rules}
    for needed in ("ssh_connected", "service_up", "postfix_queue_messages",
                   "postfix_queue_oldest_message_age_seconds", "postfix_deliveries_total",
                   "dovecot_auth_failures_total", "postfix_sasl_auth_failures_total",
                   "node_filesystem_used_ratio", "node_memory_used_ratio",
                   "node_load1_per_cpu", "tls_cert_not_after_timestamp_seconds",
                   "postgres_connections_used_ratio"):
        assert needed in series, needed
    names = [r.name for r in ruleset.rules]
    assert len(names) == len(set(names))
    assert any(i.source[0].value == "ServerUnreachable" for i in ruleset.inhibit)


def test_default_pack_names_only_catalogued_series() -> None:
    from podod.plugins import Registry, load_plugins

    registry = Registry()
    load_plugins(registry, [REPO / "plugins"], use_entry_points=False)
    ruleset = load_rule_files([REPO / "config" / "alerts.example.yaml"])
    for rule in ruleset.rules:
        info = registry.series.get(rule.series)
        assert info is not None, f"{rule.name}: {rule.series} is not in the catalogue"
        assert (rule.window is not None) == (info.kind == "counter"), rule.name
        for label in [m.label for m in rule.matchers] + list(rule.by):
            assert label in info.labels, f"{rule.name}: {rule.series} has no label {label}"


@pytest.mark.parametrize(("text", "message"), [
    (GOOD.replace("for: 10m", "for: soon"),
     "alerts.yaml: rule 'QueueTooLarge' (rules[0]): for: 'soon' is not a duration such as "
     "30s, 5m, 2h or 7d"),
    (GOOD.replace('op: ">"', 'op: "=>"'),
     "alerts.yaml: rule 'QueueTooLarge' (rules[0]): op: must be one of '>', '>=', '<', "
     "'<=', '==' or '!='"),
    (GOOD.replace("threshold: 500", "threshold: lots"),
     "alerts.yaml: rule 'QueueTooLarge' (rules[0]): threshold: 'lots' is not a number, a "
     "percentage (90%), a duration (14d) or a size (10GiB)"),
    (GOOD.replace("    series: postfix_queue_messages\n", ""),
     "alerts.yaml: rule 'QueueTooLarge' (rules[0]): series: is required"),
    (GOOD.replace("name: QueueTooLarge", "name: Queue Too Large"),
     "alerts.yaml: rule 'Queue Too Large' (rules[0]): name: must be letters, digits and _"),
    (GOOD.replace("{queue: deferred}", '{queue: "=~(deferred"}'),
     "alerts.yaml: rule 'QueueTooLarge' (rules[0]): match: queue: '(deferred' is not a "
     "valid regular expression"),
    (GOOD.replace("for: 10m", "fro: 10m"),
     "alerts.yaml: rule 'QueueTooLarge' (rules[0]): fro: unknown key"),
    (GOOD + "    rate: 5m\n    increase: 5m\n",
     "alerts.yaml: rule 'QueueTooLarge' (rules[0]): give either rate or increase, not both"),
    (GOOD + "    by: [queue]\n",
     "alerts.yaml: rule 'QueueTooLarge' (rules[0]): by: needs aggregate"),
    (GOOD.replace('"{{ server }}: {{ value }}"', '"{{ server }"'),
     "alerts.yaml: rule 'QueueTooLarge' (rules[0]): summary: template syntax error at line "
     "1: unexpected '}'"),
    (GOOD + "    labels: {server: x}\n",
     "alerts.yaml: rule 'QueueTooLarge' (rules[0]): labels: 'server' is set by podod itself"),
    (GOOD + GOOD.replace("rules:\n", ""),
     "alerts.yaml: rule 'QueueTooLarge' (rules[1]): name: is already used by rules[0] in "
     "alerts.yaml"),
    ("rules:\n  - just a string\n", "alerts.yaml: rules[0]: must be a mapping"),
    ("rulez: []\n", "alerts.yaml: rulez: unknown key"),
    ("- a\n- b\n", "alerts.yaml: a rule file must be a mapping with a 'rules:' list"),
    ("rules: [\n", "alerts.yaml: YAML syntax error at line 2, column 1"),
    ("inhibit:\n  - {target: {severity: warning}}\n",
     "alerts.yaml: inhibit[0]: source: is required"),
])
def test_bad_rule_file_is_one_sentence(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_rule_files([write(tmp_path, text)])
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_default_rules_apply_and_a_rule_file_replaces_one_by_name(tmp_path: Path) -> None:
    defaults = parse_config({}, source="podod.yaml").alerts.ruleset
    assert len(defaults.rules) == 24 and len(defaults.inhibit) == 3
    mine = write(tmp_path, GOOD.replace("threshold: 500", "threshold: 50"))
    config = parse_config({"alerts": {"rule_files": [str(mine)]}}, source="podod.yaml")
    rules = config.alerts.ruleset.by_name()
    assert len(rules) == 24 and rules["QueueTooLarge"].threshold == 50
    assert rules["QueueTooLarge"].source == "alerts.yaml"
    only = parse_config({"alerts": {"rule_files": [str(mine)], "default_rules": False}},
                        source="podod.yaml")
    assert [r.name for r in only.alerts.ruleset.rules] == ["QueueTooLarge"]


def test_missing_rule_file_and_globs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_rule_files([tmp_path / "nope.yaml"])
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: no such rule file"
    (tmp_path / "rules.d").mkdir()
    write(tmp_path / "rules.d", GOOD, "a.yaml")
    write(tmp_path / "rules.d", GOOD.replace("QueueTooLarge", "Other"), "b.yaml")
    ruleset = load_rule_files([tmp_path / "rules.d" / "*.yaml", tmp_path / "none*.yaml"])
    assert [r.name for r in ruleset.rules] == ["QueueTooLarge", "Other"]


def test_thresholds_people_write() -> None:
    assert parse_threshold("90%") == pytest.approx(0.9)
    assert parse_threshold("14d") == 14 * 86400
    assert parse_threshold("10GiB") == 10 * 1024**3
    assert parse_threshold("500MB") == 500e6
    assert parse_threshold(3) == 3.0
    with pytest.raises(ValueError):
        parse_threshold(True)


def test_config_check_validates_rule_files(tmp_path: Path) -> None:
    rules = write(tmp_path, GOOD.replace("for: 10m", "for: eventually"))
    config = write(tmp_path, f"alerts:\n  rule_files: [{rules.name}]\n", "podod.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    run = subprocess.run([sys.executable, "-m", "podod.cli", "check-config", "-c",
                          str(config)], capture_output=True, text=True, env=env)
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "alerts.yaml: rule 'QueueTooLarge' (rules[0]): for: 'eventually' is not a duration "
        "such as 30s, 5m, 2h or 7d")
    rules.write_text(GOOD)
    assert load_config(config).alerts.ruleset.by_name()["QueueTooLarge"].for_ == 600


def test_config_check_knows_what_the_plugins_declare(tmp_path: Path) -> None:
    """check-config says what a start would: an unknown notifier type is an error (podod run
    refuses it), a rule on a series no collector declares a warning (it can never fire)."""
    rules = write(tmp_path, GOOD.replace("postfix_queue_messages", "postfix_queue_mesages"))
    config = write(tmp_path, f"plugins: {{dirs: ['{REPO / 'plugins'}'], entry_points: false}}\n"
                   f"alerts:\n  rule_files: [{rules.name}]\n  notifiers:\n"
                   "    - {type: pagerduty, url: 'http://127.0.0.1:1'}\n", "podod.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "podod.cli", "check-config", "-c",
                               str(config)], capture_output=True, text=True, env=env)

    run = check()
    assert run.returncode == 2
    assert run.stderr.strip() == ("podod.yaml: alerts.notifiers[0].type: there is no notifier "
                                  "type 'pagerduty' (known: alertmanager, email, matrix, "
                                  "webhook)")
    config.write_text(config.read_text().replace("pagerduty", "webhook"))
    run = check()
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == [
        "warning: alert rule QueueTooLarge (alerts.yaml) watches postfix_queue_mesages, which "
        "no collector declares (a typo, or a plugin that is not loaded?)"]


@pytest.mark.parametrize(("section", "message"), [
    ({"notifiers": [{"type": "webhook", "url": "ftp://x"}]},
     "podod.yaml: alerts.notifiers[0].url: must be an http:// or https:// URL"),
    ({"notifiers": [{"type": "webhook"}]},
     "podod.yaml: alerts.notifiers[0]: url (or url_file) is required"),
    ({"notifiers": [{"type": "email", "to": ["ops@example.org"]}]},
     "podod.yaml: alerts.notifiers[0].from: is required"),
    ({"notifiers": [{"type": "email", "from": "podod@example.org", "to": ["not-an-address"]}]},
     "podod.yaml: alerts.notifiers[0].to: 'not-an-address' is not a mail address"),
    ({"notifiers": [{"type": "email", "from": "p@example.org", "to": ["o@example.org"],
                     "tls": "maybe"}]},
     "podod.yaml: alerts.notifiers[0].tls: must be one of 'auto', 'starttls', 'implicit' or "
     "'none'"),
    ({"notifiers": [{"type": "matrix", "homeserver": "http://127.0.0.1:8008",
                     "user_id": "podod", "room_id": "!r:localhost", "access_token": "x"}]},
     "podod.yaml: alerts.notifiers[0].user_id: must be a Matrix user id"),
    ({"notifiers": [{"type": "alertmanager", "url": "http://127.0.0.1:9093",
                     "resend_interval": "often"}]},
     "podod.yaml: alerts.notifiers[0].resend_interval: 'often' is not a duration"),
    ({"notifiers": [{"type": "webhook", "url": "http://a", "bogus": 1}]},
     "podod.yaml: alerts.notifiers[0].bogus: unknown key"),
    ({"notifiers": [{"url": "http://a"}]}, "podod.yaml: alerts.notifiers[0].type: is required"),
    ({"notifiers": [{"type": "webhook", "url": "http://a"},
                    {"type": "webhook", "url": "http://b"}]},
     "podod.yaml: alerts.notifiers: two notifiers are called 'webhook'"),
    ({"notifiers": [{"type": "webhook", "url": "http://a", "match": {"severity": "=~("}}]},
     "podod.yaml: alerts.notifiers[0].match: severity: '(' is not a valid regular expression"),
    ({"maintenance": [{"name": "w", "schedule": "0 3 * *", "duration": "2h"}]},
     "podod.yaml: alerts.maintenance[0].schedule: '0 3 * *' is not a crontab schedule"),
    ({"maintenance": [{"name": "w", "schedule": "0 3 * * sun", "duration": "2h",
                       "timezone": "Mars/Olympus"}]},
     "podod.yaml: alerts.maintenance[0].timezone: 'Mars/Olympus' is not a time zone"),
    ({"maintenance": [{"name": "w", "schedule": "0 3 * * sun", "duration": 0}]},
     "podod.yaml: alerts.maintenance[0].duration: must be longer than 0s"),
    ({"group_by": ["server name"]},
     "podod.yaml: alerts.group_by: 'server name' is not a label name"),
])
def test_bad_alert_settings_name_the_key(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"alerts": section}, source="podod.yaml")
    assert str(info.value).startswith(message), str(info.value)


def test_secrets_come_from_files_and_stay_out_of_reprs(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cr3t-token\n")
    (tmp_path / "pw").write_text("smtp-pw\n")
    config = parse_config({"alerts": {"notifiers": [
        {"type": "webhook", "url": "http://127.0.0.1:1/hook", "token_file": "token"},
        {"type": "email", "from": "p@example.org", "to": ["o@example.org"],
         "username": "podod", "password_file": "pw"},
        {"type": "matrix", "homeserver": "http://127.0.0.1:8008",
         "user_id": "@podod:localhost", "room_id": "!abc:localhost",
         "access_token_file": "token"},
    ]}}, source="podod.yaml", base_dir=tmp_path)
    webhook, email, matrix = config.alerts.notifiers
    assert webhook.token.get_secret_value() == "s3cr3t-token"  # type: ignore[union-attr]
    assert email.password.get_secret_value() == "smtp-pw"  # type: ignore[union-attr]
    assert matrix.access_token.get_secret_value() == "s3cr3t-token"  # type: ignore[union-attr]
    assert "s3cr3t" not in repr(config) and "smtp-pw" not in repr(config)


def test_crontab_weekdays_mean_what_cron_means() -> None:
    assert crontab_weekdays("0") == "sun"
    assert crontab_weekdays("7") == "sun"
    assert crontab_weekdays("1-5") == "mon,tue,wed,thu,fri"
    assert crontab_weekdays("*/2") == "sun,tue,thu,sat"
    assert crontab_weekdays("sat,sun") == "sat,sun"
    assert crontab_weekdays("*") == "*"
    trigger = cron_trigger("30 2 * * 0", "Europe/Berlin")
    fire = trigger.get_next_fire_time(None, datetime(2024, 3, 4, tzinfo=UTC))
    assert fire is not None and fire.strftime("%a %H:%M %Z") == "Sun 02:30 CET"
    with pytest.raises(ValueError, match="out of range"):
        crontab_weekdays("8")


def test_matchers_and_templates() -> None:
    m = parse_text("severity=~warning|critical")
    assert m.matches({"severity": "warning"}) and not m.matches({"severity": "info"})
    assert parse_text("server!=mx1").matches({"server": "mx2"})
    assert parse_text('queue="deferred"').value == "deferred"
    with pytest.raises(MatcherError, match="is not a matcher"):
        parse_text("just words")
    template = compile_template("{{ value | duration }} {{ size | bytes }} {{ r | percent }} "
                                "{{ n | humanize }} [{{ missing }}]")
    assert template.render(value=93784, size=1536, r=0.9321, n=12345) == \
        "1d2h 1.5 KiB 93.2% 12.3k []"
    assert template.render(value="x", size=None, r=None, n=None).startswith("x None")
    sandboxed = compile_template("{{ ''.__class__.__mro__ }}")
    assert "template error" in sandboxed.render()


def test_docs_list_the_default_pack_and_every_alerts_command() -> None:
    from podod.alerts import docs
    from podod.plugins import load_builtins

    assert docs.main(["--check", str(REPO / "docs" / "alerts.md")]) == 0
    text = (REPO / "docs" / "alerts.md").read_text()
    registry = Registry()
    load_builtins(registry, ["podod.alerts.commands"])
    documented = set(re.findall(r"^\| `(alerts [a-z]+)", text, re.M))
    assert documented == {n for n in registry.commands if n.startswith("alerts ")}


def test_the_documented_webhook_template_renders_json() -> None:
    import json

    from podod.alerts.notifiers.webhook import WebhookNotifier
    from podod.alerts.notify import AlertSnapshot, Notification
    from podod.alerts.settings import WebhookNotifierSettings

    text = (REPO / "docs" / "alerts.md").read_text()
    template = re.search(r"`template: '(.*)'`", text)
    assert template
    hook = WebhookNotifier(WebhookNotifierSettings(type="webhook", url="http://127.0.0.1:1/",
                                                   template=template.group(1)))
    snap = AlertSnapshot("ab", "firing", {"alertname": "DiskFull", "server": "mx1"},
                         {"summary": "/ is \"full\""}, 0.0, None, 1.0)
    body = json.loads(hook.body(Notification("w", "g", {"server": "mx1"}, [snap])))
    assert body == {"text": 'mx1: DiskFull\n/ is "full"'}


def test_a_config_with_rules_can_be_deep_copied() -> None:
    config = parse_config({}, source="podod.yaml")
    copy = config.model_copy(deep=True)
    assert [r.name for r in copy.alerts.ruleset.rules] == \
        [r.name for r in config.alerts.ruleset.rules]
    assert copy.alerts.ruleset.rules[0].summary.render(server="mx1") == \
        "mx1: podod cannot reach the server over SSH"
