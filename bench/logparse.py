"""``podod logparse FILE --json`` next to Debian's ``pflogsumm FILE``, as whole commands, on
logs of different shapes, in the same run. Target: at least 5x pflogsumm on every log.

Both sides are measured the same way: a child process that starts its interpreter, reads
the file and prints its full report (to a file), timed by wall clock and by the CPU time
of that child (``os.wait4``), best of several runs. CPU time is what the other processes
of a shared machine disturb least; the load average is printed with every log. Both must
report the same grand totals (and, for a generated log, what the generator wrote), or the
bench fails: figures of different counts mean nothing.

The logs (``--lines`` each, 1 000 000 by default):

- ``mx``: bench/loggen.py's inbound MX mix, syslog timestamps, seed 1 (the first benchmark's
  log);
- ``relay``: loggen's other mix (mostly submissions relayed out, more retries, bounces and
  expiries, many Dovecot logins, few rejects), RFC 3339 timestamps, seed 2;
- ``mailflow``: bench/data/mailflow.log, written by the mail-flow test bed's real Postfix
  3.7 and Dovecot 2.3 into one file (``testbed.mailflow`` with ``shared_log``),
  repeated, its queue ids renamed in each copy (pflogsumm counts a deferred queue id once
  per run);
- ``recorded``: the real log lines of the tests (tests/data/maillog: Postfix 3.7, Dovecot
  2.3's own file, Dovecot 2.4 lines), repeated the same way.

Where podod's time goes is measured apart, in process, best of the runs: start-up (the
whole command on the log's first line), reading (the file's lines in batches, no parsing),
parsing (the rest of ``parse_files``), report (``report_of``) and output (the JSON text
written). The old figure (``parse_files`` in process only, against pflogsumm's whole
command) is printed too, labelled as such.

    python bench/logparse.py [--lines N] [--runs N] [--logs mx,relay,...]
        (writes .bench/logparse.json)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import loggen  # noqa: E402

OUT = Path(".bench") / "logparse.json"
TOTALS = ("received", "delivered", "deferred", "deferrals", "bounced", "rejected")
TARGET = 5.0
# the command as installed (its console script), which a user runs
PODOD = [str(Path(sys.executable).parent / "podod")]
RECORDED = HERE.parent / "tests" / "data" / "maillog"
LOGS = ("mx", "relay", "mailflow", "recorded")
_QID = re.compile(r"(?<=\]: )[0-9A-F]{6,}(?=: )")


# -- the logs ------------------------------------------------------------------------------

def repeated(base: list[str], out: Path, lines: int) -> None:
    """``base`` repeated to ``lines`` lines; each copy's queue ids renamed (a prefix of the
    copy's number), so that every copy's messages are new messages."""
    qids = sorted({m.group(0) for line in base for m in _QID.finditer(line)})
    pattern = re.compile(r"\b(" + "|".join(qids) + r")\b") if qids else None
    template = [pattern.sub(lambda m: "{0}" + m.group(1), line.replace("{", "{{")
                            .replace("}", "}}")) if pattern else
                line.replace("{", "{{").replace("}", "}}") for line in base]
    with out.open("w", encoding="utf-8") as f:
        written, copy = 0, 0
        while written < lines:
            prefix = f"{copy:04X}"
            chunk = [t.format(prefix) for t in template[:lines - written]]
            f.writelines(chunk)
            written += len(chunk)
            copy += 1


def make_log(name: str, path: Path, lines: int) -> dict[str, int] | None:
    """Write the log ``name``; the generator's true totals when it knows them."""
    if name == "mx":
        return loggen.write(path, lines=lines, days=3, seed=1).totals()
    if name == "relay":
        return loggen.write(path, lines=lines, days=3, seed=2, mix="relay",
                            fmt="rfc3339").totals()
    if name == "mailflow":
        base = (HERE / "data" / "mailflow.log").read_text(encoding="utf-8")
    else:
        base = "".join((RECORDED / f).read_text(encoding="utf-8")
                       for f in ("postfix-3.7.log", "dovecot-2.3.log", "dovecot-2.4.log"))
    repeated(base.splitlines(keepends=True), path, lines)
    return None


# -- measuring -----------------------------------------------------------------------------

def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run ``argv``, its output into a file: (wall s, CPU s of the child, its output)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): "
                             f"{err.read().decode(errors='replace')[-500:]}")
        out.seek(0)
        return wall, usage.ru_utime + usage.ru_stime, out.read().decode(errors="replace")


