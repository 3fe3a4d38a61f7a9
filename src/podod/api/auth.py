"""People log in, programs use keys: the REST API's accounts, tokens, 2FA and API keys.

:class:`ApiAuth` (``runtime.api_auth``, made at start, closed at stop) keeps the accounts
and keys in state.db (area ``api``, ``podod.api.store``), signs and checks access tokens, and serves
``/api/auth/{login,refresh,logout,profile}``. The frontend (``podod.frontends.api``) calls
:meth:`ApiAuth.authenticate` for every request and merges :meth:`ApiAuth.routes` and
:meth:`ApiAuth.openapi_paths`; the bus commands (``api account|key|rotate-key``) live in
``podod.api.commands``. docs/api-auth.md describes the design and the policy.

- Passwords: Argon2id (argon2-cffi), hashed in a small thread pool of its own (argon2
  releases the GIL), never queued behind a bulk import's hashes in the mail pool.
- Access tokens: JWT, HS256 only, with ``exp``, ``iat``, ``jti``, the session (``sid``) and
  the account's generation (``gen``); checked in memory: no database call per request.
- Refresh tokens, API keys and recovery codes are random and stored as SHA-256 only;
  a refresh token is single-use: using one twice revokes its whole session.

aiohttp, PyJWT, argon2-cffi, pyotp and qrcode are imported when first used, never at
podod's start (docs/architecture.md, "Start-up budget").
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podod.api import store
from podod.api.store import Account, ApiKey
from podod.api.throttle import LoginThrottle, Verdict
from podod.bus.audit import AuditEntry
from podod.bus.context import Actor, BusRuntime
from podod.durable import replace, write_new
from podod.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    PododError,
    RateLimited,
    Unauthenticated,
    Unavailable,
    UsageError,
    ValidationError,
)

if TYPE_CHECKING:
    from aiohttp import web

    from podod.api.auth_settings import ApiAuthSettings

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
KEY_PREFIX = "podod_"  # API keys: podod_<id>_<secret>
REFRESH_PREFIX = "podod-rt_"
KEY_RE = re.compile(r"podod_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
ALGORITHM = "HS256"
ISSUER = "podod"
MAX_BODY = 16 * 1024  # bytes of a login, refresh or logout request
MAX_PASSWORD = 1024  # characters offered at login (Argon2 takes any length; bound the work)
MAX_PENDING_LOGINS = 32  # logins hashing or waiting to: beyond, "try again in a moment"
HASH_THREADS = 2
VERIFIED_TOKENS = 4096  # access tokens whose signature was checked, kept for their next use
RECOVERY_CODES = 10
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


class LoginThrottled(RateLimited):
    """Too many failures from here (or for this account from an unknown address)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TokenFault(Unauthenticated):
    """A bearer token podod refuses; ``forged``: it was never podod's (a wrong signature,
    a refused algorithm, an unknown key), as opposed to one that expired or was revoked."""

    def __init__(self, message: str, *, forged: bool = False, actor: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.forged = forged
        self.actor = actor


@dataclass
class Identity:
    """Who a bearer token says the caller is (the profile shows it)."""

    actor: Actor
    kind: str  # "account" | "key" | "token"
    name: str
    session: str | None = None
    expires: float | None = None
    two_factor: bool | None = None


@dataclass
class Issued:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    account: Account
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"access_token": self.access_token, "token_type": "Bearer",
                "expires_in": self.expires_in, "refresh_token": self.refresh_token,
                "refresh_expires_in": self.refresh_expires_in,
                "account": {"name": self.account.name, "role": self.account.role,
                            "domains": list(self.account.domains),
                            "two_factor": self.account.totp}, **self.extra}


def check_name(name: str, what: str = "account") -> str:
    value = name.strip().lower()
    if not NAME_RE.fullmatch(value):
        raise ValidationError(f"'{name[:80]}' is not a valid {what} name: use 1 to 64 "
                              "lower-case letters, digits, dots, dashes or underscores, "
                              "starting with a letter or digit")
    return value


