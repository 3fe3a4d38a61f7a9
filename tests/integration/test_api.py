"""The REST API (issue 15) against a real daemon on a real PostgreSQL: every route through
the bus with each role, sandbox and plans, pages, problem documents, the OpenAPI document
and its page, CORS, size limits, CSV data, /metrics, and the live event stream."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from apitest import (
    ADMIN,
    DOMADMIN,
    DOMAIN_A,
    DOMAIN_B,
    REPO,
    VIEWER,
    Api,
    api_sections,
    sse,
)

from conftest import OWNER, MailStack, make_mail_config
from testbed.daemon import DaemonProcess
from testbed.postgres import PgCluster
from testbed.waiting import poll

PASSWORD = "Api-Secret-pw-77"


@pytest.fixture(scope="module")
def site(pg: PgCluster, mail_template: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MailStack, Api]]:
    """One daemon with the API for the module (tests keep apart by their own addresses),
    the example plugin loaded (its 'example count' reads CSV data), /metrics on."""
    root = tmp_path_factory.mktemp("api")
    db = "api_main"
    pg.psql(f'CREATE DATABASE "{db}" TEMPLATE "{mail_template}" OWNER "{OWNER}"')
    sections = api_sections(cors={"allow_origins": ["https://admin.example.org"]},
                            max_body_bytes=4096, max_data_bytes=65536)
    from testbed.ports import free_port

    metrics_port = free_port()
    path = make_mail_config(pg, root, db, plugins={"dirs": [str(REPO / "plugins")],
                                                   "entry_points": False},
                            metrics={"enabled": True, "port": metrics_port}, **sections)
    daemon = DaemonProcess(path).start()
    stack = MailStack(pg, db, root, path, daemon)
    api = Api(f"http://127.0.0.1:{sections['api']['port']}")
    poll(lambda: _up(api), 10, 0.05)
    stack.metrics_port = metrics_port  # type: ignore[attr-defined]
    for domain in (DOMAIN_A, DOMAIN_B):
        stack.ok("domain", "create", domain, real=True)
    yield stack, api
    daemon.stop()
    pg.drop_database(db)


def _up(api: Api) -> bool:
    try:
        return api.call("GET", "/api/openapi.json").status_code == 200
    except requests.ConnectionError:
        return False


def count(stack: MailStack, table: str, where: str) -> int:
    return int(stack.sql(f"SELECT count(*) FROM {table} WHERE {where}"))


# -- tokens --------------------------------------------------------------------------------

def test_a_request_without_a_known_token_is_refused_with_401_and_audited(
        site: tuple[MailStack, Api]) -> None:
    stack, api = site
    missing = api.as_(None).problem("GET", "/api/users", status=401)
    assert "Authorization: Bearer" in missing["detail"]
    response = api.as_(None).call("GET", "/api/users")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = api.as_("not-a-token").problem("GET", "/api/users", status=401)
    assert wrong["detail"] == "the API token is not known to podod"
    api.as_(None).problem("GET", "/api/users", status=401,
                          headers={"Authorization": "Basic YWxpY2U6cHc="})
    records = stack.ok("audit", "list", "--actor", "api:(unknown token)")["data"]
    assert records and all(r["outcome"] == "unauthenticated" for r in records)
    assert "not-a-token" not in json.dumps(records)
    # nothing of the refused requests ran: no data in the problem documents
    assert "data" not in missing


# -- roles -----------------------------------------------------------------------------------

def test_each_role_may_do_what_the_bus_allows_and_no_more(site: tuple[MailStack, Api]) -> None:
    stack, api = site
    admin, dom, viewer = api, api.as_(DOMADMIN), api.as_(VIEWER)
    user_a, user_b = f"role@{DOMAIN_A}", f"role@{DOMAIN_B}"
    for who, user in ((admin, user_b), (dom, user_a)):
        who.ok("POST", "/api/users", {"address": user, "password": PASSWORD,
                                      "execute_real": True})
    # viewer: reads everything, changes nothing
    assert {u["username"] for u in viewer.ok("GET", "/api/users")["data"]} >= {user_a, user_b}
    refused = viewer.problem("PUT", f"/api/users/{user_a}", {"name": "V"}, status=403)
    assert "may not change anything" in refused["detail"]
    viewer.problem("POST", "/api/domains", {"domain": "v.example"}, status=403)
    viewer.problem("GET", "/api/reports/audit", status=403)
    # domain-admin: their domain only; other domains stay invisible
    listed = {u["username"] for u in dom.ok("GET", "/api/users")["data"]}
    assert user_a in listed and user_b not in listed
    dom.ok("PUT", f"/api/users/{user_a}", {"name": "Dom", "execute_real": True})
    assert "may not manage" in dom.problem(
        "PUT", f"/api/users/{user_b}", {"name": "x", "execute_real": True},
        status=403)["detail"]
    dom.problem("GET", f"/api/users/{user_b}", status=403)
    dom.problem("POST", "/api/domains", {"domain": "d.example"}, status=403)
    dom.problem("DELETE", f"/api/domains/{DOMAIN_A}", status=403)
    dom.problem("GET", "/api/backups", status=403)
    # admin: everything
    admin.ok("GET", "/api/reports/audit")
    admin.ok("GET", "/api/backups")
    assert stack.sql(f"SELECT name FROM mailbox WHERE username = '{user_a}'") == "Dom"


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/api/domains", None), ("GET", f"/api/domains/{DOMAIN_A}", None),
    ("GET", f"/api/domains/{DOMAIN_A}/users", None),
    ("GET", f"/api/domains/{DOMAIN_A}/aliases", None), ("GET", "/api/users", None),
    ("GET", "/api/aliases", None), ("GET", "/api/servers", None),
    ("GET", "/api/monitoring/status", None), ("GET", "/api/monitoring/collectors", None),
    ("GET", "/api/monitoring/series", None), ("GET", "/api/monitoring/traffic", None),
    ("GET", "/api/reports/usage", None),
])
def test_every_reading_route_answers_every_role(site: tuple[MailStack, Api], method: str,
                                               path: str, body: Any) -> None:
    _stack, api = site
    for token in (ADMIN, DOMADMIN, VIEWER):
        api.as_(token).ok(method, path, body)


@pytest.mark.parametrize(("path", "status"), [
    ("/api/backups", 403), ("/api/reports/audit", 403), ("/api/reports/audit/verify", 403),
    ("/api/reports/usage", 200),
])
def test_admin_only_routes_refuse_the_others(site: tuple[MailStack, Api], path: str,
                                             status: int) -> None:
    _stack, api = site
    api.ok("GET", path)
    for token in (DOMADMIN, VIEWER):
        if status == 200:
            api.as_(token).ok("GET", path)
        else:
            api.as_(token).problem("GET", path, status=status)


# -- sandbox, plans, real changes ---------------------------------------------------------------

def test_a_change_is_a_sandbox_plan_until_confirmed(site: tuple[MailStack, Api]) -> None:
    stack, api = site
    user = f"plan@{DOMAIN_A}"
    before = stack.dump()
    planned = api.ok("POST", "/api/users", {"address": user, "name": "Plan",
                                            "password": PASSWORD})
    assert planned["sandbox"] is True and planned["plan_id"]
    assert any(c["target"] == "mailbox" for c in planned["changes"])
    assert stack.dump() == before  # nothing changed
    # another caller cannot confirm it
    api.as_(DOMADMIN).problem("POST", f"/api/plans/{planned['plan_id']}", status=403)
    confirmed = api.ok("POST", f"/api/plans/{planned['plan_id']}")
    assert confirmed["sandbox"] is False and confirmed["backup_id"]
    assert count(stack, "mailbox", f"username = '{user}'") == 1
    again = api.problem("POST", f"/api/plans/{planned['plan_id']}", status=404)
    assert "plan" in again["detail"]
    assert api.ok("GET", f"/api/users/{user}")["data"]["name"] == "Plan"


def test_a_plan_that_no_longer_applies_changes_nothing(site: tuple[MailStack, Api]) -> None:
    stack, api = site
    user = f"drift@{DOMAIN_A}"
    planned = api.ok("POST", "/api/users", {"address": user, "name": "Planned",
                                            "password": PASSWORD})
    api.ok("POST", "/api/users", {"address": user, "name": "Meanwhile", "password": PASSWORD,
                                  "execute_real": True})
    refused = api.problem("POST", f"/api/plans/{planned['plan_id']}", status=409)
    assert "already exists" in refused["detail"]
    assert stack.sql(f"SELECT name FROM mailbox WHERE username = '{user}'") == "Meanwhile"


def test_a_generated_password_is_returned_once(site: tuple[MailStack, Api]) -> None:
    stack, api = site
    user = f"gen@{DOMAIN_A}"
    sandbox = api.ok("POST", "/api/users", {"address": user, "generate_password": True})
    assert "secrets" not in sandbox
    created = api.ok("POST", "/api/users", {"address": user, "generate_password": True,
                                            "execute_real": True})
    password = created["secrets"][0]["value"]
    assert len(password) >= 12
    shown = api.call("GET", f"/api/users/{user}").text
    assert password not in shown and "{" not in json.loads(shown)["data"].get("password", "")
    assert password not in json.dumps(stack.ok("audit", "list", "--limit", "50")["data"])
    reset = api.ok("POST", f"/api/users/{user}/password", {"generate_password": True,
                                                           "execute_real": True})
    assert reset["secrets"][0]["value"] != password


def test_routes_change_domains_aliases_and_mailboxes_for_real(
        site: tuple[MailStack, Api]) -> None:
    stack, api = site
    domain = "routes.example"
    api.ok("POST", "/api/domains", {"domain": domain, "max_mailboxes": 5,
                                    "execute_real": True})
    assert api.ok("GET", f"/api/domains/{domain}")["data"]["domain"] == domain
    api.ok("PUT", f"/api/domains/{domain}", {"description": "d", "execute_real": True})
    user = f"u@{domain}"
    api.ok("POST", "/api/users", {"address": user, "password": PASSWORD,
                                  "execute_real": True})
    assert [u["username"] for u in api.ok("GET", f"/api/domains/{domain}/users")["data"]] \
        == [user]
    api.ok("PUT", f"/api/users/{user}/quota", {"quota_mb": 50, "execute_real": True})
    assert api.ok("GET", f"/api/users/{user}/quota")["data"]["quota"] == 50 * 1024 * 1024
    api.problem("PUT", f"/api/users/{user}/quota", {"name": "x"}, status=400)
    alias = f"info@{domain}"
    api.ok("POST", "/api/aliases", {"address": alias, "to": [user], "execute_real": True})
    assert api.ok("GET", f"/api/aliases/{alias}")["data"]["address"] == alias
    api.ok("PUT", f"/api/aliases/{alias}", {"add": ["x@remote.example"], "execute_real": True})
    mine = api.ok("GET", f"/api/users/{user}/aliases")["data"]
    assert [a["address"] for a in mine] == [alias]
    api.ok("POST", f"/api/domains/{domain}/aliases", {"alias_domain": "alias-of.example",
                                                      "execute_real": True})
    assert [d["alias_domain"] for d in api.ok(
        "GET", f"/api/domains/{domain}/aliases")["data"]] == ["alias-of.example"]
    api.ok("DELETE", "/api/domain-aliases/alias-of.example",
           {"execute_real": True})
    api.ok("DELETE", f"/api/aliases/{alias}", {"execute_real": True})
    api.ok("DELETE", f"/api/users/{user}?execute_real=true")
    assert count(stack, "mailbox", f"domain = '{domain}'") == 0
    api.ok("DELETE", f"/api/domains/{domain}", {"execute_real": True})
    api.problem("GET", f"/api/domains/{domain}", status=404)


# -- pages ------------------------------------------------------------------------------------

def test_listings_page_with_a_next_url_and_filter(site: tuple[MailStack, Api]) -> None:
    _stack, api = site
    for n in range(5):
        api.ok("POST", "/api/users", {"address": f"page{n}@{DOMAIN_B}", "name": f"P {n}",
                                      "password": PASSWORD, "execute_real": True})
    first = api.ok("GET", "/api/users", params={"domain": DOMAIN_B, "q": "page",
                                                "limit": 2})
    assert [u["username"] for u in first["data"]] == [f"page0@{DOMAIN_B}",
                                                      f"page1@{DOMAIN_B}"]
    assert first["page"]["more"] == 3
    assert first["page"]["next"] in first["notes"][0] and "podoctl" not in first["notes"][0]
    second = api.ok("GET", first["page"]["next"])
    assert [u["username"] for u in second["data"]] == [f"page2@{DOMAIN_B}",
                                                       f"page3@{DOMAIN_B}"]
    last = api.ok("GET", second["page"]["next"])
    assert [u["username"] for u in last["data"]] == [f"page4@{DOMAIN_B}"]
    assert "page" not in last
    assert api.ok("GET", "/api/users", params={"q": "P 3"})["data"][0]["username"] == \
        f"page3@{DOMAIN_B}"


def test_listings_sort_with_a_next_url_that_keeps_the_sort(site: tuple[MailStack, Api]
                                                           ) -> None:
    _stack, api = site
    for n, name in enumerate(["Beta", "Alpha", "Beta", "Alpha", "Gamma"]):
        api.ok("POST", "/api/users", {"address": f"sort{n}@{DOMAIN_B}", "name": name,
                                      "password": PASSWORD, "execute_real": True})
    query = {"domain": DOMAIN_B, "q": "sort", "limit": 2, "sort": "-name"}
    first = api.ok("GET", "/api/users", params=query)
    assert first["page"]["sort"] == "-name" and "sort=-name" in first["page"]["next"]
    shown = [u["username"] for u in first["data"]]
    second = api.ok("GET", first["page"]["next"])
    shown += [u["username"] for u in second["data"]]
    shown += [u["username"] for u in api.ok("GET", second["page"]["next"])["data"]]
    # Descending by name, the equal names in descending address order too.
    assert shown == [f"sort{n}@{DOMAIN_B}" for n in (4, 2, 0, 3, 1)]
    by_domain = api.ok("GET", "/api/domains", params={"sort": "-domain"})["data"]
    assert [d["domain"] for d in by_domain] == sorted((d["domain"] for d in by_domain),
                                                      reverse=True)
    refused = api.problem("GET", "/api/users", params={"sort": "password"}, status=400)
    assert refused["detail"].startswith("user list: --sort must be one of address, -address,")
    assert refused["detail"].endswith(", not 'password'")
    spec = api.call("GET", "/api/openapi.json").json()
    params = spec["paths"]["/api/aliases"]["get"]["parameters"]
    sort = next(p for p in params if p["name"] == "sort")
    assert sort["schema"]["enum"][:4] == ["address", "-address", "goto", "-goto"]


# -- problem documents -----------------------------------------------------------------------

def test_bad_requests_get_one_sentence_and_change_nothing(site: tuple[MailStack, Api]) -> None:
    stack, api = site
    before = stack.dump()
    assert api.problem("POST", "/api/users", {"address": "x@a.example", "quota_mb": "lots"},
                       status=400)["detail"] == \
        "user create: --quota-mb must be a whole number, not 'lots'"
    assert "unknown parameter 'quota'" in api.problem(
        "POST", "/api/users", {"address": "x@a.example", "quota": 1}, status=400)["detail"]
    api.problem("POST", "/api/users", data="{not json", status=400,
                headers={"Content-Type": "application/json"})
    api.problem("POST", "/api/users", [1, 2], status=400)
    api.problem("POST", "/api/users", data="a=b", status=415,
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    api.problem("POST", "/api/users", {"address": "x@a.example", "name": "n" * 5000},
                status=413)
    api.problem("PUT", f"/api/users/x@{DOMAIN_A}", {"address": "y@a.example"}, status=400)
    api.problem("GET", "/api/users", params={"limit": ["1", "2"]}, status=400)
    api.problem("GET", "/api/nothing-here", status=404)
    assert api.problem("PATCH", "/api/users", status=405)["code"] == "method-not-allowed"
    api.problem("GET", "/api/users/not-an-address", status=400)
    api.problem("GET", f"/api/users/nobody@{DOMAIN_A}", status=404)
    api.problem("POST", "/api/users", {"address": "x@a.example", "execute_real": "maybe"},
                status=400)
    api.problem("POST", "/api/users", {"address": "x@a.example", "password": 5}, status=400)
    api.problem("POST", "/api/users", {"address": "x@a.example", "password_stdin": True},
                status=400)
    api.problem("POST", "/api/users", {"address": "\u0000@a.example"}, status=400)
    api.problem("POST", "/api/plans/nonexistent", status=404)
    assert api.problem("POST", f"/api/users/nobody@{DOMAIN_A}/rename",
                       {"new_address": f"somebody@{DOMAIN_A}"}, status=404)["detail"] == (
        f"there is no mailbox nobody@{DOMAIN_A}")
    assert api.problem("POST", f"/api/users/nobody@{DOMAIN_A}/rename", {}, status=400)[
        "detail"].startswith("user rename: NEW_ADDRESS is required")
    assert stack.dump() == before


def test_any_command_runs_by_name_and_csv_data_is_its_input(site: tuple[MailStack, Api]
                                                           ) -> None:
    _stack, api = site
    assert api.ok("POST", "/api/commands", {"command": "user list",
                                            "params": {"limit": 1}})["data"]
    counted = api.ok("POST", "/api/commands?command=example+count", data="a,b\nc,d,e\n",
                     headers={"Content-Type": "text/csv"})
    assert counted["data"] == {"lines": 2, "fields": 5}
    api.problem("POST", "/api/commands?command=user+list", data="a,b",
                headers={"Content-Type": "text/csv"}, status=415)
    api.problem("POST", "/api/commands?command=example+count", data="x" * 70_000,
                headers={"Content-Type": "text/csv"}, status=413)
    assert "unknown command" in api.problem("POST", "/api/commands", {"command": "user crate"},
                                            status=400)["detail"]
    api.problem("POST", "/api/commands", {"command": "user list", "extra": 1}, status=400)
    api.as_(VIEWER).problem("POST", "/api/commands", {"command": "backup list"}, status=403)


# -- the document, the page, the edges --------------------------------------------------------

def test_the_openapi_document_describes_every_route_and_is_valid(
        site: tuple[MailStack, Api]) -> None:
    from openapi_spec_validator import validate

    _stack, api = site
    doc = api.as_(None).call("GET", "/api/openapi.json").json()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    for path in ("/api/domains", "/api/users/{email}", "/api/users/{email}/aliases",
                 "/api/plans/{id}", "/api/events", "/api/reports/usage"):
        assert path in doc["paths"], path
    create = doc["paths"]["/api/users"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert {"address", "password", "execute_real"} <= set(body["properties"])
    assert "password_stdin" not in body["properties"]
    assert create["responses"]["200"]["links"]


def test_the_docs_page_is_self_contained_and_escaped(site: tuple[MailStack, Api]) -> None:
    _stack, api = site
    response = api.as_(None).call("GET", "/api/docs")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith(
        "text/html")
    page = response.text
    assert "<script" not in page and " src=" not in page and "@import" not in page
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "/api/users/{email}" in page


def test_cors_allows_only_the_listed_origins(site: tuple[MailStack, Api]) -> None:
    _stack, api = site
    good = api.call("GET", "/api/users", headers={"Origin": "https://admin.example.org"})
    assert good.headers["Access-Control-Allow-Origin"] == "https://admin.example.org"
    bad = api.call("GET", "/api/users", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in bad.headers
    preflight = {"Access-Control-Request-Method": "POST"}
    assert api.as_(None).call("OPTIONS", "/api/users", headers={
        "Origin": "https://admin.example.org", **preflight}).status_code == 204
    api.as_(None).problem("OPTIONS", "/api/users", status=403,
                          headers={"Origin": "https://evil.example", **preflight})


def test_metrics_count_api_requests_by_route_and_status(site: tuple[MailStack, Api]) -> None:
    stack, api = site
    api.ok("GET", "/api/domains")
    api.as_(None).call("GET", "/api/domains")
    port = stack.metrics_port  # type: ignore[attr-defined]
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith("podod_api_requests_total")]
    assert any('route="/api/domains"' in line and 'status="200"' in line for line in lines)
    assert any('route="/api/domains"' in line and 'status="401"' in line for line in lines)
    assert "podod_api_request_duration_seconds_total" in text


# -- live events ------------------------------------------------------------------------------

def test_a_domain_admins_stream_never_carries_another_domains_requests(
        site: tuple[MailStack, Api]) -> None:
    _stack, api = site
    mine: list[dict[str, Any]] = []
    everything: list[dict[str, Any]] = []
    stop = threading.Event()
    ready = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=sse, args=(api, DOMADMIN, "audit", mine, ready[0],
                                                   stop), daemon=True),
               threading.Thread(target=sse, args=(api, ADMIN, "audit", everything, ready[1],
                                                   stop), daemon=True)]
    for thread in threads:
        thread.start()
    assert all(r.wait(10) for r in ready)
    api.ok("GET", f"/api/users/role@{DOMAIN_B}")
    api.as_(DOMADMIN).ok("GET", "/api/users")
    assert poll(lambda: len(everything) >= 2 and len(mine) >= 1, 10, 0.05)
    stop.set()
    assert {e["event"]["actor"] for e in mine} == {"api:dom"}
    assert {e["event"]["actor"] for e in everything} >= {"api:root", "api:dom"}


def test_the_event_stream_refuses_unknown_streams_and_unknown_callers(
        site: tuple[MailStack, Api]) -> None:
    _stack, api = site
    api.problem("GET", "/api/events", params={"events": "bogus"}, status=400)
    api.as_(None).problem("GET", "/api/events", status=401)


def test_a_websocket_subscribes_and_receives_events(site: tuple[MailStack, Api]) -> None:
    import asyncio

    import aiohttp

    _stack, api = site

    async def run() -> list[Any]:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"{api.base}/api/events", headers={"Authorization": f"Bearer {ADMIN}"}) as ws:
            await ws.send_json({"action": "subscribe", "events": ["nope"]})
            error = await ws.receive_json(timeout=10)
            await ws.send_json({"action": "subscribe", "events": ["audit"]})
            subscribed = await ws.receive_json(timeout=10)
            await asyncio.to_thread(api.ok, "GET", "/api/domains")
            event = await ws.receive_json(timeout=10)
            return [error, subscribed, event]

    error, subscribed, event = asyncio.run(run())
    assert error["type"] == "error" and "nope" in error["detail"]
    assert subscribed == {"type": "subscribed", "events": ["audit"]}
    assert event["stream"] == "audit" and event["event"]["command"] == "domain list"


def test_the_listener_is_loopback_only_by_default(site: tuple[MailStack, Api]) -> None:
    _stack, api = site
    port = int(api.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    addresses = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None)
                 if a[0] == socket.AF_INET and not a[4][0].startswith("127.")}
    for address in addresses:
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=2).close()





def test_a_request_that_is_not_valid_http_gets_400_and_no_traceback_in_the_log(
        site: tuple[MailStack, Api]) -> None:
    stack, api = site
    port = int(api.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /api/users HTTP/1.1\r\nHost: x\r\nBad\x01Header: v\r\n\r\n")
        answer = conn.recv(4096)
    assert answer.split(b" ", 2)[1] == b"400"
    assert poll(lambda: "malformed HTTP request" in stack.daemon.log(), 5, 0.05)
    assert "Traceback" not in stack.daemon.log()


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/domains", {"domain": "new.example"}),
    ("PUT", f"/api/domains/{DOMAIN_A}", {"description": "x"}),
    ("DELETE", f"/api/domains/{DOMAIN_A}", {}),
    ("POST", f"/api/domains/{DOMAIN_A}/aliases", {"alias_domain": "other.example"}),
    ("DELETE", "/api/domain-aliases/other.example", {}),
    ("POST", "/api/servers", {"name": "mx9", "host": "127.0.0.1"}),
    ("DELETE", "/api/servers/mx9", {}),
    ("POST", "/api/backups/20261125T021004Z-4fc2e2/restore", {}),
    ("GET", "/api/backups/20261125T021004Z-4fc2e2", None),
    ("POST", "/api/alerts/silences", {"for": "1h", "reason": "r"}),
    ("GET", "/api/reports/audit", None),
    ("GET", "/api/monitoring/security", None),
])
def test_admin_routes_refuse_domain_admins_and_viewers_before_anything_runs(
        site: tuple[MailStack, Api], method: str, path: str, body: Any) -> None:
    stack, api = site
    before = stack.dump()
    for token in (DOMADMIN, VIEWER):
        for real in (False, True):
            sent = None if body is None else {**body, "execute_real": real}
            api.as_(token).problem(method, path, sent, status=403)
    assert stack.dump() == before


def test_aliases_follow_the_domain_admins_domains(site: tuple[MailStack, Api]) -> None:
    stack, api = site
    dom, viewer = api.as_(DOMADMIN), api.as_(VIEWER)
    mine, theirs = f"team@{DOMAIN_A}", f"team@{DOMAIN_B}"
    dom.ok("POST", "/api/aliases", {"address": mine, "to": ["x@remote.example"],
                                    "execute_real": True})
    dom.problem("POST", "/api/aliases", {"address": theirs, "to": ["x@remote.example"],
                                         "execute_real": True}, status=403)
    viewer.problem("POST", "/api/aliases", {"address": f"v@{DOMAIN_A}",
                                            "to": ["x@remote.example"]}, status=403)
    dom.ok("PUT", f"/api/aliases/{mine}", {"add": ["y@remote.example"], "execute_real": True})
    assert {a["address"] for a in dom.ok("GET", "/api/aliases")["data"]} == {mine}
    viewer.problem("DELETE", f"/api/aliases/{mine}", {"execute_real": True}, status=403)
    dom.ok("DELETE", f"/api/aliases/{mine}", {"execute_real": True})
    assert count(stack, "alias", f"address = '{mine}'") == 0
    usage = {d["domain"] for d in dom.ok("GET", "/api/reports/usage")["data"]}
    assert usage == {DOMAIN_A}
