"""config/podod.example.yaml shows every key of the mail and backup sections, with its
default: the example is the documented source of truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from podod.backup.settings import BackupSettings
from podod.durations import parse_duration
from podod.mail.settings import MailSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "podod.example.yaml"


def _compare(model: type[BaseModel], shown: dict[str, Any], where: str) -> list[str]:
    problems = []
    default = model()
    for name, field in model.model_fields.items():
        if name.endswith("_file"):  # the *_file twins are documented in comments
            continue
        if name not in shown:
            problems.append(f"{where}.{name} is missing")
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            problems += _compare(annotation, shown[name] or {}, f"{where}.{name}")
            continue
        value = getattr(default, name)
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, float) and isinstance(shown[name], str):
            shown = {**shown, name: parse_duration(shown[name])}  # a Duration: 6h, 10s
        if shown[name] != value:
            problems.append(f"{where}.{name} shows {shown[name]!r}, the default is {value!r}")
    problems += [f"{where}.{k} is not a setting" for k in shown if k not in model.model_fields]
    return problems


@pytest.mark.parametrize(("section", "model"), [("mail", MailSettings),
                                                 ("backup", BackupSettings)])
def test_example_shows_every_key_with_its_default(section: str, model: type[BaseModel]
                                                  ) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    assert _compare(model, example[section], section) == []
