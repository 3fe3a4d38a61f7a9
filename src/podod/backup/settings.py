"""The ``backup:`` section."""

from __future__ import annotations

from pydantic import Field

from podod.settings_base import ConfigPath, Duration, Section


class BackupSettings(Section):
    dir: ConfigPath | None = None  # default: <state_dir>/backups
    pg_dump: bool = False  # full backups (backup take, full_every) include a pg_dump
    pg_dump_path: str = "pg_dump"
    keep_days: int = Field(default=90, ge=1)
    # A full backup (every mail table, and the pg_dump) this often; None: only on request
    # ('backup take'). A change's own backup holds just the rows it touches.
    full_every: Duration | None = Field(default=None, gt=0)
