"""The REST API (issue 15): the bus's third frontend, on its own aiohttp runner.

Every route of :data:`podod.frontends.api_routes.ROUTES` runs one bus command. A request is
translated, never interpreted: the path's variables, the query (GET) and the JSON body are
one JSON object of the command's parameters, checked by the bus's JSON binding
(:func:`podod.bus.binding.bind_json`, the same sentences as podoctl's), then sent through
:meth:`CommandBus.execute` as the argv that binds to exactly those values
(:func:`podod.bus.binding.argv_for`), so audit records, plans and their confirmation are the
same as podoctl's. The reply's status gives the HTTP status (:mod:`podod.bus.status`); a
refusal is an RFC 9457 ``application/problem+json`` document with the bus's sentence.

Who asks: ``runtime.api_auth`` when a daemon has one (accounts, JWT, API keys:
``podod.api.auth``), else ``Authorization: Bearer TOKEN`` checked against
``access.api_tokens`` by the bus (``bus.identify("api", token)``). docs/api.md describes
the interface.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import ssl
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from podod.bus import binding
from podod.bus.context import Actor, Naming, Reply, Request
from podod.bus.grammar import ParseError
from podod.bus.paging import INLINE_ROWS
from podod.bus.spec import CommandSpec
from podod.bus.status import STATUSES, http_status
from podod.errors import PermissionDenied, PododError, RateLimited, Unauthenticated
from podod.frontends.api_routes import ROUTES, Route

if TYPE_CHECKING:
    from aiohttp import web

    from podod.api.settings import ApiSettings
    from podod.config import Config
    from podod.plugins import Registry
    from podod.runtime import Runtime

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
PROBLEM_BASE = "https://podod.invalid/problems/"  # type URIs: names, never fetched
_TEXT_TYPES = ("text/csv", "text/plain")
_LATENCY_WINDOW = 1024  # requests per route kept for the p99 gauge
_UNMATCHED = "(unmatched)"


class Problem(Exception):
    """A refusal the frontend itself answers (before or around the bus)."""

    def __init__(self, status: int, message: str, code: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def _title(status: int) -> str:
    for word, info in STATUSES.items():
        if info.http_status == status:
            return info.meaning if word != "ok" else "ok"
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def problem_body(status: int, message: str, code: str, instance: str,
                 request_id: str | None = None, word: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem document: ``type`` names the error code, ``detail`` is the bus's
    sentence, ``status`` the HTTP status; ``code``, ``podod_status`` and ``request_id`` are
    extensions."""
    body: dict[str, Any] = {"type": PROBLEM_BASE + code, "title": _title(status),
                            "status": status, "detail": message, "instance": instance,
                            "code": code}
    if word is not None:
        body["podod_status"] = word
    if request_id is not None:
        body["request_id"] = request_id
    return body


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, default=str, ensure_ascii=False).encode("utf-8", "replace")


# -- route metrics ---------------------------------------------------------------------------

@dataclass
class ApiStats:
    """What /metrics shows of the API: requests by route, method and status, their summed
    duration, and each route's p99 over its last requests."""

    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    recent: dict[tuple[str, str], deque[float]] = field(default_factory=dict)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests[(route, method, str(status))] += 1
        key = (route, method)
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds
        window = self.recent.get(key)
        if window is None:
            window = self.recent[key] = deque(maxlen=_LATENCY_WINDOW)
        window.append(seconds)

    def p99(self, key: tuple[str, str]) -> float:
        values = sorted(self.recent.get(key, ()))
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(len(values) * 0.99))]


# -- naming: how a reply names a command over HTTP -------------------------------------------

