"""``/metrics``: every series of every server, and podod's own health, for Prometheus.

The ``metrics`` component serves ``http://127.0.0.1:9571/metrics`` (``metrics.listen`` and
``metrics.port``). What it exposes is defined once, by :class:`LiveCollector`, a
prometheus-client custom collector over the live state and the series catalogue:

- every series as ``podod_<name>``, HELP and TYPE from the catalogue (base units, ``_total``
  on counters); a series no catalogue entry describes is still exposed, with a generic HELP,
  as a counter if it is one and ends in ``_total``, else as a gauge (or untyped);
- every sample labelled ``server`` (a collector label called ``server`` or ``instance``
  becomes ``exported_server`` / ``exported_instance``, as Prometheus itself renames);
- podod's own metrics carry ``server="podod"`` (the name collectors that are not per
  server use) unless they are about a server: ``podod_collector_errors_total`` and
  ``podod_alerts_firing`` name the server they concern.

The Prometheus text format (what Prometheus asks for by default) is written by
:class:`TextRenderer`, which caches each series' line prefix and is tested to produce
exactly the bytes ``prometheus_client.generate_latest`` produces from the same collector,
about five times faster; OpenMetrics, when asked for, goes through prometheus-client.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from podod import __version__
from podod.events import AfterActionDone, AfterActionFailed, CommandCompleted, Subscription
from podod.monitor.catalog import SeriesInfo
from podod.monitor.model import LabelKey, Sample
from podod.plugins import Registry

if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client.metrics_core import Metric

    from podod.config import Config
    from podod.runtime import Runtime

log = logging.getLogger(__name__)

PREFIX = "podod_"
SELF = "podod"  # the server label of metrics about podod itself
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_RENAMED = {"server": "exported_server", "instance": "exported_instance"}
_INF = float("inf")
SeriesKey = tuple[str, str, LabelKey]
_EXPONENT = [f"e+{n - 1:02d}" for n in range(18)]  # by the number of digits


def metric_name(series: str) -> str:
    """The exposed name: ``podod_`` + the series name in snake_case, legal characters only."""
    # colons are for recording rules, not exporters
    name = _INVALID.sub("_", _CAMEL.sub(r"\1_\2", series)).replace(":", "_").lower()
    if name.startswith(PREFIX):
        name = name[len(PREFIX):]
    if not name or name[0].isdigit():
        name = "_" + name
    return PREFIX + name


def label_name(label: str) -> str:
    name = _INVALID.sub("_", label).replace(":", "_")
    if not name or name[0].isdigit():
        name = "_" + name
    return _RENAMED.get(name, name)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


@dataclass
class FamilyInfo:
    """One exposed metric family: its names and type."""

    base: str  # e.g. podod_postfix_deliveries (counters without _total)
    sample_name: str  # e.g. podod_postfix_deliveries_total
    kind: str  # gauge | counter | unknown
    help: str

    @property
    def text_type(self) -> str:
        return "untyped" if self.kind == "unknown" else self.kind


def family_for(series: str, info: SeriesInfo | None, sample_kind: str = "gauge"
               ) -> FamilyInfo:
    name = metric_name(series)
    kind: str
    if info is not None:
        kind, help_text = info.kind, info.help
    else:
        help_text = f"{series} (emitted by a collector without a catalogue entry)"
        kind = sample_kind
    if kind == "counter":
        if name.endswith("_total"):
            return FamilyInfo(name[: -len("_total")], name, "counter", help_text)
        kind = "unknown"  # a counter without _total is exposed untyped, under its own name
    if kind not in ("gauge", "counter"):
        kind = "unknown"
    return FamilyInfo(name, name, kind, help_text)


@dataclass
class SelfMetrics:
    """podod's own health, as the exposition reads it at each scrape."""

    commands: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    collector_errors: dict[tuple[str, str], int] = field(default_factory=dict)
    backup_last: float | None = None
    alerts_firing: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    notifications: dict[tuple[str, str], int] = field(default_factory=dict)
    after_actions: Counter[tuple[str, str]] = field(default_factory=Counter)
    matrix: dict[str, float] | None = None  # the Matrix session (podod.frontends.matrix)
    api: Any = None  # podod.frontends.api.ApiStats, when the REST API runs
    now: float = 0.0

    def samples(self) -> Iterator[Sample]:
        """The same as samples of the catalogue's ``podod itself`` series."""
        yield Sample("build_info", SELF, 1.0, Sample.labels_of(version=__version__))
        for (command, origin, result), n in sorted(self.commands.items()):
            yield Sample("commands_total", SELF, float(n),
                         Sample.labels_of(command=command, origin=origin, result=result),
                         "counter")
        for (collector, server), n in sorted(self.collector_errors.items()):
            yield Sample("collector_errors_total", server, float(n),
                         Sample.labels_of(collector=collector), "counter")
        if self.backup_last is not None:
            yield Sample("backup_last_success_timestamp_seconds", SELF, self.backup_last)
            yield Sample("backup_last_success_age_seconds", SELF,
                         max(0.0, self.now - self.backup_last))
        for (rule, severity, server), n in sorted(self.alerts_firing.items()):
            yield Sample("alerts_firing", server, float(n),
                         Sample.labels_of(rule=rule, severity=severity))
        for (notifier, result), n in sorted(self.notifications.items()):
            yield Sample("notifications_total", SELF, float(n),
                         Sample.labels_of(notifier=notifier, result=result), "counter")
        for (action, result), n in sorted(self.after_actions.items()):
            yield Sample("after_actions_total", SELF, float(n),
                         Sample.labels_of(action=action, result=result), "counter")
        if self.matrix is not None:
            m = self.matrix
            yield Sample("matrix_up", SELF, m["up"])
            if m["sync_age"] >= 0:
                yield Sample("matrix_sync_age_seconds", SELF, m["sync_age"])
            yield Sample("matrix_sync_lag_seconds", SELF, m["event_lag"])
            yield Sample("matrix_messages_sent_total", SELF, m["sent"], kind="counter")
            yield Sample("matrix_send_failures_total", SELF, m["send_failures"],
                         kind="counter")
        if self.api is not None:
            for (route, method, status), n in sorted(self.api.requests.items()):
                yield Sample("api_requests_total", SELF, float(n), Sample.labels_of(
                    route=route, method=method, status=status), "counter")
            for (route, method), seconds in sorted(self.api.seconds.items()):
                labels = Sample.labels_of(route=route, method=method)
                yield Sample("api_request_duration_seconds_total", SELF, seconds, labels,
                             "counter")
                yield Sample("api_request_duration_p99_seconds", SELF,
                             self.api.p99((route, method)), labels)


