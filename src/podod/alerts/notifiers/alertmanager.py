"""Forwarding to an Alertmanager a team already runs: ``POST /api/v2/alerts``.

This notifier is alert-level, not grouped: Alertmanager groups, routes and silences itself.
Like Prometheus, podod sends every change at once and re-sends what is firing every
``resend_interval`` with ``endsAt`` four intervals ahead, so Alertmanager resolves an alert
on its own if podod goes away; a resolved alert is sent with its real end time.
Alerts muted in podod (silence, maintenance, inhibition) are not forwarded.
"""

from __future__ import annotations

import json
import time
from typing import Any

from podod.alerts.notifiers.http import HttpClient
from podod.alerts.notify import Notification, rfc3339
from podod.alerts.settings import AlertmanagerNotifierSettings


class AlertmanagerNotifier:
    grouped = False

    def __init__(self, settings: AlertmanagerNotifierSettings, runtime: Any = None) -> None:
        self.settings = settings
        self.name = settings.label
        self.http = HttpClient(settings.timeout)
        self.endpoint = settings.url.rstrip("/") + "/api/v2/alerts"

    def payload(self, notification: Notification, now: float | None = None
                ) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        out = []
        for alert in notification.alerts:
            ends = alert.ends_at if alert.status == "resolved" or alert.ends_at else \
                now + 4 * self.settings.resend_interval
            item: dict[str, Any] = {
                "labels": dict(alert.labels), "annotations": dict(alert.annotations),
                "startsAt": rfc3339(alert.starts_at), "endsAt": rfc3339(ends),
            }
            if alert.generator_url:
                item["generatorURL"] = alert.generator_url
            out.append(item)
        return out

    async def send(self, notification: Notification) -> None:
        headers = {"Content-Type": "application/json", **self.settings.headers}
        if self.settings.token is not None:
            headers["Authorization"] = f"Bearer {self.settings.token.get_secret_value()}"
        await self.http.post(self.endpoint, json.dumps(self.payload(notification)).encode(),
                             headers)

    async def close(self) -> None:
        await self.http.close()
