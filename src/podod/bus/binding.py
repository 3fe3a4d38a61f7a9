"""The edge of the bus: how a command's parameters bind from argv or from JSON, and the JSON
Schema of its input and reply, all read from the one declaration (:mod:`podod.bus.spec`).

One table, :data:`KINDS`, holds every parameter kind. A kind converts the text of one argv
word (podoctl, chat) and one JSON value (HTTP) with the SAME validation and the same error
sentence, and gives its JSON Schema fragment. A JSON value that is not already of the kind's
type is spelled the way argv would spell it (``5`` → ``"5"``, ``true`` → ``"true"``) and
converted as that word, so a bad value gets the same sentence from either side; only text
kinds refuse a JSON value that is not a string, because argv cannot send one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from podod.bus.spec import CommandSpec, Param
from podod.durations import MAX_DURATION, parse_duration
from podod.errors import UsageError

INT_LIMIT = 2**63 - 1  # what a bigint column and SQLite hold
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_TRUE = {"yes", "true", "on", "1", "y"}
_FALSE = {"no", "false", "off", "0", "n"}
NUL = "the request holds a NUL character, which no command accepts"
_SHOWN = 40  # characters of a refused value a sentence repeats


class ParseError(UsageError):
    """A request that does not parse. ``message`` is for the requester and may quote what
    they typed; ``audit_message`` is the same sentence without any of their words that the
    grammar does not know (a misplaced password must not reach the audit log)."""

    def __init__(self, message: str, audit_message: str | None = None) -> None:
        super().__init__(message)
        self.audit_message = audit_message if audit_message is not None else message


def where(spec: CommandSpec, param: Param) -> str:
    """How a sentence names a parameter: ``user create: --quota-mb``, ``user show: ADDRESS``."""
    label = param.display if param.positional else param.flag
    return f"{spec.name}: {label}"


def _shown(raw: str) -> str:
    return raw if len(raw) <= _SHOWN else raw[:_SHOWN] + "…"  # one readable line


def _as_text(value: Any) -> str:
    """A JSON value spelled as the argv word that means the same."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # nan, inf: refused like the word
    return json.dumps(value, ensure_ascii=False)


# -- conversions from one argv word --------------------------------------------------------

def _text(spec: CommandSpec, param: Param, raw: str) -> Any:
    return raw


def _list(spec: CommandSpec, param: Param, raw: str) -> Any:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _int(spec: CommandSpec, param: Param, raw: str) -> Any:
    at = where(spec, param)
    shown = _shown(raw)
    try:
        number = int(raw)  # never nan, inf or 1e309; over 4300 digits: ValueError
    except ValueError:
        raise ParseError(f"{at} must be a whole number, not '{shown}'",
                         f"{at} must be a whole number") from None
    least, most = _bounds(param)
    if number < least:
        raise ParseError(f"{at} must be at least {least}, not {shown}",
                         f"{at} must be at least {least}")
    if number > most:
        raise ParseError(f"{at} must be at most {most}, not {shown}",
                         f"{at} must be at most {most}")
    return number


def _bounds(param: Param) -> tuple[int, int]:
    return (param.minimum if param.minimum is not None else -INT_LIMIT,
            param.maximum if param.maximum is not None else INT_LIMIT)


def _bool(spec: CommandSpec, param: Param, raw: str) -> Any:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    at = where(spec, param)
    raise ParseError(f"{at} must be yes or no, not '{raw}'", f"{at} must be yes or no")


def _duration(spec: CommandSpec, param: Param, raw: str) -> Any:
    try:
        return parse_duration(raw)
    except ValueError as exc:
        at = where(spec, param)
        raise ParseError(f"{at} {exc}", f"{at} is not a duration") from None


def _choice(spec: CommandSpec, param: Param, raw: str) -> Any:
    if raw.lower() not in param.choices:
        at, options = where(spec, param), ", ".join(param.choices)
        raise ParseError(f"{at} must be one of {options}, not '{raw}'",
                         f"{at} must be one of {options}")
    return raw.lower()


# -- conversions from one JSON value -------------------------------------------------------

def _text_json(spec: CommandSpec, param: Param, value: Any) -> Any:
    if not isinstance(value, str):
        at = where(spec, param)
        raise ParseError(f"{at} must be text, not {_shown(_as_text(value))}",
                         f"{at} must be text")
    return value


