"""A person in a Matrix room, for tests and benches: a matrix-nio client (with end-to-end
encryption) in a thread of its own, driven by plain calls.

It accepts every invite, reads every room it is in (decrypting what it can), and keeps
what it saw as dicts (``room``, ``event_id``, ``sender``, ``type``, ``content``,
``encrypted``), so a test can wait for the bot's answer with :meth:`ChatClient.wait`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    MegolmEvent,
    RoomCreateError,
    RoomSendError,
    SyncError,
)

_T = TypeVar("_T")


class ChatClient:
    def __init__(self, homeserver: str, user_id: str, token: str, device_id: str,
                 store: Path) -> None:
        store.mkdir(parents=True, exist_ok=True)
        self.user_id = user_id
        self.events: list[dict[str, Any]] = []
        self.invited: list[str] = []
        self.failure = ""
        self._joins: set[asyncio.Future[Any]] = set()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._stop = False
        config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False,
                                   max_limit_exceeded=5, max_timeouts=3)
        self._homeserver, self._token, self._device = homeserver, token, device_id
        self._store, self._config = store, config
        self.client: AsyncClient | None = None
        self._synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"chat-{user_id}", daemon=True)
        self._thread.start()
        if not self._synced.wait(180):
            raise RuntimeError(f"{user_id}: the first sync did not finish "
                               f"({self.failure or 'no error'})")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except Exception as exc:  # shown by the constructor or the next wait
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self._loop.close()

    async def _main(self) -> None:
        client = AsyncClient(self._homeserver, self.user_id, store_path=str(self._store),
                             config=self._config)
        client.restore_login(self.user_id, self._device, self._token)
        self.client = client
        try:
            while not self._stop:
                try:
                    response = await client.sync(timeout=1000, full_state=True
                                                 if not self._synced.is_set() else None)
                except Exception:  # the homeserver restarts: try again
                    await asyncio.sleep(0.5)
                    continue
                if isinstance(response, SyncError):
                    await asyncio.sleep(0.5)
                    continue
                await self._housekeeping(client)
                self._collect(response)
                self._synced.set()
        finally:
            await client.close()

    async def _housekeeping(self, client: AsyncClient) -> None:
        with contextlib.suppress(Exception):
            if client.should_upload_keys:
                await client.keys_upload()
            if client.should_query_keys:
                await client.keys_query()
            if client.should_claim_keys:
                await client.keys_claim(client.get_users_for_key_claiming())
            await client.send_to_device_messages()

    def _collect(self, response: Any) -> None:
        assert self.client is not None
        for room_id, info in response.rooms.invite.items():
            for event in info.invite_state:
                if isinstance(event, InviteMemberEvent) and event.membership == "invite" \
                        and event.state_key == self.user_id and room_id not in self.invited:
                    self.invited.append(room_id)
                    task = asyncio.ensure_future(self.client.join(room_id))
                    self._joins.add(task)
                    task.add_done_callback(self._joins.discard)
        for room_id, info in response.rooms.join.items():
            for event in info.timeline.events:
                source = getattr(event, "source", {}) or {}
                with self._lock:
                    self.events.append({
                        "room": room_id, "event_id": getattr(event, "event_id", ""),
                        "sender": getattr(event, "sender", ""),
                        "type": source.get("type", ""),
                        "content": source.get("content", {}),
                        "encrypted": bool(getattr(event, "decrypted", False)),
                        "undecrypted": isinstance(event, MegolmEvent)})

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- what a test does -------------------------------------------------------------------

    def send(self, room: str, body: str, relates: dict[str, Any] | None = None) -> str:
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if relates:
            content["m.relates_to"] = relates
        return self.send_event(room, "m.room.message", content)

    def send_file(self, room: str, name: str, data: bytes,
                  mimetype: str = "text/csv") -> str:
        """Upload ``data`` and post it as an ``m.file`` (unencrypted media); its event id."""
        import io

        assert self.client is not None
        uploaded, _keys = self._call(self.client.upload(
            lambda *_: io.BytesIO(data), content_type=mimetype, filename=name,
            filesize=len(data)))
        url = getattr(uploaded, "content_uri", None)
        if not url:
            raise RuntimeError(f"{self.user_id} cannot upload {name}: {uploaded}")
        return self.send_event(room, "m.room.message", {
            "msgtype": "m.file", "body": name, "filename": name, "url": url,
            "info": {"mimetype": mimetype, "size": len(data)}})

    def send_event(self, room: str, event_type: str, content: dict[str, Any]) -> str:
        assert self.client is not None
        answer = self._call(self.client.room_send(room, event_type, content,
                                                  ignore_unverified_devices=True))
        if isinstance(answer, RoomSendError):
            raise RuntimeError(f"{self.user_id} cannot post to {room}: {answer.message}")
        return str(answer.event_id)

    def in_thread(self, room: str, root: str, body: str) -> str:
        return self.send(room, body, {"rel_type": "m.thread", "event_id": root,
                                      "is_falling_back": True,
                                      "m.in_reply_to": {"event_id": root}})

    def react(self, room: str, event_id: str, key: str = "\u2705") -> str:
        return self.send_event(room, "m.reaction", {"m.relates_to": {
            "rel_type": "m.annotation", "event_id": event_id, "key": key}})

    def create_room(self, invite: list[str], *, encrypted: bool = False,
                    power: dict[str, int] | None = None, name: str = "ops") -> str:
        assert self.client is not None
        state = [{"type": "m.room.encryption", "state_key": "",
                  "content": {"algorithm": "m.megolm.v1.aes-sha2"}}] if encrypted else []
        override = {"users": dict(power)} if power else None
        answer = self._call(self.client.room_create(name=name, invite=invite,
                                                    initial_state=state,
                                                    power_level_override=override))
        if isinstance(answer, RoomCreateError):
            raise RuntimeError(f"cannot create a room: {answer.message}")
        return str(answer.room_id)

    def seen(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if predicate(e)]

    def replies_to(self, room: str, event_id: str) -> list[dict[str, Any]]:
        """The messages answering ``event_id`` (in reply to it, in its thread)."""
        def answers(e: dict[str, Any]) -> bool:
            rel = e["content"].get("m.relates_to") or {}
            return e["room"] == room and e["type"] == "m.room.message" and (
                (rel.get("m.in_reply_to") or {}).get("event_id") == event_id)
        return self.seen(answers)

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0,
             what: str = "a message") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.seen(predicate)
            if found:
                return found[0]
            time.sleep(0.05)
        with self._lock:
            recent = [(e["room"][:8], e["sender"], e["type"], e["undecrypted"],
                       str(e["content"].get("body", ""))[:80]) for e in self.events[-8:]]
        raise AssertionError(f"{self.user_id} timed out waiting for {what}; last seen: "
                             f"{recent}")

    def wait_reply(self, room: str, event_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.replies_to(room, event_id)
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"{self.user_id}: no reply to {event_id} in {room}")

    def ask(self, room: str, body: str, timeout: float = 60.0) -> str:
        """Send a command and return the text of the bot's reply."""
        event_id = self.send(room, body)
        return str(self.wait_reply(room, event_id, timeout)["content"].get("body", ""))

    def close(self) -> None:
        self._stop = True
        self._thread.join(15)
