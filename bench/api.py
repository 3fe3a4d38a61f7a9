"""The REST API (issue 15) against a real daemon on a throwaway PostgreSQL cluster, with wrk
(the Debian package) on loopback.

1. ``GET /api/users?domain=...`` first page (100 mailboxes) over a domain of 10 000
   mailboxes (seeded with SQL), one request at a time, each a new request on a kept-alive
   connection: the client's round trip. Target: median under 15 ms.
2. An authenticated GET at 50 concurrent connections for ``--seconds`` with wrk:
   requests/s, p99 and errors (non-2xx or socket errors). ``/api/monitoring/status`` (the
   frontend and the bus: token, rate limit, parse, authorize, audit record, reply) against
   the target of at least 2 000 requests/s with zero errors; then ``/api/users/{email}``
   (one mailbox: three PostgreSQL queries more) for comparison. The daemon is one process
   (one core for Python); PostgreSQL and wrk run beside it on the same machine.
3. Login with Argon2id (an API account, docs/api-auth.md) again and again while 50 GETs/s
   run: the GETs' p99 with and without the logins (target: under 50 ms during them).

Every request is also a bus request: parsed, authorized, audited (a signed record in
state.db) and counted, as with podoctl.

    .venv/bin/python bench/api.py [--mailboxes 10000] [--firsts 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from _repo import save_result, write_config  # puts the checkout's testbed/ on sys.path
from podod.mail.passwords import hash_password
from testbed.daemon import DaemonProcess, base_config
from testbed.ports import free_port
from testbed.postgres import PgCluster

TOKEN = "bench-" + secrets.token_urlsafe(24)
DOMAIN = "big.example"
TARGETS = {"first_page_ms_median": 15.0, "get_rps_at_50": 2000.0, "get_errors": 0,
           "login_get_p99_ms": 50.0}
_LATENCY = re.compile(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_TOTAL = re.compile(r"(\d+) requests in")
_BUS_MS = re.compile(r"command user list by api:bench via api: ok in ([\d.]+) ms")


def seed(cluster: PgCluster, db: str, count: int) -> None:
    digest = hash_password("Bench-Password-7-Long", rounds=1000)
    cluster.psql(
        f"INSERT INTO domain (domain) VALUES ('{DOMAIN}');"
        "INSERT INTO mailbox (username, password, name, maildir, quota, local_part, domain) "
        f"SELECT 'user' || i || '@{DOMAIN}', '{digest}', 'User Number ' || i, "
        f"'{DOMAIN}/user' || i || '/', 1073741824, 'user' || i, '{DOMAIN}' "
        f"FROM generate_series(1, {count}) AS i;"
        "INSERT INTO alias (address, goto, domain) "
        f"SELECT username, username, domain FROM mailbox WHERE domain = '{DOMAIN}';"
        "INSERT INTO quota2 (username, bytes, messages) "
        f"SELECT username, (random() * 1e9)::bigint, 100 FROM mailbox "
        f"WHERE domain = '{DOMAIN}';"
        "ANALYZE;", db)


def ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered) * 1000, 2),
            "p90": round(ordered[int(len(ordered) * 0.9)] * 1000, 2),
            "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
            "max": round(ordered[-1] * 1000, 2)}


def first_pages(base: str, runs: int) -> dict[str, Any]:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    url = f"{base}/api/users"
    for _ in range(50):  # warm up: connections, plans of the database
        session.get(url, params={"domain": DOMAIN}, timeout=30).raise_for_status()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = session.get(url, params={"domain": DOMAIN}, timeout=30)
        times.append(time.perf_counter() - started)
        body = response.json()
        assert response.status_code == 200 and len(body["data"]) == 100, response.text[:300]
    assert body["page"]["more"] > 0
    return {**ms(times), "runs": runs, "rows": 100}


def _seconds(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def wrk(url: str, seconds: int, connections: int) -> dict[str, Any]:
    done = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency",
         "-H", f"Authorization: Bearer {TOKEN}", url],
        capture_output=True, text=True, check=True)
    out = done.stdout
    latency = {f"p{p}": round(_seconds(v, u) * 1000, 2) for p, v, u in _LATENCY.findall(out)}
    rps = _RPS.search(out)
    non2xx = _NON2XX.search(out)
    sock = _SOCKET.search(out)
    total = _TOTAL.search(out)
    return {"requests_per_s": float(rps.group(1)) if rps else 0.0,
            "latency_ms": latency, "requests": int(total.group(1)) if total else 0,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
            "connections": connections, "seconds": seconds}


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _paced_gets(base: str, seconds: float, per_second: int) -> list[float]:
    """GET ``/api/monitoring/status`` ``per_second`` times a second for ``seconds``, each
    on schedule (a pool, so one slow answer does not delay the next); their latencies."""
    from concurrent.futures import ThreadPoolExecutor

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"

    def one(at: float) -> float:
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        began = time.monotonic()
        answer = session.get(f"{base}/api/monitoring/status", timeout=10)
        answer.raise_for_status()
        return time.monotonic() - began

    start = time.monotonic() + 0.2
    times = [start + i / per_second for i in range(int(seconds * per_second))]
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, times))


def login_under_load(base: str, daemon: DaemonProcess, seconds: float = 8.0
                     ) -> dict[str, Any]:
    """Log in (Argon2id, POST /api/auth/login) again and again while 50 GETs/s run; the
    GETs' p99 with and without the logins (target: under 50 ms while logging in)."""
    password = secrets.token_urlsafe(18)
    made = daemon.request(["api", "account", "create", "benchlogin", "--role", "viewer",
                           "--password-stdin"], execute_real=True, stdin=password)
    if not made.get("ok"):
        return {"measured": False, "why": made.get("message")}
    alone = _paced_gets(base, seconds, 50)
    logins: list[float] = []
    import threading

    stop = threading.Event()

    def log_in() -> None:
        while not stop.is_set():
            began = time.monotonic()
            answer = requests.post(f"{base}/api/auth/login", json={
                "username": "benchlogin", "password": password}, timeout=30)
            if answer.status_code != 200:
                raise RuntimeError(f"login answered {answer.status_code}: {answer.text[:200]}")
            logins.append(time.monotonic() - began)

    thread = threading.Thread(target=log_in, daemon=True)
    thread.start()
    try:
        during = _paced_gets(base, seconds, 50)
    finally:
        stop.set()
        thread.join(60)
    return {"measured": True, "gets_per_s": 50, "seconds": seconds,
            "get_ms_alone": ms(alone), "get_ms_during_logins": ms(during),
            "logins": len(logins), "login_ms": ms(logins),
            "target_get_p99_ms": TARGETS.get("login_get_p99_ms", 50.0)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mailboxes", type=int, default=10000)
    parser.add_argument("--firsts", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds to wait after the daemon started, before measuring")
    parser.add_argument("--path", default="/api/monitoring/status",
                        help="the GET measured at --connections against the target")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (make deps installs the Debian package)", file=sys.stderr)
        return 1
    result: dict[str, Any] = {"cores": os.cpu_count(), "targets": TARGETS,
                              "load_average_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="podod-bench-api-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        cluster = PgCluster(root / "pg", free_port())
        cluster.start()
        daemon = None
        try:
            port = free_port()
            config = base_config(
                root, log={"level": "info"},
                mail={"database": cluster.mail_database(root),
                      "passwords": {"rounds": 1000},
                      "maildir": {"check_on_create": False}},
                backup={"dir": str(root / "backups")},
                api={"enabled": True, "port": port},
                access={"api_tokens": {"bench": {
                    "role": "admin", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}}},
                # the bench sends far more than a person would: no rate limit for it
                commands={"rate_limit": {"exempt": ["api:bench"]}})
            path = write_config(root, config)
            seed(cluster, "mail", args.mailboxes)
            # Let the seed settle (its WAL, autovacuum) before measuring, as a database
            # that has been running for a while has.
            cluster.psql("VACUUM ANALYZE", "mail")
            cluster.psql("CHECKPOINT", "mail")
            daemon = DaemonProcess(path).start()
            base = f"http://127.0.0.1:{port}"
            if os.environ.get("PODOD_BENCH_HOLD"):  # profiling: keep the daemon for a while
                print(base, TOKEN, daemon.proc.pid if daemon.proc else None, path, flush=True)
                time.sleep(float(os.environ["PODOD_BENCH_HOLD"]))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    requests.get(f"{base}/api/openapi.json", timeout=2)
                    break
                except requests.ConnectionError:
                    time.sleep(0.05)

            time.sleep(args.settle)
            first = first_pages(base, args.firsts)
            inside = [float(m) / 1000 for m in _BUS_MS.findall(daemon.log())]
            result["first_page"] = {**first, "mailboxes": args.mailboxes,
                                    "bus_ms": ms(inside[-args.firsts:]) if inside else None}
            print(f"  the bus's own time (its log): {result['first_page']['bus_ms']}")
            print(f"GET /api/users?domain=... first page of {args.mailboxes} mailboxes: "
                  f"median {first['median']} ms, p90 {first['p90']} ms, p99 {first['p99']} "
                  f"ms (target median < {TARGETS['first_page_ms_median']} ms)")

            for name, route in (("get_at_50", args.path),
                                ("get_mailbox_at_50", f"/api/users/user1@{DOMAIN}")):
                target = f"{base}{route}"
                wrk(target, 2, args.connections)  # warm-up
                assert daemon.proc is not None
                cpu = cpu_seconds(daemon.proc.pid)
                load = wrk(target, args.seconds, args.connections)
                cpu = cpu_seconds(daemon.proc.pid) - cpu
                # What one core would serve: the requests over the CPU time the daemon used
                # (PostgreSQL, wrk and other work share this machine's cores).
                load["daemon_cpu_s"] = round(cpu, 2)
                load["requests_per_cpu_s"] = round(load["requests"] / cpu) if cpu else None
                result[name] = {**load, "path": route}
                print(f"GET {route} at {args.connections} connections ({args.seconds} s, "
                      f"wrk): {load['requests_per_s']:.0f} requests/s, p50 "
                      f"{load['latency_ms'].get('p50')} ms, p99 "
                      f"{load['latency_ms'].get('p99')} ms, {load['non_2xx']} non-2xx, "
                      f"{load['socket_errors']} socket errors; the daemon used "
                      f"{load['daemon_cpu_s']} s of CPU: {load['requests_per_cpu_s']} "
                      "requests per CPU second" + (
                          f" (target >= {TARGETS['get_rps_at_50']:.0f}/s, zero errors)"
                          if name == "get_at_50" else ""))
            under = result["login_under_load"] = login_under_load(base, daemon)
            if under.get("measured"):
                print(f"login (Argon2id) under 50 GETs/s: {under['logins']} logins, median "
                      f"{under['login_ms']['median']} ms; GET p99 {under['get_ms_alone']['p99']} "
                      f"ms alone, {under['get_ms_during_logins']['p99']} ms during the logins "
                      f"(target < {under['target_get_p99_ms']:.0f} ms)")
            else:
                print(f"login under load: not measured ({under.get('why')})")
        finally:
            if daemon is not None:
                daemon.stop()
            cluster.stop()
    result["load_average_after"] = os.getloadavg()[0]
    save_result("api", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
