"""Reading a YAML file a user wrote (podod.yaml, alert rule files): every failure is one
:class:`ConfigError` sentence naming the file, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from podod.errors import ConfigError


def read_yaml(path: Path, kind: str) -> Any:
    """The parsed contents of ``path``; ``kind`` names the file in errors ("rule file")."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {kind}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a {kind}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {kind} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path.name}: YAML syntax error{where}: {problem}") from None
