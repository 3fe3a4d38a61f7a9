"""The ``traffic:`` section: following the mail logs and keeping their counts."""

from __future__ import annotations

from pydantic import Field, field_validator

from podod.settings_base import Duration, Section


class TrafficSettings(Section):
    enabled: bool = True
    retention: Duration = 90 * 86400.0
    flush_interval: Duration = 5.0
    publish_interval: Duration = 15.0
    rotation_check: Duration = 10.0
    rotation_grace: Duration = 2.0
    reconnect_max: Duration = 60.0
    batch_lines: int = Field(default=5000, ge=100)
    top_candidates: int = Field(default=200, ge=10)
    max_messages: int = Field(default=200_000, ge=1000)
    journal_backlog: Duration = 86400.0
    timezone: str | None = None
    backfill_dirs: list[str] = Field(default_factory=lambda: ["/var/log"])

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value:
            from podod.monitor.traffic.clock import local_zone

            local_zone(value)  # raises ValueError with a plain sentence
        return value

    @field_validator("backfill_dirs")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for folder in value:
            if not folder.startswith("/") or "/../" in folder + "/":
                raise ValueError(f"'{folder}' must be an absolute folder")
        return [folder.rstrip("/") or "/" for folder in value]
