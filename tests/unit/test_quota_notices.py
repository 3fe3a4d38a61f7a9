"""Quota warnings without a database: the settings' bad input (one sentence each), the
bounded address listing, the per-domain samples, and when an owner is mailed again."""

from __future__ import annotations

from typing import Any

import pytest

from podod.alerts.quota import Reading, Usage, listing, plan_notices, samples_of
from podod.alerts.settings import AlertSettings, QuotaWarningSettings
from podod.config import parse_config
from podod.errors import ConfigError

MB = 1024 * 1024


def config_error(alerts: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config({"alerts": alerts}, source="podod.yaml")
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


EMAIL = {"type": "email", "name": "mail", "from": "podod@example.org",
         "to": ["ops@example.org"]}


@pytest.mark.parametrize(("quota_warnings", "expected"), [
    ({"thresholds": [80, 120]}, "120 is not a percentage from 1 to 100"),
    ({"thresholds": [0]}, "0 is not a percentage from 1 to 100"),
    ({"thresholds": []}, "needs at least one threshold"),
    ({"thresholds": [80, 80]}, "a threshold is listed twice"),
    ({"thresholds": [50, 60, 70, 80, 90, 95]}, "at most 5 thresholds"),
    ({"rearm_margin": -1}, "rearm_margin"),
    ({"list_addresses": 1000}, "list_addresses"),
    ({"owner_notice": {"enabled": True, "notifier": "nope"}},
     "'nope' is not an e-mail notifier in alerts.notifiers (mail)"),
    ({"owner_notice": {"subject": "{{ address "}}, "template syntax error"),
    ({"owner_notice": {"from": "not an address"}}, "is not a mail address"),
    ({"owner_notice": {"enabld": True}}, "enabld"),
])
def test_bad_settings_are_one_sentence(quota_warnings: dict[str, Any], expected: str) -> None:
    assert expected in config_error({"notifiers": [EMAIL], "quota_warnings": quota_warnings})


def test_owner_notice_needs_an_email_notifier_not_a_webhook() -> None:
    hook = {"type": "webhook", "name": "mail", "url": "http://127.0.0.1:1/x"}
    message = config_error({"notifiers": [hook],
                            "quota_warnings": {"owner_notice": {"enabled": True,
                                                                "notifier": "mail"}}})
    assert "not an e-mail notifier in alerts.notifiers (none is configured)" in message


def test_thresholds_are_sorted_and_the_defaults_are_80_and_95() -> None:
    assert QuotaWarningSettings().thresholds == [80, 95]
    assert QuotaWarningSettings(thresholds=[95, 80, 90]).thresholds == [80, 90, 95]


def usage(address: str, percent: float, domain: str = "a.example") -> Usage:
    return Usage(address, domain, "", int(10 * MB * percent / 100), 10 * MB)


def test_the_listing_is_bounded_fullest_first() -> None:
    usages = [usage(f"u{i}@a.example", 80 + i) for i in range(50)]
    text = listing(usages, 3)
    assert text == "u49@a.example (129%), u48@a.example (128%), u47@a.example (127%) and 47 more"
    assert listing(usages, 0) == "50 mailboxes"
    assert listing([], 3) == ""


def test_samples_are_per_domain_and_threshold_never_per_mailbox() -> None:
    reading = Reading({"a.example": 3, "b.example": 1000},
                      [usage("x@a.example", 81), usage("y@a.example", 97),
                       usage("z@b.example", 79.5, "b.example")])
    samples = samples_of(reading, QuotaWarningSettings(), 1.0)
    got = {(s.series, dict(s.labels).get("domain"), dict(s.labels).get("threshold")): s
           for s in samples}
    assert len(samples) == 6  # 2 domains x (mailboxes + 2 thresholds)
    assert got[("mail_quota_mailboxes", "b.example", None)].value == 1000
    assert got[("mail_quota_mailboxes_over", "a.example", "80")].value == 2
    assert got[("mail_quota_mailboxes_over", "a.example", "95")].value == 1
    assert got[("mail_quota_mailboxes_over", "b.example", "80")].value == 0
    assert got[("mail_quota_mailboxes_over", "a.example", "80")].note == \
        "y@a.example (97%), x@a.example (81%)"
    assert all("@" not in v for s in samples for _, v in s.labels)


def test_an_owner_is_mailed_once_per_crossing() -> None:
    settings = QuotaWarningSettings()
    forget, due = plan_notices([usage("a@x", 85)], set(), settings)
    assert forget == [] and [(d.usage.address, d.threshold, d.crossed) for d in due] == \
        [("a@x", 80, [80])]
    notified = {("a@x", 80)}
    assert plan_notices([usage("a@x", 86)], notified, settings) == ([], [])
    # still near the mark (within the re-arm margin): not re-armed, not mailed
    assert plan_notices([usage("a@x", 77)], notified, settings) == ([], [])
    forget, due = plan_notices([usage("a@x", 74)], notified, settings)
    assert forget == [("a@x", 80)] and due == []
    forget, due = plan_notices([], notified, settings)  # far under, or deleted
    assert forget == [("a@x", 80)] and due == []
    # straight to 96: one notice, naming 95, both marks recorded
    forget, due = plan_notices([usage("a@x", 96)], notified, settings)
    assert [(d.threshold, d.crossed) for d in due] == [(95, [80, 95])]
    # back to 85 from 96: 95 re-armed, 80 still notified: no mail
    forget, due = plan_notices([usage("a@x", 85)], {("a@x", 80), ("a@x", 95)}, settings)
    assert forget == [("a@x", 95)] and due == []


def test_the_default_notice_renders() -> None:
    from podod.alerts.quota import Due, context
    from podod.alerts.settings import DEFAULT_NOTICE_BODY, DEFAULT_NOTICE_SUBJECT
    from podod.alerts.templates import compile_template

    item = Due(Usage("a@x.example", "x.example", "Ann", 9 * MB, 10 * MB), 80, [80])
    assert compile_template(DEFAULT_NOTICE_SUBJECT).render(**context(item)) == \
        "Your mailbox a@x.example is 90% full"
    body = compile_template(DEFAULT_NOTICE_BODY).render(**context(item))
    assert body.startswith("Hello Ann,\n\nyour mailbox a@x.example uses 9.0 MiB of its "
                           "10.0 MiB quota (90%), more than 80 %.\n")


def test_the_default_rules_show_the_samples_note_and_follow_it() -> None:
    """The engine hands a sample's note to the rule's summary and renders again when only
    the note changed (the same count, other mailboxes)."""
    from podod.alerts.clock import ManualClock
    from podod.alerts.engine import AlertEngine
    from podod.monitor.model import Sample

    clock = ManualClock(1_700_000_000.0)
    engine = AlertEngine(AlertSettings.model_validate({}), None, clock=clock,
                         stale_after=lambda collector: 900.0)

    def feed(count: float, note: str) -> list[dict[str, Any]]:
        labels = Sample.labels_of(domain="a.example", threshold="80")
        engine.ingest([Sample("mail_quota_mailboxes_over", "podod", count, labels,
                              ts=clock.now(), note=note)], "mail_quota", "podod")
        return [a for a in engine.listing() if a["rule"] == "MailboxesNearQuota"]

    first = feed(1, "x@a.example (85%)")
    assert [a["summary"] for a in first] == [
        "a.example: 1 mailbox uses 80% of their quota or more: x@a.example (85%)"]
    clock.advance(60)
    assert feed(1, "y@a.example (90%)")[0]["summary"].endswith("y@a.example (90%)")
    clock.advance(60)
    assert feed(2, "y@a.example (90%), x@a.example (85%)")[0]["summary"].startswith(
        "a.example: 2 mailboxes use 80% of their quota or more: y@a.example")
    clock.advance(60)
    assert feed(0, "") == []
