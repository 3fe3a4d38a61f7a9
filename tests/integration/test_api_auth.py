"""The REST API's accounts, tokens, 2FA and API keys (podod.api.auth), end to end: the
routes of ``ApiAuth.routes()`` served by aiohttp on 127.0.0.1 over a real runtime (state.db,
the signed audit log, the bus with the ``api`` commands), driven by a real HTTP client; and
the commands through the real daemon and podoctl.

The HTTP frontend (podod.frontends.api) is built apart; here a small app stands in for it,
doing what it does: the client address it resolved goes in ``request[client_key()]`` (here
from a test header, as a trusted proxy's X-Forwarded-For would), and a protected route calls
``ApiAuth.authenticate``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import jwt
import pyotp
import pytest
from aiohttp import web

from podod.api.auth import ApiAuth, client_key, problem
from podod.bus.audit import AuditLog
from podod.bus.context import Actor, Reply, Request
from podod.bus.core import CommandBus
from podod.bus.identity import token_sha256
from podod.config import parse_config
from podod.errors import PododError
from podod.mail.passwords import default_pool
from podod.plugins import Registry, load_builtins
from podod.runtime import Runtime
from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.ports import free_port
from testbed.runtime import runtime_for

ROOT = Actor("unix:root", "admin")
ALICE_PW = "Alice-api-pw-4711"
LEGACY_TOKEN = "legacy-token-0123456789abcdef"
AUTH = web.AppKey("auth", ApiAuth)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def client_from_header(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What the frontend does with a trusted proxy's X-Forwarded-For."""
    client = request.headers.get("X-Test-Client")
    if client:
        request[client_key()] = client
    return await handler(request)


@dataclass
class Http:
    status: int
    body: dict[str, Any]
    headers: Any

    @property
    def detail(self) -> str:
        return str(self.body.get("detail"))


