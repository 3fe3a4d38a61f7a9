"""Live events of the REST API at ``/api/events``: a WebSocket (``{"action": "subscribe",
"events": ["queue_status", "server_health", "alerts", "audit"]}``) or Server-Sent Events
(``GET /api/events?events=alerts,audit`` with ``Accept: text/event-stream``).

One subscription per event type on the daemon's event bus feeds every client. Each client
has a bounded queue (``api.event_queue``); a client that does not keep up is disconnected,
never buffered without limit. What a client sees is filtered by its actor:

- ``alerts`` (an alert fired or resolved) and ``queue_status`` (the Postfix queue per
  server) and ``server_health`` (a server connected, disconnected, removed): admins and
  viewers see all; a domain-admin sees an alert only when it carries a ``domain`` label of
  theirs, and the queue and server events (they name no domain);
- ``audit`` (a request the bus handled: who, which command, the outcome): admins see all,
  anyone else only their own requests.

The caller is checked again every :data:`RECHECK` seconds and after a reload, so a token
removed from ``access`` (or a revoked key) ends its streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from podod.bus.context import Actor
from podod.events import AlertChanged, CommandCompleted, ConfigReloaded, Event, Subscription
from podod.samples import SamplesCollected
from podod.servers.events import ServerConnected, ServerDisconnected, ServerRemoved

if TYPE_CHECKING:
    from aiohttp import web

    from podod.frontends.api import ApiFrontend
    from podod.runtime import Runtime

log = logging.getLogger(__name__)

STREAMS = ("alerts", "audit", "queue_status", "server_health")
RECHECK = 30.0  # seconds between checks that a streaming caller is still allowed
_HEARTBEAT = 15.0


@dataclass(eq=False)
class Client:
    actor: Actor
    streams: set[str]
    queue: asyncio.Queue[dict[str, Any] | None]
    recheck: Any  # async () -> Actor
    slow: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)


def _event_payload(stream: str, event: Event) -> tuple[dict[str, Any], str | None]:
    """The JSON an event is sent as, and the domain it concerns (None: no domain)."""
    if isinstance(event, AlertChanged):
        data = asdict(event)
        return data, event.labels.get("domain")
    if isinstance(event, CommandCompleted):
        return {"command": event.command, "origin": event.origin, "actor": event.actor,
                "result": event.result, "duration_ms": round(event.duration * 1000, 1)}, None
    if isinstance(event, ServerConnected):
        return {"server": event.server, "state": "connected", "rtt": event.rtt}, None
    if isinstance(event, ServerDisconnected):
        return {"server": event.server, "state": "disconnected", "reason": event.reason}, None
    if isinstance(event, ServerRemoved):
        return {"server": event.server, "state": "removed"}, None
    if isinstance(event, SamplesCollected):
        queues = [{"queue": dict(s.labels).get("queue", ""), "series": s.series,
                   "value": s.value} for s in event.samples
                  if s.series.startswith("postfix_queue_")]
        return {"server": event.server, "queues": queues}, None
    return {}, None


def visible(actor: Actor, stream: str, event: Event, domain: str | None) -> bool:
    """Whether ``actor`` may see ``event`` of ``stream``."""
    if stream == "audit":
        return actor.role == "admin" or (isinstance(event, CommandCompleted)
                                         and event.actor == actor.name)
    if actor.role == "domain-admin" and stream == "alerts":
        return domain is not None and domain.lower() in actor.domains
    return True


class EventHub:
    def __init__(self, runtime: Runtime, api: ApiFrontend) -> None:
        self.runtime = runtime
        self.api = api
        self.clients: set[Client] = set()
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.disconnected_slow = 0

    async def start(self) -> None:
        events = self.runtime.events
        self._subs = [
            events.subscribe(AlertChanged, lambda e: self._fan("alerts", e), name="api-alerts"),
            events.subscribe(CommandCompleted, lambda e: self._fan("audit", e),
                             name="api-audit"),
            events.subscribe((ServerConnected, ServerDisconnected, ServerRemoved),
                             lambda e: self._fan("server_health", e), name="api-servers"),
            events.subscribe(SamplesCollected, self._samples, name="api-queues"),
            events.subscribe(ConfigReloaded, self._reloaded, name="api-events-reload"),
        ]
        self._spawn(self._recheck_loop())

    async def stop(self) -> None:
        for sub in self._subs:
            self.runtime.events.unsubscribe(sub)
        self._subs = []
        for client in list(self.clients):
            self._close(client)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _samples(self, event: SamplesCollected) -> None:
        if any(s.series.startswith("postfix_queue_") for s in event.samples):
            self._fan("queue_status", event)

    def _fan(self, stream: str, event: Event) -> None:
        if not self.clients:
            return
        payload, domain = _event_payload(stream, event)
        message = {"type": "event", "stream": stream, "time": time.time(), "event": payload}
        for client in list(self.clients):
            if stream not in client.streams or not visible(client.actor, stream, event,
                                                           domain):
                continue
            try:
                client.queue.put_nowait(message)
            except asyncio.QueueFull:
                client.slow = True
                self.disconnected_slow += 1
                log.info("api: %s did not keep up with its events; disconnected",
                         client.actor.name)
                self._close(client)

    def _close(self, client: Client) -> None:
        """Stop delivering to ``client``: what it has not read is dropped, and its sender
        ends at once at the marker (None) left in its queue."""
        self.clients.discard(client)
        client.closed.set()
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(None)

    def _reloaded(self, event: ConfigReloaded) -> None:
        self._spawn(self._recheck())

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(RECHECK)
            await self._recheck()

    async def _recheck(self) -> None:
        for client in list(self.clients):
            try:
                client.actor = await client.recheck()
            except Exception:
                log.info("api: %s may no longer follow events; disconnected",
                         client.actor.name)
                self._close(client)

    # -- HTTP ------------------------------------------------------------------------------------

    def _client(self, actor: Actor, request: web.Request, streams: set[str]) -> Client:
        from podod.frontends.api import Problem

        if len(self.clients) >= self.runtime.config.api.max_event_clients:
            raise Problem(503, "too many clients follow events already (api."
                          "max_event_clients); try again later", "unavailable")
        api = self.api

        async def recheck() -> Actor:
            auth = api.auth
            if auth is not None:
                actor: Actor = await auth.authenticate(request)
                return actor
            bus = self.runtime.bus
            assert bus is not None
            token = request.headers.get("Authorization", "").partition(" ")[2].strip()
            return bus.identify("api", token)

        client = Client(actor, streams, asyncio.Queue(self.runtime.config.api.event_queue),
                        recheck)
        self.clients.add(client)
        return client

    @staticmethod
    def _streams(value: Any) -> set[str]:
        from podod.frontends.api import Problem

        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not value or \
                not all(isinstance(v, str) for v in value):
            raise Problem(400, "events must name a list of streams: "
                          + ", ".join(STREAMS), "usage")
        unknown = [v for v in value if v not in STREAMS]
        if unknown:
            raise Problem(400, f"there is no event stream '{unknown[0][:40]}' (streams: "
                          f"{', '.join(STREAMS)})", "usage")
        return set(value)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        actor = await self.api.actor(request, ["(events)"])
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, actor)
        streams = self._streams(request.query.get("events", ",".join(STREAMS)))
        return await self._sse(request, actor, streams)

    async def _sse(self, request: web.Request, actor: Actor,
                   streams: set[str]) -> web.StreamResponse:
        from aiohttp import web

        client = self._client(actor, request, streams)
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no"})
        try:
            await response.prepare(request)
            await response.write(b": podod events " + ",".join(sorted(streams)).encode()
                                 + b"\n\n")
            while True:
                try:
                    message = await asyncio.wait_for(client.queue.get(), _HEARTBEAT)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if message is None:
                    break
                data = json.dumps(message, ensure_ascii=False, default=str)
                await response.write(f"event: {message['stream']}\ndata: {data}\n\n"
                                     .encode())
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._close(client)
        return response

    async def _websocket(self, request: web.Request, actor: Actor) -> web.StreamResponse:
        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse(heartbeat=_HEARTBEAT, max_msg_size=65_536)
        await ws.prepare(request)
        client = self._client(actor, request, set())

        async def pump() -> None:
            while True:
                message = await client.queue.get()
                if message is None:
                    break
                await ws.send_json(message)
            reason = b"too slow" if client.slow else b"closed"
            await ws.close(code=1008 if client.slow else 1000, message=reason)

        sender = asyncio.get_running_loop().create_task(pump())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                await ws.send_json(self._command(client, msg.data))
        finally:
            self._close(client)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            await ws.close()
        return ws

    def _command(self, client: Client, text: str) -> dict[str, Any]:
        from podod.frontends.api import Problem

        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            return {"type": "error", "detail": "a message must be a JSON object"}
        if not isinstance(obj, dict) or obj.get("action") not in ("subscribe", "unsubscribe"):
            return {"type": "error", "detail": "the action must be subscribe or unsubscribe"}
        try:
            streams = self._streams(obj.get("events"))
        except Problem as exc:
            return {"type": "error", "detail": exc.message}
        if obj["action"] == "subscribe":
            client.streams |= streams
        else:
            client.streams -= streams
        return {"type": "subscribed", "events": sorted(client.streams)}

    def openapi(self) -> dict[str, Any]:
        return {"get": {
            "operationId": "get_events", "tags": ["events"],
            "summary": "Live events (Server-Sent Events, or a WebSocket)",
            "description": "With Accept: text/event-stream, a stream of the events named in "
                           "?events= (default: all). As a WebSocket, send {\"action\": "
                           "\"subscribe\", \"events\": [...]}. Streams: "
                           + ", ".join(STREAMS) + ". A client that does not keep up is "
                           "disconnected.",
            "parameters": [{"name": "events", "in": "query", "required": False,
                            "schema": {"type": "string",
                                       "pattern": "^(" + "|".join(STREAMS) + ")(,("
                                       + "|".join(STREAMS) + "))*$"}}],
            "responses": {"200": {"description": "the event stream", "content": {
                "text/event-stream": {"schema": {"type": "string"}}}},
                "default": {"description": "a refusal", "content": {
                    "application/problem+json": {
                        "schema": {"$ref": "#/components/schemas/Problem"}}}}}}}
