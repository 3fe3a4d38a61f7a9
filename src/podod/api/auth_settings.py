"""The ``api:`` keys of accounts, tokens, two-factor authentication and API keys
(``podod.api.auth``). :class:`podod.api.settings.ApiSettings` inherits them, so they are
written directly under ``api:`` in podod.yaml. The policy they tune is docs/api-auth.md."""

from __future__ import annotations

from pydantic import Field, model_validator

from podod.settings_base import ConfigPath, Duration, Section


class LoginThrottleSettings(Section):
    """Failed logins slow down the place they come from, never the account everywhere.

    - ``free_failures`` failures are free; after that every further failure doubles the
      wait (``base_delay``, 2x, 4x, ... up to ``max_delay``) before the next attempt is
      even looked at, separately for each client address and for each (account, client
      address) pair.
    - ``lockout_failures`` failures of one account (from anywhere, within ``window``) lock
      it for ``lockout_time``, but only from addresses it has not logged in from in the
      last ``known_address_days``: an attacker elsewhere cannot lock an admin out of their
      own address.
    - Failures older than ``window`` are forgotten."""

    free_failures: int = Field(default=3, ge=0, le=1000)
    base_delay: Duration = Field(default=1.0, gt=0, le=3600)
    max_delay: Duration = Field(default=300.0, gt=0, le=86400)
    lockout_failures: int = Field(default=10, ge=1, le=100_000)
    lockout_time: Duration = Field(default=900.0, gt=0, le=7 * 86400)
    window: Duration = Field(default=3600.0, gt=0, le=30 * 86400)
    known_address_days: int = Field(default=30, ge=0, le=3650)


class ApiAuthSettings(Section):
    # Every account must use TOTP: an account without it cannot log in.
    require_2fa: bool = False
    access_token_ttl: Duration = Field(default=900.0, ge=30, le=86400)
    refresh_token_ttl: Duration = Field(default=14 * 86400.0, ge=60, le=365 * 86400)
    # An API key created without --expires lives this long; 0: keys without --expires never
    # expire.
    key_default_ttl: Duration = Field(default=90 * 86400.0, ge=0, le=3650 * 86400)
    password_min_length: int = Field(default=12, ge=8, le=256)
    # The HS256 signing key of access tokens; default <state_dir>/api-jwt.key, made (0600)
    # at first start, replaced by 'podoctl api rotate-key'.
    signing_key_file: ConfigPath | None = None
    totp_issuer: str = Field(default="podod", min_length=1, max_length=64)
    login_throttle: LoginThrottleSettings = Field(default_factory=LoginThrottleSettings)

    @model_validator(mode="after")
    def _refresh_outlives_access(self) -> ApiAuthSettings:
        if self.refresh_token_ttl < self.access_token_ttl:
            raise ValueError("refresh_token_ttl must not be shorter than access_token_ttl")
        if self.login_throttle.max_delay < self.login_throttle.base_delay:
            raise ValueError("login_throttle.max_delay must not be shorter than "
                             "login_throttle.base_delay")
        return self
