"""The ``mail:`` section: how podod reaches the mail database and how it hashes passwords."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from podod.settings_base import ConfigPath, Duration, Section


class DatabaseSettings(Section):
    """Where the PostfixAdmin-compatible mail database lives.

    ``dsn`` without a password plus ``password``/``password_file`` keeps the secret out of
    the YAML. ``via_server``/``tunnel`` reach a remote database through an SSH local forward
    kept open by the server manager; the DSN's host and port are then replaced by the
    tunnel's local end.
    """

    dsn: str | None = None
    password: SecretStr | None = None
    password_file: ConfigPath | None = None
    via_server: str | None = None
    tunnel: str | None = None
    min_pool: int = Field(default=1, ge=0)
    max_pool: int = Field(default=5, ge=1)
    connect_timeout: Duration = 10.0


class PasswordSettings(Section):
    scheme: Literal["SHA512-CRYPT", "BLF-CRYPT", "ARGON2ID"] = "SHA512-CRYPT"
    rounds: int = Field(default=70000, ge=1000, le=999_999_999)
    min_length: int = Field(default=12, ge=1)
    generated_length: int = Field(default=20, ge=12)


class DatabaseRoles(Section):
    """Roles ``podod db init --roles`` creates or grants (production uses separate ones)."""

    readonly: str | None = None
    readonly_password: SecretStr | None = None
    readonly_password_file: ConfigPath | None = None
    sogo: str | None = None
    sogo_password: SecretStr | None = None
    sogo_password_file: ConfigPath | None = None


class MailSettings(Section):
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    passwords: PasswordSettings = Field(default_factory=PasswordSettings)
    roles: DatabaseRoles = Field(default_factory=DatabaseRoles)
