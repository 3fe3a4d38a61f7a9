"""The package's layout rules (docs/architecture.md, "Layout and import rules"): the test
harnesses stay out of what ships, and the import circles that were removed stay removed."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
PACKAGE = SRC / "podod"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (functions included), absolute."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # ``from podod.monitor import model`` imports podod.monitor.model
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules} for name, path in modules.items()}


def test_nothing_shipped_imports_the_testbed() -> None:
    offenders = sorted(
        f"{module_name(p)} imports {m}"
        for p in PACKAGE.rglob("*.py")
        for m in imports_of(p)
        if m == "testbed" or m.startswith(("testbed.", "podod.testbed")))
    assert offenders == []
    assert not (PACKAGE / "testbed").exists()
    assert (REPO / "testbed" / "postgres.py").is_file()


def test_the_built_package_holds_no_testbed() -> None:
    """setuptools' package discovery, configured as in pyproject.toml, is what a wheel holds.
    (In a child process: importing setuptools here would put its vendored packages on this
    process's path, which test_lock would then see as installed.)"""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    find = config["tool"]["setuptools"]["packages"]["find"]
    # pyproject's [tool.setuptools.packages.find] finds namespace packages too (a folder
    # without __init__.py, as src/podod/testbed was), as find_namespace_packages does.
    assert find.get("namespaces", True)
    code = ("import json, sys, setuptools; "
            "print(json.dumps(setuptools.find_namespace_packages(where=sys.argv[1])))")
    found = subprocess.run([sys.executable, "-c", code, str(REPO / find["where"][0])],
                           capture_output=True, text=True, check=True, timeout=60)
    packages = json.loads(found.stdout)
    assert "podod" in packages and "podod.bus" in packages
    assert [p for p in packages if "testbed" in p or "demo" in p] == []
    assert not (PACKAGE / "demo.py").exists()


def reaches(edges: dict[str, set[str]], start: str, goal: str) -> bool:
    seen: set[str] = set()
    todo = [start]
    while todo:
        node = todo.pop()
        for nxt in edges.get(node, ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def test_config_wording_is_not_an_import_circle() -> None:
    """config.py reads every section's settings; the settings modules take the loader's
    wording from settings_base, never from config.py (directly or late)."""
    edges = graph()
    assert reaches(edges, "podod.config", "podod.alerts.settings")
    for settings in ("podod.alerts.settings", "podod.monitor.settings",
                     "podod.servers.settings", "podod.mail.settings", "podod.settings_base"):
        assert not reaches(edges, settings, "podod.config"), settings
    assert not reaches(edges, "podod.alerts.settings", "podod.alerts.maintenance")


def test_the_bus_does_not_import_the_runtime() -> None:
    edges = graph()
    bus = [m for m in edges if m.startswith("podod.bus.")]
    assert "podod.bus.core" in bus
    assert [m for m in bus if reaches(edges, m, "podod.runtime")] == []


def test_servers_and_mail_import_nothing_from_monitor() -> None:
    edges = graph()
    offenders = sorted(
        f"{m} -> {d}" for m in edges if m.startswith(("podod.servers.", "podod.mail."))
        for d in edges[m] if d == "podod.monitor" or d.startswith("podod.monitor."))
    assert offenders == []


def test_test_modules_have_unique_names() -> None:
    """pytest imports test files by their base name (no __init__.py in tests/): two files of
    the same name in tests/unit and tests/integration stop the whole run at collection."""
    seen: dict[str, Path] = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        assert path.name not in seen, f"{path} and {seen[path.name]} have the same name"
        seen[path.name] = path
