"""Scrape of /metrics from a running podod holding 200 servers' live state.

The daemon runs as a real subprocess with the test feeder plugin, which publishes every
catalogued series with typical label sets for 200 servers (about 30 600 samples) on the
event bus, as collector runs would; the values change before every scrape, as they do
between Prometheus scrapes. Each scrape is a full HTTP GET from this process, timed until
the last byte; plain text (as on loopback) and gzip (as Prometheus asks across a network).

Target (issue 5): median under 50 ms.
    .venv/bin/python bench/metrics.py [--servers 200] [--scrapes 30]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import _repo  # noqa: F401  (the checkout's testbed/ on sys.path)
from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.ports import free_port

REPO = Path(__file__).resolve().parent.parent
TARGET_MS = 50.0


_CONNECTIONS: dict[str, http.client.HTTPConnection] = {}


def scrape(url: str, gzip_ok: bool) -> tuple[float, int, int]:
    """One scrape the way Prometheus makes it: HTTP/1.1 on a kept-alive connection."""
    parts = urllib.parse.urlsplit(url)
    conn = _CONNECTIONS.get(parts.netloc)
    if conn is None:
        conn = _CONNECTIONS[parts.netloc] = http.client.HTTPConnection(parts.netloc, timeout=30)
    headers = {"Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1"}
    if gzip_ok:
        headers["Accept-Encoding"] = "gzip"
    started = time.perf_counter()
    conn.request("GET", parts.path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    elapsed = (time.perf_counter() - started) * 1000
    if resp.status != 200:
        raise RuntimeError(f"/metrics answered HTTP {resp.status}")
    size = len(body)
    text = gzip.decompress(body) if gzip_ok else body
    samples = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    return elapsed, size, samples


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": round(statistics.median(values), 2),
            "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
            "min": round(ordered[0], 2), "max": round(ordered[-1], 2)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--scrapes", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podod-bench-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        port = free_port()
        config = base_config(root, log={"level": "warning"},
                             metrics={"enabled": True, "listen": "127.0.0.1", "port": port},
                             plugins={"dirs": [str(REPO / "tests" / "plugins")],
                                      "entry_points": False})
        daemon = DaemonProcess(write_config(root / "podod.yaml", config)).start()
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            reply = daemon.request(["feed", "fleet", "--servers", str(args.servers)])
            assert reply["ok"], reply
            deadline = time.monotonic() + 60
            samples = 0
            while time.monotonic() < deadline:  # the event bus delivers asynchronously
                _, _, samples = scrape(url, False)
                if samples >= args.servers * 140:
                    break
                time.sleep(0.2)
            scrape(url, False)  # the first render fills the renderer's prefix cache
            plain: list[float] = []
            zipped: list[float] = []
            size_plain = size_gzip = 0
            for i in range(args.scrapes):
                daemon.request(["feed", "fleet", "--servers", str(args.servers),
                                "--seed", str(i + 2)])
                # Let the burst of new values settle: a real fleet's collection is spread over
                # the interval, so a scrape never meets all 35 000 samples arriving at once.
                time.sleep(1.0)
                elapsed, size_plain, samples = scrape(url, False)
                plain.append(elapsed)
                elapsed, size_gzip, _ = scrape(url, True)
                zipped.append(elapsed)
        finally:
            daemon.stop()
    result = {"servers": args.servers, "samples": samples, "scrapes": args.scrapes,
              "bytes_plain": size_plain, "bytes_gzip": size_gzip,
              "plain_ms": summary(plain), "gzip_ms": summary(zipped), "target_ms": TARGET_MS,
              "ok": statistics.median(plain) < TARGET_MS and
              statistics.median(zipped) < TARGET_MS}
    print(f"/metrics with {args.servers} servers: {samples} samples, "
          f"{size_plain / 1e6:.1f} MB plain, {size_gzip / 1e6:.2f} MB gzip")
    for key, label in (("plain_ms", "plain text"), ("gzip_ms", "gzip")):
        s = result[key]
        assert isinstance(s, dict)
        print(f"  {label:10s}: median {s['median']} ms, p90 {s['p90']} ms, min {s['min']} ms, "
              f"max {s['max']} ms")
    print(f"  target: median < {TARGET_MS:.0f} ms: {'OK' if result['ok'] else 'MISSED'}")
    out = REPO / ".bench"
    out.mkdir(exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
