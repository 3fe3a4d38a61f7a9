"""The ``monitor:`` section: collection intervals and the metrics store's retention."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from podod.settings_base import Duration, Section


class MonitorSettings(Section):
    enabled: bool = True
    interval: Duration = 30.0
    intervals: dict[str, Duration] = Field(default_factory=dict)  # per collector
    collectors: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-collector settings
    raw_retention: Duration = 7 * 86400.0
    rollup_retention: Duration = 90 * 86400.0
