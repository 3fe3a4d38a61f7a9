"""The ``matrix:`` section: the account podod uses on a Matrix homeserver, the rooms the
admin bot listens in, and the alert room. Off unless ``homeserver`` is set.

The access token comes from ``access_token_file`` (or ``access_token``); or podod logs in
once with ``password_file`` and keeps the token and device id in ``state_dir/matrix``
(mode 0600), so every later start restores that login and its device (its encryption keys).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from podod.settings_base import ConfigPath, Duration, Section

USER_ID = re.compile(r"^@[^:\s]+:\S+$")
ROOM = re.compile(r"^(![^\s]+|#[^:\s]+:\S+)$")


def check_user_id(value: str) -> str:
    if not USER_ID.match(value):
        raise ValueError(f"'{value}' is not a Matrix user id such as @alice:example.org")
    return value


def check_room(value: str) -> str:
    if not ROOM.match(value):
        raise ValueError(f"'{value}' is not a room id (!abc:example.org) or alias "
                         "(#ops:example.org)")
    return value


class MatrixSettings(Section):
    homeserver: str | None = None  # None: no Matrix account, no bot
    user_id: str | None = None
    access_token: SecretStr | None = None
    access_token_file: ConfigPath | None = None
    password: SecretStr | None = None
    password_file: ConfigPath | None = None
    device_name: str = "podod"
    # The admin bot: commands in these rooms. false: the account only posts alerts.
    bot: bool = True
    rooms: list[str] = Field(default_factory=list)
    alert_room: str | None = None
    prefix: str = "!podo"
    # End-to-end encryption: auto (on when matrix-nio's e2e extra is installed), on
    # (required: the bot does not start without it), off.
    e2ee: Literal["auto", "on", "off"] = "auto"
    store_dir: ConfigPath | None = None  # default: <state_dir>/matrix
    # How long a plan made in chat may be confirmed, unless commands.plan_ttl_by_origin
    # has an entry "matrix".
    plan_ttl: Duration = Field(default=120.0, gt=0)
    sync_timeout: Duration = Field(default=30.0, gt=0, le=300)
    request_timeout: Duration = Field(default=20.0, gt=0, le=300)
    backoff_initial: Duration = Field(default=1.0, gt=0)
    backoff_max: Duration = Field(default=60.0, gt=0)
    # A long command edits one progress message at most this often.
    progress_interval: Duration = Field(default=2.0, gt=0)
    # A command shows progress once it has run this long (a quick one posts none).
    progress_after: Duration = Field(default=1.0, ge=0)
    # Strangers (not in access.matrix_users) are ignored; audited once per user per this.
    stranger_audit_interval: Duration = Field(default=3600.0, gt=0)

    @field_validator("homeserver")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL, e.g. https://matrix.example.org")
        return value.rstrip("/") if value else value

    @field_validator("user_id")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        return check_user_id(value) if value is not None else None

    @field_validator("rooms")
    @classmethod
    def _rooms(cls, value: list[str]) -> list[str]:
        for room in value:
            check_room(room)
        if len(set(value)) != len(value):
            raise ValueError("a room is listed twice")
        return value

    @field_validator("alert_room")
    @classmethod
    def _alert_room(cls, value: str | None) -> str | None:
        return check_room(value) if value is not None else None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("must be one word such as !podo")
        return value

    @model_validator(mode="after")
    def _complete(self) -> MatrixSettings:
        if self.homeserver is None:
            if self.user_id or self.rooms or self.alert_room or self.access_token \
                    or self.password:
                raise ValueError("homeserver is required when the matrix section is used "
                                 "(e.g. https://matrix.example.org)")
            return self
        if self.user_id is None:
            raise ValueError("user_id is required: the bot's account, e.g. @podod:example.org")
        if self.access_token is None and self.password is None:
            raise ValueError("give access_token_file (a token of the bot's account) or "
                             "password_file (podod logs in once and keeps the token under "
                             "state_dir)")
        if self.access_token is not None and self.password is not None:
            raise ValueError("give access_token_file or password_file, not both")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must not be smaller than backoff_initial")
        if self.bot and not self.rooms:
            raise ValueError("rooms: list the admin rooms the bot listens in (or set bot: "
                             "false to only post alerts)")
        return self

    @property
    def enabled(self) -> bool:
        return self.homeserver is not None

    def store(self, state_dir: Path) -> Path:
        return Path(self.store_dir) if self.store_dir else Path(state_dir) / "matrix"


def matrix_warnings(settings: MatrixSettings) -> list[str]:
    """What ``podod check-config`` says about a valid matrix: section that will not work
    as meant, or not safely."""
    import ipaddress
    import os
    from urllib.parse import urlsplit

    if not settings.enabled:
        return []
    out = []
    if settings.e2ee == "on":
        from podod.matrix.session import e2ee_available

        if not e2ee_available():
            out.append("matrix.e2ee is on but matrix-nio's e2e extra is not installed "
                       "(pip install 'matrix-nio[e2e]'): the Matrix account will not start")
    url = urlsplit(settings.homeserver or "")
    if url.scheme == "http":
        host = url.hostname or ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            out.append(f"matrix.homeserver {settings.homeserver} is plain http: the access "
                       "token and every message cross the network unencrypted (use https)")
    for key in ("access_token_file", "password_file"):
        path = getattr(settings, key)
        if path is None:
            continue
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if mode & 0o077:
            out.append(f"matrix.{key}: {path} can be read by other users (chmod 600 it)")
    return out