class Exposition:
    """Families and samples from the live state, the catalogue and podod's own metrics."""

    def __init__(self, catalog: dict[str, SeriesInfo]) -> None:
        self.catalog = catalog
        self._families: dict[tuple[str, str], FamilyInfo] = {}

    def family(self, sample: Sample) -> FamilyInfo:
        key = (sample.series, sample.kind)
        fam = self._families.get(key)
        if fam is None:
            info = self.catalog.get(sample.series) or \
                self.catalog.get(metric_name(sample.series).removeprefix(PREFIX))
            fam = self._families[key] = family_for(sample.series, info, sample.kind)
        return fam

    @staticmethod
    def labels(sample: Sample) -> list[tuple[str, str]]:
        out = [("server", sample.server)]
        out += [(label_name(k), v) for k, v in sample.labels]
        out.sort()
        return out

    def grouped(self, samples: Iterable[Sample]) -> dict[str, tuple[FamilyInfo, list[Sample]]]:
        families: dict[str, tuple[FamilyInfo, list[Sample]]] = {}
        for sample in samples:
            fam = self.family(sample)
            entry = families.get(fam.sample_name)
            if entry is None:
                entry = families[fam.sample_name] = (fam, [])
            entry[1].append(sample)
        return families


class LiveCollector:
    """The prometheus-client custom collector: ``collect()`` yields one Metric per family."""

    def __init__(self, exposition: Exposition, samples: Iterable[Sample]) -> None:
        self.exposition = exposition
        self._samples = samples

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import Metric

        grouped = self.exposition.grouped(self._samples)
        for name in sorted(grouped):
            fam, samples = grouped[name]
            metric = Metric(fam.base, fam.help, fam.kind)
            for sample in samples:
                metric.add_sample(fam.sample_name, dict(self.exposition.labels(sample)),
                                  sample.value)
            yield metric


