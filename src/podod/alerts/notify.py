"""What notifiers are handed, and the queue that keeps a slow or failing notifier from ever
holding up the engine.

Each configured notifier gets its own :class:`NotifierQueue`: the engine puts a
:class:`Notification` in and returns at once; a worker task sends it, retrying with
exponential backoff (``retry_initial`` doubling up to ``retry_max``) until it succeeds or
``give_up_after`` has passed. A full queue drops its oldest entry (and says so in the log).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from podod.alerts.matchers import from_mapping

if TYPE_CHECKING:
    from podod.alerts.settings import NotifierBase

log = logging.getLogger(__name__)

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "no end time"


def rfc3339(ts: float | None) -> str:
    if ts is None:
        return ZERO_TIME
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class NotifyError(Exception):
    """A notification could not be delivered; it will be retried. One plain sentence."""


@dataclass
class AlertSnapshot:
    """One alert as notifiers see it (the Alertmanager model: labels and annotations)."""

    fingerprint: str
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None
    value: float | None = None
    generator_url: str = ""

    @property
    def rule(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def server(self) -> str:
        return self.labels.get("server", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    @property
    def summary(self) -> str:
        return self.annotations.get("summary", self.rule)

    def alertmanager(self) -> dict[str, Any]:
        """The alert in Alertmanager's webhook format."""
        return {
            "status": self.status, "labels": dict(self.labels),
            "annotations": dict(self.annotations), "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at), "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        }

    def context(self) -> dict[str, Any]:
        """What templates see for one alert."""
        return {
            "status": self.status, "labels": self.labels, "annotations": self.annotations,
            "rule": self.rule, "server": self.server, "severity": self.severity,
            "summary": self.summary, "value": self.value, "fingerprint": self.fingerprint,
            "starts_at": rfc3339(self.starts_at), "ends_at": rfc3339(self.ends_at),
        }


@dataclass
class Notification:
    """One message to one notifier: a group's alerts (or a silence reminder)."""

    receiver: str
    group_key: str
    group_labels: dict[str, str]
    alerts: list[AlertSnapshot]
    kind: Literal["alerts", "reminder", "test"] = "alerts"
    external_url: str = ""
    truncated: int = 0
    created: float = field(default_factory=time.time)

    @property
    def status(self) -> Literal["firing", "resolved"]:
        return "firing" if any(a.status == "firing" for a in self.alerts) else "resolved"

    @property
    def firing(self) -> list[AlertSnapshot]:
        return [a for a in self.alerts if a.status == "firing"]

    @property
    def resolved(self) -> list[AlertSnapshot]:
        return [a for a in self.alerts if a.status == "resolved"]

    def _common(self, attr: str) -> dict[str, str]:
        if not self.alerts:
            return {}
        first = getattr(self.alerts[0], attr)
        return {k: v for k, v in first.items()
                if all(getattr(a, attr).get(k) == v for a in self.alerts[1:])}

    @property
    def common_labels(self) -> dict[str, str]:
        return self._common("labels")

    @property
    def common_annotations(self) -> dict[str, str]:
        return self._common("annotations")

    @property
    def title(self) -> str:
        """A one-line headline: ``mx1: ServerUnreachable`` or ``mx1: 3 alerts``."""
        where = ", ".join(f"{v}" for v in self.group_labels.values() if v) or "podod"
        if self.kind == "reminder":
            return f"{where}: {self.alerts[0].summary}" if self.alerts else where
        names = sorted({a.rule for a in self.alerts})
        if len(names) == 1:
            what = names[0] if len(self.alerts) == 1 else f"{len(self.alerts)} × {names[0]}"
        else:
            what = f"{len(self.alerts)} alerts"
        return f"{where}: {what}"

    def alertmanager(self) -> dict[str, Any]:
        """The Alertmanager webhook payload, version 4."""
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(self.group_labels.items()))
        return {
            "version": "4",
            "groupKey": f"{{}}:{{{labels}}}",
            "truncatedAlerts": self.truncated,
            "status": self.status,
            "receiver": self.receiver,
            "groupLabels": dict(self.group_labels),
            "commonLabels": self.common_labels,
            "commonAnnotations": self.common_annotations,
            "externalURL": self.external_url,
            "alerts": [a.alertmanager() for a in self.alerts],
        }

    def context(self) -> dict[str, Any]:
        """What notification templates see."""
        return {
            "kind": self.kind, "status": self.status, "receiver": self.receiver,
            "group_key": self.group_key, "group_labels": self.group_labels,
            "common_labels": self.common_labels,
            "common_annotations": self.common_annotations,
            "alerts": [a.context() for a in self.alerts],
            "firing": [a.context() for a in self.firing],
            "resolved": [a.context() for a in self.resolved],
            "title": self.title, "external_url": self.external_url,
            "truncated": self.truncated, "payload": self.alertmanager(),
        }

    def text(self) -> str:
        """A plain-text rendering for chat and e-mail."""
        lines = [f"[{self.status.upper()}] {self.title}"]
        for alert in self.alerts:
            mark = "FIRING" if alert.status == "firing" else "RESOLVED"
            lines.append(f"- {mark} {alert.rule} ({alert.severity}) on {alert.server}: "
                         f"{alert.summary}")
            description = alert.annotations.get("description")
            if description:
                lines.append(f"  {description}")
        if self.truncated:
            lines.append(f"... and {self.truncated} more")
        return "\n".join(lines)


