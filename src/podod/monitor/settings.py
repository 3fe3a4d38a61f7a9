"""The ``monitor:`` section: the scheduler, the built-in collectors' settings and the metrics
store (retention, batching, the backlog kept while the disk is full)."""

from __future__ import annotations

import re
from typing import Any, Literal

import pydantic
from pydantic import Field, PrivateAttr, SecretStr, ValidationInfo, field_validator, model_validator

from podod.settings_base import ConfigPath, Duration, Section, validation_message

# File systems that hold no data worth watching (they are always 100 % or never full).
PSEUDO_FS_TYPES = [
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
    "devtmpfs", "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "proc", "pstore",
    "ramfs", "rpc_pipefs", "securityfs", "selinuxfs", "squashfs", "sysfs", "tmpfs", "tracefs",
    "fuse.lxcfs", "fuse.portal", "fuse.gvfsd-fuse", "iso9660",
]


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"is not a valid regular expression ({exc})") from None
    return value


def _abs_path(value: str | None) -> str | None:
    """A path given to a remote command: absolute, without spaces or shell characters."""
    if value is not None and not re.fullmatch(r"/[A-Za-z0-9@%+=:,./_-]*", value):
        raise ValueError("must be an absolute path without spaces or shell characters")
    return value


class SystemCollectorSettings(Section):
    """``monitor.collectors.system``."""

    ignore_fs_types: list[str] = Field(default_factory=lambda: list(PSEUDO_FS_TYPES))
    ignore_mountpoints: str = r"^/(proc|sys|dev|run)($|/)"
    ignore_devices: str = r"^lo$"

    @field_validator("ignore_mountpoints", "ignore_devices")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        return _regex(value)


ProbeType = Literal["smtp", "smtps", "imap", "imaps", "http", "https", "tcp", "postgres"]


class ProbeSettings(Section):
    """One protocol probe. Well-known names (smtp, submission, smtps, imap, imaps, sogo,
    postgres, http, https) imply their type and port; other names need ``type``."""

    type: ProbeType | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    host: str | None = None
    url: str | None = None  # http/https probes: the whole URL (HOST is replaced)
    enabled: bool = True


# Probe names that imply their type and port (sogo's URL depends on the server).
WELL_KNOWN_PROBES: dict[str, tuple[ProbeType, int | None]] = {
    "smtp": ("smtp", 25), "submission": ("smtp", 587), "smtps": ("smtps", 465),
    "imap": ("imap", 143), "imaps": ("imaps", 993), "sogo": ("http", None),
    "postgres": ("postgres", None), "http": ("http", 80), "https": ("https", 443),
}


def _typed(probes: dict[str, ProbeSettings]) -> dict[str, ProbeSettings]:
    for name, probe in probes.items():
        if name not in WELL_KNOWN_PROBES and probe.type is None:
            raise ValueError(f"probe '{name}' needs a type (one of smtp, smtps, imap, imaps, "
                             "http, https, tcp, postgres)")
        kind = probe.type or WELL_KNOWN_PROBES[name][0]
        if kind in ("smtp", "smtps", "imap", "imaps", "tcp") and probe.port is None \
                and name not in WELL_KNOWN_PROBES:
            raise ValueError(f"probe '{name}' needs a port")
    return probes


class ServicesServerSettings(Section):
    host: str | None = None
    probes: dict[str, ProbeSettings] = Field(default_factory=dict)
    derive_probes: bool | None = None

    @field_validator("probes")
    @classmethod
    def _probes_typed(cls, value: dict[str, ProbeSettings]) -> dict[str, ProbeSettings]:
        return _typed(value)


class ServicesCollectorSettings(Section):
    """``monitor.collectors.services``."""

    timeout: Duration = 5.0
    derive_probes: bool = True  # probes implied by servers[].services
    probes: dict[str, ProbeSettings] = Field(default_factory=dict)
    servers: dict[str, ServicesServerSettings] = Field(default_factory=dict)

    @field_validator("probes")
    @classmethod
    def _probes_typed(cls, value: dict[str, ProbeSettings]) -> dict[str, ProbeSettings]:
        return _typed(value)


class QueueServerSettings(Section):
    config_dir: str | None = None


PostqueuePath = Literal["/usr/sbin/postqueue", "/usr/local/sbin/postqueue", "postqueue"]


