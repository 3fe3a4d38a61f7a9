"""Fixtures shared by every test: a daemon factory that runs the real ``podod run``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from podod.testbed.daemon import DaemonProcess, base_config, write_config

REPO = Path(__file__).resolve().parent.parent


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
