"""The start-up budget as behaviour, not as a stopwatch: a podod whose servers are all local,
started on a demo-like configuration (monitoring, the default alert rules, /metrics, the
repository's plugins, a mail database), has not imported the heavy libraries that only some
configurations or commands need (docs/architecture.md, "Start-up budget"). bench/startup.py
measures the time and memory; this test notices the import that would bring them back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testbed.daemon import write_config
from testbed.ports import free_port

REPO = Path(__file__).resolve().parents[2]

# Each is imported where it is used, never at start with a local-only configuration:
NOT_AT_START = {
    "asyncssh": "only with a remote server, or server add / host-key checks",
    "cryptography": "asyncssh's, and the tls plugin's first certificate",
    "jinja2": "the first template compiled (the default pack's compile when they render)",
    "aiohttp": "/metrics when it is enabled, the webhook/Alertmanager notifiers, the HTTP "
               "probe",
    "nio": "a configured Matrix notifier",
    "apscheduler": "configured maintenance windows",
    "boto3": "EC2 snapshot backups",
    "botocore": "EC2 snapshot backups",
    "prometheus_client": "the first OpenMetrics scrape (podod renders the text format)",
    "multiprocessing": "the first password hash (its worker pool)",
    "rich": "podoctl, never the daemon",
    "jwt": "the REST API's first access token (login) or bearer token checked",
    "argon2": "the first API account password hashed or checked",
    "pyotp": "the first API account 2fa enable or TOTP login",
    "qrcode": "api account 2fa enable (the QR code)",
}

# Runs the real entry point (podod.cli.main); at READY=1 it writes the loaded modules to a
# file and stops the daemon with SIGTERM, as systemd would.
WRAPPER = """
import json, os, signal, sys
import podod.sdnotify
from podod.cli import main

config, out = sys.argv[1], sys.argv[2]
notify = podod.sdnotify.notify

def at_ready(state):
    if state.startswith("READY=1") and not os.path.exists(out):
        with open(out, "w") as f:
            json.dump(sorted(sys.modules), f)
        os.kill(os.getpid(), signal.SIGTERM)
    return notify(state)

podod.sdnotify.notify = at_ready
sys.exit(main(["run", "-c", config]))
"""


def demo_like(root: Path, servers: list[dict[str, Any]], metrics: bool = True
              ) -> dict[str, Any]:
    return {
        "state_dir": str(root / "state"),
        "log": {"level": "info"},
        "socket": {"path": str(root / "podod.sock")},
        "plugins": {"dirs": [str(REPO / "plugins")], "entry_points": False},
        # nothing listens there: the pool starts and retries, as it does while PostgreSQL
        # is down
        "mail": {"database": {"dsn": f"postgresql://podod@127.0.0.1:{free_port()}/mail"}},
        "backup": {"dir": str(root / "backups")},
        "servers": servers,
        "monitor": {"enabled": True},
        "alerts": {"enabled": True},
        "metrics": {"enabled": metrics, "listen": "127.0.0.1", "port": free_port()},
    }


def modules_at_ready(tmp_path: Path, servers: list[dict[str, Any]], metrics: bool = True
                     ) -> set[str]:
    config = write_config(tmp_path / "podod.yaml", demo_like(tmp_path, servers, metrics))
    out = tmp_path / "modules.json"
    log = tmp_path / "podod.log"
    with open(log, "wb") as stdio:
        result = subprocess.run([sys.executable, "-c", WRAPPER, str(config), str(out)],
                                stdout=stdio, stderr=stdio, stdin=subprocess.DEVNULL,
                                timeout=120, check=False)
    assert result.returncode == 0, log.read_text()
    assert out.exists(), log.read_text()
    return set(json.loads(out.read_text()))


def loaded(modules: set[str], package: str) -> bool:
    return package in modules or any(m.startswith(package + ".") for m in modules)


@pytest.mark.parametrize("metrics", [True, False], ids=["metrics", "no-metrics"])
def test_a_local_only_podod_starts_without_the_heavy_libraries(tmp_path: Path,
                                                               metrics: bool) -> None:
    modules = modules_at_ready(tmp_path, [{"name": "localhost", "local": True}], metrics)
    # what it did start: the real components of the demo configuration
    for needed in ("podod.frontends.metrics", "podod.alerts.engine",
                   "podod.monitor.scheduler", "podod.mail.database", "podod_plugins.tls"):
        assert needed in modules, needed
    # /metrics is served by aiohttp.web (as the REST API will be), so it comes with it
    assert loaded(modules, "aiohttp") is metrics
    expected = {"aiohttp"} if metrics else set()
    early = {name: why for name, why in NOT_AT_START.items()
             if loaded(modules, name) and name not in expected}
    assert early == {}, f"imported at start, but needed only later: {early}"


def test_a_remote_server_brings_asyncssh_at_start(tmp_path: Path) -> None:
    # The same check sees asyncssh when a server is reached over SSH (nothing answers on
    # this port: the first attempt fails, podod starts and keeps trying).
    remote = {"name": "mx1", "host": "127.0.0.1", "port": free_port(),
              "known_hosts": str(tmp_path / "known_hosts")}
    (tmp_path / "known_hosts").write_text("")
    modules = modules_at_ready(tmp_path, [remote])
    assert loaded(modules, "asyncssh")
    assert "podod.servers.connection" in modules
