"""The ``api:`` section: the REST API's listener (``podod.frontends.api``) plus the
authentication keys of :class:`ApiAuthSettings`. Off unless ``api.enabled``."""

from __future__ import annotations

from podod.api.auth_settings import ApiAuthSettings


class ApiSettings(ApiAuthSettings):
    enabled: bool = False
