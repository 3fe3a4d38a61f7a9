"""``plugins.settings.aws`` in podod.yaml: which EBS volumes hold each server's data, and
how podod snapshots them (docs/snapshots.md). Credentials are NOT settings: boto3 finds them
itself (environment, ~/.aws files of podod's user, the instance role)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from podod.settings_base import Duration, Section, format_validation_error

_VOLUME = re.compile(r"vol-[0-9a-f]{8,17}")
_INSTANCE = re.compile(r"i-[0-9a-f]{8,17}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]")
_TAG = re.compile(r"[A-Za-z0-9 _.:/=+@-]{1,128}")
_PROFILE = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
# Keys that would put a credential into podod.yaml: refused with their own sentence.
_CREDENTIALS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token",
                "access_key", "secret_key", "secret_access_key", "session_token", "password")


class ServerSnapshots(Section):
    region: str
    profile: str | None = None  # a profile of ~/.aws/config of podod's user (not a secret)
    volumes: list[str] = Field(default_factory=list)
    instance_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    before_changes: bool = False
    wait_for: Literal["pending", "completed"] = "pending"
    timeout: Duration = 600.0
    poll_interval: Duration = 5.0
    keep: int = Field(default=7, ge=0, le=10_000)
    keep_days: int = Field(default=30, ge=0, le=36_500)
    max_age: Duration = 86_400.0
    # podod snapshots the volumes itself this often (through the bus, audited as actor
    # podod); null: only on request and by the gate (or by AWS Backup / DLM).
    every: Duration | None = None

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION.fullmatch(value):
            raise ValueError(f"'{value}' is not an AWS region such as eu-central-1")
        return value

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str | None) -> str | None:
        if value is not None and not _PROFILE.fullmatch(value):
            raise ValueError(f"'{value}' is not a profile name")
        return value

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: list[str]) -> list[str]:
        for volume in value:
            if not _VOLUME.fullmatch(volume):
                raise ValueError(f"'{volume}' is not an EBS volume id (vol-...)")
        return list(dict.fromkeys(value))

    @field_validator("instance_id")
    @classmethod
    def _instance(cls, value: str | None) -> str | None:
        if value is not None and not _INSTANCE.fullmatch(value):
            raise ValueError(f"'{value}' is not an EC2 instance id (i-...)")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not _TAG.fullmatch(key) or not _TAG.fullmatch(str(text)):
                raise ValueError(f"the tag {key!r} is not a plain EC2 tag key and value")
        return value

    @model_validator(mode="after")
    def _some_volume(self) -> ServerSnapshots:
        if not (self.volumes or self.instance_id or self.tags):
            raise ValueError("give volumes, an instance_id or tags: which EBS volumes hold "
                             "this server's data")
        if self.timeout <= 0 or self.poll_interval <= 0:
            raise ValueError("timeout and poll_interval must be longer than 0 s")
        if self.every is not None and self.every < 60:
            raise ValueError("every must be at least 60 s (or null)")
        return self


class AwsSettings(Section):
    servers: dict[str, ServerSnapshots] = Field(default_factory=dict)
    interval: Duration = 300.0  # how often snapshot ages are measured for /metrics

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if value < 10:
            raise ValueError("interval must be at least 10 s (each run asks EC2)")
        return value


def parse(raw: dict[str, Any]) -> AwsSettings:
    """The settings, or ValueError with one sentence naming the key."""
    found = _credential_key(raw)
    if found:
        raise ValueError(f"plugins.settings.aws: '{found}' looks like an AWS credential; "
                         "podod never reads credentials from podod.yaml: give them to boto3 "
                         "(environment of the podod service, ~/.aws/credentials of podod's "
                         "user, or the instance role)")
    try:
        return AwsSettings.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(format_validation_error("plugins.settings.aws", exc)) from None


def _credential_key(value: Any, path: str = "") -> str | None:
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if str(key).lower() in _CREDENTIALS:
                return here
            found = _credential_key(item, here)
            if found:
                return found
    return None
