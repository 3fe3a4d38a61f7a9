"""Building blocks for configuration models: strict sections, paths, durations, secrets.

Every section of ``podod.yaml`` derives from :class:`Section`, which forbids unknown keys (a
typo must not be silently ignored) and resolves ``*_file`` secrets: a key ``password_file``
fills ``password`` from that file, so the YAML itself can stay world-readable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    SecretStr,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from podod.durations import parse_duration


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the config file's folder, not to the cwd."""
    value = value.expanduser()
    base = (info.context or {}).get("base_dir")
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return Path(os.path.normpath(value)) if value.is_absolute() else value


def _duration(value: Any) -> float:
    try:
        return parse_duration(value)
    except (ValueError, TypeError) as exc:
        raise PydanticCustomError("duration", str(exc)) from None


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
Duration = Annotated[float, BeforeValidator(_duration)]


class Section(BaseModel):
    """A strict config section: unknown keys are errors; ``X_file`` keys fill ``X``."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=False,
                              allow_inf_nan=False)  # .nan and .inf are no settings

    @model_validator(mode="after")
    def _read_secret_files(self) -> Section:
        for name in type(self).model_fields:
            if not name.endswith("_file") or name[:-5] not in type(self).model_fields:
                continue
            path = getattr(self, name)
            target = name[:-5]
            if path is None:
                continue
            try:
                text = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise PydanticCustomError(
                    "secret_file", "cannot read {path} ({reason})",
                    {"key": name, "path": str(path), "reason": exc.strerror or str(exc)},
                ) from None
            if getattr(self, target) not in (None, ""):
                raise PydanticCustomError(
                    "secret_file", "give either {target} or {key}, not both",
                    {"key": name, "target": target},
                )
            annotation = type(self).model_fields[target].annotation
            is_secret = annotation is SecretStr or "SecretStr" in str(annotation)
            object.__setattr__(self, target, SecretStr(text) if is_secret else text)
        return self
