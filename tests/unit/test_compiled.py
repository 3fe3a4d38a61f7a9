"""The log parser compiled with mypyc (podod.compiled, setup.py): it is what runs under
``make``, it gives exactly what its Python source gives, and a build without a C compiler
falls back to the source (or fails with one sentence when a compiled parser is required)."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from podod import compiled

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "maillog"
PODOD = str(Path(sys.executable).parent / "podod")
sys.path.insert(0, str(REPO / "bench"))
import loggen  # noqa: E402


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}
    env.update(extra)
    return env


def fingerprint(paths: list[str]) -> str:
    """Everything the parser produces for these logs, read both ways podod reads them: the
    whole-file report (podod logparse) and the follower's (hourly top lists, small batches,
    tallies taken mid-way, per-message state, lines per service)."""
    from podod.monitor.traffic.logparse import parse_files, report_of
    from podod.monitor.traffic.parser import MailLogParser
    from podod.monitor.traffic.tally import Tally

    out: list[object] = []
    for path in map(Path, paths):
        report = report_of(parse_files([path]), by="hour", top=40)
        report.pop("files", None)
        out.append(report)
        parser = MailLogParser(Tally(top_scope="hour"), track_changes=True, max_messages=500)
        parser.start_file(path.stat().st_mtime)
        lines = path.read_text().splitlines(keepends=True)
        counts: dict[str, int] = {}
        changes: list[object] = []
        for i in range(0, len(lines), 97):
            parser.feed_lines(lines[i:i + 97])
            if i % (97 * 20) == 0:
                for hour, bucket in parser.take_tally().hours.items():
                    for key, n in bucket.items():
                        counts[f"{hour} {key}"] = counts.get(f"{hour} {key}", 0) + n
                kept, gone = parser.take_changes()
                changes.append([sorted(kept.items()), sorted(gone)])
        for hour, bucket in parser.take_tally().hours.items():
            for key, n in bucket.items():
                counts[f"{hour} {key}"] = counts.get(f"{hour} {key}", 0) + n
        out.append([{k: v for k, v in sorted(counts.items()) if v}, changes,
                    parser.take_service_counts(), sorted(parser.pending.items())])
    return json.dumps(out, sort_keys=True, default=str)


def _fingerprint_in_child(paths: list[str], **env: str) -> str:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import test_compiled as t; "
            "print(t.fingerprint(sys.argv[2:]), end='')")
    return subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), *paths],
                          capture_output=True, text=True, check=True, env=_env(**env),
                          cwd=REPO).stdout


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    generated = tmp_path_factory.mktemp("logs") / "mail.log"
    loggen.write(generated, lines=40_000, days=2, seed=7)
    return [str(generated), *(str(p) for p in sorted(DATA.glob("*.log")))]


def test_the_parser_runs_compiled() -> None:
    """``make`` compiles the parser (a C compiler is among the packages it installs): what
    the tests, the benchmark and the daemon run is the compiled parser, not a fallback."""
    out = subprocess.run([PODOD, "--version"], capture_output=True,
                         text=True, check=True, env=_env()).stdout
    assert out.strip().endswith("(traffic parser: compiled with mypyc)"), out
    code = ("import importlib, json, podod.compiled as c; print(json.dumps({n: c.is_compiled("
            "importlib.import_module(n)) for n in c.COMPILED}))")
    status = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                       text=True, check=True, env=_env()).stdout)
    assert status == dict.fromkeys(compiled.COMPILED, True)
    assert compiled.stale() == []


def test_pure_python_switch_imports_the_source() -> None:
    out = subprocess.run([PODOD, "--version"], capture_output=True,
                         text=True, check=True, env=_env(PODOD_PURE_PYTHON="1")).stdout
    assert "traffic parser: Python source, PODOD_PURE_PYTHON is set" in out
    code = ("import importlib, podod.compiled as c; print(sorted(importlib.import_module(n)"
            ".__file__ for n in c.COMPILED))")
    files = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env=_env(PODOD_PURE_PYTHON="1")).stdout
    assert files.strip() == str(sorted(str(compiled.source_path(n)) for n in compiled.COMPILED))


def test_compiled_and_source_give_exactly_the_same_results(logs: list[str]) -> None:
    ours = _fingerprint_in_child(logs)
    source = _fingerprint_in_child(logs, PODOD_PURE_PYTHON="1")
    assert len(ours) > 10_000  # (the generated log's report, not an empty list)
    assert ours == source


def test_a_compiled_module_older_than_its_source_is_not_run() -> None:
    """An edit not compiled yet: podod runs the source (and says so), not the old code."""
    name = "podod.monitor.traffic.top"
    (built, *_) = compiled.compiled_files(name)
    before = built.stat()
    try:
        older = compiled.source_path(name).stat().st_mtime - 60
        os.utime(built, (before.st_atime, older))
        out = subprocess.run([PODOD, "--version"], capture_output=True, text=True,
                             check=True, env=_env()).stdout
        assert "traffic parser: Python source, its compiled modules are older than the " \
            "source, run make compiled" in out
    finally:
        os.utime(built, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_an_edit_newer_than_the_compiled_module_is_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a checkout, a source edited after compiling would be silently ignored by Python
    (the extension module wins): stale() names it, and the test session refuses to run."""
    (tmp_path / "setup.py").write_text("")
    src = tmp_path / "src"
    traffic = src / "podod" / "monitor" / "traffic"
    traffic.mkdir(parents=True)
    for name in compiled.COMPILED:
        stem = name.rsplit(".", 1)[1]
        (traffic / f"{stem}.py").write_text("")
        (traffic / f"{stem}{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_text("")
    monkeypatch.setattr(compiled, "_SRC", src)
    assert compiled.stale() == []
    os.utime(traffic / "parser.py", (2e9, 2e9))
    assert compiled.stale() == ["podod.monitor.traffic.parser"]
    (tmp_path / "setup.py").unlink()  # an installed wheel: file times mean nothing
    assert compiled.stale() == []


def _project_copy(dest: Path) -> Path:
    dest.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "src", dest / "src",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info"))
    return dest


def test_a_build_without_a_c_compiler_installs_the_source_or_fails_plainly(
        tmp_path: Path) -> None:
    """Two builds at once (each copy of the project has its own build/), with a C compiler
    that always fails: by default the wheel holds the Python source; with
    PODOD_REQUIRE_COMPILED=1 the build fails and says what to install."""
    no_cc = _env(CC="/bin/false")
    runs = {}
    for name, env in (("fallback", no_cc), ("required", no_cc | {"PODOD_REQUIRE_COMPILED": "1"})):
        project = _project_copy(tmp_path / name)
        build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v",
                 "-w", str(project / "wheels"), str(project)]
        runs[name] = (project, subprocess.Popen(build, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, text=True, env=env))
    out = {name: (project, proc.communicate()[0], proc.returncode)
           for name, (project, proc) in runs.items()}

    project, said, code = out["fallback"]
    assert code == 0, said[-3000:]
    assert "WARNING: podod: the log parser is not compiled (" in said
    (wheel,) = (project / "wheels").glob("podod-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "podod/monitor/traffic/parser.py" in names
    assert not [n for n in names if n.endswith(".so")]  # the source, not half a build

    project, said, code = out["required"]
    assert code != 0
    lines = [line.strip() for line in said.splitlines()
             if "podod: the log parser is not compiled" in line]
    assert lines and "Install a C compiler and Python's headers (Debian: gcc python3-dev)" \
        in lines[0], said[-3000:]
    assert not list((project / "wheels").glob("*.whl"))
