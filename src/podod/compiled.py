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

import importlib.machinery
import os
import sys

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing: mypy knows it)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path
    from types import ModuleType

# Every ``podod`` command imports this module first (``podod/__init__.py`` asks ``stale()``),
# so it imports only what Python has loaded at start already: no pathlib, typing,
# importlib.abc or importlib.util (together 25-30 ms of ``podod logparse``'s start).

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

_SRC: str | os.PathLike[str] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (the directory that holds podod/)


def _source(name: str) -> str:
    return os.path.join(_SRC, *name.split(".")) + ".py"


def _built(name: str) -> list[str]:
    stem = _source(name)[:-3]
    return [built for suffix in importlib.machinery.EXTENSION_SUFFIXES
            if os.path.isfile(built := stem + suffix)]


def source_path(name: str) -> Path:
    """The ``.py`` file of a module in ``COMPILED``."""
    from pathlib import Path

    return Path(_source(name))


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
    from pathlib import Path

    return [Path(built) for built in _built(name)]


def _checkout() -> str | None:
    """The source checkout podod runs from (an editable install), if it does."""
    setup = os.path.join(os.path.dirname(_SRC), "setup.py")
    return setup if os.path.isfile(setup) else None


def stale() -> list[str]:
    """In a source checkout, modules whose compiled file is older than their source: an
    edit not yet compiled, which Python would silently run the old code of (podod then
    imports the source; ``make`` compiles again). An installed wheel's file times say
    nothing: none."""
    if _checkout() is None:
        return []
    out = []
    for name in COMPILED:
        src = os.stat(_source(name)).st_mtime
        for built in _built(name):
            if os.stat(built).st_mtime < src:
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
        built = _built(name)
        if not built:
            return f"{name} is not compiled"
        if min(os.stat(b).st_mtime for b in built) < os.stat(setup).st_mtime:
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


class _SourceFinder:
    """Finds the modules of ``COMPILED`` as their ``.py`` source, before the path finder
    (which prefers an extension module) sees them (a meta path finder: ``find_spec``)."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        import importlib.util

        src = _source(fullname)
        return importlib.util.spec_from_file_location(fullname, src) \
            if os.path.isfile(src) else None


def use_source() -> None:
    """Import the modules of ``COMPILED`` from source from now on (call before any of them
    is imported: ``podod/__init__.py`` does when ``PODOD_PURE_PYTHON`` is set or the
    compiled modules are stale)."""
    if not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())
