"""The ``servers:`` list: every mail server podod manages (docs/servers.md explains each key).

The same model validates servers added at run time with ``server add``, so a server from the
state database obeys exactly the rules of one from podod.yaml.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from podod.servers.allowlist import UNIT
from podod.settings_base import ConfigPath, Duration, Section

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_TUNNEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_HOST = re.compile(r"^[A-Za-z0-9._:%-]+$")
_UNIT = re.compile(UNIT)


class TunnelConfig(Section):
    """A local port forward: 127.0.0.1:local_port → remote_host:remote_port, as seen from the
    server. ``local_port: 0`` takes a free port at the first connect and keeps it across
    reconnects, so a DSN built from it stays valid while podod runs."""

    name: str
    remote_host: str = "127.0.0.1"
    remote_port: int = Field(ge=1, le=65535)
    local_port: int = Field(default=0, ge=0, le=65535)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TUNNEL_NAME.match(value):
            raise ValueError("a tunnel name must be lower-case letters, digits, '_' or '-' "
                             "(at most 32 characters)")
        return value

    @field_validator("remote_host")
    @classmethod
    def _remote_host(cls, value: str) -> str:
        value = value.strip().removeprefix("[").removesuffix("]")
        if not value or not _HOST.match(value):
            raise ValueError(f"'{value}' is not a host name or address")
        return value


# The services ``podoctl service`` may control (Debian's unit names), and what each supports.
ServiceName = Literal["postfix", "dovecot", "sogo", "nginx", "memcached"]
SERVICE_NAMES: tuple[str, ...] = ("postfix", "dovecot", "sogo", "nginx", "memcached")
_MEMCACHED = re.compile(r"^(tunnel:[a-z0-9][a-z0-9_-]{0,31}|[A-Za-z0-9._-]+:[0-9]{1,5}|"
                        r"\[[0-9A-Fa-f:.]+\]:[0-9]{1,5})$")
_CONF_PATH = re.compile(r"(/[A-Za-z0-9_.+@-]+)+")


def _all_services() -> list[ServiceName]:
    return ["postfix", "dovecot", "sogo", "nginx", "memcached"]


class ControlSettings(Section):
    """``podoctl service`` and the after-actions on one server (docs/services.md).

    Commands run through the server's runner (SSH, or locally for ``local: true``) and,
    with ``sudo``, as ``sudo -n PROGRAM ...`` (``podoctl service sudoers`` prints the lines).
    """

    sudo: bool = True
    services: list[ServiceName] = Field(default_factory=lambda: _all_services())
    # doveadm -c PATH when Dovecot's configuration is not /etc/dovecot/dovecot.conf.
    doveadm_config: str | None = None
    # After a password change, a mailbox's deletion or deactivation: doveadm auth cache
    # flush USER (only worth it when Dovecot sets auth_cache_size).
    flush_auth_cache: bool = False
    # After a quota change: doveadm quota recalc -u USER.
    recalc_quota: bool = False
    # After a mailbox's rename: doveadm kick OLD-ADDRESS (its open IMAP/POP3 sessions end).
    kick_sessions: bool = False
    # SOGo's memcached (HOST:PORT from podod's side, or tunnel:NAME of this server): after a
    # password change, deletion or deactivation, the user's cached credentials are deleted.
    sogo_memcached: str | None = None

    @field_validator("doveadm_config")
    @classmethod
    def _conf(cls, value: str | None) -> str | None:
        if value is not None and (not _CONF_PATH.fullmatch(value) or "/../" in value + "/"
                                  or "/./" in value + "/"):
            raise ValueError("must be an absolute file path of letters, digits and '._+@-'")
        return value

    @field_validator("sogo_memcached")
    @classmethod
    def _memcached(cls, value: str | None) -> str | None:
        if value is not None and not _MEMCACHED.match(value):
            raise ValueError("must be HOST:PORT (as podod reaches it) or tunnel:NAME (a "
                             "tunnel of this server)")
        return value

    @field_validator("services")
    @classmethod
    def _unique(cls, value: list[ServiceName]) -> list[ServiceName]:
        return list(dict.fromkeys(value))


class ServerConfig(Section):
    name: str
    local: bool = False
    host: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    user: str = "podod"
    key_file: ConfigPath | None = None  # None: the default keys of podod's user (~/.ssh/id_*)
    key_passphrase: SecretStr | None = None
    key_passphrase_file: ConfigPath | None = None
    known_hosts: ConfigPath | None = None  # None: ~/.ssh/known_hosts of podod's user
    services: list[str] = Field(default_factory=list)
    mail_log: str | None = None  # a file path, or "journal"
    tunnels: list[TunnelConfig] = Field(default_factory=list)
    connect_timeout: Duration = 10.0
    command_timeout: Duration = 30.0
    keepalive: Duration = 15.0
    keepalive_count_max: int = Field(default=3, ge=1)
    max_commands: int = Field(default=4, ge=1, le=64)
    reconnect_min: Duration = 1.0
    reconnect_max: Duration = 300.0
    control: ControlSettings = Field(default_factory=ControlSettings)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "must be lower-case letters, digits, '.', '_' or '-' (at most 63 characters)"
            )
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().removeprefix("[").removesuffix("]")
        if not value or not _HOST.match(value):
            raise ValueError(f"'{value}' is not a host name or address")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,31}", value):
            raise ValueError(f"'{value}' is not a valid user name")
        return value

    @field_validator("services")
    @classmethod
    def _services(cls, value: list[str]) -> list[str]:
        for unit in value:
            if not _UNIT.fullmatch(unit):
                raise ValueError(f"'{unit}' is not a systemd unit name")
        return value

    @field_validator("mail_log")
    @classmethod
    def _mail_log(cls, value: str | None) -> str | None:
        if value is None or value == "journal":
            return value
        if not value.startswith("/") or any(c in value for c in "\n\0"):
            raise ValueError("must be an absolute file path, or 'journal' for the systemd "
                             "journal")
        return value

    @field_validator("tunnels")
    @classmethod
    def _tunnels(cls, value: list[TunnelConfig]) -> list[TunnelConfig]:
        names: set[str] = set()
        ports: set[int] = set()
        for tunnel in value:
            if tunnel.name in names:
                raise ValueError(f"tunnel name '{tunnel.name}' is used twice")
            if tunnel.local_port and tunnel.local_port in ports:
                raise ValueError(f"local port {tunnel.local_port} is used by two tunnels")
            names.add(tunnel.name)
            ports.add(tunnel.local_port)
        return value

    @model_validator(mode="after")
    def _host_or_local(self) -> ServerConfig:
        if not self.local and not self.host:
            raise ValueError("a server needs a host (or local: true for this machine)")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be shorter than reconnect_min")
        if self.connect_timeout <= 0 or self.command_timeout <= 0 or self.keepalive <= 0:
            raise ValueError("connect_timeout, command_timeout and keepalive must be longer "
                             "than 0 s")
        memcached = self.control.sogo_memcached
        if memcached and memcached.startswith("tunnel:") and \
                self.tunnel(memcached[7:]) is None:
            raise ValueError(f"control.sogo_memcached names the tunnel '{memcached[7:]}', "
                             "which this server does not have")
        return self

    def tunnel(self, name: str) -> TunnelConfig | None:
        for tunnel in self.tunnels:
            if tunnel.name == name:
                return tunnel
        return None

    @property
    def address(self) -> str:
        """``host:port`` as people write it (IPv6 in brackets)."""
        if self.local:
            return "this machine"
        host = self.host or ""
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
