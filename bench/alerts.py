"""Alert rule evaluation: 50 rules × 200 servers per cycle (the engine's periodic full
evaluation), on a realistic live state (every catalogued series with typical label sets),
with a tenth of the servers in trouble so alerts are pending and firing.

Target (issue 5): a full cycle under 100 ms.
    .venv/bin/python bench/alerts.py [--servers 200] [--cycles 30]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

import _repo  # noqa: F401  (the checkout's testbed/ on sys.path)
from podod.alerts.clock import ManualClock
from podod.alerts.engine import AlertEngine
from podod.alerts.settings import AlertSettings
from podod.monitor.model import Sample
from testbed.fleet import fleet_names, fleet_samples

REPO = Path(__file__).resolve().parent.parent
TARGET_MS = 100.0


def fifty_rules() -> dict[str, object]:
    """The default pack (21 rules), plus stricter and looser variants of its rules up to 50
    (a site with its own thresholds per severity)."""
    pack = yaml.safe_load((REPO / "config" / "alerts.example.yaml").read_text())
    rules = list(pack["rules"])
    base = list(rules)
    i = 0
    while len(rules) < 50:
        rule = copy.deepcopy(base[i % len(base)])
        rule["name"] = f"{rule['name']}Variant{i}"
        threshold = rule["threshold"]
        if isinstance(threshold, int | float) and threshold:
            rule["threshold"] = threshold * (0.5 if i % 2 else 2)
        rule["severity"] = "info" if i % 2 else "critical"
        rules.append(rule)
        i += 1
    return {"rules": rules, "inhibit": pack.get("inhibit", [])}


def troubled(samples: list[Sample], servers: list[str], now: float) -> list[Sample]:
    """A tenth of the servers: disks full, a service down, a deferred queue."""
    bad = set(servers[:: 10])
    out = []
    for s in samples:
        value = s.value
        if s.server in bad:
            if s.series == "node_filesystem_used_ratio":
                value = 0.97
            elif s.series == "service_up" and dict(s.labels).get("service") == "postfix":
                value = 0.0
            elif s.series == "postfix_queue_messages" and dict(s.labels).get("queue") == \
                    "deferred":
                value = 900.0
        out.append(Sample(s.series, s.server, value, s.labels, s.kind, now))
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podod-bench-") as tmp:
        rules_path = Path(tmp) / "rules.yaml"
        rules_path.write_text(yaml.safe_dump(fifty_rules()))
        settings = AlertSettings.model_validate({"rule_files": [str(rules_path)],
                                                 "default_rules": False})
    clock = ManualClock(time.time())
    engine = AlertEngine(settings, None, clock=clock, stale_after=lambda c: 90.0)
    servers = fleet_names(args.servers)
    base = fleet_samples(servers, now=clock.now())
    series_count = len(base)

    def deliver() -> float:
        """One collection round: each server's samples as one event, values moving on."""
        samples = troubled(base, servers, clock.now())
        by_server: dict[str, list[Sample]] = {}
        for s in samples:
            by_server.setdefault(s.server, []).append(s)
        started = time.perf_counter()
        for server, items in by_server.items():
            engine.ingest(items, "bench", server)
        return (time.perf_counter() - started) * 1000

    ingest_ms = []
    cycle_ms = []
    evaluations = 0
    for cycle in range(args.cycles):
        clock.advance(10.0)
        if cycle % 3 == 0:  # collectors every 30 s, evaluation every 10 s
            ingest_ms.append(deliver())
        gc.collect()
        started = time.perf_counter()
        evaluations = engine.evaluate_all()
        cycle_ms.append((time.perf_counter() - started) * 1000)
    firing = sum(1 for a in engine.alerts.values() if a.state == "firing")
    pending = sum(1 for a in engine.alerts.values() if a.state == "pending")
    result = {
        "rules": len(engine.rules), "servers": args.servers, "series": series_count,
        "rule_server_pairs_per_cycle": evaluations, "cycles": args.cycles,
        "cycle_ms_median": round(statistics.median(cycle_ms), 2),
        "cycle_ms_p90": round(sorted(cycle_ms)[int(0.9 * (len(cycle_ms) - 1))], 2),
        "cycle_ms_max": round(max(cycle_ms), 2),
        "ingest_round_ms_median": round(statistics.median(ingest_ms), 2),
        "firing": firing, "pending": pending, "target_ms": TARGET_MS,
        "ok": statistics.median(cycle_ms) < TARGET_MS,
    }
    print(f"alert evaluation: {result['rules']} rules x {args.servers} servers "
          f"({series_count} series, {evaluations} rule/server pairs evaluated per cycle)")
    print(f"  full cycle: median {result['cycle_ms_median']} ms, p90 {result['cycle_ms_p90']} "
          f"ms, max {result['cycle_ms_max']} ms  (target < {TARGET_MS:.0f} ms: "
          f"{'OK' if result['ok'] else 'MISSED'})")
    print(f"  one collection round ingested (200 events, evaluating what they touch): "
          f"median {result['ingest_round_ms_median']} ms")
    print(f"  alerts: {firing} firing, {pending} pending")
    out = REPO / ".bench"
    out.mkdir(exist_ok=True)
    (out / "alerts.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
