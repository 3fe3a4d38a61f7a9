"""Identity in one place: a frontend's word for its caller (a Unix peer's uid, a Matrix
user id, an API token) becomes an :class:`Actor` through :func:`actor_for`, under the grants
in force now (``access`` in podod.yaml, reread on SIGHUP). No frontend grants anything
itself."""

from __future__ import annotations

import hashlib
import hmac
import os
import pwd
from typing import Literal

from podod.bus.context import Actor
from podod.config import AccessSettings
from podod.errors import Unauthenticated

Kind = Literal["unix", "matrix", "api"]


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def token_sha256(token: str) -> str:
    """What ``access.api_tokens.<name>.sha256`` holds for ``token``."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def actor_for(access: AccessSettings, kind: Kind, who: str | int) -> Actor:
    """The actor a caller is, or :class:`Unauthenticated` (one sentence) when no grant
    names it. ``who``: a uid (``unix``), a Matrix user id (``matrix``), a bearer token
    (``api``; compared by its SHA-256, in constant time)."""
    if kind == "unix":
        uid = int(who)
        name = user_name(uid)
        if uid in (0, os.geteuid()):
            return Actor(f"unix:{name}", "admin")
        grant = access.unix_users.get(name) or access.unix_users.get(str(uid))
        if grant is None:
            raise Unauthenticated(
                f"the local user {name} may not use podod; an administrator can allow it "
                "under access.unix_users in podod.yaml")
        return Actor(f"unix:{name}", grant.role, tuple(grant.domains))
    if kind == "matrix":
        user = str(who)
        matrix = access.matrix_users.get(user)
        if matrix is None:
            raise Unauthenticated(
                f"{user} may not use podod; an administrator can allow it under "
                "access.matrix_users in podod.yaml")
        return Actor(user, matrix.role, tuple(matrix.domains))
    digest = token_sha256(str(who))
    found = None
    for account, token in access.api_tokens.items():  # every entry: no early exit to time
        if hmac.compare_digest(digest, token.sha256):
            found = (account, token)
    if found is None:
        raise Unauthenticated("the API token is not known to podod")
    account, token = found
    return Actor(f"api:{account}", token.role, tuple(token.domains))


def refused_name(kind: Kind, who: str | int) -> str:
    """How an unknown caller is named in the audit log (never a token)."""
    if kind == "unix":
        return f"unix:{user_name(int(who))}"
    if kind == "matrix":
        return str(who)
    return "api:(unknown token)"
