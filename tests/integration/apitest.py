"""Helpers of the REST API tests: a daemon's configuration with the API on and three API
tokens (admin, domain-admin of DOMAIN_A, viewer), and a small client."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from testbed.ports import free_port

ADMIN, DOMADMIN, VIEWER = "admin-Token-4711", "domadmin-Token-4712", "viewer-Token-4713"
DOMAIN_A, DOMAIN_B = "a.example", "b.example"
REPO = Path(__file__).resolve().parents[2]


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_sections(port: int | None = None, **api: Any) -> dict[str, Any]:
    """The config sections the API tests add to a daemon's: the API on loopback, three
    tokens, no rate limit (the tests send many requests)."""
    return {
        "api": {"enabled": True, "port": port or free_port(), **api},
        "access": {"api_tokens": {
            "root": {"role": "admin", "sha256": sha(ADMIN)},
            "dom": {"role": "domain-admin", "domains": [DOMAIN_A], "sha256": sha(DOMADMIN)},
            "view": {"role": "viewer", "sha256": sha(VIEWER)}}},
        "commands": {"rate_limit": {"per_minute": 0}},
    }


@dataclass
class Api:
    base: str
    token: str | None = ADMIN

    def as_(self, token: str | None) -> Api:
        return Api(self.base, token)

    def call(self, method: str, path: str, body: Any = None, *,
             headers: dict[str, str] | None = None, data: bytes | str | None = None,
             params: Any = None) -> requests.Response:
        sent = dict(headers or {})
        if self.token is not None:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        return requests.request(method, self.base + path, json=body, data=data,
                                headers=sent, params=params, timeout=60)

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        response = self.call(method, path, body, **kw)
        assert response.status_code == 200, (response.status_code, response.text)
        assert response.headers["Content-Type"].startswith("application/json")
        out: dict[str, Any] = response.json()
        assert out["ok"] is True
        return out

    def problem(self, method: str, path: str, body: Any = None, *, status: int,
                **kw: Any) -> dict[str, Any]:
        """A refusal: ``status``, an RFC 9457 document with one sentence, never a trace."""
        response = self.call(method, path, body, **kw)
        assert response.status_code == status, (response.status_code, response.text)
        assert response.headers["Content-Type"].startswith("application/problem+json")
        doc: dict[str, Any] = response.json()
        assert doc["status"] == status and doc["type"].endswith("/" + doc["code"])
        assert doc["detail"] and "\n" not in doc["detail"]
        assert "Traceback" not in response.text
        return doc


def sse(api: Api, token: str, streams: str, seen: list[dict[str, Any]],
        ready: threading.Event, stop: threading.Event) -> None:
    """Follow /api/events as Server-Sent Events (in a thread): each event's data into
    ``seen``; ``ready`` once the stream is open."""
    with requests.get(f"{api.base}/api/events", params={"events": streams}, stream=True,
                      headers={"Authorization": f"Bearer {token}",
                               "Accept": "text/event-stream"}, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            ready.set()  # the first line is a comment naming the streams
            if stop.is_set():
                return
            if line.startswith(b"data: "):
                seen.append(json.loads(line[6:]))
