"""A Matrix room: one ``m.notice`` (plain text plus HTML) per notification.

Through podod's own account (the ``matrix:`` section, shared with the admin bot: one
account, one sync loop) when the notifier names no ``homeserver``, or names the ``matrix:``
account itself; the message then carries the ``alerts silence`` line that mutes its group,
and the room may be encrypted. Otherwise, as before the bot existed, through an account of
its own whose access token is in ``access_token_file``: it joins the room on first use (it
must be invited, or the room public), and rooms with end-to-end encryption are not
supported. nio's own retries on rate limits and timeouts are capped, so a failure comes
back to podod's queue, which retries with backoff.
"""

from __future__ import annotations

import html
from typing import Any

from nio import AsyncClient, AsyncClientConfig, JoinError, RoomResolveAliasError, RoomSendError

from podod.alerts.notify import Notification, NotifyError
from podod.alerts.settings import MatrixNotifierSettings
from podod.alerts.templates import compile_template


def render_html(notification: Notification) -> str:
    colour = "#cc0000" if notification.status == "firing" else "#2e7d32"
    head = (f'<b><font color="{colour}">[{notification.status.upper()}]</font> '
            f"{html.escape(notification.title)}</b>")
    items = []
    for alert in notification.alerts:
        mark = "🔥" if alert.status == "firing" else "✅"
        items.append(f"<li>{mark} <b>{html.escape(alert.rule)}</b> "
                     f"({html.escape(alert.severity)}) on {html.escape(alert.server)}: "
                     f"{html.escape(alert.summary)}</li>")
    more = f"<p>... and {notification.truncated} more</p>" if notification.truncated else ""
    return f"{head}<ul>{''.join(items)}</ul>{more}"


class MatrixNotifier:
    grouped = True

    def __init__(self, settings: MatrixNotifierSettings, runtime: Any = None) -> None:
        self.settings = settings
        self.runtime = runtime
        self.name = settings.label
        self.template = compile_template(settings.template) if settings.template else None
        self._client: AsyncClient | None = None
        self._room_id: str | None = None

    def _shared(self) -> bool:
        """Whether this notifier posts through podod's own account (matrix:)."""
        s = self.settings
        if s.shared:
            return True
        own = getattr(getattr(self.runtime, "config", None), "matrix", None)
        return bool(own is not None and own.enabled and own.user_id == s.user_id
                    and own.homeserver == (s.homeserver or "").rstrip("/"))

    async def _send_shared(self, notification: Notification) -> None:
        from podod.matrix.session import SendError

        bot = self.runtime.component("matrix") if self.runtime is not None else None
        if bot is None:
            raise NotifyError("podod's Matrix account (the matrix: section) is not running")
        try:
            await bot.notify(self.settings.room_id, self.content(notification), notification)
        except SendError as exc:
            raise NotifyError(str(exc)) from None

    def _make_client(self) -> AsyncClient:
        s = self.settings
        assert s.homeserver is not None and s.user_id is not None
        config = AsyncClientConfig(max_limit_exceeded=2, max_timeouts=2,
                                   request_timeout=s.timeout, encryption_enabled=False)
        client = AsyncClient(s.homeserver, s.user_id, config=config)
        assert s.access_token is not None  # the settings model requires it
        client.access_token = s.access_token.get_secret_value()
        client.user_id = s.user_id
        return client

    async def _room(self, client: AsyncClient) -> str:
        if self._room_id is not None:
            return self._room_id
        room = self.settings.room_id
        assert room is not None  # required with homeserver
        if room.startswith("#"):
            resolved = await client.room_resolve_alias(room)
            if isinstance(resolved, RoomResolveAliasError):
                raise NotifyError(f"the Matrix room alias {room} cannot be resolved: "
                                  f"{resolved.message}")
            room = resolved.room_id
        joined = await client.join(room)
        if isinstance(joined, JoinError):
            raise NotifyError(f"{self.settings.user_id} cannot join the Matrix room "
                              f"{self.settings.room_id}: {joined.message}")
        self._room_id = room
        return room

    def content(self, notification: Notification) -> dict[str, str]:
        body = self.template.render(**notification.context()) if self.template else \
            notification.text()
        content = {"msgtype": self.settings.msgtype, "body": body}
        if self.template is None:
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = render_html(notification)
        return content

    async def send(self, notification: Notification) -> None:
        if self._shared():
            await self._send_shared(notification)
            return
        if self._client is None:
            self._client = self._make_client()
        client = self._client
        room = await self._room(client)
        try:
            response = await client.room_send(room, "m.room.message",
                                              self.content(notification),
                                              ignore_unverified_devices=True)
        except Exception as exc:  # nio raises its own errors for transport problems
            raise NotifyError(f"posting to the Matrix room {self.settings.room_id} failed: "
                              f"{type(exc).__name__}: {exc}") from None
        if isinstance(response, RoomSendError):
            if response.status_code in ("M_UNKNOWN_TOKEN", "M_FORBIDDEN"):
                self._room_id = None
            raise NotifyError(f"the Matrix homeserver refused the message to "
                              f"{self.settings.room_id}: {response.message}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
