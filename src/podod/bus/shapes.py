"""Small builders for the JSON Schemas of commands' reply data (``reply=`` of a command).

A reply's ``data`` is JSON as the socket sends it: timestamps from the database arrive as
text, PostgreSQL's ``sum`` of a bigint as text, Unix times as numbers. An object's listed keys
are required unless named in ``optional``; keys not listed are allowed (a plugin or a later
version may add one), so a declared shape says what a script may rely on."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
ANY: Schema = {}
WHOLE_TEXT: Schema = {"type": ["integer", "string"], "pattern": "^-?[0-9]+$",
                      "description": "a whole number (a database sum may arrive as text)"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], *, optional: tuple[str, ...] = (),
        description: str | None = None) -> Schema:
    out: Schema = {"type": "object", "properties": properties,
                   "required": [k for k in properties if k not in optional]}
    if description:
        out["description"] = description
    return out


def arr(items: Schema, description: str | None = None) -> Schema:
    out: Schema = {"type": "array", "items": items}
    if description:
        out["description"] = description
    return out


def one_of(*schemas: Schema) -> Schema:
    return {"anyOf": list(schemas)}


NULL: Schema = {"type": "null", "description": "no data: the message says it all"}
