"""Time from `podod run` to READY=1 (systemd notify) and RSS after 10 s idle, on the demo
configuration (its own throwaway PostgreSQL cluster, local monitoring, /metrics).

Targets (issue 2): ready in under 1 s, idle under 80 MB RSS.
    .venv/bin/python bench/startup.py [--runs 5] [--idle 10]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from podod.testbed.ports import free_port
from podod.testbed.postgres import PgCluster

REPO = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podod-bench-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        port = free_port()
        cluster = PgCluster(root / "pg", port)
        cluster.start()
        try:
            password = secrets.token_urlsafe(12)
            cluster.create_role("podod", password)
            cluster.create_database("mail", "podod")
            (root / "pg-password").write_text(password)
            config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
            config["state_dir"] = str(root / "state")
            config["socket"]["path"] = str(root / "podod.sock")
            config["plugins"]["dirs"] = [str(REPO / "plugins")]
            config["mail"]["database"]["dsn"] = f"postgresql://podod@127.0.0.1:{port}/mail"
            config["mail"]["database"]["password_file"] = str(root / "pg-password")
            config["backup"]["dir"] = str(root / "backups")
            config["metrics"]["port"] = free_port()
            path = root / "podod.yaml"
            path.write_text(yaml.safe_dump(config))
            podod = [sys.executable, "-m", "podod.cli"]
            subprocess.run([*podod, "db", "init", "-c", str(path)], check=False,
                           capture_output=True)
            ready_times, rss = [], []
            for run in range(args.runs):
                notify = str(root / f"notify{run}.sock")
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
                    listener.bind(notify)
                    listener.settimeout(30)
                    started = time.perf_counter()
                    with open(root / "podod.log", "ab") as log:
                        proc = subprocess.Popen(
                            [*podod, "run", "-c", str(path)], stdout=log, stderr=log,
                            env={**os.environ, "NOTIFY_SOCKET": notify})
                    while b"READY=1" not in listener.recv(4096):
                        pass
                    ready_times.append(time.perf_counter() - started)
                    if run == args.runs - 1:
                        time.sleep(args.idle)
                        rss.append(rss_mb(proc.pid))
                    proc.terminate()
                    proc.wait(30)
        finally:
            cluster.stop()
    result = {
        "ready_seconds_median": round(statistics.median(ready_times), 3),
        "ready_seconds_max": round(max(ready_times), 3),
        "idle_rss_mb": round(rss[-1], 1), "idle_seconds": args.idle, "runs": args.runs,
        "targets": {"ready_seconds": 1.0, "idle_rss_mb": 80},
    }
    print(f"startup: READY after {result['ready_seconds_median'] * 1000:.0f} ms median "
          f"({result['ready_seconds_max'] * 1000:.0f} ms max, {args.runs} runs; target < 1 s)")
    print(f"startup: RSS after {args.idle:.0f} s idle: {result['idle_rss_mb']} MB (target < 80 MB)")
    out = REPO / ".bench"
    out.mkdir(exist_ok=True)
    (out / "startup.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
