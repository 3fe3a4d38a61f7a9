"""Files that must be on disk before podod goes on (a backup before its change commits, the
audit's key and head): written whole and fsynced, and the folder that names them fsynced too.
Blocking: callers run these in a worker thread or at start-up."""

from __future__ import annotations

import os
from pathlib import Path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # os.write may write less than asked
        view = view[os.write(fd, view):]
    os.fsync(fd)


def write_new(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` (never over an existing file), write ``data`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new name in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` atomically: a reader sees the old file or the new one, whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
