"""The traffic parser's speed next to Debian's pflogsumm, on the same generated log, in the
same run: 1 000 000 lines of consistent mail flows over three days (bench/loggen.py).

Both are timed by CPU time (best of several runs) as well as wall time: the machine is
shared, and CPU time is what other processes disturb least. Both must report the same grand
totals, or the figures mean nothing. Target: at least 5x pflogsumm.

podod's parser runs as installed (compiled with mypyc by ``make``; podod.compiled), and once
more from its Python source (PODOD_PURE_PYTHON=1, in a child process) for comparison.

    python bench/logparse.py [--lines N] [--runs N]      (writes .bench/logparse.json)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loggen
from podod import compiled
from podod.monitor.traffic.logparse import parse_files

OUT = Path(".bench") / "logparse.json"
TOTALS = ("received", "delivered", "deferred", "deferrals", "bounced", "rejected")
TARGET = 5.0


def run_pflogsumm(path: Path) -> tuple[float, float, dict[str, int]]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(["pflogsumm", "--syslog-name=postfix-out", str(path)],
                         capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    totals: dict[str, int] = {}
    for key in ("received", "delivered", "bounced", "rejected"):
        m = re.search(rf"^\s+(\d+)([km]?)\s+{key}\b", out, re.M)
        totals[key] = _units(m) if m else -1
    m = re.search(r"^\s+(\d+)([km]?)\s+deferred\s+\((\d+)([km]?)\s+deferrals\)", out, re.M)
    totals["deferred"] = _units(m) if m else -1
    totals["deferrals"] = int(m.group(3)) * {"": 1, "k": 1024, "m": 1 << 20}[m.group(4)] \
        if m else -1
    return cpu, wall, totals


def _units(m: re.Match[str]) -> int:
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1 << 20}[m.group(2)]


def run_podod(path: Path) -> tuple[float, float, dict[str, int]]:
    started_cpu = time.process_time()
    started = time.perf_counter()
    run = parse_files([path])
    wall = time.perf_counter() - started
    cpu = time.process_time() - started_cpu
    totals = run.tally.totals()
    return cpu, wall, {k: totals.get(k, 0) for k in TOTALS}


def run_podod_source(path: Path, runs: int) -> tuple[float, float, dict[str, int]]:
    """podod's parser from its Python source, best of ``runs``, in a child process."""
    env = dict(os.environ, PODOD_PURE_PYTHON="1")
    out = subprocess.run([sys.executable, __file__, "--measure", str(path), "--runs", str(runs)],
                         capture_output=True, text=True, check=True, env=env).stdout
    cpu, wall, totals = json.loads(out)
    return cpu, wall, totals


def measure(path: Path, runs: int) -> int:
    ours = [run_podod(path) for _ in range(runs)]
    print(json.dumps([min(r[0] for r in ours), min(r[1] for r in ours), ours[0][2]]))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args(argv)
    if args.measure:
        return measure(args.measure, args.runs)
    how = compiled.describe()
    with tempfile.TemporaryDirectory(prefix="podod-bench-") as tmp:
        path = Path(tmp) / "mail.log"
        truth = loggen.write(path, lines=args.lines, days=3, seed=1)
        size = path.stat().st_size
        load_before = os.getloadavg()[0]
        pfl = [run_pflogsumm(path) for _ in range(max(1, args.runs - 1))]
        ours = [run_podod(path) for _ in range(args.runs)]
        source = run_podod_source(path, args.runs)
        load_after = os.getloadavg()[0]
    pfl_cpu = min(r[0] for r in pfl)
    pfl_wall = min(r[1] for r in pfl)
    our_cpu = min(r[0] for r in ours)
    our_wall = min(r[1] for r in ours)
    same = ours[0][2] == pfl[0][2] == source[2] == truth.totals()
    result = {
        "lines": truth.lines, "bytes": size,
        "parser": how, "compiled": how.endswith("mypyc"),
        "podod_lines_per_s": round(truth.lines / our_cpu),
        "podod_lines_per_s_wall": round(truth.lines / our_wall),
        "podod_source_lines_per_s": round(truth.lines / source[0]),
        "source_ratio": round(pfl_cpu / source[0], 2),
        "pflogsumm_lines_per_s": round(truth.lines / pfl_cpu),
        "pflogsumm_lines_per_s_wall": round(truth.lines / pfl_wall),
        "ratio": round(pfl_cpu / our_cpu, 2),
        "ratio_wall": round(pfl_wall / our_wall, 2),
        "target_ratio": TARGET,
        "totals_agree": same, "totals": ours[0][2], "pflogsumm_totals": pfl[0][2],
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "runs": args.runs,
    }
    print(f"log: {truth.lines} lines, {size / 1e6:.0f} MB, 3 days (bench/loggen.py, seed 1)")
    print(f"podod     {result['podod_lines_per_s']:>10,} lines/s CPU  "
          f"({result['podod_lines_per_s_wall']:,} wall; {how})")
    print(f"  source  {result['podod_source_lines_per_s']:>10,} lines/s CPU  "
          f"(the same parser from its Python source: {result['source_ratio']}x pflogsumm)")
    print(f"pflogsumm {result['pflogsumm_lines_per_s']:>10,} lines/s CPU  "
          f"({result['pflogsumm_lines_per_s_wall']:,} wall)")
    print(f"ratio     {result['ratio']:>10}x CPU (target {TARGET}x), {result['ratio_wall']}x wall")
    print(f"totals agree with pflogsumm and the generator: {same}  {ours[0][2]}")
    print(f"load average {load_before:.2f} -> {load_after:.2f} (2 cores, shared)")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
