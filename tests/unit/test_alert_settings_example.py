"""config/podod.example.yaml shows every key of the alerts and metrics sections (defaults
as values, notifier and maintenance keys in their commented examples)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel

from podod.alerts.settings import (
    AlertmanagerNotifierSettings,
    AlertSettings,
    EmailNotifierSettings,
    MaintenanceWindowSettings,
    MatrixNotifierSettings,
    WebhookNotifierSettings,
)
from podod.config import MetricsSettings
from podod.durations import parse_duration

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "podod.example.yaml"


def section_text(name: str) -> str:
    text = EXAMPLE.read_text()
    start = text.index(f"\n{name}:")
    end = text.find("\n# ---", start)
    return text[start: end if end > 0 else len(text)]


def test_alerts_and_metrics_show_every_key_with_its_default() -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    for section, model in (("alerts", AlertSettings), ("metrics", MetricsSettings)):
        shown = example[section]
        default = model()
        assert set(shown) == set(model.model_fields), section
        for key, value in shown.items():
            expected = getattr(default, key)
            if isinstance(expected, float) and isinstance(value, str):
                value = parse_duration(value)
            if isinstance(expected, BaseModel):  # a nested section: its defaults, by alias
                expected = expected.model_dump(by_alias=True)
                value = type(getattr(default, key)).model_validate(value).model_dump(
                    by_alias=True)
            assert value == expected, f"{section}.{key} shows {value!r}, default {expected!r}"


def test_every_notifier_and_window_key_is_in_the_commented_examples() -> None:
    text = section_text("alerts")
    keys = set(re.findall(r"#\s+(?:- )?([a-z_]+):", text))
    models: list[type[BaseModel]] = [WebhookNotifierSettings, EmailNotifierSettings,
                                     AlertmanagerNotifierSettings, MatrixNotifierSettings,
                                     MaintenanceWindowSettings]
    for model in models:
        for name, field in model.model_fields.items():
            key = field.alias or name
            if key.endswith("_file") and key[:-5] in model.model_fields:
                assert key in keys or key[:-5] in keys, f"{model.__name__}.{key}"
                continue
            if key.removesuffix("_file") + "_file" in keys:
                continue
            assert key in keys, f"{model.__name__}.{key} is not in the example"
