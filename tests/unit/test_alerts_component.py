"""The alerts component's wiring: plugin rule packs, plugin notifiers and their settings,
unknown notifier types — each mistake one sentence naming the key."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from podod.alerts.component import AlertsComponent
from podod.alerts.notify import Notification
from podod.alerts.settings import NotifierBase
from podod.config import parse_config
from podod.errors import ConfigError
from podod.events import EventBus
from podod.plugins import Registry, load_builtins
from podod.runtime import Runtime
from podod.state import StateDB

PACK = """\
rules:
  - name: PluginRule
    series: example_uptime_seconds
    op: ">"
    threshold: 1
  - name: DiskFull
    series: node_filesystem_used_ratio
    op: ">"
    threshold: 0.1
"""


class PagerSettings(NotifierBase):
    type: str
    number: str = Field(pattern=r"^\+[0-9]{6,15}$")


class Pager:
    grouped = True
    settings_model = PagerSettings

    def __init__(self, settings: PagerSettings, runtime: Any) -> None:
        self.name = settings.label
        self.settings = settings

    async def send(self, notification: Notification) -> None:
        return None

    async def close(self) -> None:
        return None


async def runtime_for(tmp_path: Path, alerts: dict[str, Any]) -> Runtime:
    config = parse_config({"state_dir": str(tmp_path), "alerts": alerts}, source="podod.yaml")
    registry = Registry()
    load_builtins(registry, ["podod.alerts.commands"])
    state = StateDB(tmp_path / "state.db")
    await state.open()
    return Runtime(config=config, config_path=tmp_path / "podod.yaml", events=EventBus(),
                   registry=registry, state=state)


@pytest.fixture
async def made(tmp_path: Path) -> AsyncIterator[list[Runtime]]:
    runtimes: list[Runtime] = []
    yield runtimes
    for rt in runtimes:
        await rt.state.close()


async def test_plugin_rule_packs_sit_beneath_the_configured_rules(
        tmp_path: Path, made: list[Runtime], caplog: pytest.LogCaptureFixture) -> None:
    rt = await runtime_for(tmp_path, {})
    made.append(rt)
    (tmp_path / "pack.yaml").write_text(PACK)
    (tmp_path / "broken.yaml").write_text("rules:\n  - {name: X}\n")
    rt.registry.alert_rules("example", tmp_path / "pack.yaml")
    rt.registry.alert_rules("broken", tmp_path / "broken.yaml")
    component = AlertsComponent(rt, run_loop=False)
    with caplog.at_level(logging.ERROR):
        ruleset = component.ruleset(rt.config.alerts)
    rules = ruleset.by_name()
    assert "PluginRule" in rules
    assert rules["DiskFull"].threshold == pytest.approx(0.98)  # podod's own rule wins
    assert "the alert rules of plugin broken are not used: broken.yaml: rule 'X' " \
           "(rules[0]): series: is required" in caplog.text


async def test_plugin_notifier_settings_are_checked_by_its_model(tmp_path: Path,
                                                                 made: list[Runtime]) -> None:
    rt = await runtime_for(tmp_path, {"notifiers": [
        {"type": "webhook", "url": "http://127.0.0.1:1/"},
        {"type": "pager", "name": "oncall", "number": "12345"}]})
    made.append(rt)
    rt.registry.notifier("pager")(Pager)
    component = AlertsComponent(rt, run_loop=False)
    with pytest.raises(ConfigError) as info:
        component.build_notifiers(rt.config.alerts)
    assert str(info.value) == ("podod.yaml: alerts.notifiers[1].number: String should match "
                               "pattern '^\\+[0-9]{6,15}$'")
    rt.config = parse_config({"state_dir": str(tmp_path), "alerts": {"notifiers": [
        {"type": "pager", "name": "oncall", "number": "+4930123456"}]}}, source="podod.yaml")
    queues = component.build_notifiers(rt.config.alerts)
    assert list(queues) == ["oncall"]
    assert queues["oncall"].notifier.settings.number == "+4930123456"  # type: ignore[attr-defined]


async def test_unknown_notifier_type_is_one_sentence(tmp_path: Path,
                                                     made: list[Runtime]) -> None:
    rt = await runtime_for(tmp_path, {"notifiers": [{"type": "pagr"}]})
    made.append(rt)
    component = AlertsComponent(rt, run_loop=False)
    with pytest.raises(ConfigError) as info:
        await component.start()
    assert str(info.value) == ("podod.yaml: alerts.notifiers[0].type: there is no notifier "
                               "type 'pagr' (known: alertmanager, email, matrix, webhook)")


async def test_a_save_cancelled_while_queued_for_the_database_still_happens(
        tmp_path: Path, made: list[Runtime]) -> None:
    """The loop is cancelled at shutdown while its save waits for the database thread: the
    record must still reach state.db (it once was dropped, and a restarted daemon then
    notified the same firing alert again)."""
    import asyncio
    import time

    rt = await runtime_for(tmp_path, {})
    made.append(rt)
    component = AlertsComponent(rt, run_loop=False)
    await component.start()
    engine = component.engine
    engine.record_outcome("hook", Notification("hook", "{}:{server=\"mx1\"}",
                                               {"server": "mx1"}, []), True, "")
    busy = asyncio.ensure_future(rt.state.run(lambda conn: time.sleep(0.3)))
    await asyncio.sleep(0.05)  # the database thread is busy: the save will queue behind it
    saving = asyncio.ensure_future(engine.persist())
    await asyncio.sleep(0.05)
    saving.cancel()
    await busy
    await component.stop()  # its own persist waits for the save under way
    rows = await rt.state.run(
        lambda conn: conn.execute("SELECT event, server FROM alert_history").fetchall())
    assert [tuple(r) for r in rows] == [("notified", "mx1")]