@dataclass
class Harness:
    rt: Runtime
    auth: ApiAuth
    url: str
    session: aiohttp.ClientSession

    async def run(self, *argv: str, stdin: str | None = None, real: bool = True) -> Reply:
        assert self.rt.bus is not None
        return await self.rt.bus.execute(Request(list(argv), ROOT, "socket",
                                                 execute_real=real, stdin=stdin))

    async def ok(self, *argv: str, stdin: str | None = None, real: bool = True) -> Reply:
        reply = await self.run(*argv, stdin=stdin, real=real)
        assert reply.ok, reply.message
        return reply

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                   client: str = "10.0.0.1", raw: bytes | None = None) -> Http:
        headers = {"X-Test-Client": client}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        async with self.session.request(method, self.url + path, data=data,
                                        headers=headers) as resp:
            text = await resp.text()
            if resp.status >= 400:
                assert resp.content_type == "application/problem+json", text
                parsed = json.loads(text)
                assert parsed["status"] == resp.status
                detail = parsed["detail"]
                assert "\n" not in detail and "Traceback" not in detail, detail
            return Http(resp.status, json.loads(text) if text else {}, resp.headers)

    async def login(self, username: str = "alice", password: str = ALICE_PW,
                    client: str = "10.0.0.1", **extra: str) -> Http:
        return await self.call("POST", "/api/auth/login",
                               {"username": username, "password": password, **extra},
                               client=client)

    async def whoami(self, token: str, client: str = "10.0.0.1") -> Http:
        return await self.call("GET", "/test/whoami", token=token, client=client)

    async def audit_rows(self) -> list[dict[str, Any]]:
        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            return [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY id")]
        return await self.rt.state.run(read)


async def _whoami(request: web.Request) -> web.StreamResponse:
    auth = request.app[AUTH]
    try:
        actor = await auth.authenticate(request)
    except PododError as exc:
        return problem(exc, request.path)
    return web.json_response({"actor": actor.name, "role": actor.role,
                              "domains": list(actor.domains)})


@asynccontextmanager
async def _harness(root: Path, **api: Any) -> AsyncIterator[Harness]:
    registry = Registry()
    access = {"api_tokens": {"legacy": {"role": "viewer", "sha256": token_sha256(LEGACY_TOKEN)}}}
    async with runtime_for(root, registry, api=api, access=access) as rt:
        audit = AuditLog(rt.state)
        await audit.setup()
        rt.bus = CommandBus(rt, audit)
        load_builtins(registry, ["podod.bus.commands", "podod.api.commands"])
        rt.api_auth = ApiAuth(rt)
        await rt.api_auth.start()
        app = web.Application(middlewares=[client_from_header])
        app[AUTH] = rt.api_auth
        app.add_routes(rt.api_auth.routes())
        app.router.add_get("/test/whoami", _whoami)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        try:
            async with aiohttp.ClientSession() as session:
                yield Harness(rt, rt.api_auth, f"http://127.0.0.1:{port}", session)
        finally:
            await runner.cleanup()
            await rt.api_auth.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    async with _harness(tmp_path) as harness:
        await harness.ok("api", "account", "create", "alice", "--role", "admin",
                         "--password-stdin", stdin=ALICE_PW)
        yield harness


def _totp_secret(reply: Reply) -> str:
    uri = next(s.value for s in reply.secrets if s.label == "Provisioning URI")
    return parse_qs(urlparse(uri).query)["secret"][0]


def _recovery_codes(reply: Reply) -> list[str]:
    return next(s.value for s in reply.secrets if s.label.startswith("Recovery codes")).split()


# -- sessions ------------------------------------------------------------------------------------

async def test_login_profile_refresh_rotates_and_logout_revokes(api: Harness) -> None:
    login = await api.login()
    assert login.status == 200, login.body
    assert login.headers["Cache-Control"] == "no-store"
    tokens = login.body
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 900
    assert tokens["account"] == {"name": "alice", "role": "admin", "domains": [],
                                 "two_factor": False}
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "HS256" and header["kid"] == api.auth.kid
    who = await api.whoami(tokens["access_token"])
    assert who.body == {"actor": "api:alice", "role": "admin", "domains": []}
    profile = await api.call("GET", "/api/auth/profile", token=tokens["access_token"])
    assert profile.status == 200
    assert profile.body["kind"] == "account" and profile.body["actor"] == "api:alice"
    assert profile.body["expires"].endswith("Z")

    refreshed = await api.call("POST", "/api/auth/refresh",
                               {"refresh_token": tokens["refresh_token"]})
    assert refreshed.status == 200
    second = refreshed.body
    assert second["refresh_token"] != tokens["refresh_token"]
    assert (await api.whoami(second["access_token"])).status == 200

    # A refresh token works once; its second use ends the whole session (a thief's copy
    # and the owner's newer tokens alike).
    again = await api.call("POST", "/api/auth/refresh", {"refresh_token": tokens["refresh_token"]})
    assert again.status == 401 and "already used" in again.detail
    assert again.headers["WWW-Authenticate"].startswith("Bearer")
    dead = await api.call("POST", "/api/auth/refresh", {"refresh_token": second["refresh_token"]})
    assert dead.status == 401 and "not known" in dead.detail
    revoked = await api.whoami(second["access_token"])
    assert revoked.status == 401 and "revoked" in revoked.detail

    # Logout ends the session of the access token at once, and its refresh token.
    fresh = (await api.login()).body
    other = (await api.login()).body  # another session stays
    out = await api.call("POST", "/api/auth/logout", {}, token=fresh["access_token"])
    assert out.status == 200 and out.body == {"sessions_ended": 1}
    gone = await api.whoami(fresh["access_token"])
    assert gone.status == 401 and "revoked" in gone.detail
    refused = await api.call("POST", "/api/auth/refresh", {"refresh_token": fresh["refresh_token"]})
    assert refused.status == 401
    assert (await api.whoami(other["access_token"])).status == 200
    # ... and logout everywhere ends that one too.
    out = await api.call("POST", "/api/auth/logout", {"everywhere": True},
                         token=other["access_token"])
    assert out.status == 200
    assert (await api.whoami(other["access_token"])).status == 401


async def test_a_login_does_not_queue_behind_a_bulk_import_s_hashes(api: Harness) -> None:
    """The mail passwords' process pool busy with an import's 300 hashes: a login, hashed in
    the API's own pool, is answered long before they are done."""
    pool = default_pool()
    bulk = asyncio.ensure_future(pool.hash_many([f"Import-pw-{n:04d}" for n in range(300)],
                                                "SHA512-CRYPT", 70000))
    try:
        await asyncio.sleep(0.2)
        assert pool.worker_pids(), "the import's hashing has not started"
        assert (await api.login()).status == 200
        assert not bulk.done()
    finally:
        await pool.stop()  # the hashes not started are dropped
        bulk.cancel()
        await asyncio.gather(bulk, return_exceptions=True)


async def test_wrong_password_and_unknown_account_get_one_sentence(api: Harness) -> None:
    wrong = await api.login(password="Not-the-password-1")
    unknown = await api.login(username="mallory", client="10.0.0.2")
    for reply in (wrong, unknown):
        assert reply.status == 401
        assert reply.detail == "the account name or password is wrong"
    for body, sentence in [
            (None, "must be a JSON object"), ([1], "must be a JSON object"),
            ({"username": "alice"}, "'password' is required"),
            ({"username": "alice", "password": 5}, "'password' must be text"),
            ({"username": "alice", "password": "x", "admin": True}, "unknown field 'admin'"),
            ({"username": "a" * 65, "password": "x"}, "too long")]:
        reply = await api.call("POST", "/api/auth/login", body, client="10.0.0.3",
                               raw=b"{not json" if body is None else None)
        assert reply.status == 400 and sentence in reply.detail, reply.body
    big = await api.call("POST", "/api/auth/login", raw=b'{"username": "' + b"a" * 20000 + b'"}')
    assert big.status == 400 and "larger than 16 KiB" in big.detail


async def test_disabled_account_and_its_tokens_are_refused(api: Harness) -> None:
    tokens = (await api.login()).body
    await api.ok("api", "account", "disable", "alice")
    refused = await api.whoami(tokens["access_token"])
    assert refused.status == 401 and refused.detail == "the account alice is disabled"
    login = await api.login()
    assert login.status == 401 and login.detail == "the account alice is disabled"
    refresh = await api.call("POST", "/api/auth/refresh",
                             {"refresh_token": tokens["refresh_token"]})
    assert refresh.status == 401
    await api.ok("api", "account", "enable", "alice")
    assert (await api.login()).status == 200
    # The tokens of before the disable stay dead: enabling starts afresh.
    assert (await api.whoami(tokens["access_token"])).status == 401


async def test_new_password_ends_sessions(api: Harness) -> None:
    tokens = (await api.login()).body
    await api.ok("api", "account", "passwd", "alice", "--password-stdin",
                 stdin="Alice-new-pw-0815")
    assert (await api.whoami(tokens["access_token"])).status == 401
    assert (await api.login()).status == 401
    assert (await api.login(password="Alice-new-pw-0815")).status == 200


async def test_a_deleted_account_s_tokens_stay_dead_when_its_name_returns(api: Harness) -> None:
    tokens = (await api.login()).body
    await api.ok("api", "account", "delete", "alice")
    gone = await api.whoami(tokens["access_token"])
    assert gone.status == 401 and "no longer exists" in gone.detail
    await api.ok("api", "account", "create", "alice", "--role", "admin", "--password-stdin",
                 stdin=ALICE_PW)
    assert (await api.whoami(tokens["access_token"])).status == 401
    refresh = await api.call("POST", "/api/auth/refresh",
                             {"refresh_token": tokens["refresh_token"]})
    assert refresh.status == 401


# -- two-factor authentication -----------------------------------------------------------------

async def test_totp_with_a_real_code_and_single_use_recovery_codes(api: Harness) -> None:
    enabled = await api.ok("api", "account", "2fa", "enable", "alice")
    secret = _totp_secret(enabled)
    codes = _recovery_codes(enabled)
    assert len(codes) == 10
    qr = next(s.value for s in enabled.secrets if s.label == "QR code")
    assert "█" in qr and len(qr.splitlines()) > 15

    needs = await api.login()
    assert needs.status == 401 and needs.body["code"] == "totp-required"
    assert "one-time code" in needs.detail
    wrong = await api.login(totp="000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    assert wrong.status == 401 and wrong.detail == "the one-time code is wrong or was " \
        "already used"
    code = pyotp.TOTP(secret).now()
    ok = await api.login(totp=code, client="10.0.0.2")
    assert ok.status == 200 and ok.body["account"]["two_factor"] is True
    replay = await api.login(totp=code, client="10.0.0.3")
    assert replay.status == 401 and "already used" in replay.detail

    with_code = await api.login(recovery_code=codes[0].upper(), client="10.0.0.4")
    assert with_code.status == 200 and with_code.body["recovery_codes_left"] == 9
    reused = await api.login(recovery_code=codes[0], client="10.0.0.5")
    assert reused.status == 401
    wrong_password = await api.login(password="Wrong-password-9", totp=pyotp.TOTP(secret).now(),
                                     client="10.0.0.6")
    assert wrong_password.status == 401 and "password is wrong" in wrong_password.detail

    listed = await api.ok("api", "account", "list", real=False)
    assert listed.data[0]["two_factor"] is True and listed.data[0]["recovery_codes"] == 9
    await api.ok("api", "account", "2fa", "disable", "alice")
    assert (await api.login(client="10.0.0.7")).status == 200


async def test_require_2fa_refuses_accounts_without_it(tmp_path: Path) -> None:
    async with _harness(tmp_path, require_2fa=True) as api:
        await api.ok("api", "account", "create", "alice", "--role", "admin",
                     "--password-stdin", stdin=ALICE_PW)
        refused = await api.login()
        assert refused.status == 403
        assert "api.require_2fa" in refused.detail and "2fa enable alice" in refused.detail
        secret = _totp_secret(await api.ok("api", "account", "2fa", "enable", "alice"))
        assert (await api.login(totp=pyotp.TOTP(secret).now())).status == 200
        rows = await api.audit_rows()
        assert any(r["command"] == "api auth login" and r["outcome"] == "permission"
                   for r in rows)


async def test_require_2fa_applies_on_reload(api: Harness, tmp_path: Path) -> None:
    """What a reload (SIGHUP) does: the daemon swaps runtime.config; the next login reads it."""
    assert (await api.login()).status == 200
    config = api.rt.config.model_dump(mode="python")
    config["api"]["require_2fa"] = True
    api.rt.config = parse_config(config, source="podod.yaml", base_dir=tmp_path)
    refused = await api.login()
    assert refused.status == 403 and "api.require_2fa" in refused.detail


# -- API keys and the tokens of podod.yaml -----------------------------------------------------

async def test_api_key_create_use_revoke_and_expiry(api: Harness) -> None:
    created = await api.ok("api", "key", "create", "crm", "--role", "domain-admin",
                           "--domains", "Example.COM", "--expires", "90d")
    key = created.secrets[0].value
    assert key.startswith("podod_")
    assert 89 * 86400 < created.data["expires"] - time.time() <= 90 * 86400
    who = await api.whoami(key)
    assert who.body == {"actor": "apikey:crm", "role": "domain-admin",
                        "domains": ["example.com"]}
    profile = await api.call("GET", "/api/auth/profile", token=key)
    assert profile.body["kind"] == "key" and profile.body["two_factor"] is None

    listed = await api.ok("api", "key", "list", real=False)
    assert [k["name"] for k in listed.data] == ["crm"]
    assert key not in json.dumps(listed.data)

    await api.ok("api", "key", "revoke", "crm")
    gone = await api.whoami(key)
    assert gone.status == 401 and "not known" in gone.detail

    # A key whose time is up (its expiry as stored, seen after a restart) is refused.
    short = (await api.ok("api", "key", "create", "short", "--role", "viewer",
                          "--expires", "1m")).secrets[0].value
    assert (await api.whoami(short)).status == 200
    await api.rt.state.run(lambda c: c.execute("UPDATE api_keys SET expires = ? WHERE "
                                               "name = 'short'", (time.time() - 5,)))
    restarted = ApiAuth(api.rt)
    await restarted.start()
    with pytest.raises(PododError, match=r"the API key short expired on \d{4}-"):
        restarted.identify(short)

    for argv, sentence in [
            (["api", "key", "create", "x", "--role", "viewer", "--expires", "30s"],
             "at least 1m"),
            (["api", "key", "create", "x", "--role", "viewer", "--expires", "1d",
              "--no-expiry"], "either --expires or --no-expiry"),
            (["api", "key", "create", "x", "--role", "domain-admin"], "needs --domains"),
            (["api", "key", "create", "x", "--role", "admin", "--domains", "example.com"],
             "for a domain-admin only"),
            (["api", "key", "create", "Bad Name!", "--role", "viewer"], "not a valid key name"),
            (["api", "key", "create", "short", "--role", "viewer"], "already exists"),
            (["api", "key", "revoke", "nosuch"], "there is no API key nosuch")]:
        reply = await api.run(*argv)
        assert not reply.ok and sentence in reply.message, reply.message
    assert [k.name for k in api.auth.keys.values()] == ["short"]  # nothing else was made


async def test_the_bus_authorizes_keys_and_accounts_like_grants(api: Harness) -> None:
    """An actor from a key or an account is refused what its role may not run, by the bus."""
    assert api.rt.bus is not None
    viewer_key = (await api.ok("api", "key", "create", "ro", "--role", "viewer")).secrets[0]
    admin_token = (await api.login()).body["access_token"]
    for token, allowed in ((viewer_key.value, False), (admin_token, True)):
        actor = api.auth.identify(token).actor
        reply = await api.rt.bus.execute(Request(["audit", "list"], actor, "api"))
        assert reply.ok is allowed, reply.message
        if not allowed:
            assert reply.status == "permission" and "apikey:ro" in reply.message
        made = await api.rt.bus.execute(Request(["api", "key", "create", "k2", "--role",
                                                 "viewer"], actor, "api", execute_real=True))
        assert made.ok is allowed, made.message
    rows = [r for r in await api.audit_rows() if r["command"] == "audit list"]
    assert [r["actor"] for r in rows] == ["apikey:ro", "api:alice"]


async def test_access_api_tokens_of_the_config_still_work(api: Harness) -> None:
    who = await api.whoami(LEGACY_TOKEN)
    assert who.body == {"actor": "api:legacy", "role": "viewer", "domains": []}
    for token in ("not-a-token-podod-knows", "a.b.c"):
        refused = await api.whoami(token)
        assert refused.status == 401 and refused.detail == "the API token is not known to podod"


async def test_token_faults_get_401_with_one_sentence(api: Harness) -> None:
    tokens = (await api.login()).body
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    key = bytes.fromhex((api.rt.config.state_dir / "api-jwt.key").read_text().strip())
    kid = api.auth.kid
    forged = jwt.encode(claims, b"x" * 32, algorithm="HS256", headers={"kid": kid})
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT",
                                                    "kid": kid}).encode()).decode()
    payload = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    unsigned = f"{header}.{payload}."
    hs512 = jwt.encode(claims, key * 2, algorithm="HS512", headers={"kid": kid})
    expired = jwt.encode({**claims, "iat": claims["iat"] - 3600, "exp": int(time.time()) - 60},
                         key, algorithm="HS256", headers={"kid": kid})
    cases = [
        (forged, "the access token's signature is wrong"),
        (unsigned, "algorithm none is refused"),
        (hs512, "algorithm HS512 is refused"),
        (expired, "the access token has expired; refresh it or log in again"),
        ("eyJub3Q.b.c", "not a well-formed JWT"),
        ("podod_0123456789ab_" + "A" * 43, "the API key is not known to podod"),
    ]
    for index, (token, sentence) in enumerate(cases):
        reply = await api.whoami(token, client=f"10.1.0.{index}")
        assert reply.status == 401, (sentence, reply.body)
        assert sentence in reply.detail, reply.detail
    missing = await api.call("GET", "/test/whoami")
    assert missing.status == 401 and "Authorization: Bearer" in missing.detail

    # Rotating the signing key ends every access token; a refresh token still works.
    await api.ok("api", "rotate-key")
    rotated = await api.whoami(tokens["access_token"])
    assert rotated.status == 401 and "rotated" in rotated.detail
    refreshed = await api.call("POST", "/api/auth/refresh",
                               {"refresh_token": tokens["refresh_token"]})
    assert refreshed.status == 200
    assert (await api.whoami(refreshed.body["access_token"])).status == 200
    assert key != bytes.fromhex((api.rt.config.state_dir / "api-jwt.key").read_text().strip())

    # Tokens nobody signed slow their sender down, never a caller with a valid token.
    forged = jwt.encode(claims, b"y" * 32, algorithm="HS256", headers={"kid": api.auth.kid})
    for _ in range(8):
        last = await api.whoami(forged, client="10.2.0.1")
    assert last.status == 429 and int(last.headers["Retry-After"]) >= 1
    assert (await api.whoami(refreshed.body["access_token"], client="10.2.0.1")).status == 200


