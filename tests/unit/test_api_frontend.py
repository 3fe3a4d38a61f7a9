"""The REST API frontend's own pieces, without a daemon: the client address behind trusted
proxies, the problem document, how replies name commands over HTTP, the OpenAPI body
schemas, and a slow event client being dropped instead of buffered."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from podod.builtins import BUILTIN_MODULES
from podod.bus.context import Actor
from podod.config import Config
from podod.events import CommandCompleted
from podod.frontends.api import ApiFrontend, http_naming, problem_body
from podod.frontends.api_events import Client, EventHub
from podod.frontends.api_openapi import body_schema
from podod.frontends.api_routes import ROUTES
from podod.plugins import Registry, load_builtins

REGISTRY = Registry()
load_builtins(REGISTRY, BUILTIN_MODULES)


def frontend(**api: Any) -> ApiFrontend:
    config = Config.model_validate({"api": {"enabled": True, **api}})
    runtime = SimpleNamespace(config=config, registry=REGISTRY, bus=None, events=None)
    front = ApiFrontend(runtime)  # type: ignore[arg-type]
    front._trust(config.api)
    return front


def request(peer: str, forwarded: str | None = None) -> Any:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: \
        (peer, 40000) if name == "peername" else default
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    return make_mocked_request("GET", "/api/users", headers=headers, transport=transport)


@pytest.mark.parametrize(("peer", "forwarded", "client"), [
    ("203.0.113.9", None, "203.0.113.9"),
    ("203.0.113.9", "198.51.100.7", "203.0.113.9"),  # not a trusted proxy: header ignored
    ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
    ("127.0.0.1", "192.0.2.66, 198.51.100.7", "198.51.100.7"),  # the client can prepend
    ("127.0.0.1", "198.51.100.7, 10.1.2.3", "198.51.100.7"),  # a chain of own proxies
    ("127.0.0.1", "not-an-address", "127.0.0.1"),
    ("127.0.0.1", None, "127.0.0.1"),
])
def test_the_client_address_believes_forwarded_for_only_from_trusted_proxies(
        peer: str, forwarded: str | None, client: str) -> None:
    front = frontend(trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
    assert front.client_address(request(peer, forwarded)) == client


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert frontend().client_address(request("127.0.0.1", "198.51.100.7")) == "127.0.0.1"


def test_a_problem_document_names_its_code_status_and_sentence() -> None:
    body = problem_body(404, "there is no mailbox x@example.com", "not-found",
                        "/api/users/x@example.com", "abc", "not-found")
    assert body == {"type": "https://podod.invalid/problems/not-found",
                    "title": "what the request names does not exist", "status": 404,
                    "detail": "there is no mailbox x@example.com",
                    "instance": "/api/users/x@example.com", "code": "not-found",
                    "podod_status": "not-found", "request_id": "abc"}


def test_replies_name_the_next_command_as_an_http_request() -> None:
    naming = http_naming(ROUTES, REGISTRY.commands)
    assert naming.command("backup restore 20261125T021004Z-4fc2e2") == \
        "POST /api/backups/20261125T021004Z-4fc2e2/restore"
    assert naming.command("backup list") == "GET /api/backups"
    assert naming.command("maildir purge") == 'POST /api/commands {"command": "maildir purge", ...}'


def test_a_body_offers_the_password_and_execute_real_but_not_the_path_or_stdin_option(
        ) -> None:
    spec = REGISTRY.commands["user reset-password"]
    route = next(r for r in ROUTES if r.command == "user reset-password")
    schema = body_schema(spec, route)
    assert set(schema["properties"]) == {"generate_password", "password", "execute_real"}
    assert schema["required"] == []
    assert schema["additionalProperties"] is False


def test_a_slow_event_client_is_disconnected_not_buffered() -> None:
    async def run() -> tuple[bool, bool, int]:
        config = Config.model_validate({"api": {"enabled": True, "event_queue": 2}})
        runtime = SimpleNamespace(config=config)
        hub = EventHub(runtime, None)  # type: ignore[arg-type]
        actor = Actor("api:root", "admin")
        client = Client(actor, {"audit"}, asyncio.Queue(2), None)
        hub.clients.add(client)
        for _n in range(3):
            hub._fan("audit", CommandCompleted(command="status", origin="api",
                                               actor="api:x", result="ok", duration=0.001))
        ended = client.queue.get_nowait() is None  # the sender stops at once
        return client.slow and ended, client in hub.clients, hub.disconnected_slow

    slow, still_there, dropped = asyncio.run(run())
    assert slow and not still_there and dropped == 1