class QueueCollectorSettings(Section):
    """``monitor.collectors.queue``."""

    # Where postqueue is: /usr/sbin on Debian, Ubuntu and RHEL (not on a normal user's PATH),
    # /usr/local/sbin on the BSDs; "postqueue" looks it up on the login's PATH.
    postqueue: PostqueuePath = "/usr/sbin/postqueue"
    config_dir: str | None = None  # postqueue -c DIR; null: the system's default instance
    servers: dict[str, QueueServerSettings] = Field(default_factory=dict)

    @field_validator("config_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return _abs_path(value)


class DovecotServerSettings(Section):
    socket: str | None = None

    @field_validator("socket")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return _abs_path(value)


DoveadmPath = Literal["/usr/bin/doveadm", "/usr/local/bin/doveadm", "doveadm"]


class DovecotCollectorSettings(Section):
    """``monitor.collectors.dovecot``."""

    doveadm: DoveadmPath = "/usr/bin/doveadm"
    # doveadm stats dump -s SOCKET; null: the stats-reader socket in the base_dir of the
    # server's dovecot.conf (/run/dovecot/stats-reader on Debian)
    socket: str | None = None
    max_metrics: int = Field(default=100, ge=1, le=10_000)
    servers: dict[str, DovecotServerSettings] = Field(default_factory=dict)

    @field_validator("socket")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return _abs_path(value)


class PostgresTarget(Section):
    dsn: str
    password: SecretStr | None = None
    password_file: ConfigPath | None = None
    tunnel: str | None = None  # a tunnel of this server: the DSN's host:port is replaced

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, value: str) -> str:
        """The rules of mail.database.dsn: a PostgreSQL URL without the password (a DSN
        ends up in messages), and a bad one said by check-config, not by every run."""
        from podod.mail.settings import DatabaseSettings

        checked = DatabaseSettings._dsn(value)
        assert checked is not None
        return checked


class PostgresCollectorSettings(Section):
    """``monitor.collectors.postgres``."""

    mail_database: bool = True  # measure the mail database on the server that hosts it
    timeout: Duration = 10.0
    servers: dict[str, PostgresTarget] = Field(default_factory=dict)


COLLECTOR_SETTINGS: dict[str, type[Section]] = {
    "system": SystemCollectorSettings,
    "services": ServicesCollectorSettings,
    "queue": QueueCollectorSettings,
    "postgres": PostgresCollectorSettings,
    "dovecot": DovecotCollectorSettings,
}


class StoreSettings(Section):
    """``monitor.store``: how the metrics store (metrics.db) writes and prunes."""

    flush_interval: Duration = 2.0
    max_batch: int = Field(default=100_000, ge=100)
    max_backlog: int = Field(default=200_000, ge=1000)
    retry_interval: Duration = 10.0
    prune_interval: Duration = 600.0
    prune_step_rows: int = Field(default=5000, ge=100)


class MonitorSettings(Section):
    enabled: bool = True
    interval: Duration = 30.0
    intervals: dict[str, Duration] = Field(default_factory=dict)  # per collector
    collectors: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-collector settings
    timeout: Duration = 20.0
    max_concurrent: int = Field(default=16, ge=1)
    raw_retention: Duration = 7 * 86400.0
    rollup_retention: Duration = 90 * 86400.0
    store: StoreSettings = Field(default_factory=StoreSettings)

    _parsed: dict[str, Section] = PrivateAttr(default_factory=dict)

    @field_validator("interval", "timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value < 1:
            raise ValueError("must be at least 1s")
        return value

    @field_validator("intervals")
    @classmethod
    def _positive_each(cls, value: dict[str, float]) -> dict[str, float]:
        for name, seconds in value.items():
            if seconds < 1:
                raise ValueError(f"{name}: must be at least 1s")
        return value

    @field_validator("collectors")
    @classmethod
    def _collector_settings(cls, value: dict[str, dict[str, Any]], info: ValidationInfo
                            ) -> dict[str, dict[str, Any]]:
        """Validate the built-in collectors' settings now, so a typo fails check-config."""
        for name, model in COLLECTOR_SETTINGS.items():
            try:
                model.model_validate(value.get(name) or {}, context=info.context)
            except pydantic.ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(str(p) for p in error["loc"])
                raise ValueError(f"{name}{'.' + where if where else ''}: "
                                 f"{validation_message(error)}") from None
        return value

    @model_validator(mode="after")
    def _parse_collector_settings(self, info: ValidationInfo) -> MonitorSettings:
        for name, model in COLLECTOR_SETTINGS.items():
            self._parsed[name] = model.model_validate(self.collectors.get(name) or {},
                                                      context=info.context)
        if self.raw_retention > self.rollup_retention:
            raise ValueError("raw_retention must not be longer than rollup_retention")
        return self

    def collector_settings(self, name: str) -> Any:
        """The validated settings model of a built-in collector."""
        return self._parsed[name]
