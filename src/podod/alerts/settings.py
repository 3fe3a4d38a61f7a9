"""The ``alerts:`` section: rule files, grouping timings and notifiers."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from podod.settings_base import ConfigPath, Duration, Section


class AlertSettings(Section):
    enabled: bool = True
    rule_files: list[ConfigPath] = Field(default_factory=list)
    group_wait: Duration = 30.0
    group_interval: Duration = 300.0
    repeat_interval: Duration = 4 * 3600.0
    notifiers: list[dict[str, Any]] = Field(default_factory=list)
