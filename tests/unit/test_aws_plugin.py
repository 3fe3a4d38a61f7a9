"""The aws plugin's decisions without EC2: which snapshots retention deletes (count and age,
never the newest, never one podod did not take), what /metrics says about a volume, the
settings it refuses (credentials above all), and that loading it imports no boto3."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from podod.plugins import Registry, _import_from_path, load_plugins

REPO = Path(__file__).resolve().parents[2]
DAY = 86_400.0
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def aws() -> ModuleType:
    return _import_from_path("aws", REPO / "plugins" / "aws")


def snap(sid: str, volume: str, days_ago: float, *, podod: bool = True,
         state: str = "completed") -> dict[str, Any]:
    tags = [{"Key": "podod:managed", "Value": "true"}] if podod else []
    return {"SnapshotId": sid, "VolumeId": volume, "State": state, "Tags": tags,
            "StartTime": datetime.fromtimestamp(NOW - days_ago * DAY, UTC)}


def test_retention_by_count_and_age(aws: ModuleType) -> None:
    ec2 = sys.modules["podod_plugins.aws.ec2"]
    snaps = [snap("s1", "v1", 1), snap("s2", "v1", 2), snap("s3", "v1", 3),
             snap("s4", "v1", 40), snap("h1", "v1", 50, podod=False),
             snap("p1", "v1", 60, state="pending"),
             snap("t1", "v2", 45), snap("t2", "v2", 46)]
    ids = lambda found: sorted(s["SnapshotId"] for s in found)  # noqa: E731
    # count: 2 per volume; age: 30 days; the newest of v2 (45 days old) stays anyway
    assert ids(ec2.expired(snaps, 2, 30, NOW)) == ["s3", "s4", "t2"]
    assert ids(ec2.expired(snaps, 0, 30, NOW)) == ["s4", "t2"]  # age only
    assert ids(ec2.expired(snaps, 3, 0, NOW)) == ["s4"]          # count only
    assert ec2.expired(snaps, 0, 0, NOW) == []                   # keep everything
    assert ids(ec2.expired(snaps, 1, 0, NOW)) == ["s2", "s3", "s4", "t2"]


def test_samples_say_how_old_each_volume_s_newest_snapshot_is(aws: ModuleType) -> None:
    settings = sys.modules["podod_plugins.aws.settings"]
    config = settings.ServerSnapshots(region="eu-central-1", volumes=["vol-00000001"],
                                      max_age="1d")
    snaps = [snap("s1", "vol-00000001", 2), snap("s2", "vol-00000001", 0.5, state="pending"),
             snap("s3", "vol-00000002", 0.1, state="error")]
    out = {(s.series, dict(s.labels)["volume"]): s.value for s in aws.samples_for(
        "mx1", config, ["vol-00000001", "vol-00000002"], snaps, NOW)}
    assert out == {("ec2_snapshot_age_seconds", "vol-00000001"): 0.5 * DAY,
                   ("ec2_snapshot_overdue", "vol-00000001"): 0.0,
                   ("ec2_snapshot_overdue", "vol-00000002"): 1.0}  # none usable: overdue


@pytest.mark.parametrize(("raw", "error"), [
    ({"servers": {"mx1": {"region": "eu-central-1", "volumes": ["vol-00000001"],
                          "secret_access_key": "abc"}}},
     "'servers.mx1.secret_access_key' looks like an AWS credential"),
    ({"aws_access_key_id": "AKIA"}, "'aws_access_key_id' looks like an AWS credential"),
    ({"servers": {"mx1": {"region": "eu-central-1"}}}, "give volumes, an instance_id or tags"),
    ({"servers": {"mx1": {"region": "Frankfurt", "volumes": ["vol-00000001"]}}},
     "is not an AWS region"),
    ({"servers": {"mx1": {"region": "eu-central-1", "volumes": ["vol-1; rm"]}}},
     "is not an EBS volume id"),
    ({"servers": {"mx1": {"region": "eu-central-1", "instance_id": "web1"}}},
     "is not an EC2 instance id"),
    ({"servers": {"mx1": {"region": "eu-central-1", "tags": {"Role": "mail"},
                          "wait_for": "done"}}}, "wait_for"),
])
def test_bad_settings_are_one_sentence(aws: ModuleType, raw: dict[str, Any],
                                       error: str) -> None:
    settings = sys.modules["podod_plugins.aws.settings"]
    with pytest.raises(ValueError, match=None) as caught:
        settings.parse(raw)
    assert error in str(caught.value)
    assert "abc" not in str(caught.value) and "AKIA" not in str(caught.value)


def test_loading_the_plugin_imports_no_boto3() -> None:
    sys.modules.pop("boto3", None)
    registry = Registry({"aws": {"servers": {"mx1": {"region": "eu-central-1",
                                                     "volumes": ["vol-00000001"],
                                                     "before_changes": True}}}})
    infos = {i.name: i for i in load_plugins(registry, [REPO / "plugins"],
                                             use_entry_points=False,
                                             disabled=["example", "tls"])}
    assert infos["aws"].loaded, infos["aws"].error
    assert {"snapshot create", "snapshot list", "snapshot show", "snapshot delete"} <= \
        set(registry.commands)
    assert "ec2-snapshot" in registry.gates and "aws" in registry.alert_rule_packs
    assert "boto3" not in sys.modules


def test_the_rule_pack_fires_on_an_overdue_volume(aws: ModuleType) -> None:
    from podod.alerts.rules import load_rule_files

    [rule] = load_rule_files([REPO / "plugins" / "aws" / "rules.yaml"]).rules
    assert (rule.name, rule.series, rule.op, rule.threshold) == (
        "EC2SnapshotTooOld", "ec2_snapshot_overdue", "==", 1.0)
    registry = Registry()
    load_plugins(registry, [REPO / "plugins"], use_entry_points=False,
                 disabled=["example", "tls"])
    assert registry.series[rule.series].labels == ("volume",)
    # without a configured server the pack is not offered (its templates cost Jinja2 at
    # start); with one it is (test_loading_the_plugin_imports_no_boto3)
    assert "aws" not in registry.alert_rule_packs
    assert rule.summary.render(server="mx1", labels={"volume": "vol-1"}, value=1) == (
        "mx1: the EBS volume vol-1 has no snapshot newer than its max_age")
    assert rule.description is not None
    assert "podoctl snapshot create mx1 --execute-real" in rule.description.render(
        server="mx1", labels={"volume": "vol-1"}, value=1)


class _Stuck:
    """Answers describe_snapshots with fixed states (the wait loop's input)."""

    server = "mx1"

    def __init__(self, state: str, message: str = "") -> None:
        self.state, self.message = state, message

    def describe(self, ids: list[str]) -> list[dict[str, Any]]:
        return [{"SnapshotId": i, "VolumeId": "vol-00000001", "State": self.state,
                 "Progress": "10%", "StateMessage": self.message} for i in ids]


async def test_the_gate_s_wait_ends_at_its_deadline_or_on_an_error(aws: ModuleType) -> None:
    import time

    ec2 = sys.modules["podod_plugins.aws.ec2"]
    made = [{"SnapshotId": "snap-00000001"}]
    seen: list[tuple[str, int | None, int | None]] = []

    async def progress(message: str, done: int | None = None,
                       total: int | None = None) -> None:
        seen.append((message, done, total))

    assert await ec2.wait(_Stuck("pending"), made, "pending", time.monotonic() + 5, 0.01,
                          progress)
    with pytest.raises(ec2.SnapshotFailed) as caught:
        await ec2.wait(_Stuck("pending"), made, "completed", time.monotonic() + 0.05, 0.01,
                       progress)
    assert caught.value.message == ("the EC2 snapshots of mx1 (snap-00000001) did not become "
                                    "completed in time")
    assert seen[-1] == ("EC2 snapshots of mx1: snap-00000001 pending 10%", 0, 1)
    with pytest.raises(ec2.SnapshotFailed, match="failed: the volume is gone"):
        await ec2.wait(_Stuck("error", "the volume is gone"), made, "pending",
                       time.monotonic() + 5, 0.01, progress)
