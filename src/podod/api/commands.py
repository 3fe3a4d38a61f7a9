"""``api account create|list|passwd|enable|disable|unlock|delete``, ``api account 2fa
enable|disable``, ``api key create|list|revoke`` and ``api rotate-key``: the REST API's
accounts and keys (``podod.api.auth``), for admins, through the bus (podoctl, chat, HTTP).

Changing commands run in the sandbox unless ``--execute-real`` (they have no unit of work:
each checks what it would do, and does it only for real). Passwords come from standard input
(``--password-stdin``) or are generated; generated passwords, API keys, TOTP secrets and
recovery codes are reply secrets: shown once, to the requester only, never audited."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from podod.bus.context import CommandContext, Reply, Secret, Table
from podod.bus.shapes import BOOL, INT, NUM, STR, arr, nullable, obj
from podod.bus.spec import Arg, Opt
from podod.errors import Conflict, Unavailable, UsageError, ValidationError
from podod.plugins import Registry

if TYPE_CHECKING:
    from podod.api.auth import ApiAuth

ROLES = ("admin", "domain-admin", "viewer")
NAME_HELP = "1-64 lower-case letters, digits, '.', '_' or '-'"
ACCOUNT_LIST_REPLY = arr(obj({
    "name": STR, "role": STR, "domains": arr(STR), "disabled": BOOL, "two_factor": BOOL,
    "recovery_codes": INT, "sessions": INT, "created": NUM, "created_by": STR,
    "last_login": nullable(NUM)}), "one object per account (times: Unix seconds)")
KEY_LIST_REPLY = arr(obj({
    "name": STR, "id": STR, "role": STR, "domains": arr(STR), "created": NUM,
    "created_by": STR, "expires": nullable(NUM), "expired": BOOL}),
    "one object per API key (times: Unix seconds; the key itself is never shown again)")
ACCOUNT_REPLY = obj({"name": STR, "role": STR, "domains": arr(STR)})
KEY_REPLY = obj({"name": STR, "id": STR, "role": STR, "domains": arr(STR),
                 "expires": nullable(NUM)})
TWO_FA_REPLY = obj({"name": STR, "two_factor": BOOL})
ROTATE_REPLY = obj({"key_id": STR})


def auth_of(ctx: CommandContext) -> ApiAuth:
    auth = getattr(ctx.runtime, "api_auth", None)
    if auth is None:
        raise Unavailable("the API accounts are not available (podod is starting or "
                          "stopping)")
    return auth


def _name(name: str, what: str = "account") -> str:
    from podod.api.auth import check_name

    return check_name(name, what)


def _grant(role: str, domains: list[str] | None) -> tuple[str, tuple[str, ...]]:
    """The role and domains, checked and normalised as ``access`` grants are."""
    from podod.config import Grant

    domains = domains or []
    if role == "domain-admin" and not domains:
        raise ValidationError("a domain-admin needs --domains: the domains it manages")
    if role != "domain-admin" and domains:
        raise ValidationError(f"--domains is for a domain-admin only; a {role} sees every "
                              "domain")
    try:
        grant = Grant(role=role, domains=domains)  # type: ignore[arg-type]
    except Exception as exc:  # pydantic's error, worded by the grant's own check
        errors = getattr(exc, "errors", None)
        reason = errors()[0]["msg"] if callable(errors) else str(exc)
        raise ValidationError(f"--domains: {str(reason).removeprefix('Value error, ')}") \
            from None
    return grant.role, tuple(grant.domains)


async def _password(ctx: CommandContext, password_stdin: bool, generate: bool
                    ) -> tuple[str, str | None]:
    """(the password, the generated one or None)."""
    from podod.mail.passwords import generate_password

    if password_stdin == generate:
        raise UsageError(f"{ctx.spec.name}: give either --password-stdin or "
                         "--generate-password")
    if generate:
        password = generate_password(24)
        return password, password
    password = ctx.request.stdin or ""
    if not password:
        raise ValidationError("no password was given on standard input")
    auth_of(ctx).check_password(password)
    return password, None


def _shown(ctx: CommandContext, generated: str | None) -> list[Secret]:
    if generated is None or not ctx.execute_real:
        return []
    return [Secret("Generated password", generated)]


def _later(ctx: CommandContext, generated: str | None) -> list[str]:
    if ctx.execute_real or generated is None:
        return []
    return ["A password will be generated and shown once when this runs for real."]


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def qr_text(data: str) -> str:
    """A QR code of ``data`` in text (half blocks), for a terminal."""
    import qrcode

    code = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_L)
    code.add_data(data)
    code.make(fit=True)
    out = io.StringIO()
    code.print_ascii(out=out, invert=True)
    return out.getvalue().rstrip("\n")


PASSWORD_OPTS = [
    Opt("password_stdin", "read the password from standard input (podoctl prompts on a "
        "terminal)", kind="flag"),
    Opt("generate_password", "generate a strong password, shown once to you", kind="flag"),
]
ROLE_OPTS = [
    Opt("role", "what it may do", kind="choice", choices=ROLES, required=True),
    Opt("domains", "the domains a domain-admin manages (comma-separated)", kind="list",
        metavar="DOMAIN,..."),
]


def setup(registry: Registry) -> None:
    @registry.command(
        "api account create", "Create a REST API account (a person who logs in)",
        params=[Arg("name", f"the account's name ({NAME_HELP})", metavar="NAME"), *ROLE_OPTS,
                *PASSWORD_OPTS],
        permission="admin", mutating=True, stdin="secret", stdin_option="password_stdin",
        reply=ACCOUNT_REPLY,
        description="The password is hashed with Argon2id; it is never in the configuration "
                    "or the audit log. 'api account 2fa enable NAME' adds TOTP.",
        examples=["api account create alice --role admin --password-stdin",
                  "api account create crm --role domain-admin --domains example.com "
                  "--generate-password"])
    async def account_create(ctx: CommandContext, name: str, role: str,
                             domains: list[str] | None, password_stdin: bool,
                             generate_password: bool) -> Reply:
        auth = auth_of(ctx)
        name = _name(name)
        role, granted = _grant(role, domains)
        if name in auth.accounts:
            raise Conflict(f"the API account {name} already exists")
        if name in ctx.runtime.config.access.api_tokens:
            raise Conflict(f"{name} is already an API token under access.api_tokens in "
                           "podod.yaml; choose another name")
        password, generated = await _password(ctx, password_stdin, generate_password)
        ctx.record("insert", "api account", name, role=role, domains=",".join(granted))
        if ctx.execute_real:
            await auth.create_account(name, role, granted, password, ctx.actor.name)
        verb = "created" if ctx.execute_real else "would be created"
        return Reply(message=f"API account {name} ({role}) {verb}",
                     data={"name": name, "role": role, "domains": list(granted)},
                     secrets=_shown(ctx, generated), notes=_later(ctx, generated))

    @registry.command("api account list", "List the REST API accounts", permission="admin",
                      reply=ACCOUNT_LIST_REPLY, examples=["api account list"])
    async def account_list(ctx: CommandContext) -> Reply:
        rows = await auth_of(ctx).list_accounts()
        table = Table(["name", "role", "domains", "state", "2FA", "sessions", "last login"],
                      [[r["name"], r["role"], ",".join(r["domains"]) or "-",
                        "disabled" if r["disabled"] else "active",
                        f"yes ({r['recovery_codes']} recovery codes)" if r["two_factor"]
                        else "no", r["sessions"], _when(r["last_login"])] for r in rows])
        return Reply(message=f"{len(rows)} API account(s)" if rows else
                     "no API accounts yet: add one with 'api account create'",
                     data=rows, table=table if rows else None)

    @registry.command(
        "api account passwd", "Set a new password for a REST API account",
        params=[Arg("name", "the account", metavar="NAME"), *PASSWORD_OPTS],
        permission="admin", mutating=True, stdin="secret", stdin_option="password_stdin",
        reply=ACCOUNT_REPLY,
        description="Every session of the account ends (its access and refresh tokens), and "
                    "its failed-login lockout is cleared.",
        examples=["api account passwd alice --password-stdin"])
    async def account_passwd(ctx: CommandContext, name: str, password_stdin: bool,
                             generate_password: bool) -> Reply:
        auth = auth_of(ctx)
        account = auth.account(_name(name))
        password, generated = await _password(ctx, password_stdin, generate_password)
        ctx.record("update", "api account", account.name, password="(new)")
        if ctx.execute_real:
            await auth.set_password(account.name, password)
        verb = "set" if ctx.execute_real else "would be set"
        return Reply(message=f"new password of API account {account.name} {verb}; its "
                     "sessions end", data={"name": account.name, "role": account.role,
                                           "domains": list(account.domains)},
                     secrets=_shown(ctx, generated), notes=_later(ctx, generated))

    for verb, disabled in (("disable", True), ("enable", False)):
        _state_command(registry, verb, disabled)

    @registry.command(
        "api account unlock", "Clear an account's failed-login lockout and delays",
        params=[Arg("name", "the account", metavar="NAME")], permission="admin",
        reply=ACCOUNT_REPLY, examples=["api account unlock alice"],
        description="Delays of client addresses stay (they slow down guessing whatever the "
                    "account).")
    async def account_unlock(ctx: CommandContext, name: str) -> Reply:
        auth = auth_of(ctx)
        account = auth.account(_name(name))
        auth.throttle.clear_account(account.name)
        return Reply(message=f"API account {account.name} unlocked",
                     data={"name": account.name, "role": account.role,
                           "domains": list(account.domains)})

    @registry.command(
        "api account delete", "Delete a REST API account; its sessions end at once",
        params=[Arg("name", "the account", metavar="NAME")], permission="admin",
        mutating=True, reply=ACCOUNT_REPLY, examples=["api account delete alice"])
    async def account_delete(ctx: CommandContext, name: str) -> Reply:
        auth = auth_of(ctx)
        account = auth.account(_name(name))
        ctx.record("delete", "api account", account.name)
        if ctx.execute_real:
            await auth.delete_account(account.name)
        verb = "deleted" if ctx.execute_real else "would be deleted"
        return Reply(message=f"API account {account.name} {verb}",
                     data={"name": account.name, "role": account.role,
                           "domains": list(account.domains)})

    @registry.command(
        "api account 2fa enable", "Turn on TOTP two-factor authentication for an account",
        params=[Arg("name", "the account", metavar="NAME")], permission="admin",
        mutating=True, reply=TWO_FA_REPLY,
        description="Shows the provisioning URI, a QR code to scan with an authenticator app "
                    "and 10 recovery codes, once. Run on an account that has 2FA already, it "
                    "replaces the secret and the codes. The account's sessions end.",
        examples=["api account 2fa enable alice"])
    async def twofa_enable(ctx: CommandContext, name: str) -> Reply:
        auth = auth_of(ctx)
        account = auth.account(_name(name))
        ctx.record("update", "api account", account.name, two_factor="totp")
        if not ctx.execute_real:
            return Reply(message=f"TOTP would be turned on for API account {account.name}",
                         data={"name": account.name, "two_factor": account.totp},
                         notes=["The QR code and the recovery codes are shown once, when this "
                                "runs for real."])
        secret, codes = await auth.enable_2fa(account.name)
        uri = auth.provisioning_uri(account.name, secret)
        return Reply(
            message=f"TOTP turned on for API account {account.name}: scan the QR code with "
                    "an authenticator app, and keep the recovery codes somewhere safe",
            data={"name": account.name, "two_factor": True},
            secrets=[Secret("Provisioning URI", uri),
                     Secret("QR code", "\n" + qr_text(uri)),
                     Secret("Recovery codes (each works once)", " ".join(codes))],
            notes=["Logging in now needs the code of the app (or a recovery code)."])

    @registry.command(
        "api account 2fa disable", "Turn off two-factor authentication for an account",
        params=[Arg("name", "the account", metavar="NAME")], permission="admin",
        mutating=True, reply=TWO_FA_REPLY,
        description="Its TOTP secret and recovery codes are deleted; its sessions end. With "
                    "api.require_2fa on, the account cannot log in until 2FA is on again.",
        examples=["api account 2fa disable alice"])
    async def twofa_disable(ctx: CommandContext, name: str) -> Reply:
        auth = auth_of(ctx)
        account = auth.account(_name(name))
        if not account.totp:
            return Reply(message=f"API account {account.name} has no two-factor "
                         "authentication", data={"name": account.name, "two_factor": False})
        ctx.record("update", "api account", account.name, two_factor="none")
        if ctx.execute_real:
            await auth.disable_2fa(account.name)
        verb = "turned off" if ctx.execute_real else "would be turned off"
        return Reply(message=f"two-factor authentication {verb} for API account "
                     f"{account.name}", data={"name": account.name,
                                              "two_factor": not ctx.execute_real})

    @registry.command(
        "api key create", "Create an API key for a program (shown once)",
        params=[Arg("name", f"the key's name ({NAME_HELP})", metavar="NAME"), *ROLE_OPTS,
                Opt("expires", "how long it works, e.g. 90d (default: api.key_default_ttl)",
                    kind="duration"),
                Opt("no_expiry", "a key that never expires", kind="flag")],
        permission="admin", mutating=True, reply=KEY_REPLY,
        description="Use it as 'Authorization: Bearer KEY'. Only its SHA-256 is stored; "
                    "'api key revoke NAME' refuses it from the next request on.",
        examples=["api key create billing --role domain-admin --domains example.com "
                  "--expires 90d", "api key create monitoring --role viewer --no-expiry"])
    async def key_create(ctx: CommandContext, name: str, role: str, domains: list[str] | None,
                         expires: float | None, no_expiry: bool) -> Reply:
        auth = auth_of(ctx)
        name = _name(name, "key")
        role, granted = _grant(role, domains)
        if expires is not None and no_expiry:
            raise UsageError("give either --expires or --no-expiry")
        if expires is not None and expires < 60:
            raise ValidationError("--expires must be at least 1m")
        ttl = None if no_expiry else (expires if expires is not None
                                      else auth.settings.key_default_ttl or None)
        until = time.time() + ttl if ttl else None
        if any(k.name == name for k in auth.keys.values()):
            raise Conflict(f"the API key {name} already exists")
        ctx.record("insert", "api key", name, role=role, domains=",".join(granted),
                   expires=_when(until))
        data: dict[str, Any] = {"name": name, "id": "", "role": role,
                                "domains": list(granted), "expires": until}
        if not ctx.execute_real:
            return Reply(message=f"API key {name} ({role}, expires {_when(until)}) would be "
                         "created", data=data,
                         notes=["The key is shown once, when this runs for real."])
        key, token = await auth.create_key(name, role, granted, until, ctx.actor.name)
        data["id"] = key.id
        return Reply(message=f"API key {name} ({role}) created; it expires {_when(until)}",
                     data=data, secrets=[Secret(f"API key {name}", token)],
                     notes=["Send it as 'Authorization: Bearer KEY'; it cannot be shown "
                            "again."])

    @registry.command("api key list", "List the API keys (never the keys themselves)",
                      permission="admin", reply=KEY_LIST_REPLY, examples=["api key list"])
    async def key_list(ctx: CommandContext) -> Reply:
        now = time.time()
        keys = sorted(auth_of(ctx).keys.values(), key=lambda k: k.name)
        rows: list[dict[str, Any]] = [
            {"name": k.name, "id": k.id, "role": k.role, "domains": list(k.domains),
             "created": k.created, "created_by": k.created_by, "expires": k.expires,
             "expired": k.expires is not None and k.expires <= now} for k in keys]
        table = Table(["name", "id", "role", "domains", "created", "expires"],
                      [[r["name"], r["id"], r["role"], ",".join(r["domains"]) or "-",
                        _when(r["created"]),
                        _when(r["expires"]) + (" (expired)" if r["expired"] else "")]
                       for r in rows])
        return Reply(message=f"{len(rows)} API key(s)" if rows else
                     "no API keys yet: add one with 'api key create'",
                     data=rows, table=table if rows else None)

    @registry.command(
        "api key revoke", "Revoke an API key: refused from the next request on",
        params=[Arg("name", "the key's name", metavar="NAME")], permission="admin",
        mutating=True, reply=KEY_REPLY, examples=["api key revoke billing"])
    async def key_revoke(ctx: CommandContext, name: str) -> Reply:
        auth = auth_of(ctx)
        key = auth.key_named(_name(name, "key"))
        ctx.record("delete", "api key", key.name)
        if ctx.execute_real:
            await auth.revoke_key(key.name)
        verb = "revoked" if ctx.execute_real else "would be revoked"
        return Reply(message=f"API key {key.name} {verb}",
                     data={"name": key.name, "id": key.id, "role": key.role,
                           "domains": list(key.domains), "expires": key.expires})

    @registry.command(
        "api rotate-key", "Replace the signing key of access tokens",
        permission="admin", mutating=True, reply=ROTATE_REPLY,
        description="Every access token ends at once (clients refresh, with their refresh "
                    "token, or log in again); API keys are not affected.",
        examples=["api rotate-key"])
    async def rotate_key(ctx: CommandContext) -> Reply:
        auth = auth_of(ctx)
        ctx.record("update", "api signing key", auth.kid)
        if not ctx.execute_real:
            return Reply(message="the API's signing key would be replaced; every access "
                         "token would end", data={"key_id": auth.kid})
        kid = await auth.rotate_key()
        return Reply(message="the API's signing key was replaced; every access token has "
                     "ended", data={"key_id": kid})


def _state_command(registry: Registry, verb: str, disabled: bool) -> None:
    what = "switch off: it cannot log in, its sessions end at once" if disabled else \
        "switch on again"

    @registry.command(
        f"api account {verb}", f"{verb.capitalize()} a REST API account ({what})",
        params=[Arg("name", "the account", metavar="NAME")], permission="admin",
        mutating=True, reply=ACCOUNT_REPLY, examples=[f"api account {verb} alice"])
    async def account_state(ctx: CommandContext, name: str) -> Reply:
        auth = auth_of(ctx)
        account = auth.account(_name(name))
        data = {"name": account.name, "role": account.role, "domains": list(account.domains)}
        if account.disabled == disabled:
            return Reply(message=f"API account {account.name} is already {verb}d", data=data)
        ctx.record("update", "api account", account.name,
                   state="disabled" if disabled else "active")
        if ctx.execute_real:
            await auth.set_disabled(account.name, disabled)
        done = f"{verb}d" if ctx.execute_real else f"would be {verb}d"
        return Reply(message=f"API account {account.name} {done}", data=data)


__all__ = ["qr_text", "setup"]
