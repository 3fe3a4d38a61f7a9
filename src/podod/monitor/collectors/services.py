"""The ``services`` collector: is every watched unit running, and does every service answer?

- ``service_up{service}``: ``systemctl is-active`` for each unit in the server's
  ``services`` (one command for all of them). Where systemctl cannot answer (no systemd, as in
  a container), ``systemd_available`` is 0 and no ``service_up`` is reported: unknown is not
  down.
- ``probe_success{probe}`` and ``probe_duration_seconds{probe}``: protocol probes from
  podod's machine to the server. By default they follow the server's ``services``:
  postfix → smtp (25) and submission (587), dovecot → imap (143) and imaps (993), sogo →
  sogo (HTTP ``/SOGo/``), postgresql → postgres (``SELECT 1`` on the server's PostgreSQL
  target, see the postgres collector, through its tunnel when configured). Probes are added,
  changed or switched off under ``monitor.collectors.services`` (``probes`` for every server,
  ``servers.<name>.probes`` for one). An unreachable port is ``probe_success 0``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from podod.errors import PododError
from podod.monitor import probes
from podod.monitor.collect import CollectContext
from podod.monitor.collectors.postgres import target_for
from podod.monitor.model import Sample
from podod.monitor.settings import (
    WELL_KNOWN_PROBES,
    ProbeSettings,
    ServicesCollectorSettings,
    ServicesServerSettings,
)
from podod.plugins import Registry

if TYPE_CHECKING:
    from podod.runtime import Runtime
    from podod.servers.runner import Runner
    from podod.servers.settings import ServerConfig

log = logging.getLogger(__name__)

SERVICE_PROBES: dict[str, tuple[str, ...]] = {
    "postfix": ("smtp", "submission"),
    "dovecot": ("imap", "imaps"),
    "sogo": ("sogo",),
    "postgresql": ("postgres",),
    "postgres": ("postgres",),
}
DEFAULT_PORTS = {"smtp": 25, "smtps": 465, "imap": 143, "imaps": 993, "http": 80, "https": 443}


@dataclass(frozen=True)
class Probe:
    name: str
    type: str
    host: str
    port: int | None
    url: str | None


def unit_name(service: str) -> str:
    """``postfix@-.service`` → ``postfix``: the name that picks default probes."""
    return service.removesuffix(".service").split("@", 1)[0]


def _merge(base: ProbeSettings | None, override: ProbeSettings) -> ProbeSettings:
    if base is None:
        return override
    changes = {k: getattr(override, k) for k in override.model_fields_set}
    return base.model_copy(update=changes)


def probes_for(server: ServerConfig, settings: ServicesCollectorSettings) -> list[Probe]:
    """The probes of ``server``: derived from its services, then the configured ones."""
    own = settings.servers.get(server.name) or ServicesServerSettings()
    chosen: dict[str, ProbeSettings] = {}
    derive = own.derive_probes if own.derive_probes is not None else settings.derive_probes
    if derive:
        for service in server.services:
            for name in SERVICE_PROBES.get(unit_name(service), ()):
                chosen.setdefault(name, ProbeSettings())
    for layer in (settings.probes, own.probes):
        for name, probe in layer.items():
            chosen[name] = _merge(chosen.get(name), probe)
    host = own.host or ("127.0.0.1" if server.local else (server.host or "127.0.0.1"))
    out = []
    for name, probe in sorted(chosen.items()):
        if not probe.enabled:
            continue
        kind, port = WELL_KNOWN_PROBES.get(name, (None, None))
        kind = probe.type or kind
        if kind is None:  # the settings validator refuses this already
            continue
        target_host = probe.host or host
        url = probe.url
        if name == "sogo" and url is None and kind in ("http", "https"):
            url = ("http://{host}:20000/SOGo/" if server.local and probe.type is None
                   else "https://{host}/SOGo/")
        if kind in ("http", "https") and url is None:
            url = f"{kind}://{{host}}:{probe.port or DEFAULT_PORTS[kind]}/"
        if url is not None:
            url = url.replace("{host}", target_host)
        out.append(Probe(name, kind, target_host,
                         probe.port or port or DEFAULT_PORTS.get(kind), url))
    return out


def _call(probe: Probe, runtime: Runtime, server: ServerConfig
          ) -> Callable[[], Awaitable[str]] | None:
    port = probe.port or 0
    if probe.type in ("smtp", "smtps"):
        return lambda: probes.smtp(probe.host, port, tls=probe.type == "smtps")
    if probe.type in ("imap", "imaps"):
        return lambda: probes.imap(probe.host, port, tls=probe.type == "imaps")
    if probe.type in ("http", "https"):
        url = probe.url or ""
        return lambda: probes.http(url)
    if probe.type == "tcp":
        return lambda: probes.tcp(probe.host, port)
    if probe.type == "postgres":
        try:
            target = target_for(runtime, server)
        except PododError as exc:
            message = exc.message

            async def unreachable() -> str:
                raise probes.ProbeError(message)

            return unreachable
        if target is None:
            return None  # no PostgreSQL is known for this server
        return lambda: probes.postgres(target)
    return None


async def unit_states(runner: Runner, units: list[str]) -> dict[str, str] | None:
    """``systemctl is-active`` for ``units``; None when systemctl cannot answer there."""
    result = await runner.run(["systemctl", "is-active", *units])
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if len(lines) != len(units):
        return None
    return dict(zip(units, lines, strict=True))


async def collect_services(ctx: CollectContext) -> list[Sample]:
    server = ctx.server
    if server is None:
        return []
    settings: ServicesCollectorSettings = \
        ctx.runtime.config.monitor.collector_settings("services")
    name, now = ctx.server_name, ctx.now
    out: list[Sample] = []
    calls = []
    for probe in probes_for(server, settings):
        call = _call(probe, ctx.runtime, server)
        if call is not None:
            calls.append(probes.run_probe(probe.name, call, settings.timeout))
    units = list(dict.fromkeys(server.services))

    async def systemd() -> dict[str, str] | str | None:
        if not units or ctx.runner is None:
            return "skip"
        try:
            return await unit_states(ctx.runner, units)
        except PododError as exc:
            return exc.message

    states, results = await asyncio.gather(systemd(), asyncio.gather(*calls))
    if isinstance(states, dict):
        ctx.state.pop("systemd", None)
        out.append(Sample("systemd_available", name, 1.0, (), "gauge", now))
        for unit, state in states.items():
            out.append(Sample("service_up", name, 1.0 if state == "active" else 0.0,
                              Sample.labels_of(service=unit), "gauge", now))
    elif states is None:
        if ctx.state.get("systemd") != "absent":
            log.info("services on %s: systemctl cannot answer there (no systemd running); "
                     "service_up is not reported", name)
        ctx.state["systemd"] = "absent"
        out.append(Sample("systemd_available", name, 0.0, (), "gauge", now))
    elif states != "skip" and ctx.state.get("systemd") != states:
        log.info("services on %s: unit states unknown: %s", name, states)
        ctx.state["systemd"] = states
    seen: dict[str, Any] = ctx.state.setdefault("probes", {})
    for result in results:
        labels = Sample.labels_of(probe=result.name)
        out.append(Sample("probe_success", name, 1.0 if result.ok else 0.0, labels, "gauge",
                          now))
        out.append(Sample("probe_duration_seconds", name, result.duration, labels, "gauge",
                          now))
        before = seen.get(result.name)
        if result.ok and before is False:
            log.info("probe %s on %s succeeds again (%s)", result.name, name, result.detail)
        elif not result.ok and before is not False:
            log.warning("probe %s on %s failed: %s", result.name, name, result.detail)
        seen[result.name] = result.ok
    return out


def setup(registry: Registry) -> None:
    registry.collector("services")(collect_services)