def _list_json(spec: CommandSpec, param: Param, value: Any) -> Any:
    if isinstance(value, str):
        return _list(spec, param, value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        at = where(spec, param)
        raise ParseError(f"{at} must be a list of text", f"{at} must be a list of text")
    if param.positional and len(value) > 1:  # like argv: "FILE..." takes each word whole
        return [v for v in value if v]
    out: list[str] = []
    for item in value:  # like a repeated option: each item may hold a,b
        out.extend(_list(spec, param, item))
    return out


def _spelled(convert: Callable[[CommandSpec, Param, str], Any]
             ) -> Callable[[CommandSpec, Param, Any], Any]:
    def from_json(spec: CommandSpec, param: Param, value: Any) -> Any:
        return convert(spec, param, _as_text(value))
    return from_json


# -- JSON Schema fragments -----------------------------------------------------------------

def _schema_text(param: Param) -> dict[str, Any]:
    return {"type": "string"}


def _schema_secret(param: Param) -> dict[str, Any]:
    return {"type": "string", "writeOnly": True}


def _schema_address(param: Param) -> dict[str, Any]:
    from podod.mail.addresses import MAX_MAILBOX  # the mail layer's bound, read for help only

    return {"type": "string", "format": "idn-email", "maxLength": MAX_MAILBOX}


def _schema_domain(param: Param) -> dict[str, Any]:
    from podod.mail.addresses import MAX_DOMAIN

    return {"type": "string", "format": "idn-hostname", "maxLength": MAX_DOMAIN}


def _schema_int(param: Param) -> dict[str, Any]:
    least, most = _bounds(param)
    return {"type": "integer", "minimum": least, "maximum": most}


def _schema_size(param: Param) -> dict[str, Any]:
    unit = "MB" if param.name.endswith("_mb") else "bytes"
    return {**_schema_int(param), "x-podod-unit": unit}


def _schema_bool(param: Param) -> dict[str, Any]:
    return {"type": "boolean"}


def _schema_list(param: Param) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}}


def _schema_duration(param: Param) -> dict[str, Any]:
    return {"type": ["string", "number"], "minimum": 0, "maximum": MAX_DURATION,
            "examples": ["30s", "5m", "2h", "7d", 90]}


def _schema_choice(param: Param) -> dict[str, Any]:
    return {"type": "string", "enum": list(param.choices)}


@dataclass(frozen=True)
class Kind:
    """One parameter kind: from an argv word, from a JSON value, and its JSON Schema."""

    name: str
    from_argv: Callable[[CommandSpec, Param, str], Any]
    from_json: Callable[[CommandSpec, Param, Any], Any]
    schema: Callable[[Param], dict[str, Any]]


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("list", _list, _list_json, _schema_list),
    Kind("str", _text, _text_json, _schema_text),
    Kind("secret", _text, _text_json, _schema_secret),
    Kind("address", _text, _text_json, _schema_address),
    Kind("domain", _text, _text_json, _schema_domain),
    Kind("int", _int, _spelled(_int), _schema_int),
    Kind("size", _int, _spelled(_int), _schema_size),
    Kind("flag", _bool, _spelled(_bool), _schema_bool),
    Kind("bool", _bool, _spelled(_bool), _schema_bool),
    Kind("duration", _duration, _spelled(_duration), _schema_duration),
    Kind("choice", _choice, _spelled(_choice), _schema_choice),
)}


# -- JSON binding --------------------------------------------------------------------------

def json_key(param: Param) -> str:
    """The key of ``param`` in a JSON request: its name without a trailing ``_`` (``for_`` →
    ``for``)."""
    return param.name.rstrip("_")


