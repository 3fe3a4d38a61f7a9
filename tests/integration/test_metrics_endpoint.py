"""/metrics as Prometheus meets it: promtool accepts the scrape, a real Prometheus server
scrapes podod and answers PromQL with the ``server`` label, podod's own metrics count."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import OWNER, make_mail_config
from testbed.daemon import DaemonProcess
from testbed.ports import free_port
from testbed.postgres import PgCluster
from testbed.prometheus import PrometheusServer
from testbed.waiting import poll as wait_for

REPO = Path(__file__).resolve().parents[2]
Start = Callable[..., DaemonProcess]
SAMPLE_LINE = re.compile(r'^(podod_[a-zA-Z0-9_]+)\{(.*)\} (\S+)$')


def scrape(port: int, *, accept: str | None = None, gzip_ok: bool = False
           ) -> tuple[str, dict[str, str]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if accept:
        req.add_header("Accept", accept)
    if gzip_ok:
        req.add_header("Accept-Encoding", "gzip")
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = resp.read()
        headers = dict(resp.headers.items())
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return body.decode(), headers


def metrics_daemon(start_daemon: Start, port: int) -> DaemonProcess:
    return start_daemon(metrics={"enabled": True, "listen": "127.0.0.1", "port": port},
                        plugins={"dirs": [str(REPO / "tests" / "plugins"),
                                          str(REPO / "plugins")],
                                 "entry_points": False})


def test_scrape_passes_promtool_and_labels_every_series_with_server(
        start_daemon: Start, tmp_path: Path) -> None:
    port = free_port()
    daemon = metrics_daemon(start_daemon, port)
    assert daemon.request(["feed", "fleet", "--servers", "3"])["ok"]
    daemon.request(["status"])
    daemon.request(["frobnicate", "this"])  # an unknown command: counted as "unknown"
    assert wait_for(lambda: "mx002.example.org" in scrape(port)[0])
    text, headers = scrape(port)
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus)"
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == ""
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(lines) > 3 * 140
    for line in lines:
        match = SAMPLE_LINE.match(line)
        assert match, line
        assert 'server="' in match.group(2), line
        assert "instance=" not in match.group(2), line
    assert 'podod_ssh_connected{server="mx001.example.org"} 1.0' in lines
    assert 'podod_build_info{server="podod",version="0.1.0"} 1.0' in lines
    assert '# TYPE podod_postfix_deliveries_total counter' in text
    assert 'podod_commands_total{command="status",origin="socket",result="ok",' \
           'server="podod"}' in text
    assert 'podod_commands_total{command="unknown",origin="socket",result="usage",' \
           'server="podod"} 1.0' in lines
    assert "frobnicate" not in text
    # gzip when asked for; OpenMetrics when asked for (and promtool-clean as well)
    zipped, zheaders = scrape(port, gzip_ok=True)
    assert zheaders["Content-Encoding"] == "gzip" and "podod_ssh_connected" in zipped
    om, om_headers = scrape(port, accept="application/openmetrics-text; version=1.0.0")
    assert om_headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.rstrip().endswith("# EOF")
    assert "# TYPE podod_postfix_deliveries counter" in om


def test_real_prometheus_scrapes_podod(start_daemon: Start, tmp_path: Path) -> None:
    port = free_port()
    daemon = metrics_daemon(start_daemon, port)
    assert daemon.request(["feed", "fleet", "--servers", "2"])["ok"]
    with PrometheusServer(tmp_path / "prom", [f"127.0.0.1:{port}"]) as prom:
        assert isinstance(prom, PrometheusServer)
        assert wait_for(lambda: bool(prom.query("podod_ssh_connected")), 60), prom.log()
        result = prom.query("podod_ssh_connected")
        servers = sorted(r["metric"]["server"] for r in result)
        assert servers == ["mx000.example.org", "mx001.example.org"]
        assert all(r["metric"]["job"] == "podod" for r in result)
        assert all(r["metric"]["instance"] == f"127.0.0.1:{port}" for r in result)
        queue = prom.query('sum by (server) (podod_postfix_queue_messages{queue="deferred"})')
        assert len(queue) == 2
        build = prom.query("podod_build_info")
        assert build[0]["metric"]["server"] == "podod"
        health = prom.targets_health()
        assert health[0]["health"] == "up", health


def test_metrics_port_taken_is_one_sentence(start_daemon: Start) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        daemon = metrics_daemon(start_daemon, port)
        status = daemon.request(["status"])
        failed = {p["name"]: p["error"] for p in status["data"]["plugins"] if p["error"]}
        assert failed["frontends-metrics"] == (
            f"component metrics failed to start: metrics.listen/port: cannot listen on "
            f"127.0.0.1:{port} (Address already in use)")


@pytest.mark.parametrize("listen", ["127.0.0.1"])
def test_reload_moves_the_endpoint(start_daemon: Start, listen: str) -> None:
    import signal

    import yaml

    first, second = free_port(), free_port()
    daemon = metrics_daemon(start_daemon, first)
    assert "podod_build_info" in scrape(first)[0]
    config = yaml.safe_load(daemon.config_path.read_text())
    config["metrics"]["port"] = second
    daemon.config_path.write_text(yaml.safe_dump(config))
    daemon.signal(signal.SIGHUP)
    assert wait_for(lambda: _answers(second))
    assert not _answers(first)


def _answers(port: int) -> bool:
    try:
        return "podod_build_info" in scrape(port)[0]
    except OSError:
        return False


def test_collector_errors_carry_the_server(start_daemon: Start) -> None:
    port = free_port()
    daemon = metrics_daemon(start_daemon, port)
    for _ in range(2):
        assert daemon.request(["feed", "failure", "queue", "mx1"])["ok"]
    assert daemon.request(["feed", "failure", "system", "mx2"])["ok"]
    expected = 'podod_collector_errors_total{collector="queue",server="mx1"} 2.0'
    assert wait_for(lambda: expected in scrape(port)[0])
    assert 'podod_collector_errors_total{collector="system",server="mx2"} 1.0' in \
        scrape(port)[0]


def test_the_last_backup_is_on_metrics(pg: PgCluster, mail_template: str,
                                       tmp_path: Path) -> None:
    db = "metrics_backup"
    pg.psql(f'CREATE DATABASE "{db}" TEMPLATE "{mail_template}" OWNER "{OWNER}"')
    port = free_port()
    path = make_mail_config(pg, tmp_path, db, metrics={"enabled": True,
                                                        "listen": "127.0.0.1", "port": port})
    daemon = DaemonProcess(path).start()
    try:
        assert "podod_backup_last_success" not in scrape(port)[0]
        reply = daemon.request(["domain", "create", "metrics.example"], execute_real=True)
        assert reply["ok"] and reply["backup_id"], reply
        text = scrape(port)[0]
        stamp = re.search(r'^podod_backup_last_success_timestamp_seconds\{server="podod"\} '
                          r'(\S+)$', text, re.M)
        assert stamp and abs(float(stamp.group(1)) - time.time()) < 60
        age = re.search(r'^podod_backup_last_success_age_seconds\{server="podod"\} (\S+)$',
                        text, re.M)
        assert age and 0 <= float(age.group(1)) < 60
        assert 'podod_commands_total{command="domain create",origin="socket",result="ok",' \
               'server="podod"} 1.0' in text
    finally:
        daemon.stop()
        pg.drop_database(db)


def test_real_collectors_of_the_local_machine_pass_promtool(start_daemon: Start) -> None:
    """The bundled plugins too (what ``make demo`` runs): every metric is in docs/metrics.md."""
    port = free_port()
    daemon = start_daemon(
        servers=[{"name": "local1", "local": True}],
        monitor={"enabled": True, "interval": "1s",
                 "intervals": {"example_uptime": "1s", "tls": "1s"}},
        plugins={"dirs": [str(REPO / "plugins")], "entry_points": False},
        metrics={"enabled": True, "listen": "127.0.0.1", "port": port})
    assert wait_for(lambda: all(
        name in scrape(port)[0] for name in ('podod_node_load1{server="local1"}',
                                             "podod_example_", "podod_tls_probe_success")), 60)
    text, _ = scrape(port)
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus)"
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert 'podod_ssh_connected{server="local1"} 1.0' in text
    assert re.search(r'^podod_node_memory_mem_total_bytes\{server="local1"\} \S+$', text, re.M)
    assert re.search(r'^podod_node_filesystem_used_ratio\{mountpoint="/",server="local1"\} ',
                     text, re.M)
    uncatalogued = [line for line in text.splitlines() if "without a catalogue entry" in line]
    assert uncatalogued == []
    documented = (REPO / "docs" / "metrics.md").read_text()
    exposed = {m.group(1) for m in re.finditer(r"^# TYPE (\S+) ", text, re.M)}
    assert {name for name in exposed if f"| `{name}` |" not in documented} == set()
    assert daemon.request(["status"])["ok"]
