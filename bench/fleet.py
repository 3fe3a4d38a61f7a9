"""A fleet: 200 configured servers, all pointing at one loopback sshd under different names,
at a 30 s interval, every built-in collector doing real work for every server:

- system: the one-round-trip /proc + df script over SSH;
- services: ``systemctl is-active`` over SSH, and protocol probes against a real Postfix
  (smtp, submission) and Dovecot (imap, and lmtp as a tcp probe) of the test bed;
- dovecot: ``doveadm stats dump`` over SSH from that Dovecot's stats-reader socket;
- queue: ``postqueue -c DIR -j`` of that Postfix for the servers that log in as root (an
  unprivileged login may not read a Postfix instance with its own config folder), through a
  second sshd;
- postgres: the collector and a ``SELECT 1`` probe through each server's SSH tunnel to a real
  PostgreSQL, for every tenth server.

After every server is connected and each collector has closed a cycle, the daemon's CPU
(share of one core) and RSS are measured over a window of several intervals, and the cycle
statistics (``collector cycles``) of the cycles in that window are read over the socket:
per collector, the cycle time (the longest any run took from its turn to its end) as median
and max against the interval, span (first start to last end), runs ok/failed/skipped/overran
and the slowest server.

Targets (issue 4): a full cycle within the interval, under 25 % of one core and 250 MB RSS.
    .venv/bin/python bench/fleet.py [--servers 200] [--interval 30] [--window 120]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (the checkout's testbed/ on sys.path)
from podod.mail.serverconfig import SqlLogin
from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.dovecot import Dovecot
from testbed.ports import free_port
from testbed.postfix import Postfix
from testbed.postgres import PgCluster
from testbed.sshd import Sshd

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
OWNER, OWNER_PW = "podod", "bench-owner-pw"
READER, READER_PW = "mailreader", "bench-reader-pw"
COLLECTORS = ("system", "services", "dovecot", "queue", "postgres")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def mail_database(pg: PgCluster, root: Path) -> None:
    """The mail schema and its SELECT-only role, made by ``podod db init --roles``."""
    pg.create_role(OWNER, OWNER_PW)
    pg.psql(f'ALTER ROLE "{OWNER}" CREATEROLE')
    pg.create_database("mail", OWNER)
    secret = root / "owner-pw"
    secret.write_text(OWNER_PW)
    config = base_config(root / "init", mail={
        "database": {"dsn": f"postgresql://{OWNER}@127.0.0.1:{pg.port}/mail",
                     "password_file": str(secret)},
        "roles": {"readonly": READER, "readonly_password": READER_PW}})
    (root / "init").mkdir()
    path = write_config(root / "init" / "podod.yaml", config)
    init = subprocess.run([sys.executable, "-m", "podod.cli", "db", "init", "--roles", "-c",
                           str(path)], capture_output=True, text=True)
    if init.returncode != 0:
        raise RuntimeError(f"podod db init failed: {init.stderr.strip()}")


def fleet_config(root: Path, args: argparse.Namespace, sshd: Sshd, root_sshd: Sshd,
                 pg: PgCluster, postfix: Postfix, dovecot: Dovecot) -> dict[str, Any]:
    servers: list[dict[str, Any]] = []
    pg_targets: dict[str, Any] = {}
    secret = root / "monitor-pw"
    secret.write_text(OWNER_PW)
    timing = {"keepalive": f"{args.interval}s", "connect_timeout": "60s",
              "reconnect_min": "1s", "reconnect_max": "30s"}
    for i in range(args.servers):
        name = f"mx{i:03d}"
        as_root = i >= args.servers - args.root_servers
        services = ["postfix", "dovecot"] if as_root else ["dovecot", "ssh"]
        entry: dict[str, Any] = {}
        if i % args.postgres_every == 0:
            services.append("postgresql")
            entry["tunnels"] = [{"name": "pg", "remote_port": pg.port}]
            pg_targets[name] = {"dsn": f"postgresql://{OWNER}@db.invalid:1/postgres",
                                "password_file": str(secret), "tunnel": "pg"}
        server = (root_sshd if as_root else sshd).server_entry(
            name, services=services, **timing, **entry)
        servers.append(server)
    probes = {"smtp": {"port": postfix.smtp_port}, "submission": {"port": postfix.smtp_port},
              "imap": {"port": dovecot.imap_port}, "imaps": {"enabled": False},
              "lmtp": {"type": "tcp", "port": dovecot.lmtp_port}}
    monitor = {"enabled": True, "interval": f"{args.interval}s", "collectors": {
        "services": {"probes": probes},
        "queue": {"config_dir": str(postfix.config_dir)},
        "dovecot": {"socket": str(dovecot.stats_socket)},
        "postgres": {"mail_database": False, "servers": pg_targets}}}
    return base_config(root, servers=servers, monitor=monitor, log={"level": "info"})


def cycles_in(daemon: DaemonProcess, collector: str, since: float, until: float,
              interval: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The collector's closed cycles whose whole interval lies in [since, until]."""
    reply = daemon.request(["collector", "cycles", "--collector", collector, "--last",
                            "1000"])
    if not reply["ok"]:
        raise RuntimeError(reply["message"])
    summary: dict[str, Any] = reply["data"][0]
    cycles = [c for c in summary["recent"]
              if c["window_start"] >= since and c["window_start"] + interval <= until]
    return summary, cycles


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=120.0)
    parser.add_argument("--root-servers", type=int, default=10,
                        help="servers that log in as root and read the Postfix queue")
    parser.add_argument("--postgres-every", type=int, default=10,
                        help="every Nth server measures PostgreSQL through its tunnel")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="podod-bench-fleet-"))
    os.chmod(root, 0o711)  # postgres, vmail, dovecot and postfix must reach their folders
    started_all = time.monotonic()
    sshd = Sshd(root / "sshd")
    root_sshd = Sshd(root / "root-sshd", user="root")
    pg = PgCluster(root / "pg", free_port())
    dovecot: Dovecot | None = None
    postfix: Postfix | None = None
    daemon: DaemonProcess | None = None
    try:
        sshd.start()
        root_sshd.start()
        pg.start()
        mail_database(pg, root)
        login = SqlLogin(host="127.0.0.1", port=pg.port, dbname="mail", user=READER,
                         password=READER_PW)
        dovecot = Dovecot(root / "dovecot", login).start()
        postfix = Postfix(root / "postfix", login, lmtp_port=dovecot.lmtp_port).start()
        path = write_config(root / "podod.yaml",
                            fleet_config(root, args, sshd, root_sshd, pg, postfix, dovecot))
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
        # Wait for the first closed cycle of every collector (the first one after start is
        # partial: it holds the servers whose phase had not passed yet).
        deadline = time.monotonic() + 3 * args.interval + 30
        while time.monotonic() < deadline:
            overview = daemon.request(["collector", "cycles"])["data"]
            if all(s["cycles"] >= 1 for s in overview):
                break
            time.sleep(1)
        window_from = time.time()
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        peak = rss_mb(pid)
        while time.monotonic() - t0 < args.window:
            peak = max(peak, rss_mb(pid))
            time.sleep(1)
        cpu_share = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        # let the window's last cycle close (once its last run ended)
        window_until = time.time()
        time.sleep(10)
        per_collector: dict[str, Any] = {}
        for name in COLLECTORS:
            summary, cycles = cycles_in(daemon, name, window_from, window_until,
                                        args.interval)
            times = [c["cycle_time"] for c in cycles]
            spans = [c["span"] for c in cycles if c["span"] is not None]
            slowest = max(cycles, key=lambda c: c["slowest"]) if cycles else None
            per_collector[name] = {
                "jobs": summary["jobs"], "cycles": len(cycles),
                "cycle_time_median_s": round(statistics.median(times), 3) if times else None,
                "cycle_time_max_s": round(max(times), 3) if times else None,
                "span_median_s": round(statistics.median(spans), 2) if spans else None,
                "span_max_s": round(max(spans), 2) if spans else None,
                "longest_wait_s": round(max((c["longest_wait"] for c in cycles),
                                            default=0.0), 3),
                "ok": sum(c["ok"] for c in cycles), "failed": sum(c["failed"] for c in cycles),
                "skipped": sum(c["skipped"] for c in cycles),
                "overran": sum(c["overran"] for c in cycles),
                "all_fit": bool(cycles) and all(c["fits"] for c in cycles),
                "slowest_run_s": round(slowest["slowest"], 3) if slowest else None,
                "slowest_server": slowest["slowest_server"] if slowest else None,
            }
        jobs: list[dict[str, Any]] = daemon.request(["collector", "list"])["data"]
        errors = Counter((j["collector"], j["last_error"]) for j in jobs if j["last_error"])
        statuses: list[dict[str, Any]] = daemon.request(["server", "list"])["data"]
        rtts = sorted(s["rtt_seconds"] for s in statuses if s["rtt_seconds"] is not None)
        still_up = sum(1 for s in statuses if s["state"] == "connected")
        reconnects = sum(s["reconnects"] for s in statuses)
    finally:
        if daemon is not None:
            daemon.stop(timeout=60)
        for server in (postfix, dovecot):
            if server is not None:
                server.stop()
        pg.stop()
        sshd.close()
        root_sshd.close()
        shutil.rmtree(root, ignore_errors=True)
    all_fit = all(c["all_fit"] for c in per_collector.values())
    result = {
        "servers": args.servers, "interval_seconds": args.interval,
        "window_seconds": args.window, "root_servers": args.root_servers,
        "postgres_servers": len(range(0, args.servers, args.postgres_every)),
        "connect_all_seconds": round(connect_all, 2),
        "cpu_share_of_one_core": round(cpu_share, 4),
        "rss_mb_after_connect": round(rss_after_connect, 1),
        "rss_mb_peak": round(peak, 1),
        "rtt_ms_median": round(rtts[len(rtts) // 2] * 1000, 2) if rtts else None,
        "rtt_ms_max": round(rtts[-1] * 1000, 2) if rtts else None,
        "connected_at_end": still_up, "reconnects_during_run": reconnects,
        "collectors": per_collector,
        "every_cycle_fit": all_fit,
        "last_errors": [{"collector": c, "error": e, "jobs": n}
                        for (c, e), n in errors.most_common()],
        "bench_seconds": round(time.monotonic() - started_all, 1),
        "targets": {"cpu_share_of_one_core": 0.25, "rss_mb": 250,
                    "cycle_within_interval": True},
    }
    ok_cpu = cpu_share < 0.25
    ok_rss = peak < 250
    print(f"fleet: {args.servers} servers ({args.root_servers} as root reading the Postfix "
          f"queue, {result['postgres_servers']} with PostgreSQL through a tunnel) connected "
          f"in {connect_all:.1f} s; {still_up} connected at the end, {reconnects} reconnects")
    print(f"fleet: cycles over a {args.window:.0f} s window at a {args.interval:.0f} s "
          "interval (cycle time = the longest any run took from its turn to its end; "
          "target: under the interval, nothing skipped or overrun):")
    for name, c in per_collector.items():
        print(f"  {name:9} {c['jobs']:4} jobs, {c['cycles']} cycles: cycle time median "
              f"{c['cycle_time_median_s']} s, max {c['cycle_time_max_s']} s (interval "
              f"{args.interval:.0f} s); span median {c['span_median_s']} s; "
              f"runs {c['ok']} ok, {c['failed']} failed, {c['skipped']} skipped, "
              f"{c['overran']} overran; slowest {c['slowest_server']} "
              f"{c['slowest_run_s']} s{'' if c['all_fit'] else '  MISSED'}")
    print(f"fleet: daemon CPU {cpu_share * 100:.1f} % of one core over {args.window:.0f} s "
          f"(target < 25 %){'' if ok_cpu else ' MISSED'}")
    print(f"fleet: RSS {peak:.0f} MB peak, {rss_after_connect:.0f} MB after connecting "
          f"(target < 250 MB){'' if ok_rss else ' MISSED'}")
    if rtts:
        print(f"fleet: round trip {result['rtt_ms_median']} ms median, "
              f"{result['rtt_ms_max']} ms max")
    for item in result["last_errors"]:
        print(f"fleet: {item['jobs']} {item['collector']} jobs failing: {item['error']}")
    out = REPO / ".bench"
    out.mkdir(exist_ok=True)
    (out / "fleet.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
