"""The REST API's OpenAPI 3.1 document and its readable page, generated from the routes and
the commands' declarations (input and reply schemas of :mod:`podod.bus.binding`), so the
document cannot drift from what the API does. The page is one self-contained HTML document:
no script, nothing fetched from elsewhere."""

from __future__ import annotations

import html
import json
from typing import Any

from podod import __version__
from podod.bus import binding
from podod.bus.spec import CommandSpec, Param
from podod.frontends.api_routes import Route

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details: detail is one sentence for a person; code the "
                   "machine word; podod_status the bus's status",
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"},
        "status": {"type": "integer"}, "detail": {"type": "string"},
        "instance": {"type": "string"}, "code": {"type": "string"},
        "podod_status": {"type": "string"}, "request_id": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}
_PROBLEM_RESPONSE = {"description": "a refusal or failure, as RFC 9457 problem details",
                     "content": {"application/problem+json": {
                         "schema": {"$ref": "#/components/schemas/Problem"}}}}
_EXECUTE_REAL = {"type": "boolean", "default": False,
                 "description": "true: change for real (after the backup gate); otherwise the "
                                "reply is the sandbox plan and its plan_id"}
_PAGE = {"type": "object", "description": "present when more rows follow this page",
         "properties": {"shown": {"type": ["integer", "null"]}, "more": {"type": "integer"},
                        "next": {"type": "string",
                                 "description": "the URL of the next page"}}}


def _param(spec: CommandSpec, key: str) -> Param:
    for p in spec.params:
        if binding.json_key(p) == key:
            return p
    raise KeyError(f"{spec.name} has no parameter {key}")


def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != "$schema"}


def _path_schema(param: Param) -> dict[str, Any]:
    schema = binding.param_schema(param)
    schema.pop("default", None)
    return schema


def body_schema(spec: CommandSpec, route: Route | None) -> dict[str, Any]:
    """What a JSON body may hold: the command's input schema without the path's keys (and
    without the stdin option), with ``execute_real`` for a changing command and the secret
    (``password``) for a command that reads one."""
    from podod.frontends.api import secret_name

    schema = _clean(binding.input_schema(spec))
    props = dict(schema["properties"])
    skip = set(route.path_params.values()) if route is not None else set()
    if spec.stdin_option is not None and spec.stdin_kind == "secret":
        skip.add(spec.stdin_option)
    if route is not None and route.only is not None:
        skip |= {k for k in props if k not in route.only}
    props = {k: v for k, v in props.items() if k not in skip}
    secret = secret_name(spec)
    if secret is not None:
        props[secret] = {"type": "string", "writeOnly": True,
                         "description": "the password (never recorded); or "
                                        "generate_password: true"}
    if spec.mutating:
        props["execute_real"] = _EXECUTE_REAL
    schema["properties"] = props
    schema["required"] = [k for k in schema["required"] if k in props]
    return schema


def reply_schema(spec: CommandSpec | None) -> dict[str, Any]:
    if spec is None:
        schema: dict[str, Any] = {"type": "object", "properties": {
            "ok": {"type": "boolean"}, "message": {"type": "string"}, "data": {}},
            "required": ["ok", "message", "data"]}
    else:
        schema = _clean(binding.reply_schema(spec))
    schema["properties"] = {**schema["properties"], "request_id": {"type": "string"},
                            "status": {"type": "string"}, "page": _PAGE,
                            "secrets": {"type": "array", "items": {
                                "type": "object", "properties": {
                                    "label": {"type": "string"},
                                    "value": {"type": "string"}}}}}
    return schema


def operation(route: Route, spec: CommandSpec) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    for var, key in route.path_params.items():
        param = _param(spec, key)
        parameters.append({"name": var, "in": "path", "required": True,
                           "description": param.help, "schema": _path_schema(param)})
    if not route.reads_body:
        reverse = {v: k for k, v in route.renamed.items()}
        for param in spec.params:
            key = binding.json_key(param)
            if key in route.path_params.values():
                continue
            item: dict[str, Any] = {"name": reverse.get(key, key), "in": "query",
                                    "required": param.required, "description": param.help,
                                    "schema": binding.param_schema(param)}
            if param.kind == "list":
                item |= {"style": "form", "explode": True}
            parameters.append(item)
    description = spec.description or ""
    description += (f"\n\nRuns the command `{spec.name}` (role: {spec.permission}); "
                    f"podoctl: `{spec.usage}`.")
    if spec.mutating:
        description += (" Without `\"execute_real\": true` nothing changes: the reply is the "
                        "sandbox plan with its `plan_id`; `POST /api/plans/{plan_id}` applies "
                        "exactly that plan.")
    op: dict[str, Any] = {
        "operationId": route.operation_id, "tags": [route.tag],
        "summary": route.summary or spec.summary, "description": description.strip(),
        "responses": {"200": {"description": "done (or, in the sandbox, planned)",
                              "content": {"application/json": {
                                  "schema": reply_schema(spec)}}},
                      "default": _PROBLEM_RESPONSE},
        "x-podod-command": spec.name,
    }
    if parameters:
        op["parameters"] = parameters
    if route.reads_body:
        schema = body_schema(spec, route)
        op["requestBody"] = {"required": bool(schema["required"]), "content": {
            "application/json": {"schema": schema}}}
    return op