# -- throttling -----------------------------------------------------------------------------------

async def test_throttle_and_lockout_never_lock_the_admin_out_of_their_address(
        tmp_path: Path) -> None:
    throttle = {"free_failures": 2, "base_delay": "30s", "lockout_failures": 9}
    async with _harness(tmp_path, login_throttle=throttle) as api:
        await api.ok("api", "account", "create", "alice", "--role", "admin",
                     "--password-stdin", stdin=ALICE_PW)
        home = "192.0.2.10"
        assert (await api.login(client=home)).status == 200  # the admin's own address

        # One address guessing: its third failure makes it wait, even with the password.
        for _ in range(2):
            assert (await api.login(password="guess-1-Guess", client="198.51.100.1")).status \
                == 401
        third = await api.login(password="guess-3-Guess", client="198.51.100.1")
        assert third.status == 401
        waiting = await api.login(client="198.51.100.1")
        assert waiting.status == 429 and "too many failed logins from 198.51.100.1" in \
            waiting.detail
        assert 1 <= int(waiting.headers["Retry-After"]) <= 30

        # Guesses from many addresses lock the account, from addresses it never used ...
        for n in range(2, 5):
            for _ in range(2):
                assert (await api.login(password="guess-Guess-9", client=f"198.51.100.{n}")
                        ).status == 401
        locked = await api.login(client="203.0.113.5")
        assert locked.status == 429
        assert "the account alice is locked" in locked.detail
        assert "api account unlock alice" in locked.detail
        # ... an unknown name answers the same way (no hint which accounts exist) ...
        for n in range(5, 10):
            for _ in range(2):
                await api.login(username="nosuch", password="guess-Guess-9",
                                client=f"198.51.100.{n}")
        assert "the account nosuch is locked" in (await api.login(
            username="nosuch", client="203.0.113.5")).detail
        # ... but the admin logs in from their own address all the same.
        assert (await api.login(client=home)).status == 200

        await api.ok("api", "account", "unlock", "alice", real=False)
        assert (await api.login(client="203.0.113.5")).status == 200

        rows = [r for r in await api.audit_rows() if r["command"] == "api auth login"]
        outcomes = {r["outcome"] for r in rows}
        assert {"ok", "unauthenticated", "rate-limited"} <= outcomes
        assert any(r["actor"] == "api:(unknown account)" for r in rows)