def _holds_nul(value: Any) -> bool:
    """A NUL in a text or in a list's text (one level: deeper values are refused anyway)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(isinstance(v, str) and "\x00" in v for v in value)
    return False


def bind_json(spec: CommandSpec, body: Any) -> dict[str, Any]:
    """The handler's keyword arguments from a JSON object of ``spec``'s parameters (keys:
    :func:`json_key`; ``null`` is the same as leaving a parameter out). The same values and
    the same sentences as :func:`podod.bus.grammar.parse` on the equivalent argv."""
    if not isinstance(body, Mapping):
        raise ParseError(f"{spec.name}: the parameters must be a JSON object")
    if any(_holds_nul(v) for v in body.values()) or any("\x00" in str(k) for k in body):
        raise ParseError(NUL)
    params = {json_key(p): p for p in spec.params}
    for key in body:
        if key not in params:
            known = ", ".join(params) or "none"
            raise ParseError(f"{spec.name}: unknown parameter '{_shown(str(key))}' "
                             f"(parameters: {known})",
                             f"{spec.name}: unknown parameter (parameters: {known})")
    out: dict[str, Any] = {}
    # In the grammar's order, so that the first problem is the same one: the options as
    # given, then the positionals, then what is missing.
    given = [params[k] for k, v in body.items() if v is not None]
    for param in [p for p in given if not p.positional] + [p for p in spec.params
                                                           if p.positional and p in given]:
        out[param.name] = KINDS[param.kind].from_json(spec, param, body[json_key(param)])
    fill_missing(spec, out)
    return out


def argv_for(spec: CommandSpec, body: Mapping[str, Any]) -> list[str]:
    """The argv that :func:`podod.bus.grammar.parse` binds to exactly what :func:`bind_json`
    binds ``body`` to (call that first: it names what is wrong). A JSON frontend sends this
    argv through the bus, so audit, plans, confirmations and "next page" commands are the
    same as podoctl's. Options are spelled ``--name=value`` (a value may start with a dash),
    positionals follow ``--``, a list option is repeated once per item."""
    params = {json_key(p): p for p in spec.params}
    words = list(spec.words)
    for key, value in body.items():
        param = params.get(key)
        if value is None or param is None or param.positional:
            continue
        if param.kind == "list":
            items = value if isinstance(value, list) else [value]
            words.extend(f"{param.flag}={_as_text(item)}" for item in items)
        else:
            words.append(f"{param.flag}={_as_text(value)}")
    positionals: list[str] = []
    missing: Param | None = None
    for param in spec.params:
        if not param.positional:
            continue
        value = body.get(json_key(param))
        if value is None:
            missing = missing or param
            continue
        if missing is not None:
            raise ParseError(f"{spec.name}: {param.display} needs {missing.display} too "
                             f"(usage: {spec.usage})")
        if param.kind == "list" and isinstance(value, list):
            positionals.extend(_as_text(v) for v in value if v != "")
        else:
            positionals.append(_as_text(value))
    return words + (["--", *positionals] if positionals else [])


def fill_missing(spec: CommandSpec, params: dict[str, Any]) -> None:
    """The parameters not given: a required one is refused (the same sentence from argv and
    from JSON), the others take their defaults."""
    for param in spec.params:
        if param.name in params:
            continue
        if param.required:
            what = param.display if param.positional else param.flag
            raise ParseError(f"{spec.name}: {what} is required (usage: {spec.usage})")
        params[param.name] = param.default if param.kind != "flag" else bool(param.default)


def bind_command(command: Any, body: Any, commands: Mapping[str, CommandSpec]
                 ) -> tuple[CommandSpec, dict[str, Any]]:
    """A JSON request (an HTTP frontend's: the command's name and its parameters as a JSON
    object) as the spec and the handler's keyword arguments. An unknown command gets the
    grammar's sentence, as the same words typed in podoctl would."""
    from podod.bus.grammar import find_command  # the grammar imports this module

    if not isinstance(command, str) or "\x00" in command:
        raise ParseError("the command must be its name as text, e.g. 'user create'")
    words = command.split()
    if any(w.startswith("-") for w in words):
        raise ParseError("the command must be its name as text, e.g. 'user create'")
    spec, rest = find_command(words, commands)
    if rest:
        raise ParseError(f"unknown command '{' '.join(words)}'; try 'help' for the list of "
                         "commands", "unknown command")
    return spec, bind_json(spec, {} if body is None else body)


# -- JSON Schemas --------------------------------------------------------------------------

def param_schema(param: Param) -> dict[str, Any]:
    schema = dict(KINDS[param.kind].schema(param))
    if param.secret:
        schema["writeOnly"] = True
    schema["description"] = param.help
    schema["x-podod-kind"] = param.kind
    if param.default is not None and param.kind != "flag":
        schema["default"] = param.default
    elif param.kind == "flag":
        schema["default"] = bool(param.default)
    return schema


def input_schema(spec: CommandSpec) -> dict[str, Any]:
    """The JSON Schema of the JSON object :func:`bind_json` accepts for ``spec``."""
    return {
        "$schema": SCHEMA_DIALECT,
        "title": spec.name,
        "description": spec.summary,
        "type": "object",
        "properties": {json_key(p): param_schema(p) for p in spec.params},
        "required": [json_key(p) for p in spec.params if p.required],
        "additionalProperties": False,
    }


ANY_DATA: dict[str, Any] = {"description": "not declared: any JSON value"}

_CHANGE = {
    "type": "object",
    "properties": {"action": {"type": "string"}, "target": {"type": "string"},
                   "key": {"type": "string"}, "detail": {"type": "object"}},
    "required": ["action", "target", "key"],
}


def reply_schema(spec: CommandSpec) -> dict[str, Any]:
    """The JSON Schema of a reply of ``spec`` as podoctl --json prints it and the socket
    sends it. A successful reply's ``data`` follows the command's declared shape; a refusal's
    ``data`` is whatever the refusal carries (usually null)."""
    data = spec.reply if spec.reply is not None else ANY_DATA
    nullable_text = {"type": ["string", "null"]}
    return {
        "$schema": SCHEMA_DIALECT,
        "title": f"reply of {spec.name}",
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "message": {"type": "string"},
            "data": {},
            "table": {"type": ["object", "null"],
                      "properties": {"columns": {"type": "array"}, "rows": {"type": "array"},
                                     "title": nullable_text}},
            "sandbox": {"type": "boolean"},
            "changes": {"type": "array", "items": _CHANGE},
            "changes_total": {"type": "integer", "description": "how many changes there "
                              "are in all, when changes lists only the first"},
            "backup_id": nullable_text,
            "plan_id": nullable_text,
            "code": {"type": "string"},
            "exit_code": {"type": "integer"},
            "secret": {"type": "string"},
            "notes": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["ok", "message", "data", "code", "exit_code"],
        "if": {"properties": {"ok": {"const": True}}},
        "then": {"properties": {"data": data}},
    }
