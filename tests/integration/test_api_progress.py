"""A long command's progress over the REST API, against a real daemon and the real mail
database: ``POST /api/commands`` (a text/csv import) and ``POST /api/plans/{id}`` with
``Accept: text/event-stream`` answer ``progress`` events, then the reply (or the problem) as
the last event, with the body the plain request gets. Reuses the session's mail stack."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from apitest import ADMIN, DOMADMIN, Api, api_sections

from conftest import ROLES, STACK_DB, MailStack, make_mail_config, new_domain
from testbed.daemon import DaemonProcess
from testbed.waiting import poll

pytestmark = pytest.mark.integration

STREAM = {"Accept": "text/event-stream"}
CSV = {"Content-Type": "text/csv"}


@pytest.fixture(scope="module")
def progress_api(stack: MailStack, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Api]:
    """A daemon with the API on the stack's database; 20 000 rounds, so hashing a few
    hundred passwords takes long enough to report its progress several times."""
    root = tmp_path_factory.mktemp("api-progress")
    sections = api_sections()
    daemon = DaemonProcess(make_mail_config(stack.pg, root, STACK_DB, roles=ROLES,
                                            passwords={"rounds": 20000},
                                            **sections)).start()
    api = Api(f"http://127.0.0.1:{sections['api']['port']}")
    assert poll(lambda: api.call("GET", "/api/openapi.json").status_code == 200, 10, 0.05)
    yield api
    daemon.stop()


def _rows(domain: str, count: int, prefix: str = "p") -> str:
    return "address,name,password\n" + "".join(
        f"{prefix}{i:04d}@{domain},Person {i},Progress-pw-{i:05d}\n" for i in range(count))


def _events(api: Api, path: str, *, token: str = ADMIN, data: str | None = None,
            params: dict[str, str] | None = None,
            accept: str = "text/event-stream") -> tuple[requests.Response,
                                                         list[tuple[str, Any]]]:
    """A streamed request: the response and its events (name, JSON data) in order."""
    headers = {"Authorization": f"Bearer {token}", "Accept": accept,
               **(CSV if data is not None else {})}
    events: list[tuple[str, Any]] = []
    with requests.post(api.base + path, data=data.encode() if data else None,
                       params=params, headers=headers, stream=True, timeout=120) as response:
        name, payload = "message", ""
        for raw in response.iter_lines():
            line = raw.decode()
            if line.startswith(":"):
                continue
            if not line:
                if payload:
                    events.append((name, json.loads(payload)))
                name, payload = "message", ""
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                payload += line[6:]
    return response, events


def _phases(events: list[tuple[str, Any]]) -> dict[str, list[tuple[int, int]]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for name, data in events:
        if name == "progress" and data["done"] is not None:
            out.setdefault(data["message"], []).append((data["done"], data["total"]))
    return out


def _same(streamed: dict[str, Any], plain: dict[str, Any]) -> None:
    """Two replies of the same request, but for what each run makes anew."""
    streamed, plain = dict(streamed), dict(plain)
    for key in ("request_id", "plan_id", "instance"):
        streamed.pop(key, None)
        plain.pop(key, None)
    assert streamed == plain


def test_an_import_streams_its_progress_then_the_reply(progress_api: Api,
                                                       stack: MailStack) -> None:
    api = progress_api
    domain = new_domain(stack)
    count = 300
    params = {"command": "user import"}
    response, events = _events(api, "/api/commands", data=_rows(domain, count),
                               params=params)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-store"
    names = [name for name, _ in events]
    assert names[-1] == "reply" and names.count("reply") == 1, names
    assert set(names[:-1]) == {"progress"}, names
    phases = _phases(events)
    hashing = phases["hashing passwords"]
    assert len(hashing) >= 2, events  # reported as it goes, not once at the end
    dones = [done for done, _ in hashing]
    assert dones == sorted(dones) and dones[0] < count and hashing[-1] == (count, count)
    assert phases["writing rows"][-1] == (count, count)
    order = [data["message"] for name, data in events if name == "progress"]
    assert order.index("reading the file") < order.index("hashing passwords") < \
        order.index("writing rows")
    reply = events[-1][1]
    assert reply["ok"] and reply["sandbox"] and reply["plan_id"]
    assert reply["data"]["imported"] == count and reply["request_id"]
    assert stack.sql(f"SELECT count(*) FROM mailbox WHERE domain = '{domain}'") == "0"

    # the same request without the header: the same body, as plain JSON
    plain = api.ok("POST", "/api/commands", data=_rows(domain, count), params=params,
                   headers=CSV)
    _same(reply, plain)

    # the plan applied for real, streamed too: its progress, then the reply with the backup
    response, events = _events(api, f"/api/plans/{reply['plan_id']}")
    assert response.status_code == 200 and events[-1][0] == "reply", events
    done = events[-1][1]
    assert done["ok"] and not done["sandbox"] and done["backup_id"]
    assert done["data"]["imported"] == count
    assert _phases(events)["writing rows"][-1] == (count, count)
    assert stack.sql(f"SELECT count(*) FROM mailbox WHERE domain = '{domain}'") == str(count)


def test_a_refusal_is_the_last_event_and_a_bad_request_no_stream(progress_api: Api,
                                                                 stack: MailStack) -> None:
    api = progress_api
    domain = new_domain(stack)  # not the domain-admin's
    params = {"command": "user import", "execute_real": "true"}
    # the bus refuses the rows (a domain-admin's rows of another domain): the problem is
    # the stream's last event, the document the plain request gets
    response, events = _events(api, "/api/commands", token=DOMADMIN,
                               data=_rows(domain, 3), params=params)
    assert response.status_code == 200 and [n for n, _ in events][-1] == "problem", events
    problem = events[-1][1]
    assert problem["status"] == 400 and problem["code"] == "invalid"
    assert "3 of 3 rows cannot be imported" in problem["detail"]
    plain = api.as_(DOMADMIN).problem("POST", "/api/commands", data=_rows(domain, 3),
                                      params=params, headers=CSV, status=400)
    _same(problem, plain)
    assert stack.sql(f"SELECT count(*) FROM mailbox WHERE domain = '{domain}'") == "0"

    # refused before anything runs: a plain problem with its status, no stream
    for token, data, query, status in (
            ("wrong-token", _rows(domain, 1), params, 401),
            (ADMIN, _rows(domain, 1), {**params, "on_error": "maybe"}, 400),
            (ADMIN, _rows(domain, 1), {**params, "command": "no such command"}, 400)):
        response, events = _events(api, "/api/commands", token=token, data=data,
                                   params=query)
        assert response.status_code == status, (response.status_code, events)
        assert response.headers["Content-Type"].startswith("application/problem+json")
    # JSON preferred, or no stream asked for: the plain reply
    for accept in ("application/json, text/event-stream;q=0.5", "text/event-stream;q=0",
                   "*/*"):
        response = api.call("POST", "/api/commands", {"command": "user list",
                                                      "params": {"domain": domain}},
                            headers={"Accept": accept})
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/json"), accept
    # the other routes answer JSON (only commands by name and plans stream)
    response = api.call("GET", "/api/users", params={"domain": domain}, headers=STREAM)
    assert response.headers["Content-Type"].startswith("application/json")