def best(runs: list[tuple[float, float, str]]) -> tuple[float, float]:
    return min(r[0] for r in runs), min(r[1] for r in runs)


def pflogsumm_totals(out: str) -> dict[str, int]:
    def units(number: str, unit: str) -> int:
        return int(number) * {"": 1, "k": 1024, "m": 1 << 20}[unit]

    totals: dict[str, int] = {}
    for key in ("received", "delivered", "bounced", "rejected"):
        m = re.search(rf"^\s+(\d+)([km]?)\s+{key}\b", out, re.M)
        totals[key] = units(m.group(1), m.group(2)) if m else -1
    m = re.search(r"^\s+(\d+)([km]?)\s+deferred\s+\((\d+)([km]?)\s+deferrals\)", out, re.M)
    totals["deferred"] = units(m.group(1), m.group(2)) if m else -1
    totals["deferrals"] = units(m.group(3), m.group(4)) if m else -1
    return {k: totals[k] for k in TOTALS}


def podod_totals(out: str) -> dict[str, int]:
    report = json.loads(out)
    return {k: report[k] for k in TOTALS}


def sections(path: Path, runs: int) -> dict[str, float]:
    """In this process (the child started with ``--sections``): CPU seconds of reading,
    parsing, report and output, each the best of ``runs``; and ``parse_files`` whole."""
    from podod.monitor.traffic import logparse
    from podod.monitor.traffic.logparse import open_log, parse_files, report_of

    def cpu(work: Callable[[], object]) -> tuple[float, object]:
        started = time.process_time()
        result = work()
        return time.process_time() - started, result

    def read() -> int:
        if hasattr(logparse, "read_batches"):
            return sum(len(batch) for batch in logparse.read_batches(path, open_log(path)))
        with open_log(path) as stream:  # (podod before the bench measured whole commands)
            return sum(len(batch) for batch in iter(lambda: stream.readlines(1 << 16), []))

    out: dict[str, list[float]] = {"read": [], "parse_files": [], "report": [], "output": []}
    for _ in range(runs):
        out["read"].append(cpu(read)[0])
        took, run = cpu(lambda: parse_files([path]))
        out["parse_files"].append(took)
        took, report = cpu(partial(report_of, run))
        out["report"].append(took)
        with open(os.devnull, "w") as sink:
            text = partial(json.dumps, report, indent=2)
            out["output"].append(cpu(lambda: sink.write(text()))[0])  # noqa: B023
    got = {k: min(v) for k, v in out.items()}
    got["parse"] = max(got["parse_files"] - got["read"], 0.0)
    return got


def in_child_sections(path: Path, runs: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--sections", str(path), "--runs",
                          str(runs)], capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = json.loads(out)
    return result


# -- one log -------------------------------------------------------------------------------

def bench_log(name: str, tmp: Path, lines: int, runs: int, source: bool) -> dict[str, Any]:
    path = tmp / f"{name}.log"
    truth = make_log(name, path, lines)
    first = tmp / f"{name}-first.log"
    with path.open(encoding="utf-8") as f:
        first.write_text(f.readline(), encoding="utf-8")
    os.utime(first, (path.stat().st_atime, path.stat().st_mtime))
    load_before = os.getloadavg()[0]
    pfl_argv = ["pflogsumm", "--syslog-name=postfix-out", str(path)]
    ours_argv = [*PODOD, "logparse", str(path), "--json"]
    pfl, ours = [], []
    for i in range(runs):  # alternately, so that a burst of load hits both
        ours.append(timed(ours_argv))
        if i < max(2, runs - 1):
            pfl.append(timed(pfl_argv))
    startup = best([timed([*PODOD, "logparse", str(first), "--json"])
                    for _ in range(5 * runs)])
    parts = in_child_sections(path, runs)
    src = best([timed(ours_argv, env=dict(os.environ, PODOD_PURE_PYTHON="1"))
                for _ in range(runs)]) if source else None
    load_after = os.getloadavg()[0]
    pfl_wall, pfl_cpu = best(pfl)
    our_wall, our_cpu = best(ours)
    ours_totals = podod_totals(ours[0][2])
    theirs = pflogsumm_totals(pfl[0][2])
    agree = ours_totals == theirs and (truth is None or truth == ours_totals) and \
        all(podod_totals(r[2]) == ours_totals for r in ours) and \
        all(pflogsumm_totals(r[2]) == theirs for r in pfl)
    result: dict[str, Any] = {
        "log": name, "lines": lines, "bytes": path.stat().st_size,
        "podod_wall": round(our_wall, 3), "podod_cpu": round(our_cpu, 3),
        "pflogsumm_wall": round(pfl_wall, 3), "pflogsumm_cpu": round(pfl_cpu, 3),
        "ratio_wall": round(pfl_wall / our_wall, 2), "ratio_cpu": round(pfl_cpu / our_cpu, 2),
        "podod_cpu_parts": {"start-up": round(startup[1], 3),
                            **{k: round(parts[k], 3)
                               for k in ("read", "parse", "report", "output")}},
        "in_process_parse_files_cpu": round(parts["parse_files"], 3),
        "in_process_ratio_cpu": round(pfl_cpu / parts["parse_files"], 2),
        "totals_agree": agree, "totals": ours_totals, "pflogsumm_totals": theirs,
        "generator_totals": truth,
        "load_average": [round(load_before, 2), round(load_after, 2)],
    }
    if src is not None:
        result["source_wall"] = round(src[0], 3)
        result["source_cpu"] = round(src[1], 3)
        result["source_ratio_cpu"] = round(pfl_cpu / src[1], 2)
    return result