def http_naming(routes: Iterable[Route], commands: dict[str, CommandSpec]) -> Naming:
    """``backup restore 2f3a`` → ``POST /api/backups/2f3a/restore``; a command without a
    route: ``POST /api/commands {"command": "..."}``."""
    by_command: dict[str, Route] = {}
    for route in routes:
        if route.command in commands and route.command not in by_command:
            by_command[route.command] = route

    def spell(line: str) -> str:
        words = line.split()
        for size in (3, 2, 1):
            name = " ".join(words[:size])
            if name in commands:
                rest = words[size:]
                route = by_command.get(name)
                spec = commands[name]
                positionals = [binding.json_key(p) for p in spec.params if p.positional]
                if route is not None and rest and all(
                        not w.startswith("-") for w in rest):
                    values = dict(zip(positionals, rest, strict=False))
                    path = route.path
                    for var, key in route.path_params.items():
                        if key not in values:
                            break
                        path = path.replace("{" + var + "}", values[key])
                    else:
                        return f"{route.method} {path}"
                if route is not None and not rest and not route.path_params:
                    return f"{route.method} {route.path}"
                return f'POST /api/commands {{"command": "{name}", ...}}'
        return f"POST /api/commands {{\"command\": \"{line}\"}}"

    return Naming(prefix="", spell=spell)


# -- the frontend ----------------------------------------------------------------------------

