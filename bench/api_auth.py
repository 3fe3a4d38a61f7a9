"""The REST API's authentication (podod.api.auth): login latency with Argon2id, and how many
requests per second ``ApiAuth.authenticate`` checks for a JWT access token, an API key and
an ``access.api_tokens`` token.

A real runtime (state.db, the signed audit log, the bus) in this process; logins go over
HTTP on loopback to ``ApiAuth.routes()`` served by aiohttp, one after the other, first with
no other hashing going on, then while the mail passwords' process pool hashes a bulk import (200
SHA512-CRYPT hashes, 70 000 rounds): the API's own Argon2 pool means a login does not queue
behind them (it only shares the CPU). ``authenticate`` is called on requests built by aiohttp
(``make_mocked_request``), so the figure is the check itself, not the HTTP server's; a JWT's
signature is checked at its first use (``jwt_first_use``), then only its expiry, account,
generation and session.

    .venv/bin/python bench/api_auth.py [--logins 20] [--checks 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

import _repo  # noqa: F401  (the checkout's testbed/ on sys.path)
from podod.api.auth import ApiAuth
from podod.bus.audit import AuditLog
from podod.bus.context import Actor, Request
from podod.bus.core import CommandBus
from podod.bus.identity import token_sha256
from podod.mail.passwords import HashingPool
from podod.plugins import Registry, load_builtins
from testbed.ports import free_port
from testbed.runtime import runtime_for

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "Bench-api-pw-4711"
LEGACY = "bench-legacy-token-0123456789"


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 1),
            "p90": round(ordered[int(len(ordered) * 0.9) - 1], 1),
            "min": round(ordered[0], 1), "max": round(ordered[-1], 1)}


async def logins(session: aiohttp.ClientSession, url: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        async with session.post(url, json={"username": "bench", "password": PASSWORD}) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"login answered HTTP {resp.status}")
        times.append((time.perf_counter() - started) * 1000)
    return times


def checks(auth: ApiAuth, token: str, count: int, *, first_use: bool = False) -> float:
    """authenticate() calls per second on one core (its coroutine run to completion).
    ``first_use``: as if each request brought a token not seen before (its signature is
    checked every time, not only at its first use)."""
    request = make_mocked_request("GET", "/api/users",
                                  headers={"Authorization": f"Bearer {token}"})
    started = time.perf_counter()
    for _ in range(count):
        if first_use:
            auth._verified.clear()
        coro = auth.authenticate(request)
        try:
            coro.send(None)
        except StopIteration:
            pass
        else:  # it awaited something: not the in-memory path this measures
            coro.close()
            raise RuntimeError("authenticate() did not complete without waiting")
    return count / (time.perf_counter() - started)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="podod-bench-") as tmp:
        registry = Registry()
        access = {"api_tokens": {"legacy": {"role": "viewer", "sha256": token_sha256(LEGACY)}}}
        async with runtime_for(Path(tmp), registry, access=access,
                               api={"login_throttle": {"free_failures": 1000}}) as rt:
            audit = AuditLog(rt.state)
            await audit.setup()
            rt.bus = CommandBus(rt, audit)
            load_builtins(registry, ["podod.bus.commands", "podod.api.commands"])
            auth = rt.api_auth = ApiAuth(rt)
            await auth.start()
            root = Actor("unix:root", "admin")
            made = await rt.bus.execute(Request(
                ["api", "account", "create", "bench", "--role", "admin", "--password-stdin"],
                root, "socket", execute_real=True, stdin=PASSWORD))
            assert made.ok, made.message
            key = await rt.bus.execute(Request(["api", "key", "create", "bench", "--role",
                                                "viewer"], root, "socket", execute_real=True))
            api_key = key.secrets[0].value
            app = web.Application()
            app.add_routes(auth.routes())
            runner = web.AppRunner(app)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            url = f"http://127.0.0.1:{port}/api/auth/login"
            pool = HashingPool()
            try:
                async with aiohttp.ClientSession() as session:
                    await logins(session, url, 2)  # warm-up: the pool's threads, the dummy
                    idle = await logins(session, url, args.logins)
                    bulk = asyncio.ensure_future(pool.hash_many(
                        [f"Import-pw-{n:04d}" for n in range(200)], "SHA512-CRYPT", 70000))
                    await asyncio.sleep(0.2)
                    busy = await logins(session, url, args.logins)
                    bulk_running = not bulk.done()
                    await bulk
                    async with session.post(url, json={"username": "bench",
                                                       "password": PASSWORD}) as resp:
                        access_token = (await resp.json())["access_token"]
            finally:
                await runner.cleanup()
                await pool.stop()
            rates = {"jwt": checks(auth, access_token, args.checks),
                     "jwt_first_use": checks(auth, access_token, args.checks // 4,
                                             first_use=True),
                     "api_key": checks(auth, api_key, args.checks),
                     "config_token": checks(auth, LEGACY, args.checks)}
            await auth.close()
    return {"logins": args.logins, "login_ms_alone": summary(idle),
            "login_ms_during_bulk_hashing": summary(busy), "bulk_still_running": bulk_running,
            "authenticate_per_s": {k: round(v) for k, v in rates.items()},
            "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=20)
    parser.add_argument("--checks", type=int, default=20000)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(f"API login (Argon2id, over HTTP on loopback), {args.logins} logins, load average "
          f"{result['load_average']:.1f}:")
    for label, key in (("idle", "login_ms_alone"),
                       ("bulk import hashing", "login_ms_during_bulk_hashing")):
        s = result[key]
        print(f"  {label:20s}: median {s['median']} ms, p90 {s['p90']} ms, min {s['min']} ms, "
              f"max {s['max']} ms")
    if not result["bulk_still_running"]:
        print("  (the bulk hashing ended before the logins did)")
    print("authenticate() per second on one core:")
    for label, rate in result["authenticate_per_s"].items():
        print(f"  {label:20s}: {rate}/s ({1e6 / rate:.0f} µs each)")
    out = REPO / ".bench"
    out.mkdir(exist_ok=True)
    (out / "api_auth.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
