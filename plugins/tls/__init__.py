"""The tls plugin: certificate expiry and chain validity of every mail endpoint.

Settings (``plugins.settings.tls`` in podod.yaml)::

    endpoints:            # which endpoints to probe on every server (name → port)
      smtp: 25            # known names pick their mode: smtp/submission STARTTLS, imap
      submission: 587     # STARTTLS, smtps/imaps/https implicit TLS; any other name is
      imaps: 993          # implicit TLS on the given port
      https: 443
    ca_file: null         # a private CA to verify against, besides the system's trust store
    server_name: null     # the name certificates are checked for (default: the server's host)
    timeout: 10s

Series (per server, label ``endpoint``): ``tls_cert_not_after_timestamp_seconds``,
``tls_cert_valid`` (1 when chain and host name verify), ``tls_probe_success``,
``tls_probe_duration_seconds``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from podod.durations import parse_duration
from podod.monitor.model import Sample
from podod.plugins import Registry

from .probe import DEFAULT_ENDPOINTS, Mode, TlsResult, probe

DEFAULTS = {"smtp": 25, "submission": 587, "imaps": 993, "https": 443}


def endpoints_from(settings: dict[str, Any]) -> list[tuple[str, int, Mode]]:
    configured = settings.get("endpoints") or DEFAULTS
    if not isinstance(configured, dict):
        raise ValueError("plugins.settings.tls.endpoints must map endpoint names to ports")
    out: list[tuple[str, int, Mode]] = []
    for name, port in configured.items():
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"plugins.settings.tls.endpoints.{name} must be a port number")
        mode = DEFAULT_ENDPOINTS.get(str(name), (port, "implicit"))[1]
        out.append((str(name), port, mode))
    return out


def samples_of(server: str, result: TlsResult) -> list[Sample]:
    labels = Sample.labels_of(endpoint=result.endpoint)
    out = [Sample("tls_probe_success", server, 1.0 if result.ok else 0.0, labels),
           Sample("tls_probe_duration_seconds", server, result.duration, labels)]
    if result.ok and result.not_after is not None:
        out.append(Sample("tls_cert_not_after_timestamp_seconds", server, result.not_after,
                          labels))
        out.append(Sample("tls_cert_valid", server, 1.0 if result.valid else 0.0, labels))
    return out


def setup(registry: Registry) -> None:
    registry.declare_series("tls_cert_not_after_timestamp_seconds", "gauge",
                            "When the endpoint's certificate expires (Unix time)", ["endpoint"])
    registry.declare_series("tls_cert_valid", "gauge",
                            "1 when the certificate chain and host name verify", ["endpoint"])
    registry.declare_series("tls_probe_success", "gauge",
                            "1 when a certificate could be read from the endpoint",
                            ["endpoint"])
    registry.declare_series("tls_probe_duration_seconds", "gauge",
                            "How long the TLS probe of the endpoint took", ["endpoint"])
    settings = registry.settings()
    endpoints = endpoints_from(settings)
    ca_file = settings.get("ca_file")
    server_name = settings.get("server_name")
    timeout = parse_duration(settings.get("timeout", 10))

    @registry.collector("tls", interval=parse_duration(settings.get("interval", "1h")))
    async def collect_tls(ctx: Any) -> list[Sample]:
        server = ctx.server
        host = "127.0.0.1" if getattr(server, "local", False) else server.host
        results = await asyncio.gather(*[
            probe(name, host, port, mode, server_name=server_name or (
                None if getattr(server, "local", False) else server.host),
                ca_file=ca_file, timeout=timeout)
            for name, port, mode in endpoints])
        return [s for r in results for s in samples_of(server.name, r)]
