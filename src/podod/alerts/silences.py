"""Silences and one-off maintenance windows: label matchers with a start, an end and a reason.

A one-off maintenance window (``alerts maintenance --server mx1 --for 2h``) is a silence
on ``server=mx1`` of kind ``maintenance``; recurring windows come from the configuration
(:mod:`podod.alerts.maintenance`). Both suppress notifications, never evaluation.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from podod.alerts.matchers import Matcher, describe, from_dicts, matches_all

Kind = Literal["silence", "maintenance"]


@dataclass
class Silence:
    id: str
    kind: Kind
    matchers: tuple[Matcher, ...]
    starts: float
    ends: float
    reason: str
    created_by: str
    created: float
    reminded: bool = False
    ended_by: str | None = None
    ended_at: float | None = None

    @classmethod
    def new(cls, kind: Kind, matchers: tuple[Matcher, ...], starts: float, ends: float,
            reason: str, created_by: str) -> Silence:
        return cls(secrets.token_hex(4), kind, matchers, starts, ends, reason, created_by,
                   starts)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Silence:
        return cls(row["id"], row["kind"], from_dicts(json.loads(row["matchers"])),
                   row["starts"], row["ends"], row["reason"], row["created_by"],
                   row["created"], bool(row["reminded"]), row["ended_by"], row["ended_at"])

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind,
                "matchers": json.dumps([m.to_dict() for m in self.matchers]),
                "starts": self.starts, "ends": self.ends, "reason": self.reason,
                "created_by": self.created_by, "created": self.created}

    def active(self, now: float) -> bool:
        return self.starts <= now < self.ends

    def matches(self, labels: Mapping[str, str]) -> bool:
        return matches_all(self.matchers, labels)

    @property
    def description(self) -> str:
        return describe(self.matchers)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "matchers": self.description,
                "starts": self.starts, "ends": self.ends, "reason": self.reason,
                "created_by": self.created_by, "ended_by": self.ended_by}
