"""Fixtures shared by every test: a daemon factory that runs the real ``podod run``."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from podod import compiled
from testbed.daemon import DaemonProcess, base_config, write_config

REPO = Path(__file__).resolve().parent.parent


def pytest_sessionstart(session: pytest.Session) -> None:
    """Python would run a compiled module older than its edited source without a word: the
    tests would test the old code. ``make`` compiles again; refuse to run until then."""
    if not compiled.wanted_pure() and (stale := compiled.stale()):
        pytest.exit(f"compiled modules older than their source: {', '.join(stale)}; run "
                    "'make compiled' (or set PODOD_PURE_PYTHON=1 to test the source)", 2)


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """``start_daemon(**sections)`` starts podod on a config under tmp_path; stopped after."""
    started: list[DaemonProcess] = []

    def start(_env: dict[str, str] | None = None, **sections: Any) -> DaemonProcess:
        root = tmp_path / f"d{len(started)}"
        root.mkdir()
        path = write_config(root / "podod.yaml", base_config(root, **sections))
        daemon = DaemonProcess(path, env=_env)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.stop()



@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A folder other local users can reach (for a socket they connect to).

    Not under pytest's tmp_path: pytest resets its base folder to mode 0700, also when another
    pytest session on the machine starts, which would lock those users out mid-test.
    """
    path = Path(tempfile.mkdtemp(prefix="podod-public-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Under ``make test`` (PODOD_STRICT_SKIPS=1) a skip is a failure: a test that skips
    because a component is missing would hide a missing install step."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("PODOD_STRICT_SKIPS") == "1" and \
            not item.get_closest_marker("allow_skip"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under make test (a missing install step?): {reason}"
