"""``podod.yaml``: pydantic models of the whole configuration, and a loader whose errors
name the file and the key path (``podod.yaml: servers[1].port: must be an integer``).

Each area owns the model of its section (``podod.mail.settings``, ``podod.servers.settings``,
...); this module assembles them. Every key is documented in ``config/podod.example.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import Field, field_validator, model_validator

from podod.alerts.settings import AlertSettings
from podod.api.settings import ApiSettings
from podod.backup.settings import BackupSettings
from podod.errors import ConfigError
from podod.mail.settings import MailSettings
from podod.matrix.settings import MatrixSettings, check_user_id
from podod.monitor.settings import MonitorSettings
from podod.monitor.traffic.settings import TrafficSettings
from podod.servers.settings import ServerConfig
from podod.settings_base import (
    ConfigPath,
    Duration,
    Section,
    format_validation_error,
    listen_address,
)
from podod.yamlfile import read_yaml

Role = Literal["admin", "domain-admin", "viewer"]


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class SocketSettings(Section):
    path: ConfigPath = Path("/run/podod/podod.sock")
    mode: str = "0660"
    group: str | None = None
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    # Input a command declares as data (a CSV file) may be larger than a request.
    max_data_bytes: int = Field(default=67_108_864, ge=1024, le=1_073_741_824)

    @field_validator("mode", mode="before")
    @classmethod
    def _octal(cls, value: object) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 0660 as the octal number 0o660 (432).
            if not 0 <= value <= 0o777:
                raise ValueError("must be an octal file mode such as 0660 (write it in "
                                 "quotes: \"0660\")")
            return f"0{value:o}"
        if not isinstance(value, str):
            raise ValueError("must be an octal file mode such as 0660")
        try:
            mode = int(value, 8)
        except ValueError:
            raise ValueError("must be an octal file mode such as 0660") from None
        if not 0 <= mode <= 0o777:
            raise ValueError("must be an octal file mode such as 0660")
        return value

    @property
    def mode_bits(self) -> int:
        return int(self.mode, 8)


class Grant(Section):
    """What one person may do: a role and, for domain-admins, the domains they manage."""

    role: Role
    domains: list[str] = Field(default_factory=list)

    @field_validator("domains")
    @classmethod
    def _normalised(cls, value: list[str]) -> list[str]:
        """As the mail database stores them (IDN as punycode), or the grant never matches."""
        from podod.errors import ValidationError
        from podod.mail.addresses import normalize_domain

        out = []
        for domain in value:
            try:
                out.append(normalize_domain(domain))
            except ValidationError as exc:
                raise ValueError(exc.message) from None
        return out


class TokenGrant(Grant):
    """A REST API account: a grant and the SHA-256 of its token (the token itself is never
    stored: ``printf %s TOKEN | sha256sum`` makes the hash)."""

    sha256: str

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        value = value.strip().lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("must be the 64 hex digits of the token's SHA-256, not the "
                             "token itself")
        return value


class AccessSettings(Section):
    """Who may use podod. root over the Unix socket is always admin. Read per request by
    :func:`podod.bus.identity.actor_for`, so a reload (SIGHUP) applies at once."""

    unix_users: dict[str, Grant] = Field(default_factory=dict)
    matrix_users: dict[str, Grant] = Field(default_factory=dict)
    api_tokens: dict[str, TokenGrant] = Field(default_factory=dict)

    @field_validator("matrix_users")
    @classmethod
    def _matrix_ids(cls, value: dict[str, Grant]) -> dict[str, Grant]:
        for user in value:
            check_user_id(user)
        return value


class PluginSettings(Section):
    dirs: list[ConfigPath] = Field(default_factory=list)
    entry_points: bool = True
    disabled: list[str] = Field(default_factory=list)
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)


class RateLimitSettings(Section):
    """Requests per actor (token bucket): ``burst`` at once, refilled at ``per_minute``.
    0 per minute: no limit. ``exempt`` actors (``unix:root`` by default) are never limited."""

    per_minute: int = Field(default=120, ge=0, le=1_000_000)
    burst: int = Field(default=60, ge=1, le=1_000_000)
    exempt: list[str] = Field(default_factory=lambda: ["unix:root"])


class CommandSettings(Section):
    plan_ttl: Duration = Field(default=600.0, gt=0)
    plan_ttl_by_origin: dict[str, Duration] = Field(default_factory=dict)
    timeout: Duration = Field(default=300.0, gt=0)
    after_action_timeout: Duration = Field(default=120.0, gt=0)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)

    @field_validator("plan_ttl_by_origin")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for origin, ttl in value.items():
            if ttl <= 0:
                raise ValueError(f"{origin}: a plan's time to live must be positive")
        return value


class AuditSettings(Section):
    """Where the audit log's key and head live (docs/security.md); read at start only."""

    key_file: ConfigPath | None = None  # default: <state_dir>/audit.key, made at first start
    head_file: ConfigPath | None = None  # default: <state_dir>/audit.head


