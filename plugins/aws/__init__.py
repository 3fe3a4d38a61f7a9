"""The aws plugin: EBS snapshots of the mail servers' volumes (docs/snapshots.md).

- ``snapshot create|list|show|delete SERVER``: snapshots of the server's volumes, tagged
  with podod's request id, actor and command; create and delete are sandboxed unless
  ``--execute-real``; retention by count and age after every snapshot podod takes.
- the pre-change gate ``ec2-snapshot``: for a server with ``before_changes: true``, every
  real change of the mail database first snapshots its volumes and waits until they are
  ``pending`` (or ``completed``), under its own ``timeout``; a failure refuses the change
  with nothing committed.
- the component ``ec2-snapshots``: with ``every``, podod snapshots the volumes itself
  (``snapshot create`` through the bus, as actor ``podod``).
- the collector ``ec2_snapshots``: ``ec2_snapshot_age_seconds{volume}``,
  ``ec2_snapshot_overdue{volume}``, ``ec2_snapshot_failures_total``; the alert rule
  ``EC2SnapshotTooOld`` (rules.yaml) fires on an overdue volume.

Settings: ``plugins.settings.aws`` (plugins/aws/settings.py). Credentials: boto3's chain only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from podod.bus.context import Actor, CommandContext, Reply, Request, Table
from podod.bus.shapes import BOOL, INT, NUM, STR, arr, nullable, obj
from podod.bus.spec import Arg, Opt
from podod.errors import NotFound, PododError, ValidationError
from podod.monitor.model import Sample
from podod.plugins import Registry

from .ec2 import (
    CREATED,
    MANAGED,
    Ec2,
    SnapshotFailed,
    call,
    expired,
    is_podods,
    newest_age,
    started,
    tags_of,
    wait,
)
from .settings import AwsSettings, ServerSnapshots, parse

SNAPSHOT = {"id": STR, "volume": STR, "state": STR, "progress": STR, "started": NUM,
            "podod": BOOL, "request_id": nullable(STR), "actor": nullable(STR),
            "command": nullable(STR)}
LIST_REPLY = arr(obj(SNAPSHOT), "the snapshots of the server's volumes, newest first "
                 "(started: Unix seconds)")
SHOW_REPLY = obj({**SNAPSHOT, "size_gib": nullable(INT), "description": STR,
                  "tags": {"type": "object"}})
CREATE_REPLY = nullable(obj({"snapshots": arr(obj(SNAPSHOT)), "deleted": arr(STR)}))
_SNAP_ID = "snap-[0-9a-f]{8,17}"
log = logging.getLogger(__name__)


def _row(snap: dict[str, Any]) -> dict[str, Any]:
    tags = tags_of(snap)
    return {"id": str(snap["SnapshotId"]), "volume": str(snap.get("VolumeId", "")),
            "state": str(snap.get("State", "")), "progress": str(snap.get("Progress") or ""),
            "started": started(snap), "podod": is_podods(snap),
            "request_id": tags.get("podod:request-id"), "actor": tags.get("podod:actor"),
            "command": tags.get("podod:command")}


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


class Snapshots:
    """What the commands, the gate and the collector share: the settings in force (read
    again after a reload) and the failure counts."""

    def __init__(self, initial: AwsSettings) -> None:
        self._settings = initial
        self._raw: str | None = None
        self.failures: Counter[str] = Counter()

    def settings(self, ctx_runtime: Any) -> AwsSettings:
        raw = ctx_runtime.config.plugins.settings.get("aws", {})
        text = json.dumps(raw, sort_keys=True, default=str)
        if text != self._raw:
            try:
                self._settings = parse(raw)
            except ValueError as exc:
                raise ValidationError(str(exc).splitlines()[0]) from None
            self._raw = text
        return self._settings

    def server(self, runtime: Any, name: str) -> tuple[Ec2, ServerSnapshots]:
        settings = self.settings(runtime)
        config = settings.servers.get(name)
        if config is None:
            known = ", ".join(sorted(settings.servers)) or "none"
            raise NotFound(f"server {name} has no EC2 snapshot settings "
                           f"(plugins.settings.aws.servers: {known})")
        return Ec2(name, config), config

    async def take(self, ctx: CommandContext, ec2: Ec2, config: ServerSnapshots, *,
                   reason: str, want: str) -> list[dict[str, Any]]:
        """Snapshot every volume of the server, tagged, and wait until ``want``; one
        sentence (and a counted failure) when that fails or takes longer than
        ``timeout``."""
        deadline = time.monotonic() + config.timeout
        made: list[dict[str, Any]] = []
        try:
            volumes = await call(ec2.volumes, what=f"the EBS volumes of {ec2.server} could "
                                                   "not be listed")
            tags = {MANAGED: "true", "podod:server": ec2.server,
                    "podod:request-id": ctx.request.id, "podod:actor": ctx.actor.name,
                    "podod:command": ctx.spec.name, "podod:reason": reason,
                    CREATED: f"{time.time():.6f}", "Name": f"podod {ec2.server}"}
            for count, volume in enumerate(volumes):
                await ctx.progress(f"EC2 snapshot of {volume} ({ec2.server})", count,
                                   len(volumes))
                made.append(await call(
                    ec2.create, volume, tags,
                    f"podod {ec2.server}: {reason} (request {ctx.request.id})",
                    what=f"the EC2 snapshot of {volume} ({ec2.server}) could not be taken"))
            return await wait(ec2, made, want, deadline, config.poll_interval, ctx.progress)
        except PododError as exc:
            self.failures[ec2.server] += 1
            taken = [str(s["SnapshotId"]) for s in made]
            if taken:
                exc.message += f" (snapshots already taken: {', '.join(taken)})"
            raise

    async def prune(self, ec2: Ec2, config: ServerSnapshots,
                    only_plan: bool = False) -> list[dict[str, Any]]:
        volumes = await call(ec2.volumes, what=f"the EBS volumes of {ec2.server} could not "
                                               "be listed")
        snaps = await call(ec2.snapshots, volumes,
                           what=f"the snapshots of {ec2.server} could not be listed")
        due = expired(snaps, config.keep, config.keep_days, time.time())
        if not only_plan:
            for snap in due:
                await call(ec2.delete, str(snap["SnapshotId"]),
                           what=f"the snapshot {snap['SnapshotId']} could not be deleted")
        return due


class Schedule:
    """The ``ec2-snapshots`` component: snapshots every server with ``every`` set once its
    newest podod snapshot is that old, through the bus (audited, retention applied) as
    actor ``podod``. Settings are read again at every round, so a reload applies."""

    def __init__(self, runtime: Any, state: Snapshots) -> None:
        self.runtime = runtime
        self.state = state
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="ec2-snapshots")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        await asyncio.sleep(1.0)  # let the daemon finish starting (the bus, the database)
        while True:
            try:
                wait = await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ec2 snapshots: the scheduled round failed")
                wait = RETRY
            await asyncio.sleep(wait)

    async def round(self) -> float:
        """Take what is due; seconds until the next round."""
        wait = IDLE
        settings = self.state.settings(self.runtime)
        for name, config in settings.servers.items():
            if config.every is None:
                continue
            try:
                due_in = await self._due_in(name, config, config.every)
            except PododError as exc:
                log.warning("ec2 snapshots of %s: not checked this time: %s", name,
                            exc.message)
                wait = min(wait, RETRY)
                continue
            if due_in <= 0:
                bus = self.runtime.bus
                if bus is None:
                    return RETRY
                reply = await bus.execute(Request(
                    argv=["snapshot", "create", name], actor=Actor("podod", "admin"),
                    origin="schedule", execute_real=True))
                level = logging.INFO if reply.ok else logging.WARNING
                log.log(level, "ec2 snapshots of %s: %s", name, reply.message)
                due_in = config.every if reply.ok else RETRY
            wait = min(wait, max(1.0, due_in))
        return wait

    async def _due_in(self, name: str, config: ServerSnapshots, every: float) -> float:
        ec2 = Ec2(name, config)
        volumes = await call(ec2.volumes, what=f"the EBS volumes of {name} could not be "
                                               "listed")
        snaps = [s for s in await call(ec2.snapshots, volumes, what=f"the snapshots of "
                                                                     f"{name} could not be "
                                                                     "listed")
                 if is_podods(s)]
        now = time.time()
        ages = [newest_age(snaps, volume, now) for volume in volumes]
        if any(age is None for age in ages):
            return 0.0
        return every - max(age for age in ages if age is not None)


IDLE = 300.0   # seconds between rounds while nothing is due sooner
RETRY = 300.0  # after a failure


def setup(registry: Registry) -> None:
    state = Snapshots(parse(registry.settings()))  # a bad setting: the plugin fails to load
    registry.component("ec2-snapshots", lambda runtime: Schedule(runtime, state))
    interval = state._settings.interval

    registry.declare_series("ec2_snapshot_age_seconds", "gauge",
                            "Seconds since the newest pending or completed EBS snapshot of "
                            "the volume (the aws plugin)", ["volume"])
    registry.declare_series("ec2_snapshot_overdue", "gauge",
                            "1 when the volume's newest snapshot is older than the server's "
                            "max_age, or it has none (the aws plugin)", ["volume"])
    registry.declare_series("ec2_snapshot_failures_total", "counter",
                            "EBS snapshots podod failed to take (the gate's and snapshot "
                            "create's) since it started (the aws plugin)")
    if state._settings.servers:  # compiling its templates costs Jinja2 at start: only
        registry.alert_rules("aws", Path(__file__).parent / "rules.yaml")  # when in use

    # -- the gate ----------------------------------------------------------------------------

    @registry.gate("ec2-snapshot")
    async def snapshot_gate(ctx: CommandContext) -> str | None:
        """Before a real change of the mail database commits: snapshot every server that
        asks for it (``before_changes``), after the database backup."""
        if ctx.unit is None:
            return None  # a command without a transaction changes no mail data
        settings = state.settings(ctx.runtime)
        records = []
        for name, config in settings.servers.items():
            if not config.before_changes:
                continue
            ec2 = Ec2(name, config)
            try:
                snaps = await state.take(ctx, ec2, config, reason=f"before {ctx.spec.name}",
                                         want=config.wait_for)
            except PododError as exc:
                raise SnapshotFailed(f"{exc.message}; nothing was changed") from None
            records.append(", ".join(f"{s['SnapshotId']} of {s.get('VolumeId')}"
                                     for s in snaps) + f" on {name}")
            _prune_after(ctx, ec2, config)
        return "; ".join(records) or None

    def _prune_after(ctx: CommandContext, ec2: Ec2, config: ServerSnapshots) -> None:
        async def prune() -> str:
            deleted = await state.prune(ec2, config)
            return (f"deleted {', '.join(str(s['SnapshotId']) for s in deleted)}"
                    if deleted else "nothing expired")

        ctx.after(f"apply the EC2 snapshot retention of {ec2.server}", prune,
                  kind="snapshot_retention")

    # -- commands ----------------------------------------------------------------------------

    server_arg = Arg("server", "the server (plugins.settings.aws.servers)", metavar="SERVER")

    @registry.command(
        "snapshot create", "Snapshot a server's EBS volumes now",
        params=[server_arg, Opt("wait", "wait until the snapshots are pending or completed "
                                "(default: the server's wait_for)", kind="choice",
                                choices=("pending", "completed"))],
        permission="admin", mutating=True, timeout=6 * 3600, reply=CREATE_REPLY,
        description="Tagged with podod's request id, actor and command; podod's older "
                    "snapshots of the volumes beyond keep / keep_days are deleted after.",
        examples=["snapshot create mx1 --execute-real",
                  "snapshot create mx1 --wait completed --execute-real"])
    async def snapshot_create(ctx: CommandContext, server: str, wait: str | None) -> Reply:
        ec2, config = state.server(ctx.runtime, server)
        volumes = await call(ec2.volumes, what=f"the EBS volumes of {server} could not be "
                                               "listed")
        for volume in volumes:
            ctx.record("create", "ec2-snapshot", volume, server=server)
        if ctx.sandbox:
            return Reply(message=f"would snapshot {len(volumes)} EBS "
                                 f"volume{'s' if len(volumes) != 1 else ''} of {server} "
                                 f"({', '.join(volumes)}) in {config.region}")
        snaps = await state.take(ctx, ec2, config, reason="on request",
                                 want=wait or config.wait_for)
        notes = []
        try:
            deleted = [str(s["SnapshotId"]) for s in await state.prune(ec2, config)]
        except PododError as exc:
            deleted = []
            notes.append(f"retention was not applied: {exc.message}")
        if deleted:
            notes.append(f"retention deleted {', '.join(deleted)}")
        rows = [_row(s) for s in snaps]
        return Reply(message=f"{len(rows)} EBS snapshot{'s' if len(rows) != 1 else ''} of "
                             f"{server} taken: " + ", ".join(
                                 f"{r['id']} ({r['volume']}, {r['state']})" for r in rows),
                     data={"snapshots": rows, "deleted": deleted}, notes=notes)

    @registry.command(
        "snapshot list", "List the EBS snapshots of a server's volumes",
        params=[server_arg, Opt("podod_only", "only those podod took", kind="flag")],
        permission="viewer", reply=LIST_REPLY, examples=["snapshot list mx1"])
    async def snapshot_list(ctx: CommandContext, server: str, podod_only: bool) -> Reply:
        ec2, config = state.server(ctx.runtime, server)
        volumes = await call(ec2.volumes, what=f"the EBS volumes of {server} could not be "
                                               "listed")
        snaps = await call(ec2.snapshots, volumes,
                           what=f"the snapshots of {server} could not be listed")
        rows = [_row(s) for s in snaps if is_podods(s) or not podod_only]
        due = {str(s["SnapshotId"]) for s in expired(snaps, config.keep, config.keep_days,
                                                      time.time())}
        table = [[r["id"], r["volume"], f"{r['state']} {r['progress']}".strip(),
                  _utc(r["started"]), r["actor"] or "-", r["command"] or "-",
                  "expired" if r["id"] in due else ""] for r in rows]
        return Reply(message=f"{len(rows)} snapshots of {server} "
                             f"({', '.join(volumes)})", data=rows,
                     table=Table(["snapshot", "volume", "state", "started (UTC)", "actor",
                                  "command", "retention"], table,
                                 title=f"EBS snapshots of {server}"))

    async def _owned(ctx: CommandContext, server: str, snapshot: str
                     ) -> tuple[Ec2, ServerSnapshots, dict[str, Any]]:
        if not re.fullmatch(_SNAP_ID, snapshot):
            raise ValidationError(f"'{snapshot}' is not an EBS snapshot id (snap-...)")
        ec2, config = state.server(ctx.runtime, server)
        volumes = await call(ec2.volumes, what=f"the EBS volumes of {server} could not be "
                                               "listed")
        snaps = await call(ec2.snapshots, volumes,
                           what=f"the snapshots of {server} could not be listed")
        for snap in snaps:
            if snap["SnapshotId"] == snapshot:
                return ec2, config, snap
        raise NotFound(f"{snapshot} is not a snapshot of a volume of {server} "
                       f"({', '.join(volumes)})")

    @registry.command(
        "snapshot show", "Show one EBS snapshot of a server's volumes, with its tags",
        params=[server_arg, Arg("snapshot", "the snapshot id (snap-...)", metavar="SNAPSHOT")],
        permission="viewer", reply=SHOW_REPLY, examples=["snapshot show mx1 snap-0123abcd"])
    async def snapshot_show(ctx: CommandContext, server: str, snapshot: str) -> Reply:
        _, _, snap = await _owned(ctx, server, snapshot)
        row = _row(snap)
        tags = tags_of(snap)
        size = snap.get("VolumeSize")
        data = {**row, "size_gib": int(size) if isinstance(size, int) else None,
                "description": str(snap.get("Description", "")), "tags": tags}
        rows: list[list[object]] = [
            ["volume", row["volume"]], ["state", f"{row['state']} {row['progress']}".strip()],
            ["started (UTC)", _utc(row["started"])],
            ["size", f"{size} GiB" if size is not None else "-"],
            ["description", data["description"]]]
        rows += [[f"tag {k}", v] for k, v in sorted(tags.items())]
        return Reply(message=f"{snapshot} of {row['volume']} ({server}): {row['state']}",
                     data=data, table=Table(["item", "value"], rows, title=snapshot))

    @registry.command(
        "snapshot delete", "Delete an EBS snapshot of a server, or those retention expires",
        params=[server_arg, Arg("snapshot", "the snapshot id (snap-...)", required=False,
                                metavar="SNAPSHOT"),
                Opt("expired", "delete podod's snapshots beyond keep / keep_days",
                    kind="flag")],
        permission="admin", mutating=True, timeout=3600, reply=nullable(arr(STR)),
        examples=["snapshot delete mx1 snap-0123abcd --execute-real",
                  "snapshot delete mx1 --expired --execute-real"])
    async def snapshot_delete(ctx: CommandContext, server: str, snapshot: str | None,
                              expired: bool) -> Reply:
        if (snapshot is None) == (not expired):
            raise ValidationError("snapshot delete: give either a SNAPSHOT or --expired")
        if snapshot is not None:
            ec2, _config, snap = await _owned(ctx, server, snapshot)
            due = [snap]
        else:
            ec2, config = state.server(ctx.runtime, server)
            due = await state.prune(ec2, config, only_plan=True)
        ids = [str(s["SnapshotId"]) for s in due]
        for snap in due:
            ctx.record("delete", "ec2-snapshot", str(snap["SnapshotId"]),
                       volume=str(snap.get("VolumeId")), server=server)
        if ctx.sandbox:
            return Reply(message=f"would delete {len(ids)} snapshots of {server}"
                                 + (f": {', '.join(ids)}" if ids else ""))
        for snapshot_id in ids:
            await call(ec2.delete, snapshot_id,
                       what=f"the snapshot {snapshot_id} could not be deleted")
        return Reply(message=f"deleted {len(ids)} snapshots of {server}"
                             + (f": {', '.join(ids)}" if ids else ""), data=ids)

    # -- the collector -----------------------------------------------------------------------

    @registry.collector("ec2_snapshots", interval=interval, per_server=False)
    async def collect(ctx: Any) -> list[Sample]:
        settings = state.settings(ctx.runtime)
        now = time.time()
        out: list[Sample] = []
        problems = []
        for name, config in settings.servers.items():
            out.append(Sample("ec2_snapshot_failures_total", name,
                              float(state.failures[name]), kind="counter"))
            ec2 = Ec2(name, config)
            try:
                volumes = await call(ec2.volumes, what=f"the EBS volumes of {name} could not "
                                                       "be listed")
                snaps = await call(ec2.snapshots, volumes,
                                   what=f"the snapshots of {name} could not be listed")
            except PododError as exc:
                problems.append(exc.message)
                continue
            out += samples_for(name, config, volumes, snaps, now)
        if problems and not out:
            raise RuntimeError("; ".join(problems))
        return out


def samples_for(server: str, config: ServerSnapshots, volumes: list[str],
                snaps: list[dict[str, Any]], now: float) -> list[Sample]:
    out = []
    for volume in volumes:
        labels = Sample.labels_of(volume=volume)
        age = newest_age(snaps, volume, now)
        if age is not None:
            out.append(Sample("ec2_snapshot_age_seconds", server, age, labels))
        overdue = age is None or age > config.max_age
        out.append(Sample("ec2_snapshot_overdue", server, 1.0 if overdue else 0.0, labels))
    return out

