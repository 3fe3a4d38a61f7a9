"""Time from `podod run` to READY=1 (systemd notify) and RSS after 10 s idle, on the demo
configuration (its own throwaway PostgreSQL cluster, local monitoring, /metrics).

Targets (issue 2): ready in under 1 s, idle under 80 MB RSS.
    .venv/bin/python bench/startup.py [--runs 15] [--idle 10] [--rss-runs 3]

The machine is shared, so a single start says little: READY is the median of ``--runs``
starts (after one uncounted warm-up start), printed next to the load average during the
runs and the CPU time the daemon used until READY (which waiting for a busy CPU does not
inflate). The daemon runs with compiled bytecode, as an installed podod does (pip compiles
it at install time): the warm-up start writes it under the bench's temp folder
(PYTHONPYCACHEPREFIX), even when PYTHONDONTWRITEBYTECODE is set here.
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

import _repo  # noqa: F401  (the checkout's testbed/ on sys.path)
from testbed.ports import free_port
from testbed.postgres import PgCluster

REPO = Path(__file__).resolve().parent.parent
TARGET_READY_S = 1.0
TARGET_RSS_MB = 80.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """user + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start_once(podod: list[str], config: Path, notify: str, log: Path,
               env: dict[str, str], idle: float | None) -> dict[str, float]:
    """One start: seconds to READY, CPU seconds used by then, and RSS after ``idle``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(notify)
        listener.settimeout(60)
        started = time.perf_counter()
        with open(log, "ab") as out:
            proc = subprocess.Popen([*podod, "run", "-c", str(config)], stdout=out,
                                    stderr=out, env={**env, "NOTIFY_SOCKET": notify})
        try:
            while b"READY=1" not in listener.recv(4096):
                pass
            result = {"ready": time.perf_counter() - started, "cpu": cpu_seconds(proc.pid)}
            if idle is not None:
                time.sleep(idle)
                result["rss"] = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    os.unlink(notify)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15, help="starts timed to READY")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before RSS")
    parser.add_argument("--rss-runs", type=int, default=3,
                        help="how many of the starts also idle and measure RSS")
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
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
            podod = [sys.executable, "-m", "podod.cli"]
            subprocess.run([*podod, "db", "init", "-c", str(path)], check=False,
                           capture_output=True, env=env)
            log = root / "podod.log"
            start_once(podod, path, str(root / "notify.sock"), log, env, None)  # warm-up
            runs, loads = [], [os.getloadavg()[0]]
            for run in range(args.runs):
                idle = args.idle if run >= args.runs - args.rss_runs else None
                runs.append(start_once(podod, path, str(root / "notify.sock"), log, env,
                                       idle))
                loads.append(os.getloadavg()[0])
        finally:
            cluster.stop()
    ready = [r["ready"] for r in runs]
    cpu = [r["cpu"] for r in runs]
    rss = [r["rss"] for r in runs if "rss" in r]
    result = {
        "ready_seconds_median": round(statistics.median(ready), 3),
        "ready_seconds_min": round(min(ready), 3),
        "ready_seconds_max": round(max(ready), 3),
        "ready_cpu_seconds_median": round(statistics.median(cpu), 3),
        "idle_rss_mb_median": round(statistics.median(rss), 1),
        "idle_rss_mb_max": round(max(rss), 1),
        "idle_seconds": args.idle, "runs": args.runs, "rss_runs": len(rss),
        "ready_ms_each": [round(r * 1000) for r in ready],
        "idle_rss_mb_each": [round(r, 1) for r in rss],
        "load_average_1min": {"start": round(loads[0], 2), "end": round(loads[-1], 2),
                              "median": round(statistics.median(loads), 2)},
        "cpus": os.cpu_count(),
        "targets": {"ready_seconds": TARGET_READY_S, "idle_rss_mb": TARGET_RSS_MB},
    }
    load = result["load_average_1min"]
    print(f"startup: load average {load['median']:.2f} (1 min, median over the runs; "
          f"{load['start']:.2f} at the start, {load['end']:.2f} at the end; "
          f"{os.cpu_count()} CPUs)")
    print(f"startup: READY after {result['ready_seconds_median'] * 1000:.0f} ms median "
          f"({result['ready_seconds_min'] * 1000:.0f}-{result['ready_seconds_max'] * 1000:.0f}"
          f" ms, {args.runs} runs; target < {TARGET_READY_S:g} s), "
          f"{result['ready_cpu_seconds_median'] * 1000:.0f} ms of CPU")
    print(f"startup: RSS after {args.idle:.0f} s idle: {result['idle_rss_mb_median']} MB "
          f"median of {len(rss)} (max {result['idle_rss_mb_max']} MB; target < "
          f"{TARGET_RSS_MB:g} MB)")
    out = REPO / ".bench"
    out.mkdir(exist_ok=True)
    (out / "startup.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
