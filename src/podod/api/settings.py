"""The ``api:`` section: the REST API's listener (``podod.frontends.api``) plus the
authentication keys of :class:`ApiAuthSettings`. Off unless ``api.enabled``."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator, model_validator

from podod.api.auth_settings import ApiAuthSettings
from podod.settings_base import ConfigPath, Section, listen_address


class ApiTlsSettings(Section):
    """HTTPS on the API's own listener: a PEM certificate (chain) and its key, read at start
    and again on every reload (SIGHUP), so a renewed certificate needs no restart."""

    cert_file: ConfigPath
    key_file: ConfigPath


class ApiCorsSettings(Section):
    """Cross-origin requests from browsers: refused unless the origin is listed."""

    allow_origins: list[str] = Field(default_factory=list)
    max_age: int = Field(default=600, ge=0, le=86400)

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        out = []
        for origin in value:
            text = origin.strip().rstrip("/")
            if text == "*":
                raise ValueError("'*' would let every web site use the API with a browser's "
                                 "stored token; list the origins (https://admin.example.org)")
            if not text.startswith(("https://", "http://")) or "/" in text.split("://", 1)[1]:
                raise ValueError(f"'{origin}' is not an origin such as "
                                 "https://admin.example.org")
            out.append(text.lower())
        return out


class ApiSettings(ApiAuthSettings):
    enabled: bool = False
    listen: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    tls: ApiTlsSettings | None = None
    # Reverse proxies (addresses or networks) whose X-Forwarded-For is believed: the client's
    # address is then the last one in that header not itself a trusted proxy.
    trusted_proxies: list[str] = Field(default_factory=list)
    cors: ApiCorsSettings = Field(default_factory=ApiCorsSettings)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=1 << 30)
    max_data_bytes: int = Field(default=64 * 1_048_576, ge=1024, le=1 << 32)
    # Live events (/api/events): what one client may have waiting before it is disconnected.
    event_queue: int = Field(default=1000, ge=1, le=1_000_000)
    max_event_clients: int = Field(default=100, ge=1, le=100_000)

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        return listen_address(value, "the API")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(f"'{item}' is not an IP address or network such as "
                                 "127.0.0.1 or 10.0.0.0/8") from None
        return [item.strip() for item in value]

    @model_validator(mode="after")
    def _data_over_body(self) -> ApiSettings:
        if self.max_data_bytes < self.max_body_bytes:
            self.max_data_bytes = self.max_body_bytes
        return self