def normalize_code(code: str) -> str:
    return "".join(c for c in code.lower() if c not in "- ")


_CLIENT_KEY: Any = None


def client_key() -> web.RequestKey[str]:
    """Where the frontend puts the client address it resolved (a trusted proxy's
    X-Forwarded-For): ``request[client_key()] = address``."""
    global _CLIENT_KEY
    if _CLIENT_KEY is None:
        from aiohttp import web

        _CLIENT_KEY = web.RequestKey("podod_client", str)
    key: web.RequestKey[str] = _CLIENT_KEY
    return key


def client_address(request: web.Request) -> str:
    """The caller's address: what the frontend resolved under :func:`client_key`, else the
    peer's address."""
    resolved = request.get(client_key())
    if isinstance(resolved, str) and resolved:
        return resolved[:100]
    return request.remote or "unknown"


class ApiAuth:
    """Accounts, sessions, API keys and the signing key (see the module's docstring)."""

    def __init__(self, runtime: BusRuntime) -> None:
        self.runtime = runtime
        self.accounts: dict[str, Account] = {}
        self.keys: dict[str, ApiKey] = {}
        self.revoked: dict[str, float] = {}  # session -> until (wall clock)
        self.throttle = LoginThrottle(lambda: self.settings.login_throttle)
        self._key: bytes = b""
        self.kid = ""
        self._executor: ThreadPoolExecutor | None = None
        self._pending = 0
        self._dummy_hash: str | None = None
        self._audited_waits: dict[str, float] = {}  # address -> until: one record per wait
        # Access tokens whose signature and claims were checked: token -> claims. Only the
        # signature check is skipped for them; expiry, account, generation and session are
        # checked on every request.
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @property
    def settings(self) -> ApiAuthSettings:
        return self.runtime.config.api

    @property
    def key_path(self) -> Path:
        configured = self.settings.signing_key_file
        return Path(configured) if configured else Path(self.runtime.config.state_dir) / \
            "api-jwt.key"

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.runtime.state.migrate(store.AREA, store.MIGRATIONS)
        await asyncio.to_thread(self._load_key)
        accounts, keys, revoked = await self.runtime.state.run(store.load_all, time.time())
        self.accounts = {a.name: a for a in accounts}
        self.keys = {k.id: k for k in keys}
        self.revoked = revoked

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    def _load_key(self) -> None:
        path = self.key_path
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            text = secrets.token_hex(32)
            write_new(path, (text + "\n").encode())
            log.info("made the API's signing key %s", path)
        self._set_key(text, path)

    def _set_key(self, text: str, path: Path) -> None:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) < 32:
            raise PododError(f"the API's signing key {path} is not 64 hex digits; move it "
                             "aside and podod makes a new one (every access token then ends)",
                             code="config")
        self._key = key
        self.kid = hashlib.sha256(key).hexdigest()[:16]

    async def rotate_key(self) -> str:
        """A new signing key (written 0600, atomically): every access token ends at once;
        refresh tokens stay valid and get tokens signed with the new key."""
        text = secrets.token_hex(32)
        path = self.key_path
        await asyncio.to_thread(replace, path, (text + "\n").encode())
        self._set_key(text, path)
        self._verified.clear()
        return self.kid

    # -- passwords (Argon2id, its own small pool) -------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=HASH_THREADS,
                                                thread_name_prefix="podod-argon2")
        return self._executor

    async def hash_password(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool(), _argon2_hash,
                                                                password)

    async def _verify(self, stored: str | None, password: str) -> tuple[bool, bool]:
        """(matches, needs a rehash); an unknown account is checked against a dummy hash,
        so it takes as long as a known one."""
        if stored is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self.hash_password(secrets.token_hex(16))
            stored = self._dummy_hash
            await asyncio.get_running_loop().run_in_executor(self._pool(), _argon2_verify,
                                                             stored, password)
            return False, False
        return await asyncio.get_running_loop().run_in_executor(self._pool(), _argon2_verify,
                                                                stored, password)

    def check_password(self, password: str) -> None:
        from podod.mail.passwords import check_policy

        check_policy(password, self.settings.password_min_length, "ARGON2ID")

    # -- audit --------------------------------------------------------------------------

    async def audit(self, command: str, actor: str, outcome: str, message: str,
                    args: dict[str, object]) -> None:
        bus = self.runtime.bus
        if bus is None:
            return
        try:
            await bus.audit.append(AuditEntry(
                request_id=secrets.token_hex(6), actor=actor, origin="api", command=command,
                args=args, execute_real=False, outcome=outcome, message=message,
                duration_ms=0.0))
        except Exception:
            log.exception("could not write the audit record of %s by %s", command, actor)
        log.info("%s by %s from %s: %s", command, actor, args.get("client"), outcome)

    async def _refuse_throttled(self, command: str, actor: str, address: str,
                                verdict: Verdict, message: str) -> LoginThrottled:
        """The refusal of an attempt that must wait; audited once per wait (an address
        that keeps trying while it waits does not write a record per attempt)."""
        now = time.monotonic()
        if self._audited_waits.get(address, 0.0) <= now:
            if len(self._audited_waits) > 10_000:
                self._audited_waits = {a: u for a, u in self._audited_waits.items()
                                       if u > now}
            self._audited_waits[address] = now + verdict.wait
            await self.audit(command, actor, "rate-limited", message,
                             {"client": address, "wait_s": verdict.retry_after})
        return LoginThrottled(message, verdict.retry_after)

    # -- login, refresh, logout ---------------------------------------------------------

    async def login(self, username: str, password: str, address: str, *,
                    totp: str | None = None, recovery_code: str | None = None) -> Issued:
        """Check a login and start a session, or raise with one sentence (audited)."""
        name = username.strip().lower()
        valid_name = NAME_RE.fullmatch(name) is not None
        shown = f"api:{name}" if name in self.accounts else "api:(unknown account)"
        command = "api auth login"
        row = await self.runtime.state.run(store.account_row, name) if valid_name else None
        known = row is not None and await self.runtime.state.run(
            store.is_known, name, address, time.time() - self.settings.login_throttle
            .known_address_days * 86400)
        verdict = self.throttle.check(name if valid_name else None, address, known=known)
        if verdict is not None:
            if verdict.reason == "locked":
                message = (f"the account {name} is locked for {_wait(verdict.wait)} after "
                           "too many failed logins; it can still log in from an address it "
                           "logged in from before, or an administrator can run 'podoctl api "
                           f"account unlock {name}'")
            else:
                message = (f"too many failed logins from {address}; try again in "
                           f"{_wait(verdict.wait)}")
            raise await self._refuse_throttled(command, shown, address, verdict, message)
        if self._pending >= MAX_PENDING_LOGINS:
            await self.audit(command, shown, "unavailable", "too many logins at once",
                             {"client": address})
            raise Unavailable("podod is checking too many logins at once; try again in a "
                              "moment")
        self._pending += 1
        try:
            matches, rehash = await self._verify(row["password_hash"] if row else None,
                                                 password)
        finally:
            self._pending -= 1
        if not matches or row is None:
            self.throttle.failed(name if valid_name else None, address)
            await self.audit(command, shown, "unauthenticated",
                             "wrong account name or password", {"client": address})
            raise Unauthenticated("the account name or password is wrong")
        if row["disabled"]:
            await self.audit(command, shown, "unauthenticated", "the account is disabled",
                             {"client": address})
            raise Unauthenticated(f"the account {name} is disabled")
        method = "password"
        left: int | None = None
        if row["totp_secret"]:
            if not totp and not recovery_code:
                await self.audit(command, shown, "totp-required",
                                 "password right; a one-time code is needed",
                                 {"client": address})
                raise Unauthenticated("this account uses two-factor authentication: send "
                                      "the one-time code of its authenticator app as 'totp' "
                                      "(or a recovery code as 'recovery_code')",
                                      code="totp-required")
            if totp:
                accepted = await self.runtime.state.run(store.use_totp, name, row["totp_secret"],
                                                        totp, time.time())
                method = "password+totp"
            else:
                left = await self.runtime.state.run(store.use_recovery_code, name,
                                                    sha256(normalize_code(recovery_code or "")))
                accepted = left is not None
                method = "password+recovery-code"
            if not accepted:
                self.throttle.failed(name, address)
                await self.audit(command, shown, "unauthenticated",
                                 "wrong or reused one-time code", {"client": address,
                                                                   "method": method})
                raise Unauthenticated("the one-time code is wrong or was already used")
        elif self.settings.require_2fa:
            await self.audit(command, shown, "permission",
                             "refused: api.require_2fa is on and the account has no 2FA",
                             {"client": address})
            raise PermissionDenied(f"two-factor authentication is required (api.require_2fa) "
                                   f"and the account {name} has none; an administrator can "
                                   f"run 'podoctl api account 2fa enable {name}'")
        self.throttle.succeeded(name, address)
        if rehash:
            new_hash = await self.hash_password(password)
            await self.runtime.state.run(store.set_password_hash, name, new_hash)
        account = self.accounts[name]
        issued = await self._start_session(account, address)
        if left is not None:
            issued.extra["recovery_codes_left"] = left
        await self.audit(command, account.actor.name, "ok", f"logged in ({method})",
                         {"client": address, "method": method,
                          "session": issued.extra.pop("_session")})
        return issued

    async def _start_session(self, account: Account, address: str) -> Issued:
        session = secrets.token_hex(16)
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        ttl = self.settings.refresh_token_ttl
        await self.runtime.state.run(store.new_session, account.name, session, sha256(refresh),
                                     now, now + ttl, address)
        issued = self._issue(account, session, refresh)
        issued.extra["_session"] = session
        return issued

    def _issue(self, account: Account, session: str, refresh: str) -> Issued:
        import jwt

        now = int(time.time())
        ttl = int(self.settings.access_token_ttl)
        claims = {"iss": ISSUER, "sub": account.name, "iat": now, "exp": now + ttl,
                  "jti": secrets.token_hex(12), "sid": session, "gen": account.generation,
                  "typ": "access"}
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})
        return Issued(token, refresh, ttl, int(self.settings.refresh_token_ttl), account)

    async def refresh(self, refresh_token: str, address: str) -> Issued:
        """A new access token and a new refresh token for a refresh token used once."""
        command = "api auth refresh"
        if not refresh_token.startswith(REFRESH_PREFIX) or len(refresh_token) > 200:
            await self._token_refused(command, "api:(unknown token)", address,
                                      "not a refresh token", forged=True)
            raise Unauthenticated("this is not a podod refresh token")
        now = time.time()
        new = REFRESH_PREFIX + secrets.token_urlsafe(32)
        outcome, account_name, session = await self.runtime.state.run(
            store.rotate_refresh, sha256(refresh_token), sha256(new), now,
            now + self.settings.refresh_token_ttl, now + self.settings.access_token_ttl)
        account = self.accounts.get(account_name or "")
        shown = account.actor.name if account else "api:(unknown token)"
        if outcome == "reused":
            assert session is not None
            self.revoked[session] = now + self.settings.access_token_ttl
            await self._token_refused(command, shown, address, "refresh token used twice: "
                                      "its session is revoked", forged=False)
            raise Unauthenticated("this refresh token was already used, so its session has "
                                  "been ended (a stolen copy would be refused too); log in "
                                  "again")
        if outcome == "expired":
            await self._token_refused(command, shown, address, "refresh token expired")
            raise Unauthenticated("the refresh token has expired; log in again")
        if outcome == "unknown" or account is None or session is None:
            await self._token_refused(command, shown, address, "unknown refresh token",
                                      forged=True)
            raise Unauthenticated("the refresh token is not known: it was revoked (logout, "
                                  "a new password) or never issued; log in again")
        if account.disabled:
            await self._token_refused(command, shown, address, "the account is disabled")
            raise Unauthenticated(f"the account {account.name} is disabled")
        if session in self.revoked:
            raise Unauthenticated("the session of this refresh token was ended; log in again")
        issued = self._issue(account, session, new)
        await self.audit(command, shown, "ok", "tokens refreshed",
                         {"client": address, "session": session})
        return issued

    async def logout(self, identity: Identity | None, refresh_token: str | None,
                     address: str, *, everywhere: bool = False) -> int:
        """End the session of the access token or of the refresh token (``everywhere``:
        every session of the account). Returns the number of sessions ended."""
        now = time.time()
        until = now + self.settings.access_token_ttl
        account_name: str | None = None
        sessions: list[str] = []
        if identity is not None and identity.kind == "account":
            account_name = identity.name
            if identity.session:
                sessions.append(identity.session)
        if refresh_token:
            found = await self.runtime.state.run(store.session_of, sha256(refresh_token))
            if found is None:
                if identity is None:
                    await self._token_refused("api auth logout", "api:(unknown token)",
                                              address, "unknown refresh token", forged=True)
                    raise Unauthenticated("the refresh token is not known: it was revoked "
                                          "already or never issued")
            else:
                if account_name is not None and found[0] != account_name:
                    raise PermissionDenied("this refresh token belongs to another account")
                account_name, session = found
                sessions.append(session)
        if account_name is None:
            raise Unauthenticated("log out with the access token of the session (Authorization:"
                                  " Bearer) or its refresh token (refresh_token)")
        if everywhere:
            ended = await self.end_all_sessions(account_name)
        else:
            ended = await self.runtime.state.run(store.revoke_sessions, sorted(set(sessions)),
                                                 until)
            for session in sessions:
                self.revoked[session] = until
        await self.audit("api auth logout", f"api:{account_name}", "ok",
                         f"logged out ({ended} session(s) ended)",
                         {"client": address, "everywhere": everywhere})
        return ended

    async def end_all_sessions(self, name: str) -> int:
        """Every access and refresh token of the account ends (its generation moves on)."""
        ended: int = await self.runtime.state.run(store.bump_generation, name)
        account = self.accounts.get(name)
        if account is not None:
            account.generation += 1
        return ended

    async def _token_refused(self, command: str, actor: str, address: str, message: str, *,
                             forged: bool = False) -> None:
        if forged:
            self.throttle.failed(None, address)
        await self.audit(command, actor, "unauthenticated", message, {"client": address})

    # -- every request ------------------------------------------------------------------

    async def authenticate(self, request: web.Request) -> Actor:
        """The actor of an API request (``Authorization: Bearer`` with an access token, an
        API key, or an ``access.api_tokens`` token), or Unauthenticated with one sentence
        (audited; an address that keeps sending forged tokens gets RateLimited)."""
        return (await self.identify_request(request)).actor

    async def identify_request(self, request: web.Request) -> Identity:
        address = client_address(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("this request needs an Authorization: Bearer header with an "
                                  "access token or an API key" if not header else
                                  "the Authorization header must be 'Bearer' and a token")
        try:
            return self.identify(token)
        except TokenFault as exc:
            if exc.forged:
                verdict = self.throttle.check(None, address, known=False)
                if verdict is not None:
                    raise await self._refuse_throttled(
                        "api auth token", "api:(unknown token)", address, verdict,
                        f"too many refused tokens from {address}; try again in "
                        f"{_wait(verdict.wait)}") from None
            await self._token_refused("api auth token", exc.actor or "api:(unknown token)",
                                      address, exc.message, forged=exc.forged)
            raise

    def identify(self, token: str) -> Identity:
        """The identity of a bearer token (in memory; no database call), or TokenFault."""
        if len(token) > 4096:
            raise TokenFault("the bearer token is too long to be podod's", forged=True)
        if token.startswith(KEY_PREFIX):
            return self._identify_key(token)
        if token.startswith("eyJ") and token.count(".") == 2:  # a JWT: base64 of '{"'
            return self._identify_jwt(token)
        assert self.runtime.bus is not None
        try:
            actor = self.runtime.bus.identify("api", token)
        except Unauthenticated as exc:
            raise TokenFault(exc.message, forged=True) from None
        return Identity(actor, "token", actor.name.removeprefix("api:"))

    def _identify_key(self, token: str) -> Identity:
        match = KEY_RE.fullmatch(token)
        key = self.keys.get(match.group(1)) if match else None
        if key is None or not hmac.compare_digest(key.key_hash, sha256(token)):
            raise TokenFault("the API key is not known to podod (it was revoked, or never "
                             "issued)", forged=True)
        if key.expires is not None and key.expires <= time.time():
            raise TokenFault(f"the API key {key.name} expired on {_date(key.expires)}; an "
                             "administrator can create a new one", actor=key.actor.name,
                             code="expired")
        return Identity(key.actor, "key", key.name, expires=key.expires)

    def _identify_jwt(self, token: str) -> Identity:
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify_jwt(token)
            self._verified[token] = claims
            while len(self._verified) > VERIFIED_TOKENS:
                self._verified.popitem(last=False)
        elif claims["exp"] <= time.time():
            self._verified.pop(token, None)
            raise TokenFault("the access token has expired; refresh it or log in again",
                             code="expired")
        account = self.accounts.get(str(claims["sub"]))
        if account is None:
            raise TokenFault("the account of this access token no longer exists")
        if account.disabled:
            raise TokenFault(f"the account {account.name} is disabled",
                             actor=account.actor.name, code="disabled")
        session = str(claims["sid"])
        if claims["gen"] != account.generation or session in self.revoked:
            raise TokenFault("the access token was revoked (logout, a new password or "
                             "two-factor setting, or every session ended); log in again",
                             actor=account.actor.name, code="revoked")
        return Identity(account.actor, "account", account.name, session=session,
                        expires=float(claims["exp"]), two_factor=account.totp)

    def _verify_jwt(self, token: str) -> dict[str, Any]:
        """The claims of a token signed with the current key (signature, algorithm, claims
        and expiry checked), or TokenFault."""
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenFault("the access token is not a well-formed JWT", forged=True) from None
        alg = header.get("alg")
        if alg != ALGORITHM:
            shown = "none" if str(alg).lower() == "none" else str(alg)[:20]
            raise TokenFault(f"the access token's algorithm {shown} is refused: podod signs "
                             "access tokens with HS256 only", forged=True)
        if header.get("kid") != self.kid:
            raise TokenFault("the access token was signed with a key that is no longer in "
                             "use (it was rotated, or the token is not podod's); log in again",
                             forged=header.get("kid") is None, code="key-rotated")
        try:
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM], issuer=ISSUER,
                                options={"require": ["exp", "iat", "jti", "sub", "sid",
                                                     "gen"]})
        except jwt.ExpiredSignatureError:
            raise TokenFault("the access token has expired; refresh it or log in again",
                             code="expired") from None
        except jwt.InvalidSignatureError:
            raise TokenFault("the access token's signature is wrong", forged=True) from None
        except jwt.PyJWTError as exc:
            raise TokenFault(f"the access token is not valid ({str(exc)[:100]})",
                             forged=True) from None
        if claims.get("typ") != "access":
            raise TokenFault("this token is not an access token", forged=True)
        return dict(claims)

    # -- accounts and keys (the bus commands call these) ---------------------------------

    def account(self, name: str) -> Account:
        account = self.accounts.get(name)
        if account is None:
            raise NotFound(f"there is no API account {name}")
        return account

    def key_named(self, name: str) -> ApiKey:
        for key in self.keys.values():
            if key.name == name:
                return key
        raise NotFound(f"there is no API key {name}")

    async def create_account(self, name: str, role: str, domains: tuple[str, ...],
                             password: str, created_by: str) -> Account:
        digest = await self.hash_password(password)
        # A random first generation: a token of a deleted account of the same name, still
        # within its lifetime, never matches the new account.
        generation = secrets.randbelow(2**31)
        try:
            await self.runtime.state.run(store.insert_account, name, role, json.dumps(domains),
                                         digest, time.time(), created_by, generation)
        except sqlite3.IntegrityError:
            raise Conflict(f"the API account {name} already exists") from None
        account = Account(name, role, domains, False, generation, False)
        self.accounts[name] = account
        return account

    async def set_password(self, name: str, password: str) -> None:
        digest = await self.hash_password(password)
        await self.runtime.state.run(store.set_password, name, digest, time.time())
        self.account(name).generation += 1
        self.throttle.clear_account(name)

    async def set_disabled(self, name: str, disabled: bool) -> None:
        await self.runtime.state.run(store.set_disabled, name, disabled)
        account = self.account(name)
        account.disabled = disabled
        account.generation += 1

    async def delete_account(self, name: str) -> None:
        await self.runtime.state.run(store.delete_account, name)
        self.accounts.pop(name, None)
        self.throttle.clear_account(name)

    async def enable_2fa(self, name: str) -> tuple[str, list[str]]:
        """A new TOTP secret and recovery codes (the old ones end); (secret, codes)."""
        import pyotp

        secret = pyotp.random_base32(32)
        codes = ["-".join("".join(secrets.choice(_B32) for _ in range(4)) for _ in range(3))
                 for _ in range(RECOVERY_CODES)]
        await self.runtime.state.run(store.set_totp, name, secret,
                                     [sha256(normalize_code(c)) for c in codes])
        account = self.account(name)
        account.totp = True
        account.generation += 1
        return secret, codes

    async def disable_2fa(self, name: str) -> None:
        await self.runtime.state.run(store.set_totp, name, None, [])
        account = self.account(name)
        account.totp = False
        account.generation += 1

    def provisioning_uri(self, name: str, secret: str) -> str:
        import pyotp

        return str(pyotp.TOTP(secret).provisioning_uri(name=name,
                                                       issuer_name=self.settings.totp_issuer))

    async def list_accounts(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self.runtime.state.run(store.list_accounts)
        return rows

    async def create_key(self, name: str, role: str, domains: tuple[str, ...],
                         expires: float | None, created_by: str) -> tuple[ApiKey, str]:
        key_id = secrets.token_hex(6)
        token = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(key_id, name, sha256(token), role, domains, time.time(), created_by,
                     expires)
        try:
            await self.runtime.state.run(store.insert_key, key)
        except sqlite3.IntegrityError:
            raise Conflict(f"the API key {name} already exists") from None
        self.keys[key_id] = key
        return key, token

    async def revoke_key(self, name: str) -> ApiKey:
        key = self.key_named(name)
        self.keys.pop(key.id, None)  # refused from now on, before the database is written
        await self.runtime.state.run(store.delete_key, key.id)
        return key

    # -- HTTP ---------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        from aiohttp import web

        return [web.post("/api/auth/login", self._route(self._login_route)),
                web.post("/api/auth/refresh", self._route(self._refresh_route)),
                web.post("/api/auth/logout", self._route(self._logout_route)),
                web.get("/api/auth/profile", self._route(self._profile_route))]

    def _route(self, handler: Callable[[web.Request], Awaitable[dict[str, Any]]]
               ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def route(request: web.Request) -> web.StreamResponse:
            from aiohttp import web

            try:
                body = await handler(request)
            except PododError as exc:
                return problem(exc, request.path)
            return web.json_response(body, headers={"Cache-Control": "no-store"})
        return route

    async def _login_route(self, request: web.Request) -> dict[str, Any]:
        body = await _json_body(request, {"username": (str, 64), "password": (str, MAX_PASSWORD),
                                          "totp": (str, 16), "recovery_code": (str, 64)},
                                required=("username", "password"))
        issued = await self.login(body["username"], body["password"], client_address(request),
                                  totp=body.get("totp") or None,
                                  recovery_code=body.get("recovery_code") or None)
        return issued.to_json()

    async def _refresh_route(self, request: web.Request) -> dict[str, Any]:
        body = await _json_body(request, {"refresh_token": (str, 256)},
                                required=("refresh_token",))
        return (await self.refresh(body["refresh_token"], client_address(request))).to_json()

    async def _logout_route(self, request: web.Request) -> dict[str, Any]:
        body = await _json_body(request, {"refresh_token": (str, 256), "everywhere": (bool, 0)},
                                required=(), empty_ok=True)
        identity = None
        if request.headers.get("Authorization"):
            identity = await self.identify_request(request)
        ended = await self.logout(identity, body.get("refresh_token"), client_address(request),
                                  everywhere=bool(body.get("everywhere")))
        return {"sessions_ended": ended}

    async def _profile_route(self, request: web.Request) -> dict[str, Any]:
        identity = await self.identify_request(request)
        actor = identity.actor
        return {"actor": actor.name, "kind": identity.kind, "name": identity.name,
                "role": actor.role, "domains": list(actor.domains),
                "two_factor": identity.two_factor,
                "expires": _iso(identity.expires) if identity.expires else None}

    def openapi_paths(self) -> dict[str, Any]:
        """OpenAPI 3.1: ``{"paths": {...}, "components": {"securitySchemes": {"bearerAuth":
        ...}, "schemas": {...}}}`` for the frontend to merge into its document."""
        from podod.api.openapi import auth_openapi

        return auth_openapi()


def problem(exc: PododError, instance: str) -> web.Response:
    """An RFC 9457 problem+json answer: one sentence, the bus's status and code."""
    from aiohttp import web

    from podod.bus.status import http_status

    status = http_status(exc.status)
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="podod", error="invalid_token"'
    if isinstance(exc, LoginThrottled):
        headers["Retry-After"] = str(exc.retry_after)
    from http import HTTPStatus

    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
            "detail": exc.message, "code": exc.code, "podod_status": exc.status,
            "instance": instance}
    return web.json_response(body, status=status, content_type="application/problem+json",
                             headers=headers)


async def _json_body(request: web.Request, fields: dict[str, tuple[type, int]], *,
                     required: tuple[str, ...], empty_ok: bool = False) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise UsageError(f"the request body is larger than {MAX_BODY // 1024} KiB")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise UsageError(f"the request body is larger than {MAX_BODY // 1024} KiB")
    if not raw.strip() and empty_ok:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise UsageError("the request body must be a JSON object") from None
    if not isinstance(data, dict):
        raise UsageError("the request body must be a JSON object")
    for key in data:
        if key not in fields:
            raise UsageError(f"unknown field '{str(key)[:40]}'; this request takes "
                             f"{', '.join(fields)}")
    for key in required:
        if key not in data:
            raise UsageError(f"the field '{key}' is required")
    for key, value in data.items():
        kind, most = fields[key]
        if kind is bool:
            if not isinstance(value, bool):
                raise UsageError(f"the field '{key}' must be true or false")
            continue
        if not isinstance(value, str):
            raise UsageError(f"the field '{key}' must be text")
        if len(value) > most:
            raise UsageError(f"the field '{key}' is too long (at most {most} characters)")
        if "\x00" in value:
            raise UsageError(f"the field '{key}' must not contain NUL characters")
    return data


def _wait(seconds: float) -> str:
    seconds = max(1, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    return f"{round(seconds / 60)} min"


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date(ts: float) -> str:
    return _iso(ts).replace("T", " ").removesuffix("Z") + " UTC"


# -- Argon2id (run in ApiAuth's own pool) ----------------------------------------------------

def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()  # Argon2id, RFC 9106's low-memory profile (t=3, 64 MiB, p=4)


def _argon2_hash(password: str) -> str:
    return str(_hasher().hash(password))


def _argon2_verify(stored: str, password: str) -> tuple[bool, bool]:
    from argon2.exceptions import InvalidHashError, VerificationError

    hasher = _hasher()
    try:
        hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False, False
    return True, bool(hasher.check_needs_rehash(stored))


__all__ = ["ApiAuth", "Identity", "LoginThrottled", "TokenFault", "client_address", "client_key",
           "problem"]
