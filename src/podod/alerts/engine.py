"""The alert engine: rules evaluated on every new sample and on a periodic tick; alerts move
inactive → pending → firing → resolved; firing alerts are grouped (per server by default) and
notified with Alertmanager's timing (``group_wait``, ``group_interval``, ``repeat_interval``);
silences, maintenance windows and inhibition mute notifications, never evaluation.

Decisions (docs/alerts.md explains them to users):

- **Data that stops.** A series whose collector has not delivered it for three of the
  collector's intervals is stale. When the collector still delivers for that server but no
  longer emits the series (a mount point went away), the condition counts as false. When the
  collector delivers nothing for that server at all (it fails, the server is unreachable),
  the alert is frozen as it is: an outage neither resolves nor raises service alerts.
- **Resolved promptly.** A resolved alert that a notifier was told about is sent
  ``resolve_wait`` (10 s) later, not at the next ``group_interval``; a few seconds let the
  other alerts that clear with it share the message.
- **Muted.** A silenced, inhibited or maintenance-covered alert is left out of notifications,
  including its resolution (as in Alertmanager); it still fires, shows in ``alerts list``
  and is recorded in the history.
- **Restarts.** Pending and firing alerts and what each notifier was last told are in
  state.db; after a restart a firing alert stays firing and is not notified again before
  its ``repeat_interval``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from podod.alerts import store
from podod.alerts.clock import Clock, SystemClock
from podod.alerts.matchers import Matcher, matches_all
from podod.alerts.notify import AlertSnapshot, Notification, NotifierQueue
from podod.alerts.rules import InhibitRule, Rule, RuleSet
from podod.alerts.silences import Silence
from podod.alerts.store import HistoryRow
from podod.monitor.model import LabelKey, Sample

if TYPE_CHECKING:
    from podod.alerts.maintenance import RecurringWindow
    from podod.alerts.settings import AlertSettings
    from podod.state import StateDB

log = logging.getLogger(__name__)

State = Literal["pending", "firing"]
RESOLVED = "#resolved"  # key suffix of a resolution not yet notified, in state.db
InstanceKey = tuple[tuple[str, str], ...]


class SeriesEntry:
    """The latest value of one series on one server, and, for counters that a rate or
    increase rule reads, a thinned history of reset-adjusted values."""

    __slots__ = ("collector", "hist", "labels", "lkey", "note", "offset", "raw", "sticky", "ts",
                 "value")

    def __init__(self, lkey: LabelKey, collector: str) -> None:
        self.lkey = lkey
        self.labels = dict(lkey)
        self.collector = collector
        self.value = 0.0
        self.raw = 0.0
        self.offset = 0.0
        self.ts = 0.0
        self.sticky = False
        self.note = ""
        self.hist: deque[tuple[float, float]] | None = None

    def update(self, value: float, ts: float, window: float | None) -> None:
        if window is not None:
            if self.hist is None:
                self.hist = deque()
            elif value < self.raw:  # a counter reset: it restarted from zero
                self.offset += self.raw
            adjusted = value + self.offset
            hist = self.hist
            if not hist or ts - hist[-1][0] >= window / 30.0:
                hist.append((ts, adjusted))
            horizon = ts - window * 1.1
            while len(hist) > 2 and hist[1][0] <= horizon:
                hist.popleft()
        self.raw = value
        self.value = value
        self.ts = ts

    def delta(self, window: float) -> tuple[float, float, bool] | None:
        """(increase, covered seconds, full window?) of the counter, resets handled."""
        hist = self.hist
        if not hist:
            return None
        now_ts = self.ts
        current = self.value + self.offset
        start = now_ts - window
        ref: tuple[float, float] | None = None
        for point in hist:
            if point[0] <= start:
                ref = point
            else:
                break
        full = ref is not None
        if ref is None:
            ref = hist[0]
        span = now_ts - ref[0]
        if span <= 0:
            return None
        return current - ref[1], span, full


@dataclass
class Alert:
    fingerprint: str
    rule: str
    server: str
    instance: InstanceKey
    labels: dict[str, str]
    state: State
    active_since: float
    last_true: float
    value: float
    fired_at: float | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    rendered_value: float | None = None
    rendered_note: str = ""
    seen: int = 0  # the evaluation that last found the condition true

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    def row(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "rule": self.rule, "server": self.server,
                "instance": json.dumps(self.instance), "labels": json.dumps(self.labels),
                "state": self.state, "active_since": self.active_since,
                "fired_at": self.fired_at, "resolved_at": None, "last_true": self.last_true,
                "value": self.value, "annotations": json.dumps(self.annotations)}

    def snapshot(self, generator_url: str = "") -> AlertSnapshot:
        return AlertSnapshot(self.fingerprint, "firing", dict(self.labels),
                             dict(self.annotations), self.active_since, None, self.value,
                             generator_url)


@dataclass
class NotifyLog:
    """What one notifier was last told about one group (Alertmanager's notification log)."""

    firing: set[str] = field(default_factory=set)
    resolved: set[str] = field(default_factory=set)
    sent_at: float = 0.0


@dataclass
class Group:
    key: str
    labels: dict[str, str]
    created: float
    next_flush: float
    members: set[str] = field(default_factory=set)  # fingerprints of firing alerts
    resolved: dict[str, AlertSnapshot] = field(default_factory=dict)
    logs: dict[str, NotifyLog] = field(default_factory=dict)
    flushed: bool = False


def fingerprint(labels: dict[str, str]) -> str:
    text = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def group_key(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


class _RuleIndex:
    """Per rule: matchers split into the ``server`` ones and the rest, and a cache of which
    label sets match (label sets are few and stable, samples are many)."""

    __slots__ = ("den_cache", "den_matchers", "label_matchers", "match_cache", "rule",
                 "server_cache", "server_matchers")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.server_matchers = tuple(m for m in rule.matchers if m.label == "server")
        self.label_matchers = tuple(m for m in rule.matchers if m.label != "server")
        self.match_cache: dict[LabelKey, bool] = {}
        self.server_cache: dict[str, bool] = {}
        d = rule.divided_by
        self.den_matchers = tuple(m for m in d.matchers if m.label != "server") if d else ()
        self.den_cache: dict[LabelKey, bool] = {}

    def server_ok(self, server: str) -> bool:
        ok = self.server_cache.get(server)
        if ok is None:
            ok = self.server_cache[server] = matches_all(self.server_matchers,
                                                         {"server": server})
        return ok


class AlertEngine:
    """Rules, alerts, groups, silences and the notifier queues; no I/O but state.db."""

    def __init__(self, settings: AlertSettings, state: StateDB | None = None, *,
                 clock: Clock | None = None,
                 stale_after: Callable[[str], float] | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self.state = state
        self._stale_after = stale_after or (lambda collector: 90.0)
        self._stale_cache: dict[str, float] = {}
        self.settings = settings
        self.rules: list[Rule] = []
        self._rule_index: dict[str, _RuleIndex] = {}
        self._by_series: dict[str, list[_RuleIndex]] = {}
        self._windows: dict[str, float] = {}
        self.inhibit: list[InhibitRule] = []
        self.windows: list[RecurringWindow] = []
        self.index: dict[str, dict[str, dict[LabelKey, SeriesEntry]]] = {}
        self.deliveries: dict[tuple[str, str], float] = {}
        self.alerts: dict[str, Alert] = {}  # by fingerprint
        self._by_rule_server: dict[tuple[str, str], dict[InstanceKey, Alert]] = {}
        self.groups: dict[str, Group] = {}
        self.silences: dict[str, Silence] = {}
        self.queues: dict[str, NotifierQueue] = {}
        self._last_resend: dict[str, float] = {}
        self._dirty: dict[str, dict[str, Any] | None] = {}
        self._dirty_logs: dict[tuple[str, str], NotifyLog] = {}
        self._dropped_groups: set[str] = set()
        self._history: list[HistoryRow] = []
        self._reminded: list[str] = []
        self.on_wakeup: Callable[[], None] | None = None
        # Told of every alert that fires or resolves (the component publishes AlertChanged).
        self.on_change: Callable[[str, Alert], None] | None = None
        self.evaluations = 0
        self._undecided = False
        self.configure(settings, settings.ruleset)

    # -- configuration ------------------------------------------------------------------------

    def configure(self, settings: AlertSettings, ruleset: RuleSet) -> None:
        """Apply (new) settings and rules; alerts of rules that no longer exist resolve."""
        self.settings = settings
        self.rules = list(ruleset.rules)
        self.inhibit = list(ruleset.inhibit)
        self.windows = []
        if settings.maintenance:  # APScheduler is imported only when windows are configured
            from podod.alerts.maintenance import RecurringWindow

            self.windows = [RecurringWindow.from_settings(w) for w in settings.maintenance]
        old = self._rule_index
        self._rule_index = {r.name: _RuleIndex(r) for r in self.rules}
        for name, idx in self._rule_index.items():
            previous = old.get(name)
            if previous is not None and previous.rule.matchers == idx.rule.matchers:
                idx.match_cache = previous.match_cache
        self._by_series = {}
        self._windows = {}
        for idx in self._rule_index.values():
            rule = idx.rule
            self._by_series.setdefault(rule.series, []).append(idx)
            if rule.divided_by is not None and rule.divided_by.series != rule.series:
                self._by_series.setdefault(rule.divided_by.series, []).append(idx)
            window = rule.window
            if window is not None:
                for series in (rule.series, rule.divided_by.series if rule.divided_by
                               else rule.series):
                    self._windows[series] = max(self._windows.get(series, 0.0), window)
        self._stale_cache = {}
        now = self.clock.now()
        for alert in list(self.alerts.values()):
            if alert.rule not in self._rule_index:
                self._clear(alert, now, force=True, detail="rule removed")

    def stale_after(self, collector: str) -> float:
        value = self._stale_cache.get(collector)
        if value is None:
            value = self._stale_cache[collector] = max(
                self._stale_after(collector), 3 * self.settings.evaluation_interval)
        return value

    # -- samples ------------------------------------------------------------------------------

    def ingest(self, samples: Iterable[Sample], collector: str, server: str | None = None,
               *, sticky: bool = False) -> None:
        """Take in one collector run's samples, then evaluate the rules they concern."""
        now = self.clock.now()
        touched: dict[str, set[str]] = {}
        index = self.index
        windows = self._windows
        by_series = self._by_series
        latest = 0.0
        for s in samples:
            if s.ts > latest:
                latest = s.ts
            if s.series not in by_series:
                continue  # no rule reads it: keep neither its value nor its history
            per_server = index.get(s.series)
            if per_server is None:
                per_server = index[s.series] = {}
            entries = per_server.get(s.server)
            if entries is None:
                entries = per_server[s.server] = {}
            entry = entries.get(s.labels)
            if entry is None:
                entry = entries[s.labels] = SeriesEntry(s.labels, collector)
            entry.collector = collector
            entry.sticky = sticky
            entry.note = s.note
            entry.update(float(s.value), s.ts, windows.get(s.series))
            touched.setdefault(s.server, set()).add(s.series)
        servers = set(touched)
        if server is not None:
            servers.add(server)
        for name in servers:
            key = (collector, name)
            self.deliveries[key] = max(self.deliveries.get(key, 0.0), latest or now)
        for name, series in touched.items():
            done: set[str] = set()
            for name_ in series:
                for idx in by_series.get(name_, ()):
                    if idx.rule.name not in done:
                        done.add(idx.rule.name)
                        self._evaluate(idx, name, now)

    def resolve_unknown(self, known: set[str]) -> int:
        """Resolve the alerts of servers podod no longer manages once their data is stale
        (a server removed from podod.yaml while podod was stopped)."""
        now = self.clock.now()
        gone = [a for a in self.alerts.values()
                if a.server not in known and not self._fresh(a, now)]
        for alert in gone:
            self._clear(alert, now, force=True, detail="server no longer managed")
        return len(gone)

    def forget_server(self, server: str) -> None:
        """A server removed from podod: its data goes, its alerts resolve."""
        for per_server in self.index.values():
            per_server.pop(server, None)
        for key in [k for k in self.deliveries if k[1] == server]:
            del self.deliveries[key]
        now = self.clock.now()
        for alert in [a for a in self.alerts.values() if a.server == server]:
            self._clear(alert, now, force=True, detail="server removed")

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate_all(self) -> int:
        """Evaluate every rule on every server that has data for it; returns the count."""
        now = self.clock.now()
        count = 0
        with_alerts: dict[str, set[str]] = {}
        for rule_name, server in self._by_rule_server:
            with_alerts.setdefault(rule_name, set()).add(server)
        for idx in self._rule_index.values():
            rule = idx.rule
            servers = set(self.index.get(rule.series, ()))
            if rule.divided_by is not None:
                servers.update(self.index.get(rule.divided_by.series, ()))
            servers.update(with_alerts.get(rule.name, ()))
            for server in servers:
                self._evaluate(idx, server, now)
                count += 1
        return count

    def _values(self, series: str, matchers: tuple[Matcher, ...], cache: dict[LabelKey, bool],
                server: str, now: float, rule: Rule) -> tuple[dict[LabelKey, float],
                                                              dict[LabelKey, dict[str, str]]]:
        """Fresh, matching values of ``series`` on ``server``, rates applied."""
        out: dict[LabelKey, float] = {}
        labels: dict[LabelKey, dict[str, str]] = {}
        per_server = self.index.get(series)
        entries = per_server.get(server) if per_server is not None else None
        if not entries:
            return out, labels
        window = rule.window
        stale = self.stale_after
        for lkey, entry in entries.items():
            ok = cache.get(lkey)
            if ok is None:
                ok = cache[lkey] = matches_all(matchers, entry.labels)
            if not ok:
                continue
            if not entry.sticky and entry.ts < now - stale(entry.collector):
                continue
            if window is not None:
                delta = entry.delta(window)
                if delta is None:  # one reading so far (after a restart): no rate yet
                    self._undecided = True
                    continue
                increase, span, full = delta
                if rule.rate is not None:
                    value = increase / span
                else:
                    value = increase * window / span if full else increase
            elif rule.relative_to_now:
                value = entry.value - now
            else:
                value = entry.value
            out[lkey] = value
            labels[lkey] = entry.labels
        return out, labels

    @staticmethod
    def _aggregate(how: str, by: tuple[str, ...], values: dict[LabelKey, float],
                   labels: dict[LabelKey, dict[str, str]]) -> dict[InstanceKey, float]:
        buckets: dict[InstanceKey, list[float]] = {}
        for lkey, value in values.items():
            lab = labels[lkey]
            key = tuple((b, lab.get(b, "")) for b in by)
            buckets.setdefault(key, []).append(value)
        out: dict[InstanceKey, float] = {}
        for key, items in buckets.items():
            if how == "sum":
                out[key] = sum(items)
            elif how == "min":
                out[key] = min(items)
            elif how == "max":
                out[key] = max(items)
            elif how == "avg":
                out[key] = sum(items) / len(items)
            else:
                out[key] = float(len(items))
        return out

    def _evaluate(self, idx: _RuleIndex, server: str, now: float) -> None:
        self.evaluations += 1
        serial = self.evaluations
        self._undecided = False
        rule = idx.rule
        if idx.server_matchers and not idx.server_ok(server):
            return
        values, labels = self._values(rule.series, idx.label_matchers, idx.match_cache,
                                      server, now, rule)
        results: dict[InstanceKey, float]
        if rule.aggregate is not None:
            results = self._aggregate(rule.aggregate, rule.by, values, labels)
            if rule.divided_by is not None:
                d = rule.divided_by
                den_values, den_labels = self._values(d.series, idx.den_matchers,
                                                      idx.den_cache, server, now, rule)
                dens = self._aggregate(rule.aggregate, rule.by, den_values, den_labels)
                ratios: dict[InstanceKey, float] = {}
                for key, den in dens.items():
                    if den > 0 and den >= d.min:
                        ratios[key] = results.get(key, 0.0) / den
                results = ratios
        else:
            results = values
        existing = self._by_rule_server.get((rule.name, server))
        compare = rule.compare
        for inst, value in results.items():
            if compare(value):
                alert = existing.get(inst) if existing else None
                if alert is None:
                    lab = dict(inst) if rule.aggregate is not None else labels.get(inst)
                    self._activate(rule, server, inst, lab or {}, value, now, serial)
                else:
                    alert.value = value
                    alert.last_true = now
                    alert.seen = serial
                    if alert.state == "pending" and now - alert.active_since >= rule.for_:
                        self._fire(alert, now)
        if not existing or self._undecided:
            return  # a counter with too little history decides nothing: alerts stay as they are
        alive: bool | None = None
        for inst, alert in list(existing.items()):
            if alert.seen == serial:
                continue
            if inst in results:
                self._clear(alert, now)
                continue
            if alive is None:
                alive = self._collector_alive(rule, server, now)
            if alive:
                self._clear(alert, now, detail="series gone")
            # else: the collector delivers nothing for this server: frozen as it is

    def _collector_alive(self, rule: Rule, server: str, now: float) -> bool:
        per_server = self.index.get(rule.series)
        entries = per_server.get(server) if per_server else None
        if not entries:
            return False
        collectors = {e.collector for e in entries.values()}
        for collector in collectors:
            last = self.deliveries.get((collector, server), 0.0)
            if last >= now - self.stale_after(collector):
                return True
        return False

    # -- state transitions --------------------------------------------------------------------

    def _activate(self, rule: Rule, server: str, inst: InstanceKey,
                  series_labels: dict[str, str], value: float, now: float, serial: int) -> None:
        labels = {**series_labels, **rule.labels, "alertname": rule.name, "server": server,
                  "severity": rule.severity}
        alert = Alert(fingerprint(labels), rule.name, server, inst, labels, "pending", now, now,
                      value, seen=serial)
        self.alerts[alert.fingerprint] = alert
        self._by_rule_server.setdefault((rule.name, server), {})[inst] = alert
        self._render(alert)
        if rule.for_ <= 0:
            self._fire(alert, now)
        else:
            self._dirty[alert.fingerprint] = alert.row()

    def _note(self, alert: Alert, rule: Rule) -> str:
        """The note of the sample an alert of a rule without ``aggregate`` is about."""
        if rule.aggregate is not None:
            return ""
        per_server = self.index.get(rule.series)
        entries = per_server.get(alert.server) if per_server is not None else None
        entry = entries.get(alert.instance) if entries else None
        return entry.note if entry is not None else ""

    def _render(self, alert: Alert) -> None:
        idx = self._rule_index.get(alert.rule)
        if idx is None:
            return
        rule = idx.rule
        note = self._note(alert, rule)
        if alert.rendered_value == alert.value and alert.annotations \
                and alert.rendered_note == note:
            return
        context = {"server": alert.server, "value": alert.value, "threshold": rule.threshold,
                   "rule": rule.name, "severity": rule.severity, "labels": alert.labels,
                   "note": note}
        annotations = {"summary": rule.summary.render(**context)}
        if rule.description is not None:
            annotations["description"] = rule.description.render(**context)
        for key, template in rule.annotations.items():
            annotations[key] = template.render(**context)
        alert.annotations = annotations
        alert.rendered_value = alert.value
        alert.rendered_note = note

    def _fire(self, alert: Alert, now: float) -> None:
        alert.state = "firing"
        alert.fired_at = now
        self._render(alert)
        self._dirty[alert.fingerprint] = alert.row()
        self._record("firing", alert, alert.annotations.get("summary", ""))
        group = self._group_for(alert.labels, now)
        group.members.add(alert.fingerprint)
        group.resolved.pop(alert.fingerprint, None)
        if not group.flushed and alert.active_since + self.settings.group_wait <= now:
            self._schedule(group, now)  # Alertmanager: an old alert does not wait again
        self._forward([alert.snapshot(self.settings.external_url)])

    def _clear(self, alert: Alert, now: float, *, force: bool = False,
               detail: str = "") -> None:
        idx = self._rule_index.get(alert.rule)
        if alert.state == "firing" and not force and idx is not None and \
                now - alert.last_true < idx.rule.keep_firing_for:
            return  # keep_firing_for: hold it against flapping
        bucket = self._by_rule_server.get((alert.rule, alert.server))
        if bucket is not None:
            bucket.pop(alert.instance, None)
            if not bucket:
                del self._by_rule_server[(alert.rule, alert.server)]
        self.alerts.pop(alert.fingerprint, None)
        if alert.state == "pending":
            self._dirty[alert.fingerprint] = None
            return
        self._render(alert)
        snap = AlertSnapshot(alert.fingerprint, "resolved", dict(alert.labels),
                             dict(alert.annotations), alert.active_since, now, alert.value,
                             self.settings.external_url)
        self._record("resolved", alert, detail or alert.annotations.get("summary", ""))
        group = self.groups.get(group_key(self._group_labels(alert.labels)))
        if group is not None:
            group.members.discard(alert.fingerprint)
            group.resolved[alert.fingerprint] = snap
            self._dirty[alert.fingerprint] = None
            self._dirty[alert.fingerprint + RESOLVED] = {
                **alert.row(), "fingerprint": alert.fingerprint + RESOLVED,
                "state": "resolved", "resolved_at": now}
            if any(alert.fingerprint in lg.firing for lg in group.logs.values()):
                self._schedule(group, now + self.settings.resolve_wait)
        else:
            self._dirty[alert.fingerprint] = None
        self._forward([snap])

    # -- groups and notifications -------------------------------------------------------------

    def _group_labels(self, labels: dict[str, str]) -> dict[str, str]:
        return {k: labels.get(k, "") for k in self.settings.group_by}

    def _group_for(self, labels: dict[str, str], now: float) -> Group:
        glabels = self._group_labels(labels)
        key = group_key(glabels)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(key, glabels, now, now + self.settings.group_wait)
            self._dropped_groups.discard(key)
            self._wake()
        return group

    def _schedule(self, group: Group, when: float) -> None:
        if when < group.next_flush:
            group.next_flush = when
            self._wake()

    def _wake(self) -> None:
        if self.on_wakeup is not None:
            self.on_wakeup()

    def next_due(self) -> float | None:
        """When the next group flush is due (the tick loop sleeps until then at most)."""
        return min((g.next_flush for g in self.groups.values()), default=None)

    def flush_due(self) -> int:
        """Flush every group whose time has come; returns how many notifications went out."""
        now = self.clock.now()
        sent = 0
        for group in list(self.groups.values()):
            if group.next_flush <= now:
                sent += self._flush(group, now)
        return sent

    def _flush(self, group: Group, now: float) -> int:
        s = self.settings
        group.flushed = True
        group.next_flush = now + s.group_interval
        members = [self.alerts[fp] for fp in group.members if fp in self.alerts]
        sources = self._inhibition_sources()
        sent = 0
        for name, queue in self.queues.items():
            if not queue.notifier.grouped:
                continue
            route = queue.route
            firing = [a for a in members if a.state == "firing"
                      and (not route or self._route_ok(queue, a.labels))
                      and self.mute_reason(a.labels, a.fingerprint, now, sources) is None]
            logd = group.logs.get(name)
            resolved = [r for r in group.resolved.values()
                        if logd is not None and r.fingerprint in logd.firing
                        and (not route or self._route_ok(queue, r.labels))
                        and self.mute_reason(r.labels, r.fingerprint, now, sources) is None]
            firing_fps = {a.fingerprint for a in firing}
            resolved_fps = {r.fingerprint for r in resolved}
            if not self._needs_update(logd, firing_fps, resolved_fps, queue.settings.send_resolved,
                                      now):
                continue
            new_log = NotifyLog(firing_fps, resolved_fps, now)
            group.logs[name] = new_log
            self._dirty_logs[(group.key, name)] = new_log
            alerts = [a.snapshot(s.external_url) for a in firing]
            for a in alerts:
                self._refresh(a)
            if queue.settings.send_resolved:
                alerts += resolved
            if not alerts:
                continue
            queue.put(Notification(name, group.key, dict(group.labels), alerts,
                                   external_url=s.external_url))
            sent += 1
        for fp in group.resolved:
            self._dirty[fp + RESOLVED] = None
        group.resolved.clear()
        if not group.members:
            del self.groups[group.key]
            self._dropped_groups.add(group.key)
            for name in list(group.logs):
                self._dirty_logs.pop((group.key, name), None)
        return sent

    def _refresh(self, snap: AlertSnapshot) -> None:
        alert = self.alerts.get(snap.fingerprint)
        if alert is not None:
            self._render(alert)
            snap.annotations = dict(alert.annotations)
            snap.value = alert.value

    @staticmethod
    def _route_ok(queue: NotifierQueue, labels: dict[str, str]) -> bool:
        return matches_all(queue.route, labels)

    def _needs_update(self, logd: NotifyLog | None, firing: set[str], resolved: set[str],
                      send_resolved: bool, now: float) -> bool:
        """Alertmanager's DedupStage.needsUpdate."""
        if logd is None:
            return bool(firing)
        if not firing <= logd.firing:
            return True
        if not firing:
            return bool(logd.firing)
        if send_resolved and not resolved <= logd.resolved:
            return True
        return logd.sent_at <= now - self.settings.repeat_interval

    def _forward(self, snapshots: list[AlertSnapshot]) -> None:
        """Alert-level notifiers (Alertmanager forwarding) hear of every change at once."""
        if all(q.notifier.grouped for q in self.queues.values()):
            return
        now = self.clock.now()
        for name, queue in self.queues.items():
            if queue.notifier.grouped:
                continue
            items = [a for a in snapshots
                     if self._route_ok(queue, a.labels)
                     and self.mute_reason(a.labels, a.fingerprint, now) is None]
            if items:
                queue.put(Notification(name, "", {}, items, external_url=self.settings
                                       .external_url))

    def resend_due(self) -> int:
        """Alert-level notifiers get every firing, unmuted alert again now and then, as
        Prometheus re-sends to Alertmanager (otherwise Alertmanager resolves them)."""
        now = self.clock.now()
        sent = 0
        sources = self._inhibition_sources()
        for name, queue in self.queues.items():
            if queue.notifier.grouped:
                continue
            interval = float(getattr(queue.settings, "resend_interval", 60.0))
            if now - self._last_resend.get(name, 0.0) < interval:
                continue
            self._last_resend[name] = now
            items = [a.snapshot(self.settings.external_url) for a in self.alerts.values()
                     if a.state == "firing"
                     and self._route_ok(queue, a.labels)
                     and self.mute_reason(a.labels, a.fingerprint, now, sources) is None]
            if items:
                queue.put(Notification(name, "", {}, items,
                                       external_url=self.settings.external_url))
                sent += 1
        return sent

    # -- muting -------------------------------------------------------------------------------

    def _inhibition_sources(self) -> list[dict[tuple[str, ...], set[str]]]:
        out: list[dict[tuple[str, ...], set[str]]] = []
        for rule in self.inhibit:
            sources: dict[tuple[str, ...], set[str]] = {}
            for alert in self.alerts.values():
                if alert.state == "firing" and matches_all(rule.source, alert.labels):
                    key = tuple(alert.labels.get(e, "") for e in rule.equal)
                    sources.setdefault(key, set()).add(alert.fingerprint)
            out.append(sources)
        return out

    def mute_reason(self, labels: dict[str, str], fp: str, now: float,
                    sources: list[dict[tuple[str, ...], set[str]]] | None = None
                    ) -> str | None:
        """Why notifications about these labels are suppressed now, or None."""
        for silence in self.silences.values():
            if silence.active(now) and silence.matches(labels):
                what = "maintenance" if silence.kind == "maintenance" else "silenced"
                return f"{what} by {silence.id} until {_hm(silence.ends)}"
        for window in self.windows:
            if window.covers(labels):
                until = window.active_until(now)
                if until is not None:
                    return f"maintenance window {window.name} until {_hm(until)}"
        if sources is None:
            sources = self._inhibition_sources()
        for rule, srcs in zip(self.inhibit, sources, strict=False):
            if not srcs or not matches_all(rule.target, labels):
                continue
            key = tuple(labels.get(e, "") for e in rule.equal)
            others = srcs.get(key, set()) - {fp}
            if others:
                names = sorted({self.alerts[f].rule for f in others if f in self.alerts})
                return f"inhibited by {', '.join(names)}"
        return None

    # -- silences -----------------------------------------------------------------------------

    def add_silence(self, silence: Silence) -> None:
        self.silences[silence.id] = silence
        self._record_silence("silence" if silence.kind == "silence" else "maintenance",
                             silence, f"{silence.description} until {_hm(silence.ends)}: "
                                      f"{silence.reason}")

    def end_silence(self, silence_id: str, by: str) -> Silence | None:
        silence = self.silences.get(silence_id)
        if silence is None:
            return None
        now = self.clock.now()
        silence.ends = min(silence.ends, now)
        silence.ended_by = by
        silence.ended_at = now
        self._record_silence("unsilence", silence, f"ended by {by}")
        self.silences.pop(silence_id, None)
        # Alerts that were muted and are still firing count as new for every notifier
        # whose log does not hold them, as when an Alertmanager silence expires.
        for group in self.groups.values():
            self._schedule(group, now)
        return silence

    def expire_silences(self) -> None:
        now = self.clock.now()
        for silence in [s for s in self.silences.values() if s.ends <= now]:
            del self.silences[silence.id]
            for group in self.groups.values():
                self._schedule(group, now)

    def reminders_due(self) -> list[Silence]:
        """Silences about to end that nobody was reminded of yet; reminders are queued."""
        lead = self.settings.silence_reminder
        if lead <= 0:
            return []
        now = self.clock.now()
        due = []
        for silence in self.silences.values():
            if silence.reminded or not silence.active(now):
                continue
            if silence.ends - silence.starts <= lead or silence.ends - now > lead:
                continue
            silence.reminded = True
            self._reminded.append(silence.id)
            due.append(silence)
            self._remind(silence, now)
        return due

    def _remind(self, silence: Silence, now: float) -> None:
        muted = sorted(f"{a.rule} on {a.server}" for a in self.alerts.values()
                       if a.state == "firing" and silence.matches(a.labels))
        left = _dur(silence.ends - now)
        what = "maintenance window" if silence.kind == "maintenance" else "silence"
        summary = f"{what} {silence.id} ({silence.description}) ends in {left}"
        description = (f"Reason: {silence.reason}. Set by {silence.created_by}. " +
                       (f"Still firing under it: {', '.join(muted)}." if muted else
                        "Nothing is firing under it now."))
        labels = {"alertname": "SilenceExpiring", "severity": "info", "silence": silence.id}
        for m in silence.matchers:
            if m.label == "server" and m.op == "=":
                labels["server"] = m.value
        snap = AlertSnapshot(f"silence-{silence.id}", "firing", labels,
                             {"summary": summary, "description": description}, now,
                             silence.ends)
        for name, queue in self.queues.items():
            queue.put(Notification(name, f"silence:{silence.id}", {"silence": silence.id},
                                   [snap], kind="reminder",
                                   external_url=self.settings.external_url))
        self._record_silence("reminder", silence, summary)

    # -- history ------------------------------------------------------------------------------

    def _record(self, event: str, alert: Alert, detail: str) -> None:
        self._history.append(HistoryRow(self.clock.now(), event, alert.rule, alert.server,
                                        alert.fingerprint, alert.severity, alert.value,
                                        detail))
        if self.on_change is not None and event in ("firing", "resolved"):
            self.on_change(event, alert)

    def _record_silence(self, event: str, silence: Silence, detail: str) -> None:
        server = next((m.value for m in silence.matchers
                       if m.label == "server" and m.op == "="), "")
        rule = next((m.value for m in silence.matchers
                     if m.label == "alertname" and m.op == "="), "")
        self._history.append(HistoryRow(self.clock.now(), event, rule, server, silence.id,
                                        "", None, detail))

    def record_outcome(self, notifier: str, notification: Notification, ok: bool,
                       detail: str) -> None:
        """Called by the notifier queues: every delivery (or give-up) goes to the history."""
        alerts = notification.alerts
        rules = sorted({a.rule for a in alerts})
        server = notification.group_labels.get("server", "") or \
            (alerts[0].server if len(alerts) == 1 else "")
        text = (f"{notifier}: {notification.kind} {notification.status}, "
                f"{len(alerts)} alert{'s' if len(alerts) != 1 else ''}")
        self._history.append(HistoryRow(
            self.clock.now(), "notified" if ok else "notify-failed",
            rules[0] if len(rules) == 1 else "", server,
            notification.group_key or (alerts[0].fingerprint if alerts else ""), "", None,
            text if ok else f"{text}: {detail}"))

    # -- persistence --------------------------------------------------------------------------

    def has_changes(self) -> bool:
        return bool(self._dirty or self._dirty_logs or self._history or self._dropped_groups
                    or self._reminded)

    async def persist(self) -> None:
        """Save what changed (``StateDB.run`` completes the save even if this caller is
        cancelled, as the loop is at shutdown: a notification once sent stays recorded)."""
        if self.state is None or not self.has_changes():
            self._history.clear()
            self._reminded.clear()
            return
        dirty, self._dirty = self._dirty, {}
        logs, self._dirty_logs = self._dirty_logs, {}
        dropped, self._dropped_groups = self._dropped_groups, set()
        history, self._history = self._history, []
        reminded, self._reminded = self._reminded, []
        rows = [r for r in dirty.values() if r is not None]
        deleted = [fp for fp, r in dirty.items() if r is None]
        log_rows = [(g, n, sorted(lg.firing), sorted(lg.resolved), lg.sent_at)
                    for (g, n), lg in logs.items()]
        await self.state.run(store.save, rows, deleted, log_rows, sorted(dropped), history,
                             reminded)

    async def restore(self) -> int:
        """Load pending/firing alerts, unsent resolutions, notification logs and silences."""
        if self.state is None:
            return 0
        rows, logs = await self.state.run(store.load)
        now = self.clock.now()
        for row in rows:
            labels = json.loads(row["labels"])
            instance: InstanceKey = tuple((str(k), str(v)) for k, v in
                                          json.loads(row["instance"]))
            if row["state"] == "resolved":
                group = self._group_for(labels, now)
                fp = row["fingerprint"].removesuffix(RESOLVED)
                group.resolved[fp] = AlertSnapshot(
                    fp, "resolved", labels, json.loads(row["annotations"]),
                    row["active_since"], row["resolved_at"], row["value"],
                    self.settings.external_url)
                continue
            alert = Alert(row["fingerprint"], row["rule"], row["server"], instance,
                          labels, row["state"], row["active_since"], row["last_true"],
                          row["value"] if row["value"] is not None else 0.0, row["fired_at"],
                          json.loads(row["annotations"]))
            alert.rendered_value = alert.value
            if alert.rule not in self._rule_index:
                continue  # its rule is gone; dropped below
            self.alerts[alert.fingerprint] = alert
            self._by_rule_server.setdefault((alert.rule, alert.server), {})[instance] = alert
            if alert.state == "firing":
                group = self._group_for(labels, now)
                group.members.add(alert.fingerprint)
        for row in logs:
            found = self.groups.get(row["group_key"])
            if found is None:
                continue
            found.logs[row["notifier"]] = NotifyLog(set(json.loads(row["firing"])),
                                                    set(json.loads(row["resolved"])),
                                                    row["sent_at"])
        for group in self.groups.values():
            if group.logs:
                group.flushed = True
                group.next_flush = now  # the logs keep this from repeating anything
            elif any(self.alerts[fp].active_since + self.settings.group_wait <= now
                     for fp in group.members if fp in self.alerts):
                group.next_flush = now
        gone = [r["fingerprint"] for r in rows if r["rule"] not in self._rule_index]
        for fp in gone:
            self._dirty[fp] = None
        for row in await self.state.run(store.silences, now):
            silence = Silence.from_row(row)
            if silence.ended_at is None:
                self.silences[silence.id] = silence
        return len(self.alerts)

    # -- reading ------------------------------------------------------------------------------

    def firing_counts(self) -> Counter[tuple[str, str, str]]:
        counts: Counter[tuple[str, str, str]] = Counter()
        for alert in self.alerts.values():
            if alert.state == "firing":
                counts[(alert.rule, alert.severity, alert.server)] += 1
        return counts

    def listing(self, *, include_pending: bool = True) -> list[dict[str, Any]]:
        now = self.clock.now()
        sources = self._inhibition_sources()
        out = []
        for alert in sorted(self.alerts.values(),
                            key=lambda a: (a.state != "firing", a.server, a.rule)):
            if alert.state == "pending" and not include_pending:
                continue
            self._render(alert)
            out.append({
                "fingerprint": alert.fingerprint, "rule": alert.rule, "server": alert.server,
                "state": alert.state, "severity": alert.severity, "value": alert.value,
                "since": alert.fired_at or alert.active_since, "labels": alert.labels,
                "summary": alert.annotations.get("summary", ""),
                "muted": self.mute_reason(alert.labels, alert.fingerprint, now, sources),
                "stale": not self._fresh(alert, now),
            })
        return out

    def _fresh(self, alert: Alert, now: float) -> bool:
        idx = self._rule_index.get(alert.rule)
        if idx is None:
            return False
        return self._collector_alive(idx.rule, alert.server, now)

    def active_windows(self) -> list[dict[str, Any]]:
        now = self.clock.now()
        out = []
        for window in self.windows:
            until = window.active_until(now)
            out.append({"name": window.name, "schedule": window.schedule,
                        "timezone": window.timezone, "duration": window.duration,
                        "servers": list(window.servers), "active_until": until,
                        "next_start": window.next_start(now), "reason": window.reason})
        return out


def _hm(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _dur(seconds: float) -> str:
    from podod.durations import format_duration

    return format_duration(max(0.0, seconds))
