"""The registry of everything pluggable, and plugin discovery.

A plugin is a module (or package) with ``setup(registry)``. It is found in a configured
plugin folder (the repository's ``plugins/`` is one) or through the ``podod.plugins``
entry-point group. podod's own features register through the same registry (see
``podod.builtins``), so the API is proven by the core itself.

A plugin that raises during setup is reported by name, whatever it had registered is
removed again, and the daemon goes on without it.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from podod.bus.spec import CommandSpec, Handler, Param, Permission, StdinKind
from podod.monitor.catalog import SeriesInfo, SeriesKind, builtin_series
from podod.servers.allowlist import AllowList, default_allowlist

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "podod.plugins"
GateFunc = Callable[[Any], Awaitable[str | None]]


@dataclass(frozen=True)
class CollectorSpec:
    """A measurement taken periodically: per server (``per_server``) or once per tick."""

    name: str
    func: Callable[..., Any]
    interval: float | None = None  # None: monitor.interval
    per_server: bool = True
    plugin: str = "core"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ComponentSpec:
    """A long-running part of the daemon: ``factory(runtime)`` returns an object with
    ``async start()`` and ``async stop()``, and optionally ``async reload(config)``."""

    name: str
    factory: Callable[[Any], Any]
    plugin: str = "core"


@dataclass(frozen=True)
class GateSpec:
    """A pre-change gate: ``func(ctx)`` runs before every real change is committed (for a
    command with a unit of work, after its handler and before the commit; without one,
    before the handler). It raises a :class:`~podod.errors.PododError` to refuse the change
    (nothing is committed) or returns a record id (a backup, a snapshot) or None."""

    name: str
    func: Callable[[Any], Awaitable[str | None]]
    plugin: str = "core"


@dataclass
class PluginInfo:
    name: str
    source: str
    loaded: bool
    error: str | None = None
    commands: int = 0


class Registry:
    def __init__(self, plugin_settings: dict[str, dict[str, Any]] | None = None) -> None:
        self.commands: dict[str, CommandSpec] = {}
        self.collectors: dict[str, CollectorSpec] = {}
        self.notifiers: dict[str, Callable[..., Any]] = {}
        self.units: dict[str, Callable[..., Any]] = {}
        self.gates: dict[str, GateSpec] = {}
        self.components: dict[str, ComponentSpec] = {}
        self.alert_rule_packs: dict[str, Path] = {}
        self.allowlist: AllowList = default_allowlist()
        self.series: dict[str, SeriesInfo] = builtin_series()
        self.plugins: dict[str, PluginInfo] = {}
        self._plugin_settings = plugin_settings or {}
        self._current = "core"

    # -- what plugins call ---------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """The calling plugin's own settings (``plugins.settings.<name>`` in podod.yaml)."""
        return dict(self._plugin_settings.get(self._current, {}))

    def command(
        self, name: str, summary: str, *, params: Iterable[Param] = (),
        permission: Permission = "viewer", mutating: bool = False, unit: str | None = None,
        description: str = "", examples: Iterable[str] = (), reads_stdin: bool = False,
        stdin: StdinKind = "none", stdin_option: str | None = None,
        timeout: float | None = None, reply: dict[str, Any] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Declare a command where it is handled::

            @registry.command("user show", "Show one mailbox", params=[Arg("address", "...")])
            async def user_show(ctx, address): ...
        """

        def decorate(handler: Handler) -> Handler:
            self.add_command(CommandSpec(
                name=" ".join(name.split()), summary=summary, handler=handler,
                params=tuple(params), permission=permission, mutating=mutating, unit=unit,
                description=description, examples=tuple(examples), reads_stdin=reads_stdin,
                plugin=self._current, stdin=stdin, stdin_option=stdin_option,
                timeout=timeout, reply=reply,
            ))
            return handler

        return decorate

    def gate(self, name: str) -> Callable[[GateFunc], GateFunc]:
        """Declare a pre-change gate (see :class:`GateSpec`); gates run in the order they
        are declared, the built-in backup gate first::

            @registry.gate("ec2-snapshot")
            async def snapshot(ctx): ...
        """

        def decorate(func: GateFunc) -> GateFunc:
            if name in self.gates:
                raise ValueError(f"gate '{name}' is already registered by "
                                 f"{self.gates[name].plugin}")
            self.gates[name] = GateSpec(name, func, self._current)
            return func

        return decorate

    def add_command(self, spec: CommandSpec) -> None:
        if spec.name in self.commands:
            owner = self.commands[spec.name].plugin
            raise ValueError(f"command '{spec.name}' is already registered by {owner}")
        if spec.plugin != self._current:
            spec = CommandSpec(**{**spec.__dict__, "plugin": self._current})
        self.commands[spec.name] = spec

    def collector(
        self, name: str, *, interval: float | None = None, per_server: bool = True,
        **extra: Any,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            if name in self.collectors:
                raise ValueError(f"collector '{name}' is already registered")
            self.collectors[name] = CollectorSpec(
                name, func, interval, per_server, self._current, dict(extra))
            return func

        return decorate

    def notifier(self, kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a notifier factory: ``factory(settings: dict, runtime) -> notifier``."""

        def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
            if kind in self.notifiers:
                raise ValueError(f"notifier '{kind}' is already registered")
            self.notifiers[kind] = factory
            return factory

        return decorate

    def unit_of_work(self, name: str, factory: Callable[..., Any]) -> None:
        """Register a transaction provider: ``factory(ctx) -> UnitOfWork``."""
        if name in self.units:
            raise ValueError(f"unit of work '{name}' is already registered")
        self.units[name] = factory

    def component(self, name: str, factory: Callable[[Any], Any]) -> None:
        if name in self.components:
            raise ValueError(f"component '{name}' is already registered")
        self.components[name] = ComponentSpec(name, factory, self._current)

    def remote_command(self, program: str, *args: str, rest: str | None = None,
                       purpose: str) -> None:
        """Allow ``program`` with arguments matching ``args`` (regexes) to run on servers."""
        self.allowlist.allow(program, *args, rest=rest, purpose=purpose, plugin=self._current)

    def remote_script(self, name: str, text: str, *, purpose: str) -> None:
        """Allow a fixed shell snippet, run by name (``runner.run_script(name)``)."""
        self.allowlist.script(name, text, purpose=purpose, plugin=self._current)

    def declare_series(self, name: str, kind: SeriesKind, help: str,
                       labels: Iterable[str] = (), unit: str = "", *,
                       about_podod: bool = False) -> None:
        """Describe a series a collector emits (its /metrics HELP and type, docs).
        ``about_podod``: its samples are about podod itself (``server="podod"``)."""
        existing = self.series.get(name)
        info = SeriesInfo(name, kind, help, tuple(labels), unit, self._current, about_podod)
        if existing is not None and (existing.kind, existing.labels) != (kind, info.labels):
            raise ValueError(f"series '{name}' is already declared by {existing.plugin} "
                             "with another type or labels")
        self.series[name] = info

    def alert_rules(self, name: str, path: Path) -> None:
        """Offer a YAML alert-rule pack shipped with the plugin."""
        self.alert_rule_packs[name] = Path(path)

    # -- loading ---------------------------------------------------------------------------

    def load(self, name: str, source: str, setup: Callable[[Registry], Any]) -> PluginInfo:
        """Run one plugin's setup; on failure undo its registrations and record why."""
        before = self._snapshot()
        self._current = name
        try:
            setup(self)
        except Exception as exc:  # a broken plugin must not take the daemon down
            self._restore(before)
            reason = f"{type(exc).__name__}: {exc}"
            log.error("plugin %s failed to load: %s", name, reason)
            log.debug("%s", traceback.format_exc())
            info = PluginInfo(name, source, loaded=False, error=reason)
        else:
            count = len(self.commands) - len(before["commands"])
            info = PluginInfo(name, source, loaded=True, commands=count)
        finally:
            self._current = "core"
        self.plugins[name] = info
        return info

    def _snapshot(self) -> dict[str, Any]:
        return {
            "commands": dict(self.commands), "collectors": dict(self.collectors),
            "notifiers": dict(self.notifiers), "units": dict(self.units),
            "gates": dict(self.gates),
            "components": dict(self.components), "alert_rule_packs": dict(self.alert_rule_packs),
            "allowlist": self.allowlist.copy(), "series": dict(self.series),
        }

    def _restore(self, snapshot: dict[str, Any]) -> None:
        for attr, value in snapshot.items():
            setattr(self, attr, value)


def _setup_of(module: ModuleType, name: str) -> Callable[[Registry], Any]:
    setup = getattr(module, "setup", None)
    if not callable(setup):
        raise AttributeError(f"plugin {name} has no setup(registry) function")
    return setup


def _import_from_path(name: str, path: Path) -> ModuleType:
    """Import a plugin as ``podod_plugins.<name>`` so its own relative imports work."""
    if "podod_plugins" not in sys.modules:
        sys.modules["podod_plugins"] = ModuleType("podod_plugins")
    module_name = f"podod_plugins.{name}"
    if path.is_dir():
        location = path / "__init__.py"
        spec = importlib.util.spec_from_file_location(
            module_name, location, submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load plugin from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def discover_dir(directory: Path) -> list[tuple[str, Path]]:
    """Plugins in ``directory``: packages (folders with ``__init__.py``) and ``*.py`` files."""
    found: list[tuple[str, Path]] = []
    if not directory.is_dir():
        return found
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(("_", ".")):
            continue
        if entry.is_dir() and (entry / "__init__.py").is_file():
            found.append((entry.name, entry))
        elif entry.suffix == ".py":
            found.append((entry.stem, entry))
    return found


def load_plugins(
    registry: Registry, dirs: Iterable[Path], *, use_entry_points: bool = True,
    disabled: Iterable[str] = (),
) -> list[PluginInfo]:
    """Load every plugin from ``dirs`` and the entry-point group, in a stable order."""
    skip = set(disabled)
    infos: list[PluginInfo] = []

    def failed(name: str, source: str, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        log.error("plugin %s failed to load: %s", name, reason)
        info = PluginInfo(name, source, loaded=False, error=reason)
        registry.plugins[name] = info
        infos.append(info)

    for directory in dirs:
        for name, path in discover_dir(Path(directory)):
            if name in skip or name in registry.plugins:
                continue
            try:
                module = _import_from_path(name, path)
                setup = _setup_of(module, name)
            except Exception as exc:
                failed(name, str(path), exc)
                continue
            infos.append(registry.load(name, str(path), setup))
    if use_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in skip or ep.name in registry.plugins:
                continue
            try:
                target = ep.load()
                setup = _setup_of(target, ep.name) if isinstance(target, ModuleType) else target
            except Exception as exc:
                failed(ep.name, f"entry point {ep.value}", exc)
                continue
            infos.append(registry.load(ep.name, f"entry point {ep.value}", setup))
    return infos


def load_builtins(registry: Registry, modules: Iterable[str]) -> list[PluginInfo]:
    """podod's own features, registered through the same API as any plugin."""
    infos = []
    for module_name in modules:
        short = module_name.removeprefix("podod.").replace(".", "-")
        try:
            module = importlib.import_module(module_name)
            setup = _setup_of(module, short)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.error("built-in module %s failed to load: %s", module_name, reason)
            info = PluginInfo(short, module_name, loaded=False, error=reason)
            registry.plugins[short] = info
            infos.append(info)
            continue
        info = registry.load(short, module_name, setup)
        info.source = "built-in"
        infos.append(info)
    return infos