class ApiFrontend:
    """The ``api`` component: its own aiohttp runner, separate from /metrics."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.stats = ApiStats()
        self.events: Any = None  # podod.frontends.api_events.EventHub, made at start
        self._runner: web.AppRunner | None = None
        self._bound: tuple[str, int] | None = None
        self._tls: ssl.SSLContext | None = None
        self._openapi: bytes | None = None
        self._docs: bytes | None = None
        self._routes: list[Route] = []
        self._naming: Naming | None = None
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []

    @property
    def settings(self) -> ApiSettings:
        return self.runtime.config.api

    @property
    def address(self) -> tuple[str, int] | None:
        return self._bound

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        from podod.frontends.api_events import EventHub

        commands = self.runtime.registry.commands
        self._routes = [r for r in ROUTES if r.command in commands]
        self._naming = http_naming(self._routes, commands)
        self._trust(self.settings)
        self.events = EventHub(self.runtime, self)
        await self.events.start()
        await self._listen()

    async def stop(self) -> None:
        if self.events is not None:
            await self.events.stop()
        await self._close()

    async def reload(self, config: Config) -> None:
        """A reload (SIGHUP) reads the certificate and key again (a renewed certificate needs
        no restart) and moves the listener when its address or port changed."""
        self._trust(config.api)
        if self._tls is not None and config.api.tls is not None:
            try:
                self._tls.load_cert_chain(str(config.api.tls.cert_file),
                                          str(config.api.tls.key_file))
                log.info("api: certificate reloaded from %s", config.api.tls.cert_file)
            except (OSError, ssl.SSLError) as exc:
                log.error("api: keeping the old certificate: %s cannot be read (%s)",
                          config.api.tls.cert_file, exc)
        wanted = (config.api.listen, config.api.port)
        if self._bound is not None and wanted[0] == self._bound[0] and \
                wanted[1] in (0, self._bound[1]) and (config.api.tls is None) == \
                (self._tls is None):
            return
        await self._close()
        await self._listen()

    def _trust(self, settings: ApiSettings) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False)
                          for n in settings.trusted_proxies]

    def _ssl_context(self) -> ssl.SSLContext | None:
        tls = self.settings.tls
        if tls is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise RuntimeError(f"api.tls: cannot read the certificate {tls.cert_file} or its "
                               f"key {tls.key_file} ({exc})") from None
        return context

    def app(self) -> web.Application:
        from aiohttp import web

        settings = self.settings
        app = web.Application(
            client_max_size=max(settings.max_body_bytes, settings.max_data_bytes),
            middlewares=[self._middleware])
        for route in self._routes:
            app.router.add_route(route.method, route.path, self._handler(route))
        app.router.add_post("/api/plans/{id}", self._confirm)
        app.router.add_post("/api/commands", self._command)
        app.router.add_get("/api/openapi.json", self._openapi_json)
        app.router.add_get("/api/docs", self._docs_page)
        app.router.add_get("/api/events", self.events.handle)
        auth = self.auth
        if auth is not None:
            for definition in auth.routes():
                app.router.add_route(definition.method, definition.path, definition.handler)
        return app

    async def _listen(self) -> None:
        from aiohttp import web

        settings = self.settings
        self._tls = self._ssl_context()
        # On a stop, requests in flight get 8 s to finish (the daemon gives a component
        # 10 s to stop), as the socket's do; event streams are ended first.
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                               shutdown_timeout=8.0,
                               logger=_HttpLog(logging.getLogger("podod.frontends.api.http"),
                                               {}))
        await runner.setup()
        from podod.frontends.listen import start_site

        self._bound = await start_site(runner, settings.listen, settings.port,
                                       "api.listen/port", self._tls)
        self._runner = runner
        log.info("serving the REST API on %s://%s:%d/api", self.scheme, *self._bound)

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._bound = None

    # -- the edge: who, from where ------------------------------------------------------------

    @property
    def auth(self) -> Any:
        return getattr(self.runtime, "api_auth", None)

    def client_address(self, request: web.Request) -> str:
        """The client's address: the peer, or, when the peer is a trusted proxy, the last
        address of X-Forwarded-For that is not itself a trusted proxy."""
        peer = request.remote or ""
        if not self._networks or not self._trusted(peer):
            return peer
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # a malformed header from behind the proxy: the proxy
        return hops[0] if hops else peer

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    async def actor(self, request: web.Request, argv: list[str]) -> Actor:
        """The caller as an actor, admitted by the rate limit; a refusal is audited and
        raised as a :class:`Problem`."""
        bus = self.runtime.bus
        assert bus is not None
        auth = self.auth
        token = ""
        try:
            if auth is not None:
                actor: Actor = await auth.authenticate(request)
            else:
                scheme, _, token = request.headers.get("Authorization", "").partition(" ")
                token = token.strip()
                if scheme.lower() != "bearer" or not token:
                    raise Unauthenticated("the request needs an 'Authorization: Bearer TOKEN' "
                                          "header with an API token")
                actor = bus.identify("api", token)
        except (Unauthenticated, PermissionDenied) as exc:
            name = bus.refused_name("api", token)
            reply = await bus.refuse(name, "api", argv, exc)
            raise Problem(http_status(reply.resolved_status()), reply.message, reply.code,
                          {"WWW-Authenticate": 'Bearer realm="podod"'}
                          if isinstance(exc, Unauthenticated) else {}) from None
        try:
            bus.admit(actor)
        except RateLimited as exc:
            await bus.refuse(actor.name, "api", argv, exc)
            raise Problem(429, exc.message, exc.code) from None
        return actor

    # -- middleware: problems, CORS, metrics ---------------------------------------------------

    @property
    def _middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        from aiohttp import web

        @web.middleware
        async def middleware(request: web.Request,
                             handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                             ) -> web.StreamResponse:
            started = time.monotonic()
            info = request.match_info.route.resource
            route = info.canonical if info is not None else _UNMATCHED
            origin = request.headers.get("Origin")
            allowed = origin is not None and origin.rstrip("/").lower() in \
                self.settings.cors.allow_origins
            try:
                if request.method == "OPTIONS" and origin is not None and \
                        "Access-Control-Request-Method" in request.headers:
                    response: web.StreamResponse = self._preflight(request, allowed)
                else:
                    response = await handler(request)
            except Problem as exc:
                response = self.problem(request, exc.status, exc.message, exc.code,
                                        headers=exc.headers)
            except PododError as exc:
                response = self.problem(request, http_status(exc.status), exc.message,
                                        exc.code, word=exc.status)
            except web.HTTPException as exc:
                code = {404: "not-found", 405: "method-not-allowed",
                        413: "too-large"}.get(exc.status, "http-error")
                message = {404: f"there is no {request.path} in the API (see /api/docs)",
                           405: f"{request.path} does not take {request.method}",
                           413: f"the request is larger than "
                                f"{max(self.settings.max_body_bytes, self.settings.max_data_bytes)}"
                                " bytes; refused"}.get(exc.status, exc.reason)
                headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
                response = self.problem(request, exc.status, message, code, headers=headers)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("api: %s %s failed", request.method, request.path)
                response = self.problem(request, 500, "the request failed on an internal "
                                        "error; see the daemon's log", "internal")
            if not response.prepared:  # a stream (events) has sent its headers
                if allowed and origin is not None:
                    response.headers["Access-Control-Allow-Origin"] = origin
                    response.headers["Vary"] = "Origin"
                response.headers.setdefault("Cache-Control", "no-store")
                response.headers.setdefault("X-Content-Type-Options", "nosniff")
            if route != "/api/events":
                self.stats.observe(route, request.method, response.status,
                                   time.monotonic() - started)
            return response

        return middleware

    def _preflight(self, request: web.Request, allowed: bool) -> web.StreamResponse:
        from aiohttp import web

        if not allowed:
            raise Problem(403, "this origin may not use the API from a browser (api.cors."
                          "allow_origins)", "cors-refused")
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": str(self.settings.cors.max_age)})

    def problem(self, request: web.Request, status: int, message: str, code: str, *,
                word: str | None = None, request_id: str | None = None,
                headers: dict[str, str] | None = None) -> web.Response:
        from aiohttp import web

        body = problem_body(status, message, code, request.path, request_id, word)
        return web.Response(status=status, body=_encode(body), content_type=PROBLEM,
                            headers=headers)

    # -- requests -------------------------------------------------------------------------------

    def _handler(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._run_route(request, route)
        return handle

    async def _body(self, request: web.Request, spec: CommandSpec | None
                    ) -> tuple[dict[str, Any], str | None]:
        """The JSON object of a request's body (empty when there is none), or, for a command
        that reads data, a text/csv or text/plain body as that data."""
        if not request.body_exists:
            return {}, None
        ctype = request.content_type
        size = request.content_length
        if spec is not None and spec.stdin_kind == "data" and ctype in _TEXT_TYPES:
            limit = self.settings.max_data_bytes
            raw = await request.read()
            if len(raw) > limit:
                raise Problem(413, f"the data is larger than {limit} bytes; refused",
                              "too-large")
            try:
                return {}, raw.decode("utf-8")
            except UnicodeDecodeError:
                raise Problem(400, "the data is not UTF-8 text", "bad-request") from None
        limit = self.settings.max_body_bytes
        if size is not None and size > limit:
            raise Problem(413, f"the request body is larger than {limit} bytes; refused",
                          "too-large")
        raw = await request.read()
        if len(raw) > limit:
            raise Problem(413, f"the request body is larger than {limit} bytes; refused",
                          "too-large")
        if not raw.strip():
            return {}, None
        if ctype not in ("application/json", "") and not ctype.endswith("+json"):
            what = " or text/csv data" if spec is not None and spec.stdin_kind == "data" \
                else ""
            raise Problem(415, f"the body must be a JSON object (Content-Type: "
                          f"application/json){what}, not {ctype}", "unsupported-media-type")
        try:
            obj = (await asyncio.to_thread(json.loads, raw) if len(raw) > 65_536
                   else json.loads(raw))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise Problem(400, "the body is not valid JSON", "bad-request") from None
        except RecursionError:
            raise Problem(400, "the body is nested too deeply", "bad-request") from None
        except ValueError:
            raise Problem(400, "the body holds a value that cannot be read",
                          "bad-request") from None
        if not isinstance(obj, dict):
            raise Problem(400, "the body must be a JSON object of the command's parameters",
                          "bad-request")
        try:
            _encode(obj)  # a lone surrogate such as "\ud800"
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise Problem(400, "the body holds text that is not valid Unicode",
                          "bad-request") from None
        return obj, None

    def _query(self, request: web.Request, spec: CommandSpec, route: Route | None
               ) -> dict[str, Any]:
        params = {binding.json_key(p): p for p in spec.params}
        renamed = route.renamed if route is not None else {}
        out: dict[str, Any] = {}
        for name in request.query:
            key = renamed.get(name, name)
            values = request.query.getall(name)
            if key == "execute_real":
                out[key] = values[-1]
                continue
            param = params.get(key)
            if param is not None and param.kind == "list":
                out[key] = list(values)
            elif len(values) > 1:
                raise Problem(400, f"{spec.name}: ?{name}= is given {len(values)} times; give "
                              "it once", "usage")
            else:
                out[key] = values[0]
        return out

    async def _run_route(self, request: web.Request, route: Route) -> web.StreamResponse:
        bus = self.runtime.bus
        assert bus is not None
        spec = self.runtime.registry.commands[route.command]
        words = list(spec.words)
        actor = await self.actor(request, words)
        body, data = ({}, None) if not route.reads_body else await self._body(request, spec)
        query = self._query(request, spec, route)
        for key in query:
            if key in body:
                raise Problem(400, f"{spec.name}: '{key}' is given in the query and in the "
                              "body; give it once", "usage")
        given = {**query, **body}
        if route.only is not None:
            extra = [k for k in given if k not in route.only and k != "execute_real"]
            if extra:
                raise Problem(400, f"{request.method} {route.path} takes only "
                              f"{', '.join(route.only)}, not '{extra[0][:40]}'", "usage")
        for var, key in route.path_params.items():
            if key in given:
                raise Problem(400, f"{spec.name}: '{key}' is given by the path "
                              f"({{{var}}}); leave it out of the request", "usage")
            given[key] = request.match_info[var]
        return await self._run(request, spec, given, actor, data)

    async def _command(self, request: web.Request) -> web.StreamResponse:
        """POST /api/commands {"command": "user create", "params": {...}, "execute_real":
        bool, "password": "..."}: any command, plugins' too. A command that reads data takes
        it as a text/csv (or text/plain) body, its name and parameters then in the query."""
        actor = await self.actor(request, [])
        data: str | None = None
        if request.content_type in _TEXT_TYPES and request.body_exists:
            command: Any = request.query.get("command")
            try:
                spec = self._find(command)
            except ParseError as exc:
                return await self._refused(request, actor, [], exc)
            if spec.stdin_kind != "data":
                raise Problem(415, f"{spec.name} reads no data; send a JSON object "
                              "(Content-Type: application/json)", "unsupported-media-type")
            _, data = await self._body(request, spec)
            params: Any = {k: v for k, v in self._query(request, spec, None).items()
                           if k != "command"}
            obj: dict[str, Any] = {"execute_real": params.pop("execute_real")} \
                if "execute_real" in params else {}
        else:
            obj, _ = await self._body(request, None)
            if request.query:
                raise Problem(400, "POST /api/commands takes its command and parameters in "
                              "the JSON body", "usage")
            command = obj.get("command")
            params = obj.get("params")
            extra = [k for k in obj if k not in ("command", "params", "execute_real",
                                                 "password")]
            if extra:
                raise Problem(400, f"unknown key '{extra[0][:40]}' (keys: command, params, "
                              "execute_real, password)", "usage")
            if params is not None and not isinstance(params, dict):
                raise Problem(400, "'params' must be a JSON object of the command's "
                              "parameters", "usage")
        try:
            spec = self._find(command)
        except ParseError as exc:
            return await self._refused(request, actor, [], exc)
        given = dict(params or {})
        for key in ("execute_real", "password"):
            if key in obj:
                given[key] = obj[key]
        return await self._run(request, spec, given, actor, data, _streams(request))

    def _find(self, command: Any) -> CommandSpec:
        """The command a request names (the grammar's sentence for an unknown one)."""
        from podod.bus.grammar import find_command

        if not isinstance(command, str) or not command.strip() or "\x00" in command or \
                any(w.startswith("-") for w in command.split()):
            raise ParseError("'command' must be a command's name, e.g. 'user list'")
        spec, rest = find_command(command.split(), self.runtime.registry.commands)
        if rest:
            raise ParseError(f"unknown command '{command[:60]}'; try 'help' for the list of "
                             "commands", "unknown command")
        return spec

    async def _confirm(self, request: web.Request) -> web.StreamResponse:
        bus = self.runtime.bus
        assert bus is not None
        actor = await self.actor(request, ["confirm"])
        body, _ = await self._body(request, None)
        if body:
            raise Problem(400, "confirming a plan takes no parameters", "usage")
        plan = request.match_info["id"]
        spec = self.runtime.registry.commands["confirm"]
        return await self._run(request, spec, {"plan": plan}, actor, None, _streams(request))

    async def _refused(self, request: web.Request, actor: Actor, argv: list[str],
                       exc: PododError) -> web.StreamResponse:
        bus = self.runtime.bus
        assert bus is not None
        reply = await bus.refuse(actor.name, "api", argv, exc)
        return self._respond(request, reply, None)

    async def _run(self, request: web.Request, spec: CommandSpec, given: dict[str, Any],
                   actor: Actor, data: str | None, stream: bool = False
                   ) -> web.StreamResponse:
        """Run one command; ``stream``: answer its progress as Server-Sent Events (the
        routes that offer it, when the client asks with ``Accept: text/event-stream``)."""
        bus = self.runtime.bus
        assert bus is not None
        real = given.pop("execute_real", None)
        if real is not None and not isinstance(real, bool):
            if isinstance(real, str) and real.lower() in ("true", "false"):
                real = real.lower() == "true"
            else:
                return await self._refused(request, actor, list(spec.words), ParseError(
                    f"{spec.name}: execute_real must be true or false"))
        stdin = data
        secret_key = secret_name(spec)
        if secret_key is not None:
            if spec.stdin_option is not None and spec.stdin_option in given:
                return await self._refused(request, actor, list(spec.words), ParseError(
                    f"{spec.name}: give the password as '{secret_key}', not "
                    f"'{spec.stdin_option}'"))
            secret = given.pop(secret_key, None)
            if secret is not None:
                if not isinstance(secret, str):
                    return await self._refused(request, actor, list(spec.words), ParseError(
                        f"{spec.name}: {secret_key} must be text"))
                stdin = secret
                if spec.stdin_option is not None:
                    given[spec.stdin_option] = True
        try:
            binding.bind_json(spec, given)
            argv = binding.argv_for(spec, given)
        except ParseError as exc:
            return await self._refused(request, actor, list(spec.words), exc)
        assert self._naming is not None
        bus_request = Request(argv=argv, actor=actor, origin="api",
                              execute_real=bool(real) and spec.mutating, stdin=stdin,
                              naming=self._naming)
        if stream:
            return await self._streamed(request, bus_request, spec.name)
        reply = await bus.execute(bus_request)
        return await self._reply(request, reply, bus_request.id)

    async def _streamed(self, request: web.Request, bus_request: Request, name: str
                        ) -> web.StreamResponse:
        """The command's progress as Server-Sent Events, then its reply (or problem) as the
        last event, with the body a plain request gets (frontends/api_progress.py)."""
        from aiohttp import web

        from podod.frontends.api_progress import STREAM, CommandStream

        bus = self.runtime.bus
        assert bus is not None
        headers = {"Content-Type": STREAM, "Cache-Control": "no-store",
                   "X-Content-Type-Options": "nosniff", "X-Accel-Buffering": "no"}
        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/").lower() in \
                self.settings.cors.allow_origins:
            headers |= {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        events = CommandStream(response)
        events.start()
        try:
            # the command's declared name only: never a word of the request (a line break
            # in it would start an event of its own)
            await response.write(b": podod command " + name.encode() + b"\n\n")
            try:
                reply = await bus.execute(bus_request, events.progress)
                status, body = await self._reply_body(request, reply, bus_request.id)
            except Exception:  # the headers are sent: the failure is the last event
                log.exception("api: %s %s failed", request.method, request.path)
                status, body = 500, _encode(problem_body(
                    500, "the request failed on an internal error; see the daemon's log",
                    "internal", request.path, bus_request.id))
            await events.finish("reply" if status < 300 else "problem", body)
        finally:
            events.close()
        return response

    def _respond(self, request: web.Request, reply: Reply, request_id: str | None
                 ) -> web.Response:
        status = reply.resolved_status()
        return self.problem(request, http_status(status), reply.message, reply.code,
                            word=status, request_id=request_id)

    async def _reply(self, request: web.Request, reply: Reply, request_id: str
                     ) -> web.StreamResponse:
        from aiohttp import web

        if not reply.ok:
            return self._respond(request, reply, request_id)
        _status, body = await self._reply_body(request, reply, request_id)
        return web.Response(body=body, content_type="application/json")

    async def _reply_body(self, request: web.Request, reply: Reply, request_id: str
                          ) -> tuple[int, bytes]:
        """The HTTP status and JSON body of a reply: the reply itself (200), or its problem
        document."""
        if not reply.ok:
            status = reply.resolved_status()
            code = http_status(status)
            return code, _encode(problem_body(code, reply.message, reply.code, request.path,
                                              request_id, status))
        obj = reply.to_dict()
        obj.pop("table", None)  # what a terminal shows; data holds the same
        obj["request_id"] = request_id
        if reply.page is not None:
            obj["page"] = self._page(request, reply.page)
            command = reply.page.get("next")
            if isinstance(command, str) and command != obj["page"].get("next"):
                obj["notes"] = [n.replace(command, obj["page"]["next"]) for n in reply.notes]
        rows = len(reply.data) if isinstance(reply.data, list) else 0
        body = await asyncio.to_thread(_encode, obj) if rows > INLINE_ROWS else _encode(obj)
        return 200, body

    def _page(self, request: web.Request, page: dict[str, Any]) -> dict[str, Any]:
        """The next page as a URL of this API (the bus names a podoctl command)."""
        out = dict(page)
        cursor = "after" if "after" in page else "before" if "before" in page else None
        if cursor is None:
            return out
        query = [(k, v) for k, v in request.query.items() if k != cursor]
        query.append((cursor, str(page[cursor])))
        out["next"] = f"{request.path}?{urlencode(query)}"
        return out

    # -- the OpenAPI document and its page ----------------------------------------------------

    def openapi(self) -> dict[str, Any]:
        from podod.frontends.api_openapi import build_openapi

        return build_openapi(self._routes, self.runtime.registry.commands, self.auth,
                             self.events)

    async def _openapi_json(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        if self._openapi is None:
            self._openapi = _encode(self.openapi())
        return web.Response(body=self._openapi, content_type="application/json")

    async def _docs_page(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        from podod.frontends.api_openapi import docs_page

        if self._docs is None:
            self._docs = docs_page(self.openapi()).encode()
        return web.Response(body=self._docs, content_type="text/html", charset="utf-8",
                            headers={"Content-Security-Policy":
                                     "default-src 'none'; style-src 'unsafe-inline'"})


class _HttpLog(logging.LoggerAdapter):
    """aiohttp's server log: a request that is not valid HTTP (a header that does not parse)
    is the client's mistake, answered 400 by aiohttp, and logged in one line, never with a
    traceback a client could fill the log with; anything else keeps its traceback."""

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kw: Any) -> None:
        from aiohttp.http_exceptions import HttpProcessingError

        if isinstance(exc_info, HttpProcessingError):
            where = args[0] if args else "?"
            self.logger.info("api: refused a malformed HTTP request from %s: %s", where,
                             str(exc_info.message)[:200].replace("\n", " "))
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kw)


def _streams(request: web.Request) -> bool:
    """The client asks for the command's progress as events (``Accept:
    text/event-stream``); only the routes that run any command or a plan offer it."""
    from podod.frontends.api_progress import wants_stream

    return wants_stream(request.headers.get("Accept", ""))


def secret_name(spec: CommandSpec) -> str | None:
    """The JSON key a command's secret standard input is given as over HTTP: its stdin
    option without ``_stdin`` (``password_stdin`` → ``password``), or ``secret``."""
    if spec.stdin_kind != "secret":
        return None
    if spec.stdin_option:
        return spec.stdin_option.removesuffix("_stdin") or "secret"
    return "secret"


def factory(runtime: Runtime) -> ApiFrontend | None:
    if not runtime.config.api.enabled:
        return None
    return ApiFrontend(runtime)


def setup(registry: Registry) -> None:
    registry.component("api", factory)


__all__ = ["ApiFrontend", "Problem", "problem_body", "setup"]
