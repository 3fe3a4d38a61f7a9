"""podod's one Matrix account: one matrix-nio client, one login, one sync loop, shared by the
admin bot and the Matrix alert notifier.

The client lives in a thread of its own with its own event loop. Everything matrix-nio
does (HTTP, JSON, the end-to-end crypto and its SQLite key store, the files of handled
event ids) happens there, never on podod's event loop. The two meet in two places only:

- events the sync loop finds worthwhile (a message, a reaction, an invite) are handed to
  the owner's ``deliver`` on podod's loop with ``call_soon_threadsafe``: the sync loop never
  waits for a command to run (a slow command never stops the sync);
- podod's loop asks for work (send, edit, redact, a direct-message room) with
  ``run_coroutine_threadsafe`` and awaits the answer.

Robustness (docs/matrix.md): the first sync after a start is only read, never acted on
(whatever was said while podod was down is not run), events older than the start or than
the bot's join of the room are dropped, handled event ids are kept on disk; sync errors back
off exponentially with jitter; ``M_UNKNOWN_TOKEN`` stops the session with one log line and a
``MatrixSessionStopped`` event (the rest of podod goes on); 429 answers are honoured
(``retry_after_ms``); each room has one output queue, so replies keep their order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from podod.durable import replace as durable_replace
from podod.events import Event

if TYPE_CHECKING:
    from nio import AsyncClient

    from podod.matrix.settings import MatrixSettings

log = logging.getLogger(__name__)

_T = TypeVar("_T")
HANDLED_KEPT = 5000  # event ids remembered on disk
MAX_EVENT_BYTES = 65_536  # the homeserver's limit for one event
SEND_RETRIES = 5  # 429 answers honoured per message before it counts as failed
TRANSPORT_RETRIES = 3  # connection failures retried per message (1, 2, 4 s, with jitter)
# A sync's timeline holds up to this many events per room; when more arrived, the gap is
# fetched (up to GAP_PAGES pages of 100), so a burst of commands loses none.
SYNC_FILTER = {"room": {"timeline": {"limit": 100}}}
GAP_PAGES = 20


@dataclass(frozen=True, kw_only=True)
class MatrixSessionStopped(Event):
    """The Matrix session stopped for good (the homeserver refused the access token):
    the bot is off until the token is fixed and podod restarted or reloaded."""

    user_id: str
    reason: str


@dataclass(frozen=True)
class Incoming:
    """One event for the bot: a message (``body``, ``formatted``), a reaction (``key``
    on ``relates_to``'s event), an invite, or an encrypted message it cannot read."""

    kind: str  # "message" | "reaction" | "invite" | "undecryptable"
    room_id: str
    event_id: str
    sender: str
    ts: float  # origin_server_ts, seconds
    body: str = ""
    content: dict[str, Any] = field(default_factory=dict)
    encrypted: bool = False
    key: str = ""  # a reaction's emoji
    relates_to: str = ""  # a reaction's target event
    received: float = field(default_factory=time.monotonic)  # when the sync read it


class SendError(Exception):
    """A message could not be posted (one sentence)."""


def e2ee_available() -> bool:
    try:
        from nio.crypto import ENCRYPTION_ENABLED
    except ImportError:
        return False
    return bool(ENCRYPTION_ENABLED)


class MatrixSession:
    """Start with :meth:`start` (on podod's loop); :meth:`send` and friends from podod's
    loop; ``deliver`` is called on podod's loop with each :class:`Incoming`."""

    def __init__(self, settings: MatrixSettings, state_dir: Path,
                 deliver: Callable[[Incoming], None] | None = None,
                 publish: Callable[[Event], None] | None = None,
                 trusted: Callable[[], set[str]] = set) -> None:
        self.settings = settings
        self.store = settings.store(state_dir)
        self.deliver = deliver
        self.publish = publish
        self.trusted = trusted  # user ids whose devices are trusted (access.matrix_users)
        self.user_id = settings.user_id or ""
        self.device_id = ""
        self.e2ee = settings.e2ee != "off" and e2ee_available()
        self.state = "starting"  # starting | syncing | backing-off | stopped
        self.last_error = ""
        self.last_sync = 0.0
        self.event_lag = 0.0  # seconds from an event's origin_server_ts to its arrival
        self.send_failures = 0
        self.sent = 0
        self.syncs = 0
        self.started_at = time.time()
        self.rooms: dict[str, str] = {}  # joined room id -> display name
        self.encrypted_rooms: set[str] = set()
        self.aliases: dict[str, str] = {}  # configured alias -> room id
        self._joined_at: dict[str, float] = {}
        self._handled: OrderedDict[str, None] = OrderedDict()
        self._main: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: AsyncClient | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._stop_requested = threading.Event()  # stop() before the thread's loop exists
        self._queues: dict[str, asyncio.Queue[tuple[Callable[[], Awaitable[Any]],
                                                    concurrent.futures.Future[Any]]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._dm: dict[str, str] = {}
        self._sync_task: asyncio.Task[None] | None = None

    # -- lifecycle (podod's loop) ----------------------------------------------------------

    async def start(self) -> None:
        if self.settings.e2ee == "on" and not e2ee_available():
            raise RuntimeError("matrix.e2ee is on but matrix-nio's e2e extra is not installed "
                               "(pip install 'matrix-nio[e2e]')")
        self._main = asyncio.get_running_loop()
        self.store.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._thread = threading.Thread(target=self._thread_main, name="matrix", daemon=True)
        self._thread.start()

    async def wait_ready(self, timeout: float) -> bool:
        """True once the first sync is done (for tests and benches)."""
        return await asyncio.to_thread(self._ready.wait, timeout)

    async def stop(self) -> None:
        self._stop_requested.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 15.0)
            self._thread = None

    # -- the thread ------------------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main_task())
        except Exception as exc:
            log.exception("the Matrix session failed")
            self.state = "stopped"
            self.last_error = f"the session failed: {type(exc).__name__}: {exc}"
        finally:
            self._ready.set()  # nobody waits for a first sync that will not come
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main_task(self) -> None:
        self._stop = asyncio.Event()
        if self._stop_requested.is_set():
            self.state = "stopped"
            return
        self._load_handled()
        client = None
        delay = self.settings.backoff_initial
        while client is None:  # the homeserver may be down when podod starts: try again
            try:
                client = await self._login()
            except _Fatal as exc:
                self._fatal(str(exc))
                return
            except Exception as exc:
                self.state = "backing-off"
                self.last_error = (f"cannot reach {self.settings.homeserver} to log in: "
                                   f"{type(exc).__name__}: {exc}")
                wait = delay * random.uniform(0.5, 1.5)
                log.warning("Matrix: %s; next try in %.1f s", self.last_error, wait)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)
                if self._stop.is_set():
                    self.state = "stopped"
                    return
                delay = min(delay * 2, self.settings.backoff_max)
        self._client = client
        self._sync_task = asyncio.create_task(self._sync_loop(client))
        stopper = asyncio.create_task(self._stop.wait())
        await asyncio.wait([self._sync_task, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        self._sync_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._sync_task
        for queue in list(self._queues.values()):  # what was queued to send, within 3 s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.join(), 3.0)
        for task in self._workers.values():
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        with contextlib.suppress(Exception):
            await client.close()
        if self.state != "stopped":
            self.state = "stopped"

    def _client_config(self) -> Any:
        from nio import AsyncClientConfig

        return AsyncClientConfig(max_limit_exceeded=0, max_timeouts=0,
                                 request_timeout=self.settings.request_timeout,
                                 encryption_enabled=self.e2ee, store_sync_tokens=False)

    def _session_file(self) -> Path:
        return self.store / "session.json"

    async def _login(self) -> AsyncClient:
        """The client, logged in: the stored login (token and device id), the configured
        token, or a password login once (stored for every later start)."""
        from nio import AsyncClient

        s = self.settings
        assert s.homeserver is not None and s.user_id is not None
        crypto = self.store / "crypto"
        crypto.mkdir(parents=True, exist_ok=True, mode=0o700)
        client = AsyncClient(s.homeserver, s.user_id, store_path=str(crypto),
                             config=self._client_config())
        try:
            return await self._log_in(client)
        except BaseException:
            with contextlib.suppress(Exception):
                await client.close()
            raise

    async def _log_in(self, client: AsyncClient) -> AsyncClient:
        from nio import LoginError, WhoamiError

        s = self.settings
        assert s.user_id is not None
        stored = self._read_session()
        if s.access_token is not None:
            token = s.access_token.get_secret_value().strip()
            client.access_token = token
            who = await client.whoami()
            if isinstance(who, WhoamiError):
                if who.status_code not in ("M_UNKNOWN_TOKEN", "M_FORBIDDEN"):
                    raise OSError(f"whoami failed: {who.status_code}: {who.message}")
                raise _Fatal(self._token_refused(who.status_code, who.message))
            if who.user_id != s.user_id:
                raise _Fatal(f"matrix.access_token_file holds a token of {who.user_id}, not "
                             f"of matrix.user_id {s.user_id}")
            device = who.device_id or stored.get("device_id") or "PODOD"
        elif stored.get("access_token") and stored.get("user_id") == s.user_id:
            token, device = str(stored["access_token"]), str(stored["device_id"])
        else:
            assert s.password is not None
            answer = await client.login(s.password.get_secret_value(),
                                        device_name=s.device_name)
            if isinstance(answer, LoginError):
                if answer.status_code not in ("M_FORBIDDEN", "M_USER_DEACTIVATED",
                                              "M_INVALID_USERNAME"):
                    raise OSError(f"login failed: {answer.status_code}: {answer.message}")
                raise _Fatal(f"the homeserver refused the password login of {s.user_id}: "
                             f"{answer.message}")
            token, device = answer.access_token, answer.device_id
            self._write_session({**stored, "user_id": s.user_id, "device_id": device,
                                 "access_token": token})
        if s.access_token is not None:
            kept = {k: v for k, v in stored.items() if k != "access_token"}
            if stored.get("user_id") != s.user_id:
                kept = {}
            self._write_session({**kept, "user_id": s.user_id, "device_id": device})
        client.restore_login(s.user_id, device, token)
        self.device_id = device
        log.info("Matrix: %s on %s, device %s, end-to-end encryption %s", s.user_id,
                 s.homeserver, device, "on" if self.e2ee else "off")
        return client

    def _token_refused(self, code: str | None, message: str) -> str:
        if code == "M_UNKNOWN_TOKEN":
            return (f"the homeserver no longer accepts the access token of {self.user_id} "
                    f"({message}); give a new one in matrix.access_token_file (or, after a "
                    f"password login, remove {self._session_file()}) and restart podod")
        return f"the homeserver refused {self.user_id}'s access token: {message}"

    def _read_session(self) -> dict[str, Any]:
        try:
            data = json.loads(self._session_file().read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_session(self, data: dict[str, Any]) -> None:
        path = self._session_file()
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def _fatal(self, reason: str) -> None:
        if self.state == "stopped":
            return
        self.state = "stopped"
        self.last_error = reason
        log.error("Matrix session stopped: %s", reason)
        self._ready.set()
        if self.publish is not None and self._main is not None:
            event = MatrixSessionStopped(user_id=self.user_id, reason=reason)
            with contextlib.suppress(RuntimeError):
                self._main.call_soon_threadsafe(self.publish, event)

    # -- sync -------------------------------------------------------------------------------

    async def _sync_loop(self, client: AsyncClient) -> None:
        from nio import SyncError

        first = True
        delay = self.settings.backoff_initial
        timeout_ms = int(self.settings.sync_timeout * 1000)
        while True:
            before = client.next_batch
            try:
                response = await client.sync(timeout=0 if first else timeout_ms,
                                             sync_filter=SYNC_FILTER,
                                             full_state=first or None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # transport errors: the homeserver is away
                response = None
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                reason = ""
            if isinstance(response, SyncError):
                if response.status_code == "M_UNKNOWN_TOKEN":
                    self._fatal(self._token_refused(response.status_code, response.message))
                    return
                retry = getattr(response, "retry_after_ms", None)
                if response.status_code == "M_LIMIT_EXCEEDED" and retry:
                    await asyncio.sleep(retry / 1000)
                    continue
                reason = f"{response.status_code or 'error'}: {response.message}"
            if response is None or isinstance(response, SyncError):
                self.state = "backing-off"
                self.last_error = f"sync failed: {reason}"
                wait = delay * random.uniform(0.5, 1.5)
                log.warning("Matrix sync failed (%s); next try in %.1f s", reason, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.settings.backoff_max)
                continue
            if self.state == "backing-off":
                log.info("Matrix sync works again")
            delay = self.settings.backoff_initial
            self.state = "syncing"
            self.last_sync = time.time()
            self.syncs += 1
            try:
                await self._after_sync(client, response, first, before)
            except asyncio.CancelledError:
                raise
            except Exception:  # one odd event must not end the loop
                log.exception("handling a Matrix sync failed")
            if first:
                first = False
                self._ready.set()

    async def _after_sync(self, client: AsyncClient, response: Any, first: bool,
                          before: str | None) -> None:
        from nio import InviteMemberEvent, RoomEncryptionEvent

        if self.e2ee:
            await self._keys(client)
        now = time.time()
        for room_id, info in response.rooms.invite.items():
            for event in info.invite_state:
                if isinstance(event, InviteMemberEvent) and event.state_key == self.user_id \
                        and event.membership == "invite":
                    self._hand(Incoming(kind="invite", room_id=room_id, event_id="",
                                        sender=event.sender, ts=now))
        for room_id, info in response.rooms.join.items():
            room = client.rooms.get(room_id)
            self.rooms[room_id] = room.display_name if room is not None else room_id
            if room is not None and room.encrypted:
                self.encrypted_rooms.add(room_id)
            if any(isinstance(e, RoomEncryptionEvent) for e in info.timeline.events):
                self.encrypted_rooms.add(room_id)
            if first:
                continue  # what was said before this start is never acted on
            events = list(info.timeline.events)
            if info.timeline.limited and before and info.timeline.prev_batch:
                events = await self._gap(client, room_id, info.timeline.prev_batch,
                                         before) + events
            since = max(self.started_at, self._joined_at.get(room_id, 0.0))
            for event in events:
                self._consider(room_id, event, since, now)
        self._save_handled()

    async def _gap(self, client: AsyncClient, room_id: str, start: str,
                   end: str) -> list[Any]:
        """The events a limited sync left out (more arrived than its timeline holds), oldest
        first: paged back from the timeline's start to the previous sync's token."""
        from nio import MessageDirection, RoomMessagesError

        found: list[Any] = []
        token: str | None = start
        for _page in range(GAP_PAGES):
            answer = await client.room_messages(room_id, start=token, end=end,
                                                direction=MessageDirection.back, limit=100)
            if isinstance(answer, RoomMessagesError) or not answer.chunk:
                break
            found.extend(answer.chunk)
            if not answer.end or answer.end == token:
                break
            token = answer.end
        found.reverse()
        return found

    def _consider(self, room_id: str, event: Any, since: float, now: float) -> None:
        from nio import MegolmEvent, ReactionEvent, RoomMessageText

        event_id = getattr(event, "event_id", "") or ""
        ts = (getattr(event, "server_timestamp", 0) or 0) / 1000
        if ts < since or event_id in self._handled \
                or getattr(event, "sender", "") == self.user_id:
            return
        if isinstance(event, RoomMessageText):
            incoming = Incoming(kind="message", room_id=room_id, event_id=event_id,
                                sender=event.sender, ts=ts, body=event.body,
                                content=dict(event.source.get("content", {})),
                                encrypted=bool(getattr(event, "decrypted", False)))
        elif isinstance(event, ReactionEvent):
            incoming = Incoming(kind="reaction", room_id=room_id, event_id=event_id,
                                sender=event.sender, ts=ts, key=event.key,
                                relates_to=event.reacts_to)
        elif isinstance(event, MegolmEvent):
            incoming = Incoming(kind="undecryptable", room_id=room_id, event_id=event_id,
                                sender=event.sender, ts=ts, encrypted=True)
        else:
            return
        self.event_lag = max(0.0, now - ts)
        self._remember(event_id)
        self._hand(incoming)

    async def _keys(self, client: AsyncClient) -> None:
        """The end-to-end housekeeping sync_forever would do: keys uploaded, queried,
        claimed; to-device messages sent; devices of allowed users trusted (on first use)."""
        try:
            if client.should_upload_keys:
                await client.keys_upload()
            if client.should_query_keys:
                await client.keys_query()
            if client.should_claim_keys:
                await client.keys_claim(client.get_users_for_key_claiming())
            await client.send_to_device_messages()
            trusted = self.trusted()
            for user in trusted:
                for device in client.device_store.active_user_devices(user):
                    if not device.verified and not device.blacklisted:
                        client.verify_device(device)
                        log.info("Matrix: trusting device %s of %s (an allowed user)",
                                 device.id, user)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("Matrix key housekeeping failed: %s", exc)

    def _hand(self, incoming: Incoming) -> None:
        if self.deliver is None or self._main is None:
            return
        with contextlib.suppress(RuntimeError):  # podod's loop is closing
            self._main.call_soon_threadsafe(self.deliver, incoming)

    # -- handled event ids, kept on disk (in this thread) ------------------------------------

    def _handled_file(self) -> Path:
        return self.store / "handled.json"

    def _load_handled(self) -> None:
        try:
            ids = json.loads(self._handled_file().read_text())
        except (OSError, ValueError):
            ids = []
        for event_id in ids if isinstance(ids, list) else []:
            self._handled[str(event_id)] = None
        self._dirty = False

    def _remember(self, event_id: str) -> None:
        self._handled[event_id] = None
        while len(self._handled) > HANDLED_KEPT:
            self._handled.popitem(last=False)
        self._dirty = True

    def _save_handled(self) -> None:
        if not getattr(self, "_dirty", False):
            return
        self._dirty = False
        try:
            durable_replace(self._handled_file(),
                            json.dumps(list(self._handled)).encode(), mode=0o600)
        except OSError as exc:
            log.warning("cannot write %s: %s", self._handled_file(), exc)

    # -- calls from podod's loop -------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, _T]) -> Awaitable[_T]:
        loop = self._loop
        if loop is None or self._client is None or self.state == "stopped" \
                or loop.is_closed():
            coro.close()
            raise SendError(f"the Matrix session of {self.user_id} is not running"
                            + (f" ({self.last_error})" if self.last_error else ""))
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def send(self, room_id: str, content: dict[str, Any],
                   event_type: str = "m.room.message") -> str:
        """Post ``content`` to ``room_id`` through the room's output queue; its event id."""
        return await self._call(self._queued(room_id, lambda: self._post(room_id, event_type,
                                                                          content)))

    async def redact(self, room_id: str, event_id: str, reason: str) -> bool:
        return await self._call(self._queued(room_id, lambda: self._redact(room_id, event_id,
                                                                            reason)))

    async def resolve(self, room: str) -> str:
        """A room id for a configured room id or alias, joining it if needed."""
        return await self._call(self._resolve(room))

    async def join(self, room_id: str) -> bool:
        return await self._call(self._join(room_id))

    async def direct_room(self, user_id: str) -> str:
        """A direct-message room with ``user_id`` (made once, encrypted when E2EE is on)."""
        return await self._call(self._direct_room(user_id))

    async def members(self, room_id: str) -> list[str]:
        return await self._call(self._members(room_id))

    async def attachment(self, room_id: str, event_id: str, sender: str,
                         max_bytes: int) -> bytes:
        """The file of the message ``event_id`` (an ``m.file``, decrypted when the room is
        encrypted), which ``sender`` must have posted; at most ``max_bytes``. Raises
        :class:`~podod.errors.UsageError` with the reason it cannot be had."""
        return await self._call(self._attachment(room_id, event_id, sender, max_bytes))

    # -- the work, in the session's thread ---------------------------------------------------

    async def _queued(self, room_id: str, work: Callable[[], Awaitable[_T]]) -> _T:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        queue = self._queues.get(room_id)
        if queue is None:
            queue = self._queues[room_id] = asyncio.Queue()
            self._workers[room_id] = asyncio.create_task(self._room_worker(queue))
        queue.put_nowait((work, future))
        return await asyncio.wrap_future(future)

    async def _room_worker(self, queue: asyncio.Queue[tuple[
            Callable[[], Awaitable[Any]], concurrent.futures.Future[Any]]]) -> None:
        while True:
            work, future = await queue.get()
            try:
                result = await work()
            except asyncio.CancelledError:
                future.cancel()
                queue.task_done()
                raise
            except Exception as exc:
                if not future.cancelled():
                    future.set_exception(exc)
            else:
                if not future.cancelled():
                    future.set_result(result)
            queue.task_done()

    async def _post(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        from nio import RoomSendError

        client = self._client
        assert client is not None
        if room_id in self.encrypted_rooms and not self.e2ee:
            self.send_failures += 1
            raise SendError(f"the room {room_id} is encrypted and end-to-end encryption is "
                            "not available to podod")
        # One transaction id for every attempt: the homeserver keeps one message of it,
        # so a retry after a lost answer does not post it twice.
        tx_id = uuid.uuid4().hex
        lost = 0
        for _attempt in range(SEND_RETRIES + TRANSPORT_RETRIES + 1):
            try:
                answer = await client.room_send(room_id, event_type, content, tx_id=tx_id,
                                                ignore_unverified_devices=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the homeserver away for a moment: try again
                lost += 1
                if lost > TRANSPORT_RETRIES:
                    self.send_failures += 1
                    raise SendError(f"posting to {room_id} failed: {type(exc).__name__}: "
                                    f"{exc}") from None
                await asyncio.sleep(2 ** lost * random.uniform(0.5, 1.0))
                continue
            if isinstance(answer, RoomSendError):
                retry = getattr(answer, "retry_after_ms", None)
                if answer.status_code == "M_LIMIT_EXCEEDED":
                    await asyncio.sleep((retry or 2000) / 1000)
                    continue
                self.send_failures += 1
                raise SendError(f"the homeserver refused the message to {room_id}: "
                                f"{answer.message}")
            self.sent += 1
            return str(answer.event_id)
        self.send_failures += 1
        raise SendError(f"the homeserver kept rate-limiting messages to {room_id}")

    async def _redact(self, room_id: str, event_id: str, reason: str) -> bool:
        from nio import RoomRedactError

        client = self._client
        assert client is not None
        answer = await client.room_redact(room_id, event_id, reason=reason)
        if isinstance(answer, RoomRedactError):
            log.warning("Matrix: cannot redact %s in %s: %s", event_id, room_id,
                        answer.message)
            return False
        return True

    async def _resolve(self, room: str) -> str:
        from nio import JoinError, RoomResolveAliasError

        client = self._client
        assert client is not None
        room_id = self.aliases.get(room, room)
        if room.startswith("#") and room not in self.aliases:
            answer = await client.room_resolve_alias(room)
            if isinstance(answer, RoomResolveAliasError):
                raise SendError(f"the Matrix room alias {room} cannot be resolved: "
                                f"{answer.message}")
            room_id = self.aliases[room] = answer.room_id
        if room_id not in client.rooms:
            joined = await client.join(room_id)
            if isinstance(joined, JoinError):
                raise SendError(f"{self.user_id} cannot join the Matrix room {room}: "
                                f"{joined.message}")
            self._joined_at.setdefault(room_id, time.time())
        return room_id

    async def _join(self, room_id: str) -> bool:
        from nio import JoinError

        client = self._client
        assert client is not None
        if room_id not in self.rooms:
            # A room podod is already in keeps its own start: an invite seen again after a
            # restart must not hide the messages sent while the join was answered.
            self._joined_at[room_id] = time.time()
        answer = await client.join(room_id)
        if isinstance(answer, JoinError):
            log.warning("Matrix: cannot join %s: %s", room_id, answer.message)
            return False
        return True

    async def _members(self, room_id: str) -> list[str]:
        from nio import JoinedMembersError

        client = self._client
        assert client is not None
        answer = await client.joined_members(room_id)
        if isinstance(answer, JoinedMembersError):
            raise SendError(f"cannot list the members of {room_id}: {answer.message}")
        return [m.user_id for m in answer.members]

    async def _attachment(self, room_id: str, event_id: str, sender: str,
                          max_bytes: int) -> bytes:
        from nio import (
            DownloadError,
            MegolmEvent,
            RoomEncryptedFile,
            RoomGetEventError,
            RoomMessageFile,
        )
        from nio.crypto.attachments import decrypt_attachment

        from podod.errors import UsageError

        client = self._client
        assert client is not None
        answer = await client.room_get_event(room_id, event_id)
        if isinstance(answer, RoomGetEventError):
            raise UsageError(f"the message this one replies to cannot be read: {answer.message}")
        event = answer.event
        if isinstance(event, MegolmEvent):
            try:
                event = client.decrypt_event(event)
            except Exception:
                raise UsageError("the file this message replies to cannot be decrypted by "
                                 "podod; send it again") from None
        if not isinstance(event, RoomMessageFile | RoomEncryptedFile):
            raise UsageError("this command reads a file: reply with it to a message that "
                             "holds the CSV file (attach the file, then reply to it)")
        if event.sender != sender:
            raise UsageError("the file must be one you posted yourself")
        info = event.source.get("content", {}).get("info") or {}
        size = info.get("size") if isinstance(info, dict) else None
        if isinstance(size, int) and size > max_bytes:
            raise UsageError(f"the file is {size} bytes; podod reads at most {max_bytes} "
                             "(socket.max_data_bytes)")
        downloaded = await client.download(mxc=event.url)
        if isinstance(downloaded, DownloadError):
            raise UsageError(f"the file cannot be downloaded: {downloaded.message}")
        body = bytes(downloaded.body)
        if len(body) > max_bytes:
            raise UsageError(f"the file is {len(body)} bytes; podod reads at most "
                             f"{max_bytes} (socket.max_data_bytes)")
        if isinstance(event, RoomEncryptedFile):
            try:
                body = await asyncio.to_thread(decrypt_attachment, body, event.key["k"],
                                               event.hashes["sha256"], event.iv)
            except Exception:
                raise UsageError("the encrypted file cannot be decrypted (its key or hash "
                                 "does not match)") from None
        return body

    async def _direct_room(self, user_id: str) -> str:
        from nio import RoomCreateError, RoomPreset

        client = self._client
        assert client is not None
        if not self._dm:
            stored = self._read_session().get("direct_rooms") or {}
            self._dm.update({str(k): str(v) for k, v in stored.items()})
        room_id = self._dm.get(user_id)
        if room_id is not None and room_id in client.rooms:
            members = await self._members(room_id)
            if set(members) <= {user_id, self.user_id}:
                return room_id
        state = [{"type": "m.room.encryption", "state_key": "",
                  "content": {"algorithm": "m.megolm.v1.aes-sha2"}}] if self.e2ee else []
        answer = await client.room_create(is_direct=True, invite=[user_id],
                                          preset=RoomPreset.trusted_private_chat,
                                          name="podod", initial_state=state)
        if isinstance(answer, RoomCreateError):
            raise SendError(f"cannot open a direct room with {user_id}: {answer.message}")
        room_id = answer.room_id
        self._dm[user_id] = room_id
        self._joined_at[room_id] = time.time()
        if self.e2ee:
            self.encrypted_rooms.add(room_id)
        data = self._read_session()
        data["direct_rooms"] = dict(self._dm)
        self._write_session(data)
        return room_id

    async def wait_joined(self, room_id: str, user_id: str, timeout: float) -> bool:
        """Wait until ``user_id`` joined ``room_id`` (a direct room's invitee)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(SendError):
                if user_id in await self.members(room_id):
                    return True
            await asyncio.sleep(0.5)
        return False

    # -- what status and /metrics show --------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "device_id": self.device_id,
                "homeserver": self.settings.homeserver, "state": self.state,
                "e2ee": self.e2ee, "rooms": dict(self.rooms),
                "encrypted_rooms": sorted(self.encrypted_rooms),
                "last_sync": self.last_sync or None,
                "sync_age": round(time.time() - self.last_sync, 3) if self.last_sync else None,
                "event_lag": round(self.event_lag, 3), "last_error": self.last_error,
                "sent": self.sent, "send_failures": self.send_failures}

    def handled(self) -> deque[str]:
        return deque(self._handled)


class _Fatal(Exception):
    """The session cannot go on (a refused token or login)."""
