"""The modules compiled with mypyc, and the switch back to their Python source.

The mail-log parser's modules are plain, type-checked Python. The build (``setup.py``)
compiles them with mypyc into C extensions, which Python imports in preference to the
``.py`` next to them: the same code, about 1.6x as fast (docs/monitoring.md, Traffic,
Benchmark). Where no C compiler is at hand the build keeps the Python source, with a
warning.

``PODOD_PURE_PYTHON=1`` in the environment makes podod import the Python source even where
the compiled modules exist (to rule them out when something looks wrong, and so the tests
can compare the two). So does a checkout whose compiled modules are older than their
source: an edit not compiled yet is run, not silently ignored. This module imports only
the standard library: ``setup.py`` reads ``COMPILED`` from it before podod is installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# Dotted names; each depends only on the standard library and on the others in the list.
COMPILED = (
    "podod.monitor.traffic.clock",
    "podod.monitor.traffic.parser",
    "podod.monitor.traffic.rejects",
    "podod.monitor.traffic.services",
    "podod.monitor.traffic.tally",
    "podod.monitor.traffic.top",
)
# The shared library mypyc builds for them (``<GROUP>__mypyc``), inside the package.
GROUP = "podod.monitor.traffic._parser"
PURE_ENV = "PODOD_PURE_PYTHON"

_SRC = Path(__file__).resolve().parent.parent  # the directory that holds podod/


def source_path(name: str) -> Path:
    """The ``.py`` file of a module in ``COMPILED``."""
    return _SRC.joinpath(*name.split(".")).with_suffix(".py")


def is_compiled(module: ModuleType) -> bool:
    return isinstance(getattr(module, "__loader__", None),
                      importlib.machinery.ExtensionFileLoader)


def env_flag(name: str) -> bool:
    """An environment switch: set, and not 0, no or false."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "no", "false")


def wanted_pure() -> bool:
    return env_flag(PURE_ENV)


def compiled_files(name: str) -> list[Path]:
    """The compiled files of a module in ``COMPILED`` (none when it runs from source)."""
    src = source_path(name)
    return [built for suffix in importlib.machinery.EXTENSION_SUFFIXES
            if (built := src.with_suffix(suffix)).is_file()]


def _checkout() -> Path | None:
    """The source checkout podod runs from (an editable install), if it does."""
    setup = _SRC.parent / "setup.py"
    return setup if setup.is_file() else None


def stale() -> list[str]:
    """In a source checkout, modules whose compiled file is older than their source: an
    edit not yet compiled, which Python would silently run the old code of (podod then
    imports the source; ``make`` compiles again). An installed wheel's file times say
    nothing: none."""
    if _checkout() is None:
        return []
    out = []
    for name in COMPILED:
        src = source_path(name)
        for built in compiled_files(name):
            if built.stat().st_mtime < src.stat().st_mtime:
                out.append(name)
                break
    return out


def needs_compiling() -> str | None:
    """Why a checkout's compiled modules must be built again (``make compiled`` asks):
    one is missing, older than its source, or older than setup.py; None when they are up
    to date (or podod is not run from a checkout)."""
    setup = _checkout()
    if setup is None:
        return None
    for name in COMPILED:
        built = compiled_files(name)
        if not built:
            return f"{name} is not compiled"
        if min(b.stat().st_mtime for b in built) < setup.stat().st_mtime:
            return f"{name} is older than setup.py"
    if outdated := stale():
        return f"{', '.join(outdated)} older than the source"
    return None


def describe() -> str:
    """One line for ``--version`` and the benchmark: how the parser runs."""
    from podod.monitor.traffic import parser

    if is_compiled(parser):
        return "traffic parser: compiled with mypyc"
    if wanted_pure():
        return f"traffic parser: Python source, {PURE_ENV} is set"
    if stale():
        return ("traffic parser: Python source, its compiled modules are older than the "
                "source, run make compiled")
    return "traffic parser: Python source, not compiled (no C compiler at install time)"


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of ``COMPILED`` as their ``.py`` source, before the path finder
    (which prefers an extension module) sees them."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        src = source_path(fullname)
        return importlib.util.spec_from_file_location(fullname, src) if src.is_file() \
            else None


def use_source() -> None:
    """Import the modules of ``COMPILED`` from source from now on (call before any of them
    is imported: ``podod/__init__.py`` does when ``PODOD_PURE_PYTHON`` is set or the
    compiled modules are stale)."""
    if not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())