# -- the audit log -------------------------------------------------------------------------------

async def test_logins_failures_and_refusals_are_audited_without_secrets(api: Harness) -> None:
    enabled = await api.ok("api", "account", "2fa", "enable", "alice")
    secret = _totp_secret(enabled)
    code = pyotp.TOTP(secret).now()
    tokens = (await api.login(totp=code)).body
    await api.login(password="Typed-by-mistake-77", totp="123456", client="10.0.0.9")
    await api.login(username="Alice-api-pw-4711", password="x", client="10.0.0.8")
    await api.call("POST", "/api/auth/refresh", {"refresh_token": tokens["refresh_token"]})
    await api.whoami("podod_0123456789ab_" + "B" * 43)
    key = (await api.ok("api", "key", "create", "k", "--role", "viewer")).secrets[0].value
    await api.ok("api", "account", "passwd", "alice", "--password-stdin",
                 stdin="Another-pw-1234")
    rows = await api.audit_rows()
    text = json.dumps(rows)
    for secret_text in [ALICE_PW, "Typed-by-mistake-77", "Another-pw-1234", secret, code,
                        tokens["access_token"], tokens["refresh_token"], key,
                        *_recovery_codes(enabled)]:
        assert secret_text not in text
    logins = [r for r in rows if r["command"] == "api auth login"]
    assert [(r["actor"], r["outcome"]) for r in logins] == [
        ("api:alice", "ok"), ("api:alice", "unauthenticated"),
        ("api:(unknown account)", "unauthenticated")]
    assert json.loads(logins[0]["args"]) ["client"] == "10.0.0.1"
    assert any(r["command"] == "api auth refresh" and r["outcome"] == "ok" for r in rows)
    assert any(r["command"] == "api auth token" and r["outcome"] == "unauthenticated"
               for r in rows)
    verify = await api.ok("audit", "verify", real=False)
    assert verify.data["intact"] is True


