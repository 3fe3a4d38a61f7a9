"""Stopping test-bed daemons by their pid (never by a broad name)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import psutil


def alive(pid: int) -> bool:
    """``kill -0`` sees zombies as alive; /proc's State does not."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("State:"):
                    return "Z" not in line.split(":", 1)[1]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return False


def descendants(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def wait_pids(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return True
        time.sleep(0.02)
    return not any(alive(pid) for pid in pids)


def wait_stopped(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Wait for ``proc`` to exit; KILL it and its descendants if it does not in time."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_pids([proc.pid, *descendants(proc.pid)])
        proc.wait(5)


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                 timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    wait_stopped(proc, timeout)


class ForegroundDaemon:
    """A test-bed daemon running in the foreground as ``proc``. ``stop`` sends TERM and
    waits (KILL after ``stop_timeout``); ``stop_begin`` and ``stop_wait`` split that, so
    several test beds can stop side by side."""

    proc: subprocess.Popen[bytes] | None = None
    stop_timeout = 10.0

    def stop(self) -> None:
        self.stop_begin()
        self.stop_wait()

    def stop_begin(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop_wait(self) -> None:
        if self.proc is not None:
            wait_stopped(self.proc, timeout=self.stop_timeout)
            self.proc = None
