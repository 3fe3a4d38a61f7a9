"""The OpenAPI 3.1 description of ``/api/auth/*`` and of the bearer security scheme, which
the API frontend merges into ``/api/openapi.json`` (``ApiAuth.openapi_paths``)."""

from __future__ import annotations

from typing import Any

PROBLEM_REF = {"$ref": "#/components/schemas/AuthProblem"}
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": PROBLEM_REF}}}


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": schema_ref}}}}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"required": bool(required), "content": {"application/json": {"schema": {
        "type": "object", "properties": properties, "required": required,
        "additionalProperties": False}}}}


_TEXT = {"type": "string"}
_ERRORS = {
    "400": _problem("the body is not a JSON object of the fields below"),
    "401": _problem("not authenticated: one sentence says why"),
    "429": _problem("too many failures from this address (or for this account from an "
                    "unknown address): Retry-After says how long to wait"),
}


def auth_openapi() -> dict[str, Any]:
    tokens = "#/components/schemas/AuthTokens"
    paths = {
        "/api/auth/login": {"post": {
            "operationId": "authLogin", "tags": ["auth"], "security": [],
            "summary": "Log in with an API account: an access token and a refresh token",
            "description": "The password, and for an account with two-factor authentication "
                           "the current code of its authenticator app (totp) or one of its "
                           "recovery codes (recovery_code). Failures are throttled per client "
                           "address and per account (docs/api-auth.md).",
            "requestBody": _body({
                "username": {**_TEXT, "maxLength": 64, "description": "the account's name"},
                "password": {**_TEXT, "maxLength": 1024},
                "totp": {**_TEXT, "maxLength": 16, "description": "the 6-digit code"},
                "recovery_code": {**_TEXT, "maxLength": 64,
                                  "description": "a recovery code, each usable once"}},
                ["username", "password"]),
            "responses": {"200": _json(tokens, "logged in"), **_ERRORS,
                          "403": _problem("api.require_2fa is on and the account has no "
                                          "two-factor authentication"),
                          "503": _problem("too many logins are being checked at once")}}},
        "/api/auth/refresh": {"post": {
            "operationId": "authRefresh", "tags": ["auth"], "security": [],
            "summary": "Trade a refresh token (single use) for new tokens",
            "description": "A refresh token works once; the reply holds its successor. Using "
                           "one a second time ends its whole session.",
            "requestBody": _body({"refresh_token": {**_TEXT, "maxLength": 256}},
                                 ["refresh_token"]),
            "responses": {"200": _json(tokens, "new tokens"), **_ERRORS}}},
        "/api/auth/logout": {"post": {
            "operationId": "authLogout", "tags": ["auth"], "security": [{"bearerAuth": []}, {}],
            "summary": "End the session (its access and refresh tokens)",
            "description": "The session of the bearer access token and/or of refresh_token "
                           "ends at once; everywhere: every session of the account.",
            "requestBody": {**_body({"refresh_token": {**_TEXT, "maxLength": 256},
                                     "everywhere": {"type": "boolean"}}, []),
                            "required": False},
            "responses": {"200": {"description": "logged out", "content": {
                "application/json": {"schema": {
                    "type": "object", "properties": {"sessions_ended": {"type": "integer"}},
                    "required": ["sessions_ended"]}}}},
                **_ERRORS, "403": _problem("the refresh token is another account's")}}},
        "/api/auth/profile": {"get": {
            "operationId": "authProfile", "tags": ["auth"], "security": SECURITY,
            "summary": "Who the bearer token says you are",
            "responses": {"200": _json("#/components/schemas/AuthProfile", "the caller"),
                          "401": _ERRORS["401"], "429": _ERRORS["429"]}}},
    }
    schemas = {
        "AuthTokens": {"type": "object", "required": [
            "access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in",
            "account"], "properties": {
            "access_token": _TEXT, "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer", "description": "seconds"},
            "refresh_token": _TEXT, "refresh_expires_in": {"type": "integer"},
            "recovery_codes_left": {"type": "integer"},
            "account": {"type": "object", "required": ["name", "role", "domains",
                                                       "two_factor"], "properties": {
                "name": _TEXT, "role": {"enum": ["admin", "domain-admin", "viewer"]},
                "domains": {"type": "array", "items": _TEXT},
                "two_factor": {"type": "boolean"}}}}},
        "AuthProfile": {"type": "object", "required": [
            "actor", "kind", "name", "role", "domains", "two_factor", "expires"],
            "properties": {
                "actor": _TEXT, "kind": {"enum": ["account", "key", "token"]}, "name": _TEXT,
                "role": {"enum": ["admin", "domain-admin", "viewer"]},
                "domains": {"type": "array", "items": _TEXT},
                "two_factor": {"type": ["boolean", "null"]},
                "expires": {"type": ["string", "null"], "description": "UTC, ISO 8601"}}},
        "AuthProblem": {"type": "object", "required": ["type", "title", "status", "detail",
                                                       "code"], "properties": {
            "type": _TEXT, "title": _TEXT, "status": {"type": "integer"}, "detail": _TEXT,
            "code": _TEXT, "podod_status": _TEXT, "instance": _TEXT}},
    }
    return {"paths": paths, "components": {
        "securitySchemes": {"bearerAuth": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT or API key",
            "description": "An access token from POST /api/auth/login (JWT, HS256), an API "
                           "key (podod_...) from 'podoctl api key create', or a token of "
                           "access.api_tokens"}},
        "schemas": schemas}}
