"""A reply's status: one word every frontend maps without guessing, to podoctl's exit code
and to an HTTP status (the REST API), from one table."""

from __future__ import annotations

from typing import NamedTuple


class StatusInfo(NamedTuple):
    exit_code: int
    http_status: int
    meaning: str


STATUSES: dict[str, StatusInfo] = {
    "ok": StatusInfo(0, 200, "done (or, in the sandbox, planned)"),
    "invalid": StatusInfo(2, 400, "the request or its values are wrong; nothing ran"),
    "not-found": StatusInfo(1, 404, "what the request names does not exist"),
    "conflict": StatusInfo(1, 409, "the change collides with existing data or its plan"),
    "permission": StatusInfo(1, 403, "the actor may not do this"),
    "unauthenticated": StatusInfo(1, 401, "the caller is not known to podod"),
    "rate-limited": StatusInfo(1, 429, "too many requests from this actor; try later"),
    "unavailable": StatusInfo(1, 503, "a component the request needs is not reachable"),
    "timeout": StatusInfo(1, 504, "the command did not finish within its time limit"),
    "failed": StatusInfo(1, 500, "the command ran and reports a failure (see the message)"),
    "internal": StatusInfo(1, 500, "a bug or an unexpected error; see the daemon's log"),
}


def exit_code(status: str) -> int:
    return STATUSES.get(status, STATUSES["failed"]).exit_code


def http_status(status: str) -> int:
    return STATUSES.get(status, STATUSES["failed"]).http_status