class TextRenderer:
    """The Prometheus text format (0.0.4), byte for byte what ``generate_latest`` writes
    for :class:`LiveCollector`, with each series' line prefix computed once.

    The prefix cache is keyed by the identity of the live state's key tuples, which stay
    the same objects for as long as a series exists: hashing an int is much cheaper than
    hashing a nested tuple 30 000 times per scrape. The key itself is kept in the entry
    and compared by identity, so a reused id can never return another series' prefix.
    """

    def __init__(self, exposition: Exposition) -> None:
        self.exposition = exposition
        # id(key) → (family index, line prefix, kind, key)
        self._prefix: dict[int, tuple[int, str, str, SeriesKey]] = {}
        self._families: list[FamilyInfo] = []
        self._family_index: dict[str, int] = {}

    def _line_prefix(self, key: SeriesKey, sample: Sample) -> tuple[int, str, str, SeriesKey]:
        fam = self.exposition.family(sample)
        index = self._family_index.get(fam.sample_name)
        if index is None:
            index = self._family_index[fam.sample_name] = len(self._families)
            self._families.append(fam)
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in self.exposition.labels(sample))
        return index, f"{fam.sample_name}{{{labels}}} ", sample.kind, key

    def render(self, items: dict[SeriesKey, Sample]) -> str:
        # prometheus-client is imported at the first scrape, not at start-up (3 MB)
        from prometheus_client.utils import floatToGoString

        cache = self._prefix
        get = cache.get
        buckets: list[list[str]] = [[] for _ in self._families]
        fmt = floatToGoString
        inf = _INF
        exponent = _EXPONENT
        for key, s in items.items():
            hit = get(id(key))
            if hit is None or hit[3] is not key or hit[2] != s.kind:
                hit = cache[id(key)] = self._line_prefix(key, s)
                buckets.extend([] for _ in range(len(self._families) - len(buckets)))
            value = s.value
            if value.__class__ is not float:
                value = float(value)
            # floatToGoString differs from repr only for NaN, infinities and >= 1e6, where
            # Go writes 1.2345678e+07; whole numbers (counters, bytes) are done here faster
            if -inf < value < 1e6:
                text = repr(value)
            elif 1e6 <= value < 1e16 and value.is_integer():
                digits = str(int(value))
                text = (digits[0] + "." + digits[1:]).rstrip("0.") + exponent[len(digits)]
            else:
                text = fmt(value)
            buckets[hit[0]].append(hit[1] + text)
        if len(cache) > 2 * len(items) + 1024:
            cache.clear()  # series that went away: do not keep their prefixes forever
        out: list[str] = []
        order = sorted(range(len(buckets)), key=lambda i: self._families[i].sample_name)
        for i in order:
            lines = buckets[i]
            if not lines:
                continue
            fam = self._families[i]
            name = fam.sample_name
            out.append(f"# HELP {name} {_help(fam.help)}\n# TYPE {name} {fam.text_type}\n")
            out.append("\n".join(lines))
            out.append("\n")
        return "".join(out)


def keyed(samples: Iterable[Sample]) -> dict[SeriesKey, Sample]:
    return {(s.series, s.server, s.labels): s for s in samples}