def show(r: dict[str, Any]) -> None:
    parts = r["podod_cpu_parts"]
    print(f"{r['log']}: {r['lines']:,} lines, {r['bytes'] / 1e6:.0f} MB, load average "
          f"{r['load_average'][0]:.2f} -> {r['load_average'][1]:.2f} (2 cores, shared)")
    print(f"  podod logparse --json  {r['podod_wall']:6.2f} s wall  {r['podod_cpu']:6.2f} s CPU")
    print(f"  pflogsumm              {r['pflogsumm_wall']:6.2f} s wall  "
          f"{r['pflogsumm_cpu']:6.2f} s CPU")
    print(f"  ratio, whole commands  {r['ratio_wall']:6.2f}x wall {r['ratio_cpu']:6.2f}x CPU  "
          f"(target {TARGET}x)")
    print("  podod's CPU: " + ", ".join(f"{k} {v:.3f} s" for k, v in parts.items()))
    print(f"  (old figure: parse_files in process only, {r['in_process_parse_files_cpu']:.2f} s"
          f" CPU: {r['in_process_ratio_cpu']}x pflogsumm's whole command)")
    if "source_cpu" in r:
        print(f"  the same command from Python source (PODOD_PURE_PYTHON=1): "
              f"{r['source_wall']:.2f} s wall, {r['source_cpu']:.2f} s CPU: "
              f"{r['source_ratio_cpu']}x CPU")
    print(f"  totals agree (podod, pflogsumm{', generator' if r['generator_totals'] else ''}):"
          f" {r['totals_agree']}  {r['totals']}")
    if not r["totals_agree"]:
        print(f"  TOTALS DIFFER: pflogsumm {r['pflogsumm_totals']}, generator "
              f"{r['generator_totals']}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--logs", default=",".join(LOGS),
                    help=f"which logs, comma-separated (default: {','.join(LOGS)})")
    ap.add_argument("--sections", type=Path, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args(argv)
    if args.sections:
        print(json.dumps(sections(args.sections, args.runs)))
        return 0
    names = [n for n in args.logs.split(",") if n]
    if unknown := [n for n in names if n not in LOGS]:
        ap.error(f"unknown log {unknown[0]} (one of {', '.join(LOGS)})")
    from podod import compiled

    how = compiled.describe()
    print(f"podod: {how}")
    results = []
    with tempfile.TemporaryDirectory(prefix="podod-bench-") as tmp:
        for i, name in enumerate(names):
            result = bench_log(name, Path(tmp), args.lines, args.runs, source=i == 0)
            show(result)
            results.append(result)
            (Path(tmp) / f"{name}.log").unlink()
    ok = all(r["totals_agree"] for r in results)
    met = all(r["ratio_cpu"] >= TARGET and r["ratio_wall"] >= TARGET for r in results)
    cpu = ", ".join(f"{r['log']} {r['ratio_cpu']}x" for r in results)
    wall = ", ".join(f"{r['log']} {r['ratio_wall']}x" for r in results)
    print(f"whole commands, CPU: {cpu}; wall: {wall} (target {TARGET}x: "
          f"{'met' if met else 'NOT met'})")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"parser": how, "compiled": how.endswith("mypyc"),
                               "runs": args.runs, "target_ratio": TARGET,
                               "totals_agree": ok, "logs": results}, indent=2) + "\n")
    if not ok:
        print("the totals differ: the figures above compare different counts",
              file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
