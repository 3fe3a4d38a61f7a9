"""A webhook: the Alertmanager webhook payload (version 4) by default, so every receiver
written for Alertmanager works, or the body a Jinja2 ``template`` renders."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from podod.alerts.notifiers.http import HttpClient
from podod.alerts.notify import Notification
from podod.alerts.settings import WebhookNotifierSettings
from podod.alerts.templates import compile_template


class WebhookNotifier:
    grouped = True

    def __init__(self, settings: WebhookNotifierSettings, runtime: Any = None) -> None:
        self.settings = settings
        self.name = settings.label
        self.template = compile_template(settings.template) if settings.template else None
        self.http = HttpClient(settings.timeout)

    def body(self, notification: Notification) -> bytes:
        limit = self.settings.max_alerts
        if limit and len(notification.alerts) > limit:
            notification = replace(notification, alerts=notification.alerts[:limit],
                                   truncated=len(notification.alerts) - limit)
        if self.template is not None:
            return self.template.render(**notification.context()).encode()
        return json.dumps(notification.alertmanager()).encode()

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.settings.content_type, **self.settings.headers}
        if self.settings.token is not None:
            headers["Authorization"] = f"Bearer {self.settings.token.get_secret_value()}"
        return headers

    async def send(self, notification: Notification) -> None:
        await self.http.post(self.settings.url, self.body(notification), self.headers())

    async def close(self) -> None:
        await self.http.close()
