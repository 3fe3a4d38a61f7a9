"""The REST API (issue 15): ``settings`` (the ``api:`` section), ``auth`` (accounts, tokens,
2FA, API keys) and the aiohttp frontend in ``podod.frontends.api``."""
