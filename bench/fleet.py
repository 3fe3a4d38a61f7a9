"""A fleet: 200 configured servers, all pointing at one loopback sshd under different names,
at a 30 s interval. Measures how long until every connection is up, then the daemon's CPU
(share of one core) and RSS over a steady window of several intervals, with whatever
collectors are registered running (monitor.enabled) and every server's round trip measured
once per interval.

Targets (issue 4): a full cycle within the interval, under 25 % of one core and 250 MB RSS.
    .venv/bin/python bench/fleet.py [--servers 200] [--interval 30] [--window 90]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from podod.testbed.daemon import DaemonProcess, base_config, write_config
from podod.testbed.sshd import Sshd

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=90.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podod-bench-fleet-") as tmp:
        root = Path(tmp)
        sshd = Sshd(root / "sshd").start()
        daemon: DaemonProcess | None = None
        try:
            names = [f"mx{i:03d}" for i in range(args.servers)]
            servers = [sshd.server_entry(name, keepalive=f"{args.interval}s",
                                         connect_timeout="60s", reconnect_min="1s",
                                         reconnect_max="30s", services=["ssh"])
                       for name in names]
            config = base_config(root, servers=servers,
                                 monitor={"enabled": True, "interval": f"{args.interval}s"},
                                 log={"level": "info"})
            path = write_config(root / "podod.yaml", config)
            daemon = DaemonProcess(path)
            started = time.monotonic()
            daemon.start(timeout=120)
            assert daemon.proc is not None
            pid = daemon.proc.pid

            def connected() -> int:
                data: list[dict[str, Any]] = daemon.request(["server", "list"])["data"]
                return sum(1 for s in data if s["state"] == "connected")

            while (up := connected()) < args.servers:
                if time.monotonic() - started > 180:
                    print(f"fleet: only {up} of {args.servers} servers connected after 180 s")
                    return 1
                time.sleep(0.2)
            connect_all = time.monotonic() - started
            rss_after_connect = rss_mb(pid)
            time.sleep(min(args.interval, 10))  # let the connect burst settle
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            peak = 0.0
            while time.monotonic() - t0 < args.window:
                peak = max(peak, rss_mb(pid))
                time.sleep(1)
            cpu_share = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
            statuses: list[dict[str, Any]] = daemon.request(["server", "list"])["data"]
            rtts = sorted(s["rtt_seconds"] for s in statuses if s["rtt_seconds"] is not None)
            still_up = sum(1 for s in statuses if s["state"] == "connected")
            reconnects = sum(s["reconnects"] for s in statuses)
        finally:
            if daemon is not None:
                daemon.stop(timeout=60)
            sshd.close()
    result = {
        "servers": args.servers, "interval_seconds": args.interval,
        "window_seconds": args.window,
        "connect_all_seconds": round(connect_all, 2),
        "cpu_share_of_one_core": round(cpu_share, 4),
        "rss_mb_after_connect": round(rss_after_connect, 1),
        "rss_mb_peak": round(peak, 1),
        "rtt_ms_median": round(rtts[len(rtts) // 2] * 1000, 2) if rtts else None,
        "rtt_ms_max": round(rtts[-1] * 1000, 2) if rtts else None,
        "connected_at_end": still_up, "reconnects_during_run": reconnects,
        "targets": {"cpu_share_of_one_core": 0.25, "rss_mb": 250,
                    "cycle_within_interval": True},
    }
    ok_cpu = cpu_share < 0.25
    ok_rss = peak < 250
    print(f"fleet: {args.servers} servers connected in {connect_all:.1f} s; "
          f"{still_up} connected at the end, {reconnects} reconnects")
    print(f"fleet: daemon CPU {cpu_share * 100:.1f} % of one core over {args.window:.0f} s "
          f"at a {args.interval:.0f} s interval (target < 25 %){'' if ok_cpu else ' MISSED'}")
    print(f"fleet: RSS {peak:.0f} MB peak, {rss_after_connect:.0f} MB after connecting "
          f"(target < 250 MB){'' if ok_rss else ' MISSED'}")
    if rtts:
        print(f"fleet: round trip {result['rtt_ms_median']} ms median, "
              f"{result['rtt_ms_max']} ms max")
    out = REPO / ".bench"
    out.mkdir(exist_ok=True)
    (out / "fleet.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
