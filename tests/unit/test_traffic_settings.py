"""The traffic section: every key in config/podod.example.yaml with its default, and bad
values refused with a sentence naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from podod.config import parse_config
from podod.errors import ConfigError
from podod.monitor.traffic.settings import TrafficSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "podod.example.yaml"


def test_example_shows_every_traffic_key_with_its_default() -> None:
    shown = yaml.safe_load(EXAMPLE.read_text())["traffic"]
    assert set(shown) == set(TrafficSettings.model_fields)
    assert TrafficSettings.model_validate(shown) == TrafficSettings()
    # the commented example is valid too
    assert TrafficSettings(timezone="Europe/Berlin").timezone == "Europe/Berlin"


@pytest.mark.parametrize(("value", "message"), [
    ({"timezone": "Mars/Olympus"}, "traffic.timezone: 'Mars/Olympus' is not a known time zone"),
    ({"backfill_dirs": ["var/log"]}, "traffic.backfill_dirs: 'var/log' must be an absolute"),
    ({"retention": "soon"}, "traffic.retention: 'soon' is not a duration"),
    ({"top_candidates": 1}, "traffic.top_candidates: must be greater than or equal to 10"),
    ({"surprise": 1}, "traffic.surprise: unknown key"),
])
def test_bad_values_name_the_key(value: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"traffic": value}, source="podod.yaml")
    assert message in err.value.message
