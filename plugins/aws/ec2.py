"""EBS snapshots through boto3: blocking calls, each run in a worker thread
(``asyncio.to_thread``) so the event loop never waits on AWS.

boto3 is imported at the first call (it costs about 0.3 s and 30 MB), its client per region
and profile is made once and shared (boto3 clients are thread-safe), and credentials come
only from boto3's own chain. The endpoint too: ``AWS_ENDPOINT_URL_EC2`` (or
``AWS_ENDPOINT_URL``) in podod's environment points it elsewhere (the tests use moto).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from podod.errors import PododError

from .settings import ServerSnapshots

MANAGED = "podod:managed"
# StartTime has a resolution of a second (at least in moto): podod's own snapshots also carry
# their creation time to the microsecond, so two taken in one second keep their order.
CREATED = "podod:created"
_clients: dict[tuple[str, str | None], Any] = {}
_lock = threading.Lock()
_T = TypeVar("_T")


class SnapshotFailed(PododError):
    code = "snapshot-failed"
    status = "unavailable"
    http_status = 503


def _client(region: str, profile: str | None) -> Any:
    with _lock:
        client = _clients.get((region, profile))
        if client is None:
            import boto3  # here, not at start (see the start-up budget)
            from botocore.config import Config

            session = boto3.session.Session(profile_name=profile)
            client = session.client("ec2", region_name=region, config=Config(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10,
                read_timeout=30))
            _clients[(region, profile)] = client
        return client


def reason(exc: BaseException) -> str:
    """What went wrong, in a few words (an AWS error code and its message)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', 'error')}: {str(error.get('Message', ''))[:200]}"
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return ("boto3 found no AWS credentials (environment, ~/.aws/credentials of podod's "
                "user, or the instance role)")
    if name == "ProfileNotFound":
        return str(exc)
    return f"{name}: {str(exc)[:200]}"


async def call(func: Callable[..., _T], *args: Any, what: str, **kwargs: Any) -> _T:
    """``func(*args)`` in a worker thread; any failure becomes one sentence."""
    try:
        return await asyncio.to_thread(func, *args, **kwargs)
    except PododError:
        raise
    except Exception as exc:
        raise SnapshotFailed(f"{what} ({reason(exc)})") from None


