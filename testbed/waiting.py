"""Waiting for something a real component does in its own time (tests and benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def poll(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """``check()``'s first truthy value within ``timeout`` seconds, or ``False``
    (``assert poll(...)``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "",
             interval: float = 0.1) -> Any:
    """``check()``'s first truthy value; AssertionError naming ``what`` if it never comes."""
    value = poll(check, timeout, interval)
    if not value:
        raise AssertionError(f"timed out waiting for {what or check}")
    return value