def _links(routes: list[Route], commands: dict[str, CommandSpec]) -> dict[str, Any]:
    """OpenAPI links from each create (a POST on a collection) to the operations on what it
    created, so a stateful test follows them: POST /api/users → GET /api/users/{email}."""
    out: dict[str, dict[str, Any]] = {}
    for create in routes:
        if create.method != "POST" or create.path_params:
            continue
        spec = commands[create.command]
        keys = {binding.json_key(p) for p in spec.params}
        for other in routes:
            if other.path_params and other.path.startswith(create.path + "/{") and \
                    other.path.count("/") == create.path.count("/") + 1:
                var, key = next(iter(other.path_params.items()))
                if key not in keys and not (key == "address" and "address" in keys):
                    continue
                name = f"{other.method.lower()}_{var}"
                out.setdefault(create.operation_id, {})[name] = {
                    "operationId": other.operation_id,
                    "parameters": {var: f"$request.body#/{key}"}}
    return out


# POST /api/commands and /api/plans/{id} stream a command's progress when asked
# (frontends/api_progress.py).
_STREAM_NOTE = (" (Server-Sent Events: `event: progress` with `{\"message\", \"done\", "
                "\"total\"}`, then one `event: reply` with the body a plain request gets, or "
                "`event: problem` with its problem document; docs/api.md).")
_STREAM_CONTENT = {"text/event-stream": {"schema": {"type": "string"}}}


def build_openapi(routes: list[Route], commands: dict[str, CommandSpec], auth: Any,
                  events: Any) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = operation(
            route, commands[route.command])
    for op_id, links in _links(routes, commands).items():
        for item in paths.values():
            for op in item.values():
                if op.get("operationId") == op_id:
                    op["responses"]["200"]["links"] = links
    paths["/api/plans/{id}"] = {"post": {
        "operationId": "post_plans_id", "tags": ["plans"],
        "summary": "Apply a sandbox plan for real",
        "description": "Runs exactly the request a sandbox reply planned (its plan_id), for "
                       "the same caller, once, and only if it would still change exactly "
                       "what the plan showed (else 409, nothing changed).",
        "parameters": [{"name": "id", "in": "path", "required": True,
                        "schema": {"type": "string", "maxLength": 64},
                        "description": "the plan_id of a sandbox reply"}],
        "responses": {"200": {"description": "the confirmed command's reply; with "
                                             "Accept: text/event-stream, its progress "
                                             "events and then the reply" + _STREAM_NOTE,
                              "content": {"application/json": {
                                  "schema": reply_schema(commands.get("confirm"))},
                                  **_STREAM_CONTENT}},
                      "default": _PROBLEM_RESPONSE}}}
    paths["/api/commands"] = {"post": {
        "operationId": "post_commands", "tags": ["commands"],
        "summary": "Run any command by name (plugins' too)",
        "description": "The body names the command and its parameters as a JSON object, "
                       "as `podoctl help COMMAND --json` describes them. A command that "
                       "reads data (a CSV file) takes it as a text/csv body, its name and "
                       "parameters then in the query (`?command=user+import&domain=...`).",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {
                "type": "object", "additionalProperties": False, "required": ["command"],
                "properties": {"command": {"type": "string", "examples": ["user list"]},
                               "params": {"type": "object"},
                               "execute_real": _EXECUTE_REAL,
                               "password": {"type": "string", "writeOnly": True}}}},
            "text/csv": {"schema": {"type": "string"}}}},
        "responses": {"200": {"description": "the command's reply; with Accept: "
                                             "text/event-stream, its progress events and "
                                             "then the reply" + _STREAM_NOTE,
                              "content": {"application/json": {
                                  "schema": reply_schema(None)}, **_STREAM_CONTENT}},
                      "default": _PROBLEM_RESPONSE}}}
    if events is not None:
        paths["/api/events"] = events.openapi()
    public: dict[str, Any] = {"security": []}
    paths["/api/openapi.json"] = {"get": {
        "operationId": "get_openapi_json", "tags": ["documentation"], **public,
        "summary": "This document", "responses": {"200": {
            "description": "the OpenAPI 3.1 document",
            "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    paths["/api/docs"] = {"get": {
        "operationId": "get_docs", "tags": ["documentation"], **public,
        "summary": "This document as a page", "responses": {"200": {
            "description": "an HTML page", "content": {"text/html": {
                "schema": {"type": "string"}}}}}}}
    extra: dict[str, Any] = auth.openapi_paths() if auth is not None else {}
    for path, item in extra.get("paths", {}).items():
        paths.setdefault(path, {}).update(item)
    components = extra.get("components", {})
    tags = sorted({op["tags"][0] for item in paths.values() for op in item.values()
                   if isinstance(op, dict) and op.get("tags")})
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": binding.SCHEMA_DIALECT,
        "info": {"title": "podod REST API", "version": __version__,
                 "description": "Every operation of podod's command bus over HTTP: the same "
                                "grammar, roles, sandbox, backup gate and audit as podoctl "
                                "(docs/api.md)."},
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in tags],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": {"Problem": PROBLEM_SCHEMA, **components.get("schemas", {})},
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "an API token (access.api_tokens) or, with accounts, an "
                               "access token or API key"},
                **components.get("securitySchemes", {})},
        },
    }


