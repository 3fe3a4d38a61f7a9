"""config/podod.example.yaml shows every key of the monitor section, each built-in
collector's settings included, with its default: the example is the documented truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from podod.monitor.settings import COLLECTOR_SETTINGS, MonitorSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "podod.example.yaml"


def _compare(model: type[BaseModel], shown: dict[str, Any], where: str) -> list[str]:
    problems = []
    default = model()
    parsed = model.model_validate(shown)  # durations as written ("30s") become seconds
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
        if name == "collectors" and model is MonitorSettings:
            continue  # checked per collector below
        if getattr(parsed, name) != getattr(default, name):
            problems.append(f"{where}.{name} shows {shown[name]!r}, the default is "
                            f"{getattr(default, name)!r}")
    problems += [f"{where}.{k} is not a setting" for k in shown if k not in model.model_fields]
    return problems


def test_example_shows_every_monitor_key_with_its_default() -> None:
    monitor = yaml.safe_load(EXAMPLE.read_text())["monitor"]
    assert _compare(MonitorSettings, monitor, "monitor") == []
    shown = monitor["collectors"]
    assert set(shown) == set(COLLECTOR_SETTINGS)
    for name, model in COLLECTOR_SETTINGS.items():
        assert _compare(model, shown[name], f"monitor.collectors.{name}") == []


def test_example_comments_are_valid_settings(tmp_path: Path) -> None:
    """The commented examples, uncommented, pass validation too."""
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("monitor:"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i] and not
               lines[i].startswith((" ", "#")))
    block = lines[start:end]
    out = []
    for i, line in enumerate(block):
        if line.lstrip().startswith("#  "):
            out.append(line.replace("#  ", "   ", 1))
            continue
        following = block[i + 1] if i + 1 < len(block) else ""
        value, _, _comment = line.partition("#")
        if value.rstrip().endswith("{}") and following.lstrip().startswith("#  "):
            line = value.rstrip()[:-2]  # the mapping the example fills in
        out.append(line)
    secret = tmp_path / "pw"
    secret.write_text("secret")
    text = "\n".join(out).replace("/etc/podod/db1-monitor-password", str(secret))
    data = yaml.safe_load(text)["monitor"]
    settings = MonitorSettings.model_validate(data)
    services = settings.collector_settings("services")
    assert services.servers["mx1"].probes["smtp"].port == 2525
    assert settings.intervals == {"queue": 15, "tls": 3600}
    assert settings.collector_settings("queue").servers["mx1"].config_dir == \
        "/etc/postfix-out"
    db1 = settings.collector_settings("postgres").servers["db1"]
    assert db1.tunnel == "postgres" and db1.password.get_secret_value() == "secret"