class Notifier(Protocol):
    """What a notifier factory returns: ``factory(settings, runtime) -> Notifier``.

    ``grouped`` notifiers get one notification per group flush (Alertmanager's grouping,
    silences and inhibition applied); an ungrouped one (the Alertmanager forwarder) gets every
    alert change at once and a periodic re-send of what is firing.
    """

    name: str
    grouped: bool

    async def send(self, notification: Notification) -> None: ...

    async def close(self) -> None: ...


Outcome = Callable[[str, Notification, bool, str], None]  # notifier, notification, ok, detail


class NotifierQueue:
    def __init__(self, notifier: Notifier, settings: NotifierBase,
                 on_outcome: Outcome | None = None) -> None:
        self.notifier = notifier
        self.settings = settings
        self.route = from_mapping(settings.match)
        self.on_outcome = on_outcome
        self._items: collections.deque[Notification] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.busy = False

    @property
    def name(self) -> str:
        return self.notifier.name

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"notifier-{self.name}")

    def put(self, notification: Notification) -> None:
        """Never blocks: a full queue drops its oldest notification."""
        if len(self._items) >= self.settings.queue_size:
            self._items.popleft()
            self.dropped += 1
            log.warning("notifier %s is behind: dropped its oldest queued notification",
                        self.name)
        self._items.append(notification)
        self._wakeup.set()

    def pending(self) -> int:
        return len(self._items) + (1 if self.busy else 0)

    async def idle(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued was sent or given up (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not self.pending()

    async def close(self, grace: float = 2.0) -> None:
        await self.idle(grace)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        try:
            await self.notifier.close()
        except Exception:
            log.exception("notifier %s did not close cleanly", self.name)

    async def _run(self) -> None:
        while True:
            if not self._items:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            notification = self._items.popleft()
            self.busy = True
            try:
                await self._deliver(notification)
            finally:
                self.busy = False

    async def _deliver(self, notification: Notification) -> None:
        s = self.settings
        started = time.monotonic()
        delay = s.retry_initial
        attempt = 0
        while True:
            attempt += 1
            try:
                await asyncio.wait_for(self.notifier.send(notification), s.timeout)
            except asyncio.CancelledError:
                raise
            except (NotifyError, TimeoutError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                if isinstance(exc, TimeoutError):
                    reason = f"no answer within {s.timeout:g}s"
                if time.monotonic() - started + delay > s.give_up_after:
                    self.failed += 1
                    log.error("notifier %s gave up on %s after %d attempts: %s", self.name,
                              notification.title, attempt, reason)
                    self._report(notification, False, f"gave up after {attempt} attempts: "
                                                      f"{reason}")
                    return
                log.warning("notifier %s failed (attempt %d, retrying in %.1fs): %s",
                            self.name, attempt, delay, reason)
                await asyncio.sleep(delay * random.uniform(0.9, 1.1))
                delay = min(delay * 2, s.retry_max)
                continue
            except Exception as exc:  # a bug in a notifier must not end its worker
                self.failed += 1
                log.exception("notifier %s failed on %s", self.name, notification.title)
                self._report(notification, False, f"internal error: {exc}")
                return
            self.sent += 1
            self._report(notification, True, f"attempt {attempt}")
            return

    def _report(self, notification: Notification, ok: bool, detail: str) -> None:
        if self.on_outcome is not None:
            try:
                self.on_outcome(self.name, notification, ok, detail)
            except Exception:
                log.exception("recording the outcome of notifier %s failed", self.name)
