"""Build: the log parser's modules are compiled with mypyc (podod.compiled lists them).

Everything else is in pyproject.toml. Compiling needs a C compiler and Python's headers
(Debian: gcc, python3-dev); where they are missing the build warns and installs the Python
source instead, which works the same, slower. ``PODOD_PURE_PYTHON=1`` skips compiling;
``PODOD_REQUIRE_COMPILED=1`` turns a failure into an error (``make test`` and ``make bench``
set it, so a missing compiler cannot hide behind the fallback).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def _compiled_module() -> Any:
    """podod.compiled, read from the source (podod is not installed yet)."""
    spec = importlib.util.spec_from_file_location("_podod_compiled",
                                                  HERE / "src" / "podod" / "compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


COMPILED = _compiled_module()
REQUIRED = COMPILED.env_flag("PODOD_REQUIRE_COMPILED")


def _warn(error: BaseException) -> None:
    why = str(error).splitlines()[0] if str(error) else type(error).__name__
    if len(why) > 120:
        why = why[:117] + "..."
    fix = ("Install a C compiler and Python's headers (Debian: gcc python3-dev) and "
           "reinstall to compile it.")
    if REQUIRED:
        sys.exit(f"podod: the log parser is not compiled ({why}). {fix}")
    print(f"WARNING: podod: the log parser is not compiled ({why}); installing its Python "
          f"source instead, which works the same, slower. {fix}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """build_ext that falls back to the Python source when compiling fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # CompileError, LinkError, a missing compiler, ...
            for out in self.get_outputs():
                Path(out).unlink(missing_ok=True)
            _warn(e)


def _extensions() -> list[Any]:
    if COMPILED.wanted_pure():
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as e:
        _warn(e)
        return []
    files = [str(Path("src", *name.split("."))) + ".py" for name in COMPILED.COMPILED]
    return list(mypycify(files, opt_level="3", group_name=COMPILED.GROUP))


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
