"""The ``backup:`` section."""

from __future__ import annotations

from pydantic import Field

from podod.settings_base import ConfigPath, Section


class BackupSettings(Section):
    dir: ConfigPath | None = None  # default: <state_dir>/backups
    pg_dump: bool = False
    pg_dump_path: str = "pg_dump"
    keep_days: int = Field(default=90, ge=1)