# -- the page ----------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;
color:#222;line-height:1.4}
h1{font-size:1.6rem}h2{margin-top:2.5rem;border-bottom:1px solid #ccc}
.op{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}
.m{display:inline-block;min-width:4.5rem;font-weight:bold;font-family:monospace}
.GET{color:#0a6}.POST{color:#06c}.PUT{color:#a60}.DELETE{color:#c22}
code,pre{font-family:monospace;font-size:.85rem}pre{background:#f6f6f6;padding:.5rem;
overflow-x:auto;max-height:24rem}table{border-collapse:collapse}
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}
details summary{cursor:pointer}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def docs_page(doc: dict[str, Any]) -> str:
    """The document as one readable HTML page (escaped throughout; no script)."""
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict):
                continue
            tag = (op.get("tags") or ["other"])[0]
            by_tag.setdefault(tag, []).append((method.upper(), path, op))
    out = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
           f"{_e(doc['info']['title'])}</title><style>{_CSS}</style></head><body>",
           f"<h1>{_e(doc['info']['title'])} {_e(doc['info']['version'])}</h1>",
           f"<p>{_e(doc['info']['description'])}</p>",
           "<p>Authenticate with <code>Authorization: Bearer TOKEN</code>. Errors are "
           "<code>application/problem+json</code> (RFC 9457). The machine-readable document: "
           "<a href=\"/api/openapi.json\">/api/openapi.json</a>.</p><nav><ul>"]
    for tag in sorted(by_tag):
        out.append(f"<li><a href=\"#{_e(tag)}\">{_e(tag)}</a></li>")
    out.append("</ul></nav>")
    for tag in sorted(by_tag):
        out.append(f"<h2 id=\"{_e(tag)}\">{_e(tag)}</h2>")
        for method, path, op in by_tag[tag]:
            out.append(f"<div class=\"op\"><p><span class=\"m {_e(method)}\">{_e(method)}"
                       f"</span> <code>{_e(path)}</code> — {_e(op.get('summary', ''))}</p>")
            if op.get("description"):
                out.append(f"<p>{_e(op['description'])}</p>")
            params = op.get("parameters") or []
            if params:
                out.append("<table><tr><th>parameter</th><th>in</th><th>type</th>"
                           "<th>what</th></tr>")
                for p in params:
                    kind = p.get("schema", {}).get("type", "")
                    req = " (required)" if p.get("required") else ""
                    out.append(f"<tr><td><code>{_e(p['name'])}</code>{req}</td>"
                               f"<td>{_e(p['in'])}</td><td>{_e(kind)}</td>"
                               f"<td>{_e(p.get('description', ''))}</td></tr>")
                out.append("</table>")
            body = op.get("requestBody")
            if body:
                for ctype, content in body["content"].items():
                    out.append(f"<details><summary>request body ({_e(ctype)})</summary><pre>"
                               f"{_e(json.dumps(content.get('schema'), indent=1))}</pre>"
                               "</details>")
            ok = op.get("responses", {}).get("200", {})
            for ctype, content in (ok.get("content") or {}).items():
                out.append(f"<details><summary>reply ({_e(ctype)})</summary><pre>"
                           f"{_e(json.dumps(content.get('schema'), indent=1))}</pre>"
                           "</details>")
            out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)
