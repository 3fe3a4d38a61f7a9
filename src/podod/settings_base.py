"""Building blocks for configuration models: strict sections, paths, durations, secrets.

Every section of ``podod.yaml`` derives from :class:`Section`, which forbids unknown keys (a
typo must not be silently ignored) and resolves ``*_file`` secrets: a key ``password_file``
fills ``password`` from that file, so the YAML itself can stay world-readable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import pydantic
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


def listen_address(value: str, what: str = "/metrics") -> str:
    """An IP address or a host name to listen on; '' would listen on every address
    (aiohttp's default), which podod never does unless told so in plain words (0.0.0.0, ::).
    Raises ValueError with the sentence for a listener's ``listen`` key."""
    import ipaddress
    import re

    text = value.strip().removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+", text) or not re.fullmatch(
            r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
            r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?", text):
        raise ValueError(f"'{value}' is not an IP address or host name (127.0.0.1 keeps "
                         f"{what} on this machine; 0.0.0.0 or :: listens everywhere)")
    return text


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


# How the loader words a pydantic error: shared by config.py and every settings module
# that validates a part of the configuration on its own (alerts, monitor, servers).
_MESSAGES = {
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "missing": "is required",
    "extra_forbidden": "unknown key",
    "path_type": "must be a path",
}


def key_path(loc: tuple[str | int, ...]) -> str:
    """``('servers', 0, 'host')`` -> ``servers[0].host``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def validation_message(error: Any) -> str:
    """One pydantic error in the loader's wording (``must be an integer``, ...)."""
    kind = error["type"]
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"must be one of {expected}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return str(error["msg"]).lower().replace("input should be", "must be")
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    return message


def format_validation_error(source: str, exc: pydantic.ValidationError) -> str:
    """One line per problem: ``FILE: key.path: what is wrong``."""
    lines = []
    for error in exc.errors():
        # Drop pydantic's internal union/function tags from the location.
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
        if error["type"] == "secret_file":  # raised by the section: name the key itself
            loc = (*loc, error["ctx"]["key"])
        key = key_path(loc)
        text = validation_message(error)
        lines.append(f"{source}: {key}: {text}" if key else f"{source}: {text}")
    return "\n".join(lines)
