"""The alert engine with a hand-moved clock: states, for/keep_firing_for, grouping and its
timing, inhibition, silences, maintenance windows, counters, ratios, stale data, restarts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from podod.alerts.clock import ManualClock
from podod.alerts.engine import AlertEngine
from podod.alerts.matchers import Matcher
from podod.alerts.notify import Notification, NotifierQueue, NotifyError
from podod.alerts.settings import AlertSettings, PluginNotifierSettings
from podod.alerts.silences import Silence
from podod.monitor.model import Sample
from podod.state import StateDB

START = datetime(2024, 3, 4, 9, 0, tzinfo=UTC).timestamp()  # a Monday, 09:00 UTC

RULES = {
    "rules": [
        {"name": "ServerUnreachable", "series": "ssh_connected", "op": "==", "threshold": 0,
         "for": "2m", "severity": "critical", "summary": "{{ server }} unreachable"},
        {"name": "ServiceDown", "series": "service_up", "op": "==", "threshold": 0,
         "for": "1m", "severity": "critical",
         "summary": "{{ server }}: {{ labels.service }} down"},
        {"name": "QueueTooLarge", "series": "postfix_queue_messages",
         "match": {"queue": "deferred"}, "op": ">", "threshold": 100, "for": "5m",
         "summary": "{{ value | round | int }} deferred"},
        {"name": "LoadHigh", "series": "node_load1_per_cpu", "op": ">", "threshold": 2,
         "for": "1m", "keep_firing_for": "5m", "summary": "load {{ value }}"},
        {"name": "AuthBurst", "series": "dovecot_auth_failures_total", "increase": "10m",
         "aggregate": "sum", "op": ">", "threshold": 50, "summary": "{{ value }} failures"},
        {"name": "BounceRate", "series": "postfix_deliveries_total",
         "match": {"status": "bounced"}, "increase": "1h", "aggregate": "sum",
         "divided_by": {"series": "postfix_deliveries_total", "min": 20},
         "op": ">", "threshold": "10%", "summary": "{{ value | percent }} bounced"},
        {"name": "CertExpiring", "series": "tls_cert_not_after_timestamp_seconds",
         "relative_to_now": True, "op": "<", "threshold": "14d",
         "summary": "{{ labels.endpoint }} expires in {{ value | duration }}"},
        {"name": "DiskFull", "series": "node_filesystem_used_ratio", "op": ">",
         "threshold": "90%", "summary": "{{ labels.mountpoint }} {{ value | percent }}"},
    ],
    "inhibit": [{"source": {"alertname": "ServerUnreachable"}, "equal": ["server"]}],
}


class Recorder:
    """A notifier that keeps what it is sent (and can be told to fail)."""

    grouped = True

    def __init__(self, name: str = "rec", grouped: bool = True) -> None:
        self.name = name
        self.grouped = grouped
        self.sent: list[Notification] = []
        self.failures = 0

    async def send(self, notification: Notification) -> None:
        if self.failures:
            self.failures -= 1
            raise NotifyError("receiver down")
        self.sent.append(notification)

    async def close(self) -> None:
        return None


class Harness:
    def __init__(self, tmp: Path, clock: ManualClock, state: StateDB | None,
                 **settings: Any) -> None:
        rules = tmp / "rules.yaml"
        if not rules.exists():
            rules.write_text(yaml.safe_dump(RULES))
        data = {"rule_files": [str(rules)], "default_rules": False, "group_wait": "30s",
                "group_interval": "5m", "repeat_interval": "4h", "resolve_wait": "10s",
                "evaluation_interval": "10s", **settings}
        self.settings = AlertSettings.model_validate(data)
        self.clock = clock
        self.engine = AlertEngine(self.settings, state, clock=clock,
                                  stale_after=lambda collector: 90.0)
        self.rec = Recorder()
        self.engine.queues = {"rec": self.queue(self.rec)}
        self.held: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[float, str]] = {}

    def queue(self, notifier: Recorder, **kw: Any) -> NotifierQueue:
        options = {"retry_initial": 0.01, "retry_max": 0.02, "give_up_after": 5, **kw}
        settings = PluginNotifierSettings(type="recorder", **options)
        queue = NotifierQueue(notifier, settings, self.engine.record_outcome)
        queue.start()
        return queue

    def feed(self, server: str, series: str, value: float, collector: str = "c",
             **labels: str) -> None:
        """One sample now; it is delivered again at every step (a collector's next runs)
        until ``drop`` or ``step(refresh=False)``."""
        kind = "counter" if series.endswith("_total") else "gauge"
        key = (server, series, tuple(sorted(labels.items())))
        self.held[key] = (value, collector)
        self.engine.ingest([Sample(series, server, value, Sample.labels_of(**labels), kind,
                                   self.clock.now())], collector, server)

    def drop(self, server: str, series: str, **labels: str) -> None:
        self.held.pop((server, series, tuple(sorted(labels.items()))), None)

    async def step(self, seconds: float = 0.0, *, evaluate: bool = True,
                   refresh: bool = True) -> list[Notification]:
        """Move the clock, run one tick, wait for the queues; the new notifications."""
        before = len(self.rec.sent)
        self.clock.advance(seconds)
        if refresh:  # each collector delivers all its series for a server in one event
            runs: dict[tuple[str, str], list[Sample]] = {}
            for (server, series, labels), (value, collector) in self.held.items():
                kind = "counter" if series.endswith("_total") else "gauge"
                runs.setdefault((collector, server), []).append(
                    Sample(series, server, value, labels, kind, self.clock.now()))
            for (collector, server), samples in runs.items():
                self.engine.ingest(samples, collector, server)
        if evaluate:
            self.engine.evaluate_all()
        self.engine.expire_silences()
        self.engine.reminders_due()
        self.engine.flush_due()
        self.engine.resend_due()
        for queue in self.engine.queues.values():
            await queue.idle()
        await self.engine.persist()
        return self.rec.sent[before:]

    def states(self) -> dict[str, str]:
        return {f"{a.rule}@{a.server}": a.state for a in self.engine.alerts.values()}

    async def close(self) -> None:
        for queue in self.engine.queues.values():
            await queue.close()


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path, ManualClock(START), None)
    yield harness
    await harness.close()


async def test_pending_then_firing_then_resolved_promptly(h: Harness) -> None:
    h.feed("mx1", "service_up", 0, service="postfix")
    assert h.states() == {"ServiceDown@mx1": "pending"}
    assert await h.step(30) == []
    h.feed("mx1", "service_up", 0, service="postfix")
    # firing now: for 1m elapsed. As in Alertmanager, an alert active for longer than
    # group_wait does not wait again: the new group is flushed at once.
    sent = await h.step(31)
    assert h.states() == {"ServiceDown@mx1": "firing"}
    assert len(sent) == 1 and sent[0].status == "firing"
    payload = sent[0].alertmanager()
    assert payload["version"] == "4" and payload["groupLabels"] == {"server": "mx1"}
    alert = payload["alerts"][0]
    assert alert["labels"] == {"alertname": "ServiceDown", "server": "mx1",
                               "severity": "critical", "service": "postfix"}
    assert alert["annotations"]["summary"] == "mx1: postfix down"
    assert alert["startsAt"] == "2024-03-04T09:00:00.000Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    # it clears: the resolution goes out resolve_wait later, not a group_interval later
    h.feed("mx1", "service_up", 1, service="postfix")
    assert h.states() == {}
    assert await h.step(5, evaluate=False) == []
    sent = await h.step(5, evaluate=False)
    assert len(sent) == 1 and sent[0].status == "resolved"
    assert sent[0].alerts[0].status == "resolved"
    assert sent[0].alertmanager()["alerts"][0]["endsAt"].startswith("2024-03-04T09:01:0")
    assert h.engine.groups == {}


async def test_pending_that_clears_never_notifies(h: Harness) -> None:
    h.feed("mx1", "service_up", 0, service="dovecot")
    await h.step(30)
    h.feed("mx1", "service_up", 1, service="dovecot")
    assert h.states() == {}
    assert await h.step(600) == []


async def test_keep_firing_for_holds_a_flapping_alert(h: Harness) -> None:
    h.feed("mx1", "node_load1_per_cpu", 3)
    assert len(await h.step(61)) == 1
    assert h.states() == {"LoadHigh@mx1": "firing"}
    for _ in range(4):  # flapping below and above for 4 minutes
        h.feed("mx1", "node_load1_per_cpu", 1)
        assert h.states() == {"LoadHigh@mx1": "firing"}
        await h.step(30)
        h.feed("mx1", "node_load1_per_cpu", 4)
        await h.step(30)
    h.feed("mx1", "node_load1_per_cpu", 1)
    await h.step(290)
    h.feed("mx1", "node_load1_per_cpu", 1)
    assert h.states() == {"LoadHigh@mx1": "firing"}  # 290s < keep_firing_for 5m
    h.clock.advance(11)
    h.feed("mx1", "node_load1_per_cpu", 1)
    assert h.states() == {}
    sent = await h.step(10, evaluate=False)
    assert [n.status for n in sent] == ["resolved"]
    assert len(h.rec.sent) == 2  # one firing, one resolved: no flapping noise


async def test_grouping_one_outage_one_message_then_group_interval_and_repeat(
        h: Harness) -> None:
    for service in ("postfix", "dovecot", "sogo"):
        h.feed("mx1", "service_up", 0, service=service)
    h.feed("mx2", "service_up", 0, service="postfix")
    sent = await h.step(61)
    by_server = {n.group_labels["server"]: n for n in sent}
    assert sorted(by_server) == ["mx1", "mx2"]  # one message per server, not four
    assert len(by_server["mx1"].alerts) == 3
    assert by_server["mx1"].title == "mx1: 3 × ServiceDown"
    # a new alert in a notified group waits for group_interval (5m) since the last message
    h.feed("mx1", "node_filesystem_used_ratio", 0.95, mountpoint="/var")
    assert await h.step(60) == []
    sent = await h.step(185)
    assert sent == []
    sent = await h.step(60)
    assert len(sent) == 1 and len(sent[0].alerts) == 4
    # nothing changes: each group is repeated after repeat_interval (4h), once
    last = {n.group_labels["server"]: n.created for n in h.rec.sent}
    repeats: list[tuple[str, float]] = []
    for _ in range(50):
        repeats += [(n.group_labels["server"], h.clock.now()) for n in await h.step(300)]
    assert sorted(server for server, _ in repeats) == ["mx1", "mx2"]
    assert all(n.status == "firing" for n in h.rec.sent)
    assert len(last) == 2


async def test_inhibition_unreachable_mutes_the_servers_other_alerts(h: Harness) -> None:
    h.feed("mx1", "ssh_connected", 0)
    h.feed("mx1", "service_up", 0, service="postfix")
    h.feed("mx2", "service_up", 0, service="postfix")
    sent = await h.step(121)  # old alerts (for >= group_wait) are sent at once
    rules = {n.group_labels["server"]: sorted(a.rule for a in n.alerts) for n in sent}
    assert rules == {"mx1": ["ServerUnreachable"], "mx2": ["ServiceDown"]}
    listed = {f"{a['rule']}@{a['server']}": a["muted"] for a in h.engine.listing()}
    assert listed["ServiceDown@mx1"] == "inhibited by ServerUnreachable"
    assert listed["ServiceDown@mx2"] is None and listed["ServerUnreachable@mx1"] is None


async def test_silence_suppresses_notifications_not_evaluation(h: Harness) -> None:
    now = h.clock.now()
    silence = Silence.new("silence", (Matcher.make("alertname", "=", "DiskFull"),), now,
                          now + 3600, "resizing /var", "unix:root")
    h.engine.add_silence(silence)
    h.feed("mx1", "node_filesystem_used_ratio", 0.97, mountpoint="/var")
    h.feed("mx1", "node_filesystem_used_ratio", 0.97, mountpoint="/srv")
    assert await h.step(31) == []  # the silence matches the rule: both mount points
    assert h.states() == {"DiskFull@mx1": "firing"}
    assert all(a["muted"].startswith(f"silenced by {silence.id}") for a in h.engine.listing())
    # the reminder comes 15 minutes before the end, once
    sent = await h.step(44 * 60 - 31)
    assert sent == []
    sent = await h.step(60)
    assert [n.kind for n in sent] == ["reminder"]
    assert "ends in 15m" in sent[0].alerts[0].summary
    assert "DiskFull on mx1" in sent[0].alerts[0].annotations["description"]
    assert await h.step(60) == []
    # when it ends, what still fires is notified
    sent = await h.step(15 * 60)
    assert len(sent) == 1 and len(sent[0].alerts) == 2 and sent[0].status == "firing"


async def test_ending_a_silence_early_notifies_what_fires(h: Harness) -> None:
    now = h.clock.now()
    silence = Silence.new("maintenance", (Matcher.make("server", "=", "mx1"),), now,
                          now + 7200, "kernel update", "unix:root")
    h.engine.add_silence(silence)
    h.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/")
    assert await h.step(60) == []
    h.engine.end_silence(silence.id, "unix:root")
    sent = await h.step(1, evaluate=False)
    assert len(sent) == 1 and sent[0].alerts[0].rule == "DiskFull"


async def test_recurring_maintenance_window_in_its_time_zone(tmp_path: Path) -> None:
    # Mondays 10:00 in Berlin (09:00 UTC in March, winter time) for 1 hour.
    h = Harness(tmp_path, ManualClock(START), None, maintenance=[{
        "name": "patching", "schedule": "0 10 * * 1", "timezone": "Europe/Berlin",
        "duration": "1h", "servers": ["mx1"], "reason": "weekly updates"}])
    try:
        h.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/")
        h.feed("mx2", "node_filesystem_used_ratio", 0.99, mountpoint="/")
        sent = await h.step(31)
        assert [n.group_labels["server"] for n in sent] == ["mx2"]
        listed = {a["server"]: a["muted"] for a in h.engine.listing()}
        assert listed["mx1"] == "maintenance window patching until 2024-03-04 10:00 UTC"
        h.clock.set(datetime(2024, 3, 4, 10, 0, 1, tzinfo=UTC).timestamp())
        h.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/")
        h.feed("mx2", "node_filesystem_used_ratio", 0.99, mountpoint="/")
        sent = await h.step(0)
        assert [n.group_labels["server"] for n in sent] == ["mx1"]
        window = h.engine.active_windows()[0]
        assert window["active_until"] is None
        assert window["next_start"] == datetime(2024, 3, 11, 9, 0, tzinfo=UTC).timestamp()
    finally:
        await h.close()


async def test_counter_increase_handles_resets(h: Harness) -> None:
    total = 1000.0
    h.feed("mx1", "dovecot_auth_failures_total", total, protocol="imap")
    for _ in range(10):  # 3 failures a minute: 30 in 10 minutes, below 50
        total += 3
        await h.step(60)
        h.feed("mx1", "dovecot_auth_failures_total", total, protocol="imap")
    assert h.states() == {}
    # Dovecot reloads: the counter restarts from 0; a burst follows
    await h.step(60)
    h.feed("mx1", "dovecot_auth_failures_total", 5, protocol="imap")
    assert h.states() == {}  # a reset is not a negative rate, nor a huge one
    await h.step(60)
    h.feed("mx1", "dovecot_auth_failures_total", 80, protocol="imap")
    assert h.states() == {"AuthBurst@mx1": "firing"}
    alert = next(iter(h.engine.alerts.values()))
    assert 95 <= alert.value <= 115  # ~100 in the last 10 minutes, the reset included


async def test_ratio_with_a_minimum_volume(h: Harness) -> None:
    def feed(sent: float, bounced: float) -> None:
        h.feed("mx1", "postfix_deliveries_total", sent, transport="smtp", status="sent")
        h.feed("mx1", "postfix_deliveries_total", bounced, transport="smtp", status="bounced")

    feed(0, 0)
    await h.step(600)
    feed(5, 5)  # 50% bounced, but 10 deliveries is below min: no verdict
    assert h.states() == {}
    await h.step(600)
    feed(100, 30)  # 30 / 130 = 23%
    assert h.states() == {"BounceRate@mx1": "firing"}
    alert = next(iter(h.engine.alerts.values()))
    assert abs(alert.value - 30 / 130) < 0.01
    assert alert.labels == {"alertname": "BounceRate", "server": "mx1", "severity": "warning"}


async def test_relative_to_now_for_certificates(h: Harness) -> None:
    expires = h.clock.now() + 10 * 86400 + 3 * 3600
    h.feed("mx1", "tls_cert_not_after_timestamp_seconds", expires, endpoint="smtp")
    h.feed("mx1", "tls_cert_not_after_timestamp_seconds", h.clock.now() + 90 * 86400,
           endpoint="https")
    assert h.states() == {"CertExpiring@mx1": "firing"}
    alert = next(iter(h.engine.alerts.values()))
    assert alert.annotations["summary"] == "smtp expires in 10d3h"


async def test_stale_data_freezes_but_a_vanished_series_clears(h: Harness) -> None:
    h.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/a", collector="system")
    h.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/b", collector="system")
    await h.step(31)
    assert h.states() == {"DiskFull@mx1": "firing"}
    assert len(h.engine.alerts) == 2
    # the collector stops delivering for mx1 (failing): the alerts stay as they are
    await h.step(600, refresh=False)
    assert len(h.engine.alerts) == 2
    assert all(a["stale"] for a in h.engine.listing())
    # it delivers again, without /b (unmounted): /b is stale and its collector is alive,
    # so the series is gone and its alert clears; /a stays
    h.drop("mx1", "node_filesystem_used_ratio", mountpoint="/b")
    h.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/a", collector="system")
    assert [a.labels["mountpoint"] for a in h.engine.alerts.values()] == ["/a"]
    # a series that was fresh a moment ago clears once it is stale (3 intervals)
    h.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/c", collector="system")
    h.drop("mx1", "node_filesystem_used_ratio", mountpoint="/c")
    await h.step(60)
    assert len(h.engine.alerts) == 2
    await h.step(40)
    assert [a.labels["mountpoint"] for a in h.engine.alerts.values()] == ["/a"]


async def test_a_failing_notifier_retries_and_never_blocks(h: Harness) -> None:
    h.rec.failures = 2
    h.feed("mx1", "service_up", 0, service="postfix")
    sent = await h.step(61)
    assert len(sent) == 1 and h.engine.queues["rec"].sent == 1

    class Hanging(Recorder):
        async def send(self, notification: Notification) -> None:
            await asyncio.sleep(3600)

    hanging = Hanging("hang")
    h.engine.queues["hang"] = h.queue(hanging, timeout=0.05, give_up_after=0.2)
    h.feed("mx2", "service_up", 0, service="postfix")
    h.clock.advance(61)
    h.engine.ingest([], "c", "mx2")  # evaluation returns at once; the queue keeps the wait
    h.feed("mx2", "service_up", 0, service="postfix")
    h.clock.advance(30)
    assert h.engine.flush_due() == 2
    assert await h.engine.queues["hang"].idle(5)
    assert h.engine.queues["hang"].failed == 1


async def test_alertmanager_style_forwarding_is_alert_level(h: Harness) -> None:
    fwd = Recorder("am", grouped=False)
    h.engine.queues["am"] = h.queue(fwd, resend_interval=60)
    h.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/")
    await h.engine.queues["am"].idle()
    assert [a.status for n in fwd.sent for a in n.alerts] == ["firing"]  # at once
    await h.step(60)
    assert len(fwd.sent) == 2  # re-sent every resend_interval
    h.feed("mx1", "node_filesystem_used_ratio", 0.5, mountpoint="/")
    await h.engine.queues["am"].idle()
    assert fwd.sent[-1].alerts[0].status == "resolved"


async def test_routes_send_only_matching_alerts(h: Harness) -> None:
    crit = Recorder("crit")
    h.engine.queues["crit"] = h.queue(crit, match={"severity": "critical"})
    h.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/")
    h.feed("mx1", "service_up", 0, service="postfix")
    await h.step(61)
    assert sorted(a.rule for a in h.rec.sent[0].alerts) == ["DiskFull", "ServiceDown"]
    assert [a.rule for a in crit.sent[0].alerts] == ["ServiceDown"]


async def test_restart_keeps_firing_without_duplicate(tmp_path: Path) -> None:
    clock = ManualClock(START)
    state = StateDB(tmp_path / "state.db")
    await state.open()
    from podod.alerts import store

    await state.migrate("alerts", store.MIGRATIONS)
    h = Harness(tmp_path, clock, state)
    h.feed("mx1", "ssh_connected", 0)
    sent = await h.step(121)
    assert len(sent) == 1
    h.feed("mx1", "service_up", 0, service="postfix")  # pending at the restart
    await h.engine.persist()
    await h.close()
    # podod restarts an hour later; the server is still unreachable
    clock.advance(3600)
    h2 = Harness(tmp_path, clock, state)
    assert await h2.engine.restore() == 2
    assert h2.states() == {"ServerUnreachable@mx1": "firing", "ServiceDown@mx1": "pending"}
    h2.feed("mx1", "ssh_connected", 0)
    assert await h2.step(1) == []
    assert await h2.step(600) == []
    # it comes back: the resolution is sent (the log survived the restart)
    h2.feed("mx1", "ssh_connected", 1)
    sent = await h2.step(10, evaluate=False)
    assert [n.status for n in sent] == ["resolved"]
    await h2.close()
    rows = await state.run(store.history, 0, 100, None, None)
    events = [r["event"] for r in reversed(rows)]
    assert events == ["firing", "notified", "resolved", "notified"]
    await state.close()


async def test_restart_with_a_pending_resolution(tmp_path: Path) -> None:
    clock = ManualClock(START)
    state = StateDB(tmp_path / "state.db")
    await state.open()
    from podod.alerts import store

    await state.migrate("alerts", store.MIGRATIONS)
    h = Harness(tmp_path, clock, state)
    h.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/")
    assert len(await h.step(31)) == 1
    h.feed("mx1", "node_filesystem_used_ratio", 0.5, mountpoint="/")
    assert await h.step(1, evaluate=False) == []  # resolved, not yet sent (resolve_wait)
    await h.close()
    h2 = Harness(tmp_path, clock, state)
    await h2.engine.restore()
    sent = await h2.step(10, evaluate=False)
    assert [n.status for n in sent] == ["resolved"]
    await h2.close()
    await state.close()


async def test_rules_removed_on_reload_resolve_their_alerts(h: Harness,
                                                            tmp_path: Path) -> None:
    h.feed("mx1", "node_filesystem_used_ratio", 0.99, mountpoint="/")
    assert len(await h.step(31)) == 1
    rules = dict(RULES)
    rules["rules"] = [r for r in RULES["rules"] if r["name"] != "DiskFull"]  # type: ignore[index]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    settings = AlertSettings.model_validate({"rule_files": [str(tmp_path / "rules.yaml")],
                                             "default_rules": False})
    h.engine.configure(settings, settings.ruleset)
    assert h.states() == {}
    sent = await h.step(10, evaluate=False)
    assert [n.status for n in sent] == ["resolved"]


def test_payload_is_json_serialisable() -> None:
    from podod.alerts.notify import AlertSnapshot

    snap = AlertSnapshot("ab", "firing", {"alertname": "X", "server": "mx1"},
                         {"summary": "s"}, START, None, 1.0)
    note = Notification("webhook", '{server="mx1"}', {"server": "mx1"}, [snap])
    assert json.loads(json.dumps(note.alertmanager()))["groupKey"] == '{}:{server="mx1"}'


async def test_a_reminder_is_sent_once_even_across_a_restart(tmp_path: Path) -> None:
    from podod.alerts import store

    clock = ManualClock(START)
    state = StateDB(tmp_path / "state.db")
    await state.open()
    await state.migrate("alerts", store.MIGRATIONS)
    h = Harness(tmp_path, clock, state)
    now = clock.now()
    silence = Silence.new("silence", (Matcher.make("server", "=", "mx1"),), now, now + 3600,
                          "moving racks", "unix:root")
    await state.run(store.insert_silence, silence.row())
    h.engine.add_silence(silence)
    sent = await h.step(2700)
    assert [n.kind for n in sent] == ["reminder"]
    await h.close()
    h2 = Harness(tmp_path, clock, state)
    await h2.engine.restore()
    assert h2.engine.silences[silence.id].reminded
    assert await h2.step(60) == []
    await h2.close()
    await state.close()


async def test_alerts_of_servers_no_longer_managed_resolve_when_stale(h: Harness) -> None:
    h.feed("gone", "node_filesystem_used_ratio", 0.99, mountpoint="/")
    h.feed("kept", "node_filesystem_used_ratio", 0.99, mountpoint="/")
    await h.step(31)
    assert h.engine.resolve_unknown({"kept"}) == 0  # still fresh: not yet
    await h.step(100, refresh=False)
    assert h.engine.resolve_unknown({"kept"}) == 1
    assert h.states() == {"DiskFull@kept": "firing"}


async def test_a_counter_alert_survives_a_restart_until_its_rate_is_known(
        tmp_path: Path) -> None:
    from podod.alerts import store

    clock = ManualClock(START)
    state = StateDB(tmp_path / "state.db")
    await state.open()
    await state.migrate("alerts", store.MIGRATIONS)
    h = Harness(tmp_path, clock, state)
    h.feed("mx1", "dovecot_auth_failures_total", 0, protocol="imap")
    await h.step(60)
    h.feed("mx1", "dovecot_auth_failures_total", 500, protocol="imap")
    assert len(await h.step(31)) == 1
    await h.close()
    h2 = Harness(tmp_path, clock, state)  # restarted: no counter history
    await h2.engine.restore()
    h2.feed("mx1", "dovecot_auth_failures_total", 510, protocol="imap")
    assert h2.states() == {"AuthBurst@mx1": "firing"}  # one reading decides nothing
    await h2.step(60)
    h2.feed("mx1", "dovecot_auth_failures_total", 511, protocol="imap")
    assert h2.states() == {}  # 1 failure a minute since: resolved
    await h2.close()
    await state.close()


async def test_history_is_pruned_in_steps(tmp_path: Path) -> None:
    from podod.alerts import store
    from podod.alerts.store import HistoryRow

    state = StateDB(tmp_path / "state.db")
    await state.open()
    await state.migrate("alerts", store.MIGRATIONS)
    old = [HistoryRow(START - 100 * 86400, "firing", "R", "mx1", "f", "warning", 1.0, "")
           for _ in range(store.PRUNE_STEP + 10)]
    new = [HistoryRow(START, "firing", "R", "mx1", "f", "warning", 1.0, "")]
    await state.run(store.save, [], [], [], [], old + new)
    cutoff = START - 90 * 86400
    assert await state.run(store.prune, cutoff) == store.PRUNE_STEP
    assert await state.run(store.prune, cutoff) == 10
    assert len(await state.run(store.history, 0, 100, None, None)) == 1
    await state.close()


async def test_default_pack_an_old_message_retried_is_one_alert_that_stays(
        tmp_path: Path) -> None:
    """A deferred message is moved to the active queue for every retry and back: the
    default QueueMessageTooOld must stay one firing alert through that, not resolve and fire
    again each time the collector catches the message in the other queue."""
    pack = Path(__file__).resolve().parents[2] / "config" / "alerts.example.yaml"
    (tmp_path / "rules.yaml").write_text(pack.read_text())
    h = Harness(tmp_path, ManualClock(START), None)
    old = START - 7 * 3600.0  # arrived seven hours ago

    def queues(where: str) -> None:  # one run of the queue collector: all five at once
        now = h.clock.now()
        h.engine.ingest([Sample("postfix_queue_oldest_message_age_seconds", "mx1",
                                now - old if queue == where else 0.0,
                                Sample.labels_of(queue=queue), "gauge", now)
                         for queue in ("active", "deferred", "hold", "incoming", "maildrop")],
                        "queue", "mx1")

    try:
        for _ in range(12):  # 6 minutes in the deferred queue, a run every 30 s
            queues("deferred")
            await h.step(30, refresh=False)
        assert [n.status for n in h.rec.sent] == ["firing"]
        for where in ("active", "deferred", "active", "deferred", "deferred", "active"):
            queues(where)  # retried: caught in the active queue, then back
            await h.step(30, refresh=False)
        await h.step(60, refresh=False)
        assert [n.status for n in h.rec.sent] == ["firing"]
        firing = [a for a in h.engine.alerts.values() if a.rule == "QueueMessageTooOld"]
        assert [a.state for a in firing] == ["firing"]
    finally:
        await h.close()


async def test_default_pack_a_queue_run_does_not_resolve_a_large_queue(tmp_path: Path) -> None:
    """A queue run moves the deferred mail that is due into the active queue: 600 waiting
    messages are still 600, whichever queue holds them."""
    pack = Path(__file__).resolve().parents[2] / "config" / "alerts.example.yaml"
    (tmp_path / "rules.yaml").write_text(pack.read_text())
    h = Harness(tmp_path, ManualClock(START), None)

    def queues(deferred: int, active: int) -> None:
        now = h.clock.now()
        counts = {"deferred": deferred, "active": active}
        h.engine.ingest([Sample("postfix_queue_messages", "mx1", float(counts.get(q, 0)),
                                Sample.labels_of(queue=q), "gauge", now)
                         for q in ("active", "deferred", "hold", "incoming", "maildrop")],
                        "queue", "mx1")

    try:
        for _ in range(22):
            queues(600, 0)
            await h.step(30, refresh=False)
        assert [n.status for n in h.rec.sent] == ["firing"]
        for deferred, active in ((350, 250), (600, 0), (100, 500), (590, 10)):
            queues(deferred, active)
            await h.step(30, refresh=False)
        await h.step(60, refresh=False)
        assert [n.status for n in h.rec.sent] == ["firing"]
        assert h.rec.sent[0].alerts[0].annotations["summary"] == (
            "mx1: 600 messages wait in the Postfix queue (deferred, active and incoming)")
    finally:
        await h.close()