class Ec2:
    """One server's volumes and snapshots; every method blocks (use :func:`call`)."""

    def __init__(self, server: str, settings: ServerSnapshots) -> None:
        self.server = server
        self.settings = settings

    @property
    def client(self) -> Any:
        return _client(self.settings.region, self.settings.profile)

    def volumes(self) -> list[str]:
        """The configured volumes, then those found by instance id and tags (in order)."""
        found = list(self.settings.volumes)
        filters = []
        if self.settings.instance_id:
            filters.append({"Name": "attachment.instance-id",
                            "Values": [self.settings.instance_id]})
        for key, value in self.settings.tags.items():
            filters.append({"Name": f"tag:{key}", "Values": [value]})
        if filters:
            pages = self.client.get_paginator("describe_volumes").paginate(Filters=filters)
            for page in pages:
                for volume in page.get("Volumes", []):
                    if volume["VolumeId"] not in found:
                        found.append(volume["VolumeId"])
        if not found:
            raise SnapshotFailed(f"no EBS volume of server {self.server} was found (by "
                                 "instance_id and tags in plugins.settings.aws)")
        return found

    def create(self, volume: str, tags: dict[str, str], description: str) -> dict[str, Any]:
        tag_list = [{"Key": k, "Value": v[:256]} for k, v in tags.items()]
        result: dict[str, Any] = self.client.create_snapshot(
            VolumeId=volume, Description=description[:255],
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list}])
        return result

    def describe(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        return list(self.client.describe_snapshots(SnapshotIds=ids).get("Snapshots", []))

    def snapshots(self, volumes: list[str]) -> list[dict[str, Any]]:
        """Every snapshot this account owns of ``volumes``, newest first."""
        out: list[dict[str, Any]] = []
        pages = self.client.get_paginator("describe_snapshots").paginate(
            OwnerIds=["self"], Filters=[{"Name": "volume-id", "Values": volumes}])
        for page in pages:
            out.extend(page.get("Snapshots", []))
        out.sort(key=age_order, reverse=True)
        return out

    def delete(self, snapshot_id: str) -> None:
        self.client.delete_snapshot(SnapshotId=snapshot_id)


def started(snapshot: dict[str, Any]) -> float:
    value = snapshot.get("StartTime")
    if isinstance(value, datetime):
        return value.timestamp()
    return 0.0


def age_order(snapshot: dict[str, Any]) -> tuple[float, float, str]:
    """Sort key, oldest first: StartTime, then podod's own creation time, then the id."""
    try:
        created = float(tags_of(snapshot).get(CREATED, "0"))
    except ValueError:
        created = 0.0
    return started(snapshot), created, str(snapshot.get("SnapshotId", ""))


def tags_of(snapshot: dict[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t["Value"]) for t in snapshot.get("Tags", []) or []}


def is_podods(snapshot: dict[str, Any]) -> bool:
    return tags_of(snapshot).get(MANAGED) == "true"


def expired(snapshots: list[dict[str, Any]], keep: int, keep_days: int,
            now: float) -> list[dict[str, Any]]:
    """podod's completed snapshots that retention deletes: per volume, those beyond the
    newest ``keep`` (0: no count limit) or older than ``keep_days`` (0: no age limit); the
    newest snapshot of a volume is never deleted, nor a snapshot podod did not make."""
    by_volume: dict[str, list[dict[str, Any]]] = {}
    for snap in sorted(snapshots, key=age_order, reverse=True):
        if is_podods(snap):
            by_volume.setdefault(str(snap.get("VolumeId")), []).append(snap)
    out = []
    for snaps in by_volume.values():
        for index, snap in enumerate(snaps):
            if index == 0 or snap.get("State") != "completed":
                continue
            too_many = keep > 0 and index >= keep
            too_old = keep_days > 0 and now - started(snap) > keep_days * 86_400
            if too_many or too_old:
                out.append(snap)
    return out


def newest_age(snapshots: list[dict[str, Any]], volume: str, now: float) -> float | None:
    """Seconds since the newest usable (pending or completed) snapshot of ``volume``."""
    times = [started(s) for s in snapshots
             if s.get("VolumeId") == volume and s.get("State") in ("pending", "completed")]
    return max(0.0, now - max(times)) if times else None


async def wait(ec2: Ec2, made: list[dict[str, Any]], want: str, deadline: float,
               poll: float, progress: Callable[..., Awaitable[None]]) -> list[dict[str, Any]]:
    """Wait until every snapshot of ``made`` is ``want`` (``pending`` is satisfied by
    ``completed`` too); their descriptions. One sentence on an error state or the deadline
    (``time.monotonic()``)."""
    ids = [str(s["SnapshotId"]) for s in made]
    while True:
        snaps = await call(ec2.describe, ids, what=f"the EC2 snapshots of {ec2.server} could "
                                                   "not be read back")
        for snap in snaps:
            if snap.get("State") == "error":
                message = snap.get("StateMessage") or "EC2 reports the state 'error'"
                raise SnapshotFailed(f"the EC2 snapshot {snap['SnapshotId']} of "
                                     f"{snap.get('VolumeId')} ({ec2.server}) failed: {message}")
        ready = [s for s in snaps if s.get("State") == "completed" or
                 (want == "pending" and s.get("State") == "pending")]
        shown = ", ".join(f"{s['SnapshotId']} {s.get('State')} {s.get('Progress') or ''}".strip()
                          for s in snaps)
        await progress(f"EC2 snapshots of {ec2.server}: {shown}", len(ready), len(ids))
        if len(ready) == len(ids) and len(snaps) == len(ids):
            return snaps
        left = deadline - time.monotonic()
        if left <= 0:
            raise SnapshotFailed(f"the EC2 snapshots of {ec2.server} ({', '.join(ids)}) did "
                                 f"not become {want} in time")
        await asyncio.sleep(min(poll, left))