class MetricsSettings(Section):
    enabled: bool = True
    listen: str = "127.0.0.1"
    port: int = Field(default=9571, ge=0, le=65535)

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        return listen_address(value, "/metrics")


class Config(Section):
    state_dir: ConfigPath = Path("/var/lib/podod")
    log: LogSettings = Field(default_factory=LogSettings)
    socket: SocketSettings = Field(default_factory=SocketSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)
    plugins: PluginSettings = Field(default_factory=PluginSettings)
    commands: CommandSettings = Field(default_factory=CommandSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    mail: MailSettings = Field(default_factory=MailSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    servers: list[ServerConfig] = Field(default_factory=list)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    traffic: TrafficSettings = Field(default_factory=TrafficSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    matrix: MatrixSettings = Field(default_factory=MatrixSettings)

    @field_validator("servers")
    @classmethod
    def _unique_servers(cls, servers: list[ServerConfig]) -> list[ServerConfig]:
        seen: set[str] = set()
        for server in servers:
            if server.name in seen:
                raise ValueError(f"server name '{server.name}' is used twice")
            seen.add(server.name)
        return servers

    @model_validator(mode="after")
    def _matrix_account(self) -> Config:
        """A Matrix notifier without an account of its own posts through matrix:."""
        for i, notifier in enumerate(self.alerts.notifiers):
            if getattr(notifier, "type", None) != "matrix" or \
                    getattr(notifier, "homeserver", "") is not None:
                continue
            if not self.matrix.enabled:
                raise ValueError(f"alerts.notifiers[{i}]: a matrix notifier without "
                                 "homeserver posts through podod's own account: configure "
                                 "the matrix: section (or give this notifier homeserver, "
                                 "user_id and access_token_file)")
            if getattr(notifier, "room_id", None) is None and self.matrix.alert_room is None:
                raise ValueError(f"alerts.notifiers[{i}]: room_id is required (or set "
                                 "matrix.alert_room)")
        # Chat plans live matrix.plan_ttl (2 minutes) unless the origin has its own entry.
        self.commands.plan_ttl_by_origin.setdefault("matrix", self.matrix.plan_ttl)
        if self.matrix.enabled and self.matrix.bot and not self.access.matrix_users:
            raise ValueError("matrix.bot is on but access.matrix_users names nobody: the bot "
                             "would answer no one (grant someone a role, or set matrix.bot: "
                             "false)")
        return self


def parse_config(data: Any, *, source: str, base_dir: Path | None = None) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the file must hold a mapping of keys to values")
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except pydantic.ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate ``path``; every failure is a :class:`ConfigError` naming the file."""
    path = Path(path)
    source = path.name
    data = read_yaml(path, "configuration file")
    return parse_config(data, source=source, base_dir=path.resolve().parent)
