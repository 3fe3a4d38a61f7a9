"""The ``servers:`` list: every mail server podod manages."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from podod.settings_base import ConfigPath, Duration, Section

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class TunnelConfig(Section):
    """A local port forward: 127.0.0.1:local_port → remote_host:remote_port on the server."""

    name: str
    remote_host: str = "127.0.0.1"
    remote_port: int = Field(ge=1, le=65535)
    local_port: int = Field(default=0, ge=0, le=65535)


class ServerConfig(Section):
    name: str
    local: bool = False
    host: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    user: str = "root"
    key_file: ConfigPath | None = None
    known_hosts: ConfigPath | None = None
    services: list[str] = Field(default_factory=list)
    mail_log: str | None = None  # a file path, or "journal"
    tunnels: list[TunnelConfig] = Field(default_factory=list)
    connect_timeout: Duration = 10.0
    command_timeout: Duration = 30.0
    keepalive: Duration = 15.0
    max_commands: int = Field(default=4, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "must be lower-case letters, digits, '.', '_' or '-' (at most 63 characters)"
            )
        return value

    @model_validator(mode="after")
    def _host_or_local(self) -> ServerConfig:
        if not self.local and not self.host:
            raise ValueError("a server needs a host (or local: true for this machine)")
        return self
