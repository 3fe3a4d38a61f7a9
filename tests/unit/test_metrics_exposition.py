"""The exposition: byte-identical to prometheus-client, promtool-clean, documented exactly,
and the Grafana dashboard uses only names it exposes (in valid PromQL)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from podod.frontends import metrics_doc
from podod.frontends.metrics import (
    Exposition,
    LiveCollector,
    SelfMetrics,
    TextRenderer,
    keyed,
    metric_name,
)
from podod.monitor.model import Sample
from testbed.fleet import fleet_names, fleet_samples

REPO = Path(__file__).resolve().parents[2]


def odd_samples() -> list[Sample]:
    """What collectors might send that needs care."""
    return [
        Sample("service_up", "mx1", 1, Sample.labels_of(service='we"ird\\unit\nname')),
        Sample("node_load1", "mx1", float("nan")),
        Sample("node_load5", "mx1", float("inf")),
        Sample("node_load15", "mx1", float("-inf")),
        Sample("node_memory_mem_total_bytes", "mx1", 16_000_000_000.0),
        Sample("node_memory_MemAvailable_bytes", "mx1", 8_000_000_000.0),  # camelCase
        Sample("postfix_queue_messages", "mx1", -0.0, Sample.labels_of(queue="hold")),
        Sample("my_plugin_things", "mx1", 3, Sample.labels_of(server="other", instance="x")),
        Sample("my_plugin_events_total", "mx1", 12, (), "counter"),
        Sample("my_plugin_hits", "mx1", 7, (), "counter"),
        Sample("weird-name.with:chars", "mx1", 1.5),
        Sample("ssh_connected", 'mx"2', 0),
        Sample("probe_duration_seconds", "mx1", 1234567.891, Sample.labels_of(probe="smtp")),
        Sample("postfix_deliveries_total", "mx1", 10**20, Sample.labels_of(
            transport="smtp", status="sent"), "counter"),
    ] + [Sample("postfix_queue_size_bytes", "mx1", value, Sample.labels_of(queue=str(i)))
         for i, value in enumerate([1e6, 1e7, 123456789.0, 1e15 + 1, 9999999999999998.0,
                                    1e16, 999999.9999, -5e6, 2**53, 1234567.5, 0.1])]


def all_series() -> dict[str, Any]:
    return metrics_doc.all_series()


def render(samples: list[Sample]) -> tuple[str, str]:
    exposition = Exposition(all_series())
    fast = TextRenderer(exposition).render(keyed(samples))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LiveCollector(exposition, samples))  # type: ignore[arg-type]
    return fast, generate_latest(registry).decode()


def test_fast_renderer_is_byte_identical_to_prometheus_client() -> None:
    own = SelfMetrics(commands={("status", "socket", "ok"): 3}, backup_last=1.7e9,
                      now=1.7e9 + 60, notifications={("webhook", "sent"): 2},
                      collector_errors={("system", "mx1"): 1})
    samples = fleet_samples(fleet_names(3)) + odd_samples() + list(own.samples())
    fast, reference = render(samples)
    assert fast == reference
    assert '{server="mx1",service="we\\"ird\\\\unit\\nname"}' in fast
    assert 'podod_node_memory_mem_available_bytes{server="mx1"} 8e+09' in fast
    assert 'podod_my_plugin_things{exported_instance="x",exported_server="other",' \
           'server="mx1"} 3.0' in fast
    assert "# TYPE podod_my_plugin_events_total counter" in fast
    assert "# TYPE podod_my_plugin_hits untyped" in fast
    assert 'podod_weird_name_with_chars{server="mx1"} 1.5' in fast
    assert 'podod_backup_last_success_age_seconds{server="podod"} 60.0' in fast
    # a second render reuses the cached prefixes and still agrees
    assert render(samples)[0] == fast


def test_promtool_accepts_the_exposition(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus)"
    own = SelfMetrics(commands={("status", "socket", "ok"): 1}, backup_last=1.7e9, now=1.7e9,
                      alerts_firing={("DiskFull", "warning", "mx1"): 1})
    text, _ = render(fleet_samples(fleet_names(2)) + list(own.samples()))
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_fleet_state_holds_podods_own_series_once_not_per_server() -> None:
    """bench/metrics.py and bench/alerts.py measure a realistic 200-server state: series about
    podod (the collector cycles, its build) are not repeated for every mail server."""
    from testbed.fleet import SELF_SERIES

    assert metrics_doc.ABOUT_PODOD <= SELF_SERIES
    servers = {s.series for s in fleet_samples(fleet_names(2))}
    assert servers.isdisjoint(metrics_doc.ABOUT_PODOD)


def test_docs_list_every_metric_exactly() -> None:
    assert metrics_doc.main(["--check", str(REPO / "docs" / "metrics.md")]) == 0
    text = (REPO / "docs" / "metrics.md").read_text()
    for name, info in all_series().items():
        assert f"| `{metric_name(name)}` | {info.kind} |" in text


def _exprs(node: Any) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                out.append(value)
            elif key == "query" and isinstance(value, dict) and "query" in value:
                out.append(value["query"])
            else:
                out.extend(_exprs(value))
    elif isinstance(node, list):
        for item in node:
            out.extend(_exprs(item))
    return out


def test_grafana_dashboard_uses_exactly_the_exposed_names(tmp_path: Path) -> None:
    dashboard = json.loads((REPO / "docs" / "grafana" / "podod.json").read_text())
    exprs = _exprs(dashboard)
    assert len(exprs) > 30
    exposed = {metric_name(n) for n in all_series()}
    used = {m for e in exprs for m in re.findall(r"\bpodod_[a-zA-Z0-9_]+", e)}
    assert used - exposed == set()
    for must in ("podod_ssh_connected", "podod_postfix_queue_messages",
                 "podod_tls_cert_not_after_timestamp_seconds", "podod_alerts_firing"):
        assert must in used
    # every query is valid PromQL: promtool parses them as recording rules
    queries = [e for e in exprs if not e.startswith("label_values(")]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}",
         "expr": e.replace("$__rate_interval", "5m").replace("$server", ".*")}
        for i, e in enumerate(queries)]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus)"
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def _panels(nodes: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in nodes:
        out.append(panel)
        out.extend(_panels(panel.get("panels", [])))
    return out


def test_grafana_panels_would_render_meaningfully() -> None:
    """What a Grafana user sees: rates only of counters, a {{server}} in every per-server
    legend, base units, and colours that mean something (Grafana's implicit thresholds,
    red from 80, made 100 reachable servers red and a down service green)."""
    dashboard = json.loads((REPO / "docs" / "grafana" / "podod.json").read_text())
    kinds = {metric_name(n): info.kind for n, info in all_series().items()}
    binary = {"podod_service_up", "podod_probe_success", "podod_tls_cert_valid",
              "podod_ssh_connected", "podod_postgres_up", "podod_systemd_available"}
    units = {"_seconds": "s", "_bytes": "bytes", "_ratio": "percentunit"}
    for panel in _panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        title = panel["title"]
        defaults = panel["fieldConfig"]["defaults"]
        for target in panel["targets"]:
            expr = target["expr"]
            names = re.findall(r"\bpodod_[a-z0-9_]+", expr)
            for name in names:
                rated = re.search(rf"\b(rate|increase)\(\s*{name}\b", expr) is not None
                assert rated == (kinds[name] == "counter"), (title, name)
            if '"$server"' in expr and panel["type"] in ("timeseries", "state-timeline"):
                assert "{{server}}" in target.get("legendFormat", ""), title
            plain = len(names) == 1 and not re.search(r"[-*/]|\b(rate|increase)\(", expr)
            for suffix, unit in units.items():
                if plain and names[0].endswith(suffix):
                    assert defaults.get("unit") == unit, (title, defaults.get("unit"))
            if panel["type"] == "state-timeline" and set(names) & binary:
                values = {v for m in defaults.get("mappings", []) for v in m["options"]}
                assert values >= {"0", "1"}, f"{title}: 0 and 1 are not named"
        if panel["type"] in ("stat", "state-timeline"):
            steps = defaults.get("thresholds", {}).get("steps")
            assert steps, f"{title}: no thresholds of its own (Grafana's red from 80 applies)"
    used = {m for p in _panels(dashboard["panels"]) for t in p.get("targets", [])
            for m in re.findall(r"\bpodod_[a-z0-9_]+", t["expr"])}
    assert "podod_probe_success" in used  # outside view of every service, not only systemd


@pytest.mark.parametrize(("series", "name"), [
    ("ssh_connected", "podod_ssh_connected"),
    ("node_memory_MemTotal_bytes", "podod_node_memory_mem_total_bytes"),
    ("podod_x", "podod_x"),
    ("9lives", "podod__9lives"),
])
def test_metric_names(series: str, name: str) -> None:
    assert metric_name(series) == name
