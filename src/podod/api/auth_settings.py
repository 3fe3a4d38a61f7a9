"""The ``api:`` keys of accounts, tokens, two-factor authentication and API keys
(``podod.api.auth``). :class:`podod.api.settings.ApiSettings` inherits them, so they are
written directly under ``api:`` in podod.yaml."""

from __future__ import annotations

from podod.settings_base import Section


class ApiAuthSettings(Section):
    pass