class MetricsEndpoint:
    """The ``metrics`` component."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.exposition = Exposition(runtime.registry.series)
        self.renderer = TextRenderer(self.exposition)
        self.commands: Counter[tuple[str, str, str]] = Counter()
        self.after_actions: Counter[tuple[str, str]] = Counter()
        self._sub: Subscription | None = None
        self._after_subs: list[Subscription] = []
        self._runner: web.AppRunner | None = None
        self._bound: tuple[str, int] | None = None
        self._lock = asyncio.Lock()
        self._own_keys: dict[SeriesKey, SeriesKey] = {}

    @property
    def address(self) -> tuple[str, int] | None:
        return self._bound

    async def start(self) -> None:
        self._sub = self.runtime.events.subscribe(CommandCompleted, self._command,
                                                  name="metrics-commands")
        self._after_subs = [
            self.runtime.events.subscribe(AfterActionDone, self._after_action,
                                          name="metrics-after-done"),
            self.runtime.events.subscribe(AfterActionFailed, self._after_action,
                                          name="metrics-after-failed")]
        await self._listen(self.runtime.config.metrics.listen, self.runtime.config.metrics.port)

    async def stop(self) -> None:
        if self._sub is not None:
            self.runtime.events.unsubscribe(self._sub)
            self._sub = None
        for sub in self._after_subs:
            self.runtime.events.unsubscribe(sub)
        self._after_subs = []
        await self._close()

    async def reload(self, config: Config) -> None:
        wanted = (config.metrics.listen, config.metrics.port)
        if self._bound is not None and wanted[0] == self._bound[0] and \
                wanted[1] in (0, self._bound[1]):
            return
        await self._close()
        await self._listen(*wanted)

    async def _listen(self, host: str, port: int) -> None:
        from aiohttp import web  # only when /metrics is enabled (see the start-up budget)

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        from podod.frontends.listen import start_site

        self._bound = await start_site(runner, host, port, "metrics.listen/port")
        self._runner = runner
        log.info("serving /metrics on http://%s:%d/metrics", *self._bound)

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._bound = None

    def _command(self, event: CommandCompleted) -> None:
        # Only registered command names: a typo must not become a new label value.
        command = event.command if event.command in self.runtime.registry.commands \
            else "unknown"
        self.commands[(command, event.origin, event.result)] += 1

    def _after_action(self, event: AfterActionDone | AfterActionFailed) -> None:
        result = "done" if isinstance(event, AfterActionDone) else "failed"
        self.after_actions[(event.kind, result)] += 1

    # -- what a scrape sees -------------------------------------------------------------------

    async def self_metrics(self) -> SelfMetrics:
        now = time.time()
        live = self.runtime.component("live")
        alerts = self.runtime.component("alerts")
        out = SelfMetrics(commands=self.commands, now=now, after_actions=self.after_actions)
        if live is not None:
            out.collector_errors = dict(live.state.collector_errors)
        if alerts is not None:
            out.alerts_firing = alerts.engine.firing_counts()
            for name, queue in alerts.engine.queues.items():
                out.notifications[(name, "sent")] = queue.sent
                out.notifications[(name, "failed")] = queue.failed
                out.notifications[(name, "dropped")] = queue.dropped
        matrix = self.runtime.component("matrix")
        if matrix is not None:
            status = matrix.session.status()
            out.matrix = {"up": 1.0 if status["state"] == "syncing" else 0.0,
                          "sync_age": -1.0 if status["sync_age"] is None
                          else float(status["sync_age"]),
                          "event_lag": float(status["event_lag"]),
                          "sent": float(status["sent"]),
                          "send_failures": float(status["send_failures"])}
        api = self.runtime.component("api")
        if api is not None:
            out.api = api.stats
        out.backup_last = await self._backup_last()
        return out

    async def _backup_last(self) -> float | None:
        gate = self.runtime.component("backup")
        if gate is None or not hasattr(gate, "last_success"):
            return None
        try:
            value: float | None = await gate.last_success()  # kept in memory by the gate
        except Exception:
            log.debug("cannot read the backup catalog", exc_info=True)
            return None
        return value

    def snapshot(self, own: SelfMetrics) -> dict[SeriesKey, Sample]:
        """The samples of one scrape, taken on the event loop (the live state changes)."""
        live = self.runtime.component("live")
        items: dict[SeriesKey, Sample] = live.state.snapshot() if live is not None else {}
        interned = self._own_keys
        for sample in own.samples():
            key = (sample.series, sample.server, sample.labels)
            items[interned.setdefault(key, key)] = sample  # the same key object each time
        return items

    def collector(self, items: dict[SeriesKey, Sample]) -> LiveCollector:
        return LiveCollector(self.exposition, list(items.values()))

    # -- HTTP ---------------------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web  # loaded by _listen already

        items = self.snapshot(await self.self_metrics())
        accept = request.headers.get("Accept", "")
        async with self._lock:  # one render at a time: the renderer's cache is shared
            if "application/openmetrics-text" in accept:
                from prometheus_client import CollectorRegistry
                from prometheus_client.openmetrics import exposition as openmetrics

                registry = CollectorRegistry(auto_describe=False)
                registry.register(self.collector(items))
                body = await asyncio.to_thread(openmetrics.generate_latest, registry)
                content_type = openmetrics.CONTENT_TYPE_LATEST
            else:
                # Rendering 30 000 lines takes tens of milliseconds: off the event loop.
                text = await asyncio.to_thread(self.renderer.render, items)
                body = text.encode()
                content_type = TEXT_CONTENT_TYPE
        headers = {"Content-Type": content_type}
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            body = await asyncio.to_thread(gzip.compress, body, 1)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def _index(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.Response(content_type="text/html", text=(
            "<html><head><title>podod</title></head><body><h1>podod "
            f"{__version__}</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>"))


def factory(runtime: Runtime) -> MetricsEndpoint | None:
    if not runtime.config.metrics.enabled:
        return None
    return MetricsEndpoint(runtime)


def setup(registry: Registry) -> None:
    registry.component("metrics", factory)

