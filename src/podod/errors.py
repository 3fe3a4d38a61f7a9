"""One exception hierarchy whose messages are meant for people.

Every frontend renders a :class:`PododError` the same way: its ``message`` is one plain
sentence naming the problem, its ``code`` is a stable machine-readable word, and its
``exit_code`` is what ``podoctl`` exits with.
"""

from __future__ import annotations


class PododError(Exception):
    """A failure a user can read and act on."""

    code = "error"
    exit_code = 1
    http_status = 400

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
    exit_code = 2


class ConfigError(PododError):
    """The configuration file is missing or invalid."""

    code = "config"
    exit_code = 2


class ValidationError(PododError):
    """The request is well formed but its values are not acceptable (podoctl exits 2, as
    for a usage error: the input is what to fix)."""

    code = "invalid"
    exit_code = 2
    http_status = 422


class NotFound(PododError):
    code = "not-found"
    http_status = 404


class Conflict(PododError):
    """The change collides with existing data (a duplicate, a non-empty domain, ...)."""

    code = "conflict"
    http_status = 409


class PermissionDenied(PododError):
    code = "forbidden"
    http_status = 403


class Unauthenticated(PododError):
    code = "unauthenticated"
    http_status = 401


class BackupFailed(PododError):
    """The backup gate could not take or verify a backup: nothing was changed."""

    code = "backup-failed"
    http_status = 500


class Unavailable(PododError):
    """A component the request needs (database, server, ...) cannot be reached."""

    code = "unavailable"
    http_status = 503
