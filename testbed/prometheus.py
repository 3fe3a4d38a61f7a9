"""Debian's Prometheus server and Alertmanager on loopback, each with its own config and data
folder under a temp folder, for tests that scrape /metrics and forward alerts for real."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from testbed.ports import free_port


def find(program: str) -> str | None:
    return shutil.which(program)


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


class _Daemon:
    program = ""
    name = ""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> _Daemon:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: "
                                   f"{self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready: {self.log()[-2000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> _Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PrometheusServer(_Daemon):
    """``prometheus`` scraping the given targets every ``interval``."""

    name = "prometheus"

    def __init__(self, root: Path, targets: list[str], interval: str = "1s") -> None:
        super().__init__(root)
        self.targets = targets
        self.interval = interval

    def argv(self) -> list[str]:
        config = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": "10s"},
            "scrape_configs": [{"job_name": "podod", "static_configs": [
                {"targets": self.targets}]}],
        }
        path = self.root / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return [find("prometheus") or "prometheus", f"--config.file={path}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h", "--log.level=warn"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        data = http_json(url)
        if data.get("status") != "success":
            raise RuntimeError(f"query {expr} failed: {data}")
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def targets_health(self) -> list[dict[str, Any]]:
        data = http_json(f"{self.url}/api/v1/targets")
        targets: list[dict[str, Any]] = data["data"]["activeTargets"]
        return targets


class Alertmanager(_Daemon):
    """``prometheus-alertmanager`` with one do-nothing receiver and clustering off."""

    name = "alertmanager"

    def argv(self) -> list[str]:
        config = {"route": {"receiver": "null", "group_by": ["server"]},
                  "receivers": [{"name": "null"}]}
        path = self.root / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config))
        return [find("prometheus-alertmanager") or "prometheus-alertmanager",
                f"--config.file={path}", f"--storage.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
                "--log.level=warn"]

    def alerts(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = http_json(f"{self.url}/api/v2/alerts")
        return result