# -- the commands through the real daemon and podoctl ---------------------------------------------

def test_api_commands_through_the_daemon_and_podoctl(tmp_path: Path) -> None:
    config = write_config(tmp_path / "podod.yaml", base_config(tmp_path))
    with DaemonProcess(config) as daemon:
        key_file = tmp_path / "state" / "api-jwt.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        made = daemon.podoctl("api", "account", "create", "alice", "--role", "admin",
                              "--password-stdin", "--execute-real", "--yes",
                              input=ALICE_PW + "\n")
        assert made.returncode == 0, made.stderr
        assert "API account alice (admin) created" in made.stdout

        helped = daemon.request(["help", "api", "account", "2fa", "enable"])
        assert helped["ok"] and helped["data"]["command"] == "api account 2fa enable"
        shown = daemon.podoctl("api", "account", "2fa", "enable", "alice", "--execute-real",
                               "--yes")
        assert shown.returncode == 0, shown.stderr
        assert "otpauth://totp/podod:alice?secret=" in shown.stdout
        assert "QR code (shown once):" in shown.stdout and "█" in shown.stdout

        sandbox = daemon.request(["api", "account", "create", "bob", "--role", "viewer",
                                  "--generate-password"])
        assert sandbox["ok"] and sandbox["sandbox"] and "would be created" in sandbox["message"]
        assert not sandbox.get("secrets")
        for argv, code, sentence in [
                (["api", "account", "create", "alice", "--role", "admin",
                  "--generate-password"], 1, "already exists"),
                (["api", "account", "create", "Bad/Name", "--role", "admin",
                  "--generate-password"], 2, "not a valid account name"),
                (["api", "account", "create", "carol", "--role", "admin",
                  "--password-stdin"], 2, "too short"),
                (["api", "account", "passwd", "nosuch", "--generate-password"], 1,
                 "there is no API account nosuch"),
                (["api", "account", "create", "dave", "--role", "owner",
                  "--generate-password"], 2, "--role")]:
            stdin = "short" if "--password-stdin" in argv else None
            reply = daemon.request(argv, execute_real=True, stdin=stdin)
            assert not reply["ok"] and sentence in reply["message"], reply["message"]
            assert reply["exit_code"] == code, reply
        listed = daemon.request(["api", "account", "list"])
        assert [a["name"] for a in listed["data"]] == ["alice"]  # nothing else was made
        assert listed["data"][0]["two_factor"] is True

        key = daemon.request(["api", "key", "create", "deploy", "--role", "viewer",
                              "--no-expiry"], execute_real=True)
        assert key["ok"] and key["secrets"][0]["value"].startswith("podod_")
        assert daemon.request(["api", "key", "list"])["data"][0]["expires"] is None
        rotated = daemon.request(["api", "rotate-key"], execute_real=True)
        assert rotated["ok"] and "replaced" in rotated["message"]
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

        daemon.stop()
        daemon.start()  # accounts and keys are kept in state.db
        assert [a["name"] for a in daemon.request(["api", "account", "list"])["data"]] == \
            ["alice"]
        assert daemon.request(["api", "key", "revoke", "deploy"], execute_real=True)["ok"]
        assert daemon.request(["api", "key", "list"])["data"] == []
        audit = daemon.request(["audit", "list", "--limit", "100"])
        assert ALICE_PW not in json.dumps(audit) and key["secrets"][0]["value"] not in \
            json.dumps(audit)


def test_a_signing_key_file_that_is_no_key_stops_the_start(tmp_path: Path) -> None:
    config = write_config(tmp_path / "podod.yaml", base_config(tmp_path))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "api-jwt.key").write_text("not a key\n")
    with pytest.raises(RuntimeError, match="podod exited with 1") as failed:
        DaemonProcess(config).start()
    assert "is not 64 hex digits; move it aside and podod makes a new one" in \
        str(failed.value)
    assert "Traceback" not in str(failed.value)
