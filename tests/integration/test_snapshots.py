"""The aws plugin against moto's EC2 server on 127.0.0.1 (``moto_server`` from the lock),
boto3 pointed at it through its standard endpoint setting (``AWS_ENDPOINT_URL_EC2``) and
dummy credentials in the daemon's environment, as an operator would give real ones.

The gate takes a tagged snapshot before a real change; a snapshot that cannot be taken (a
volume that does not exist) refuses the change with the database unchanged; retention
deletes podod's oldest snapshots and nothing else."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import MailStack, make_mail_config
from testbed.daemon import REPO, DaemonProcess
from testbed.ports import free_port
from testbed.waiting import poll as wait_for

REGION = "eu-central-1"
MISSING = "vol-0123456789abcdef0"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto's server on a free loopback port; the environment that points boto3 at it."""
    port = free_port()
    program = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    assert program is not None, "moto_server is missing: make venv installs moto[server]"
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([program, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=log, stdin=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL_EC2": f"http://127.0.0.1:{port}",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    try:
        assert wait_for(lambda: _up(port), timeout=30), "moto_server did not start"
        yield env
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _up(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def ec2(moto: dict[str, str]) -> Any:
    import boto3

    return boto3.client("ec2", region_name=REGION, endpoint_url=moto["AWS_ENDPOINT_URL_EC2"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def volume(ec2: Any) -> str:
    return str(ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=8)["VolumeId"])


def snapshots(ec2: Any, vol: str) -> list[dict[str, Any]]:
    found = ec2.describe_snapshots(Filters=[{"Name": "volume-id", "Values": [vol]}])
    return sorted(found["Snapshots"], key=lambda s: s["StartTime"])


def tags(snapshot: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in snapshot.get("Tags", [])}


def start(mail: MailStack, moto: dict[str, str], servers: dict[str, Any]) -> DaemonProcess:
    """A second daemon on the test's mail database, with the aws plugin and ``servers``."""
    mail.daemon.stop()
    root = mail.root / f"aws-{len(list(mail.root.glob('aws-*')))}"
    root.mkdir()
    path = make_mail_config(mail.pg, root, mail.db, plugins={
        "dirs": [str(REPO / "plugins")], "entry_points": False, "disabled": ["example", "tls"],
        "settings": {"aws": {"servers": servers}}})
    return DaemonProcess(path, env=moto).start()


def ok(daemon: DaemonProcess, *argv: str, real: bool = False) -> dict[str, Any]:
    reply = daemon.request(list(argv), execute_real=real)
    assert reply["ok"], reply["message"]
    return reply


def test_the_gate_takes_a_tagged_snapshot_before_a_real_change(
        mail: MailStack, moto: dict[str, str], ec2: Any) -> None:
    vol = volume(ec2)
    daemon = start(mail, moto, {"mx1": {"region": REGION, "volumes": [vol],
                                        "before_changes": True, "poll_interval": "0.2s",
                                        "keep": 0, "keep_days": 0}})
    try:
        plan = ok(daemon, "domain", "create", "snap.example")
        assert plan["sandbox"] and snapshots(ec2, vol) == []  # the sandbox takes none

        real = ok(daemon, "domain", "create", "snap.example", real=True)
        [snap] = snapshots(ec2, vol)
        assert f"gate ec2-snapshot: {snap['SnapshotId']} of {vol} on mx1" in real["notes"]
        assert real["backup_id"]  # the database backup too, before it
        [record] = [r for r in daemon.request(["audit", "list", "--command", "domain create"])
                    ["data"] if r["outcome"] == "ok"]
        created = tags(snap).pop("podod:created")
        assert abs(float(created) - time.time()) < 600
        assert {k: v for k, v in tags(snap).items() if k != "podod:created"} == {
            "podod:managed": "true", "podod:server": "mx1",
            "podod:request-id": record["request_id"], "podod:actor": record["actor"],
            "podod:command": "domain create", "podod:reason": "before domain create",
            "Name": "podod mx1"}
        assert "after: apply the EC2 snapshot retention of mx1: done (nothing expired)" \
            in real["notes"]

        listed = ok(daemon, "snapshot", "list", "mx1")["data"]
        assert [(s["id"], s["podod"], s["command"]) for s in listed] == [
            (snap["SnapshotId"], True, "domain create")]
        shown = ok(daemon, "snapshot", "show", "mx1", snap["SnapshotId"])
        assert shown["data"]["tags"]["podod:request-id"] == record["request_id"]
    finally:
        daemon.stop()


def test_a_failing_snapshot_refuses_the_change_with_nothing_changed(
        mail: MailStack, moto: dict[str, str], ec2: Any) -> None:
    daemon = start(mail, moto, {"mx1": {"region": REGION, "volumes": [MISSING],
                                        "before_changes": True}})
    try:
        before = mail.dump()
        reply = daemon.request(["domain", "create", "nosnap.example"], execute_real=True)
        assert not reply["ok"] and reply["status"] == "unavailable", reply
        assert reply["message"].startswith(
            f"the EC2 snapshot of {MISSING} (mx1) could not be taken (InvalidVolume.NotFound")
        assert reply["message"].endswith("; nothing was changed")
        assert "\n" not in reply["message"]
        assert mail.dump() == before
        assert "nothing was committed" not in reply["message"]
        # a command that changes no mail data is not held up by the gate
        assert ok(daemon, "snapshot", "delete", "mx1", "--expired")["sandbox"]
    finally:
        daemon.stop()


def test_retention_deletes_podods_oldest_snapshots_only(
        mail: MailStack, moto: dict[str, str], ec2: Any) -> None:
    vol = volume(ec2)
    foreign = ec2.create_snapshot(VolumeId=vol, Description="taken by hand")["SnapshotId"]
    daemon = start(mail, moto, {"mx1": {"region": REGION, "volumes": [vol], "keep": 2,
                                        "keep_days": 0, "poll_interval": "0.2s"}})
    try:
        plan = ok(daemon, "snapshot", "create", "mx1")
        assert plan["sandbox"] and plan["message"] == (
            f"would snapshot 1 EBS volume of mx1 ({vol}) in {REGION}")
        assert [s["SnapshotId"] for s in snapshots(ec2, vol)] == [foreign]
        taken = []
        for _ in range(3):
            reply = ok(daemon, "snapshot", "create", "mx1", "--wait", "completed", real=True)
            [made] = reply["data"]["snapshots"]
            assert made["state"] == "completed" and made["command"] == "snapshot create"
            taken.append(made["id"])
        # the third run deleted the first: two of podod's remain, and the one taken by hand
        assert reply["data"]["deleted"] == [taken[0]]
        assert f"retention deleted {taken[0]}" in reply["notes"]
        left = {s["SnapshotId"] for s in snapshots(ec2, vol)}
        assert left == {foreign, taken[1], taken[2]}

        # delete: only a snapshot of the server's volumes
        other = ec2.create_snapshot(VolumeId=volume(ec2))["SnapshotId"]
        refused = daemon.request(["snapshot", "delete", "mx1", other], execute_real=True)
        assert not refused["ok"] and refused["message"].startswith(
            f"{other} is not a snapshot of a volume of mx1")
        bad = daemon.request(["snapshot", "delete", "mx1", "snap-x; rm"], execute_real=True)
        assert bad["message"] == "'snap-x; rm' is not an EBS snapshot id (snap-...)"
        gone = ok(daemon, "snapshot", "delete", "mx1", taken[1], real=True)
        assert gone["data"] == [taken[1]]
        assert {s["SnapshotId"] for s in snapshots(ec2, vol)} == {foreign, taken[2]}
        assert daemon.request(["snapshot", "list", "mx2"])["message"] == (
            "server mx2 has no EC2 snapshot settings (plugins.settings.aws.servers: mx1)")
    finally:
        daemon.stop()


def test_podod_snapshots_on_its_own_schedule(
        mail: MailStack, moto: dict[str, str], ec2: Any) -> None:
    vol = volume(ec2)
    daemon = start(mail, moto, {"mx1": {"region": REGION, "volumes": [vol], "every": "1h",
                                        "poll_interval": "0.2s"}})
    try:
        assert wait_for(lambda: len(snapshots(ec2, vol)) == 1, timeout=30), daemon.log()
        [snap] = snapshots(ec2, vol)
        assert (tags(snap)["podod:actor"], tags(snap)["podod:command"]) == (
            "podod", "snapshot create")
        def audited() -> list[Any]:  # the snapshot exists before the command answers
            records = daemon.request(["audit", "list", "--command", "snapshot create"])["data"]
            return records if len(records) == 2 else []

        records = wait_for(audited)
        assert [(r["actor"], r["origin"], r["outcome"]) for r in records] == [
            ("podod", "schedule", "ok"), ("podod", "schedule", "intent")]
        record = records[0]
        assert record["request_id"] == tags(snap)["podod:request-id"]
    finally:
        daemon.stop()


def test_credentials_in_podod_yaml_are_refused(mail: MailStack, tmp_path: Path) -> None:
    root = tmp_path / "creds"
    root.mkdir()
    path = make_mail_config(mail.pg, root, mail.db, plugins={
        "dirs": [str(REPO / "plugins")], "entry_points": False, "disabled": ["example", "tls"],
        "settings": {"aws": {"servers": {"mx1": {
            "region": REGION, "volumes": [MISSING],
            "aws_secret_access_key": "wJalrXUtnFEMI-not-a-key"}}}}})
    mail.daemon.stop()
    with DaemonProcess(path) as daemon:
        plugins = {p["name"]: p for p in daemon.request(["status"])["data"]["plugins"]}
        error = plugins["aws"]["error"]
        assert not plugins["aws"]["loaded"] and "servers.mx1.aws_secret_access_key' looks like " \
            "an AWS credential; podod never reads credentials from podod.yaml" in error
        assert "wJalrXUtnFEMI" not in error and "wJalrXUtnFEMI" not in daemon.log()
        assert daemon.request(["snapshot", "list", "mx1"])["code"] != "ok"
