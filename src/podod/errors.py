"""One exception hierarchy whose messages are meant for people.

Every frontend renders a :class:`PododError` the same way: its ``message`` is one plain
sentence naming the problem, its ``code`` is a stable machine-readable word, and its
``exit_code`` is what ``podoctl`` exits with.
"""

from __future__ import annotations


class PododError(Exception):
    """A failure a user can read and act on."""

    code = "error"
    status = "failed"  # the reply's status (podod.bus.status): exit code and HTTP status
    exit_code = 1
    http_status = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class UsageError(PododError):
    """The request does not follow the grammar (unknown command, bad option, ...)."""

    code = "usage"
    status = "invalid"
    exit_code = 2
    http_status = 400


class ConfigError(PododError):
    """The configuration file is missing or invalid."""

    code = "config"
    status = "invalid"
    exit_code = 2
    http_status = 400


class ValidationError(PododError):
    """The request is well formed but its values are not acceptable (podoctl exits 2, as
    for a usage error: the input is what to fix)."""

    code = "invalid"
    status = "invalid"
    exit_code = 2
    http_status = 422


class NotFound(PododError):
    code = "not-found"
    status = "not-found"
    http_status = 404


class Conflict(PododError):
    """The change collides with existing data (a duplicate, a non-empty domain, ...)."""

    code = "conflict"
    status = "conflict"
    http_status = 409


class PermissionDenied(PododError):
    code = "forbidden"
    status = "permission"
    http_status = 403


class Unauthenticated(PododError):
    code = "unauthenticated"
    status = "unauthenticated"
    http_status = 401


class BackupFailed(PododError):
    """The backup gate could not take or verify a backup: nothing was changed."""

    code = "backup-failed"
    status = "unavailable"
    http_status = 500


class Unavailable(PododError):
    """A component the request needs (database, server, ...) cannot be reached."""

    code = "unavailable"
    status = "unavailable"
    http_status = 503


class RateLimited(PododError):
    """The actor sent more requests than ``commands.rate_limit`` allows; nothing ran."""

    code = "rate-limited"
    status = "rate-limited"
    http_status = 429
