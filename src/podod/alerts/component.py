"""The ``alerts`` component: wires the engine to the event bus, state.db, the notifiers and
a tick loop.

The engine evaluates the rules a collector's samples concern as soon as they arrive; the
loop re-evaluates everything every ``evaluation_interval`` (for ``for:``,
``keep_firing_for:`` and stale data), and wakes early when a group is due to be flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import pydantic

from podod.alerts import store
from podod.alerts.clock import Clock
from podod.alerts.engine import AlertEngine
from podod.alerts.notify import NotifierQueue
from podod.alerts.rules import Rule, RuleSet, combine, read_rule_file
from podod.alerts.settings import AlertSettings, NotifierBase, PluginNotifierSettings
from podod.errors import ConfigError
from podod.events import AlertChanged, Subscription
from podod.monitor.model import Sample, SamplesCollected
from podod.servers.events import ServerConnected, ServerDisconnected, ServerRemoved
from podod.settings_base import format_validation_error

if TYPE_CHECKING:
    from podod.config import Config
    from podod.plugins import Registry
    from podod.runtime import Runtime

log = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0


class AlertsComponent:
    def __init__(self, runtime: Runtime, *, clock: Clock | None = None,
                 run_loop: bool = True) -> None:
        self.runtime = runtime
        self.engine = AlertEngine(runtime.config.alerts, runtime.state, clock=clock,
                                  stale_after=self._stale_after)
        self.run_loop = run_loop
        self._subs: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_prune = 0.0
        self._notifier_settings: list[dict[str, Any]] = []
        self.engine.on_wakeup = self._wake.set

    @property
    def clock(self) -> Clock:
        return self.engine.clock

    def _stale_after(self, collector: str) -> float:
        monitor = self.runtime.config.monitor
        spec = self.runtime.registry.collectors.get(collector)
        interval = monitor.intervals.get(collector) or (spec.interval if spec else None) or \
            monitor.interval
        return 3 * float(interval)

    # -- lifecycle ----------------------------------------------------------------------------

    def ruleset(self, settings: AlertSettings) -> RuleSet:
        """The configured rules with the plugins' packs beneath them: a plugin's rule never
        replaces a rule of the same name from podod's pack or a rule file."""
        packs = RuleSet()
        for name, path in sorted(self.runtime.registry.alert_rule_packs.items()):
            try:
                pack = read_rule_file(path)
            except ConfigError as exc:
                log.error("the alert rules of plugin %s are not used: %s", name, exc.message)
                continue
            known = {r.name for r in packs.rules}
            pack.rules = [r for r in pack.rules if r.name not in known]
            packs = combine(packs, pack)
        configured = settings.ruleset
        names = {r.name for r in configured.rules}
        packs.rules = [r for r in packs.rules if r.name not in names]
        return combine(packs, configured)

    async def start(self) -> None:
        await self.runtime.state.migrate("alerts", store.MIGRATIONS)
        settings = self.runtime.config.alerts
        self.engine.configure(settings, self.ruleset(settings))
        self._apply_notifiers(settings)
        restored = await self.engine.restore()
        if restored:
            log.info("restored %d pending or firing alerts", restored)
        self._warn_unknown_series()
        events = self.runtime.events
        self.engine.on_change = self._changed
        self._subs = [
            events.subscribe(SamplesCollected, self._on_samples, name="alerts-samples"),
            events.subscribe((ServerConnected, ServerDisconnected), self._on_connection,
                             name="alerts-connections"),
            events.subscribe(ServerRemoved, self._on_removed, name="alerts-removed"),
        ]
        if self.run_loop:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="alerts")

    def _changed(self, state: str, alert: Any) -> None:
        self.runtime.events.publish(AlertChanged(
            state=state, rule=alert.rule, server=alert.server, severity=alert.severity,
            fingerprint=alert.fingerprint, value=alert.value, labels=dict(alert.labels),
            summary=alert.annotations.get("summary", "")))

    async def stop(self) -> None:
        for sub in self._subs:
            self.runtime.events.unsubscribe(sub)
        self._subs = []
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for queue in self.engine.queues.values():
            await queue.close(grace=2.0)
        self.engine.queues = {}
        with contextlib.suppress(Exception):
            await self.engine.persist()

    async def reload(self, config: Config) -> None:
        """The new configuration was validated as a whole (rule files included)."""
        settings = config.alerts
        self.engine.configure(settings, self.ruleset(settings))
        try:
            self._apply_notifiers(settings)
        except ConfigError as exc:
            log.error("notifiers unchanged: %s", exc.message)
        self._warn_unknown_series()
        self._wake.set()
        await self.engine.persist()
        log.info("alert rules reloaded: %d rules from %d files", len(self.engine.rules),
                 len(settings.ruleset.files))

    # -- notifiers ----------------------------------------------------------------------------

    def _apply_notifiers(self, settings: AlertSettings) -> None:
        # python-mode dumps keep SecretStr, which compares by value: a rotated token counts
        wanted = [n.model_dump(by_alias=True) for n in settings.notifiers]
        if wanted == self._notifier_settings and self.engine.queues:
            return
        queues = self.build_notifiers(settings)
        old = self.engine.queues
        self.engine.queues = queues
        self._notifier_settings = wanted
        for queue in queues.values():
            queue.start()
        for queue in old.values():
            asyncio.get_running_loop().create_task(queue.close())

    def build_notifiers(self, settings: AlertSettings) -> dict[str, NotifierQueue]:
        source = self.runtime.config_path.name if self.runtime.config_path else "podod.yaml"
        queues: dict[str, NotifierQueue] = {}
        for key, entry, make, notifier_settings in resolve_notifiers(
                settings, self.runtime.registry, source):
            try:
                notifier = make(notifier_settings, self.runtime)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{source}: {key}: {exc}") from None
            name = getattr(notifier, "name", None) or entry.label
            notifier.name = name
            queue_settings: NotifierBase = entry
            queues[name] = NotifierQueue(notifier, queue_settings, self.engine.record_outcome)
        return queues

    # -- events -------------------------------------------------------------------------------

    async def _on_samples(self, event: SamplesCollected) -> None:
        self.engine.ingest(event.samples, event.collector, event.server)
        if self.engine.has_changes():
            await self.engine.persist()

    async def _on_connection(self, event: ServerConnected | ServerDisconnected) -> None:
        value = 1.0 if isinstance(event, ServerConnected) else 0.0
        sample = Sample("ssh_connected", event.server, value, (), "gauge", event.at)
        # From the event, the value holds until the next event: it never goes stale.
        self.engine.ingest([sample], "servers", event.server, sticky=True)
        if self.engine.has_changes():
            await self.engine.persist()

    async def _on_removed(self, event: ServerRemoved) -> None:
        self.engine.forget_server(event.server)
        await self.engine.persist()

    # -- the loop -----------------------------------------------------------------------------

    async def tick(self, *, evaluate: bool = True) -> None:
        """One round: evaluate, expire silences, remind, flush due groups, re-send, save."""
        engine = self.engine
        if evaluate:
            engine.evaluate_all()
        engine.expire_silences()
        engine.reminders_due()
        known = self._known_servers()
        if known is not None:
            engine.resolve_unknown(known)
        engine.flush_due()
        engine.resend_due()
        await engine.persist()
        now = self.clock.now()
        if now - self._last_prune >= PRUNE_EVERY and self.runtime.state is not None:
            self._last_prune = now
            cutoff = now - self.runtime.config.alerts.history_retention
            while await self.runtime.state.run(store.prune, cutoff) >= store.PRUNE_STEP:
                await asyncio.sleep(0)  # small steps: other state.db users get their turn

    async def _loop(self) -> None:
        next_eval = 0.0
        while True:
            now = self.clock.now()
            full = now >= next_eval
            try:
                await self.tick(evaluate=full)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert evaluation failed; trying again at the next tick")
            if full:
                next_eval = now + self.engine.settings.evaluation_interval
            due = self.engine.next_due()
            wake_at = next_eval if due is None else min(next_eval, due)
            self._wake.clear()
            delay = max(0.01, wake_at - self.clock.now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _known_servers(self) -> set[str] | None:
        """The servers podod manages, when a server manager can say (else None)."""
        servers = self.runtime.component("servers")
        if servers is None or not hasattr(servers, "summary"):
            return None
        names = {str(s.get("name")) for s in servers.summary()}
        names.update(s.name for s in self.runtime.config.servers)
        names.add("podod")
        return names

    def _warn_unknown_series(self) -> None:
        known = self.runtime.registry.series
        for problem in undeclared_series(self.engine.rules, self.runtime.registry):
            log.warning("%s", problem)
        for rule in self.engine.rules:
            for series in {rule.series, rule.divided_by.series if rule.divided_by else
                           rule.series}:
                info = known.get(series)
                if info is None:
                    continue
                if rule.window is not None and info.kind != "counter":
                    log.warning("alert rule %s takes a rate of %s, which is a gauge",
                                rule.name, series)


def resolve_notifiers(settings: AlertSettings, registry: Registry, source: str
                      ) -> list[tuple[str, NotifierBase, Any, Any]]:
    """Each notifier entry with its key, factory and settings (a plugin's own model
    applied); an unknown type or invalid plugin settings is a ConfigError naming the key.
    Used at start and reload, and by ``podod check-config`` (with the plugins loaded)."""
    out: list[tuple[str, NotifierBase, Any, Any]] = []
    for i, entry in enumerate(settings.notifiers):
        kind = str(getattr(entry, "type", ""))
        factory = registry.notifiers.get(kind)
        key = f"alerts.notifiers[{i}]"
        if factory is None:
            known = ", ".join(sorted(registry.notifiers)) or "none"
            raise ConfigError(f"{source}: {key}.type: there is no notifier type '{kind}' "
                              f"(known: {known})")
        notifier_settings: Any = entry
        if isinstance(entry, PluginNotifierSettings):
            model = getattr(factory, "settings_model", None)
            if model is not None:
                notifier_settings = _validate_plugin(model, entry, source, key)
        out.append((key, entry, factory, notifier_settings))
    return out


def _validate_plugin(model: type[pydantic.BaseModel], entry: PluginNotifierSettings,
                     source: str, key: str) -> Any:
    data = entry.model_dump(by_alias=True)
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        text = format_validation_error(source, exc)
        first = text.splitlines()[0].removeprefix(f"{source}: ")
        raise ConfigError(f"{source}: {key}.{first}") from None


def undeclared_series(rules: list[Rule], registry: Registry) -> list[str]:
    """A sentence for every rule watching a series no collector declares (a typo, or a
    plugin that is not loaded): such a rule can never fire."""
    out = []
    for rule in rules:
        for series in dict.fromkeys([rule.series, *([rule.divided_by.series]
                                                    if rule.divided_by else [])]):
            if series not in registry.series:
                out.append(f"alert rule {rule.name} ({rule.source}) watches {series}, which "
                           "no collector declares (a typo, or a plugin that is not loaded?)")
    return out


def factory(runtime: Runtime) -> AlertsComponent | None:
    if not runtime.config.alerts.enabled:
        return None
    return AlertsComponent(runtime)
