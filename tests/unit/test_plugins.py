"""Plugin discovery: a broken plugin is reported by name and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

from podod.plugins import Registry, load_plugins

REPO = Path(__file__).resolve().parents[2]

BROKEN = '''
from podod.bus.context import Reply

def setup(registry):
    @registry.command("broken hello", "registered before the failure")
    async def hello(ctx):
        return Reply()

    @registry.gate("broken-snapshot")  # a gate left behind would refuse every change
    async def gate(ctx):
        raise RuntimeError("no snapshot")
    raise RuntimeError("the database of this plugin is missing")
'''


def test_example_plugin_loads_with_settings() -> None:
    registry = Registry({"example": {"greeting": "hi"}})
    infos = load_plugins(registry, [REPO / "plugins"], use_entry_points=False)
    example = next(i for i in infos if i.name == "example")
    assert example.loaded and example.commands == 3  # hello, note, count
    assert registry.commands["example hello"].plugin == "example"
    assert "example_uptime" in registry.collectors


def test_broken_plugins_are_reported_and_rolled_back(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text(BROKEN)
    (tmp_path / "syntax.py").write_text("def setup(registry):\n    return (\n")
    (tmp_path / "nosetup.py").write_text("X = 1\n")
    (tmp_path / "good.py").write_text("def setup(registry):\n    pass\n")
    registry = Registry()
    infos = {i.name: i for i in load_plugins(registry, [tmp_path], use_entry_points=False)}
    assert infos["broken"].loaded is False
    assert infos["broken"].error == "RuntimeError: the database of this plugin is missing"
    assert "broken hello" not in registry.commands
    assert "broken-snapshot" not in registry.gates
    assert infos["syntax"].loaded is False and "SyntaxError" in (infos["syntax"].error or "")
    assert infos["nosetup"].error == "AttributeError: plugin nosetup has no setup(registry) " \
                                     "function"
    assert infos["good"].loaded is True


def test_disabled_plugins_are_skipped() -> None:
    registry = Registry()
    infos = load_plugins(registry, [REPO / "plugins"], use_entry_points=False,
                         disabled=["example"])
    assert all(i.name != "example" for i in infos)
