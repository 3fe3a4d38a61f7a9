"""The edge of the bus: every command binds from argv and from JSON to the same values, with
the same sentences for bad values, and declares a valid JSON Schema for its input and reply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podod.builtins import BUILTIN_MODULES
from podod.bus import binding, grammar
from podod.bus.binding import ParseError
from podod.bus.spec import CommandSpec, Param
from podod.plugins import Registry, load_builtins, load_plugins

REPO = Path(__file__).resolve().parents[2]
TEXT_KINDS = ("str", "secret", "address", "domain")


def registry_commands() -> dict[str, CommandSpec]:
    registry = Registry()
    load_builtins(registry, BUILTIN_MODULES)
    load_plugins(registry, [REPO / "plugins"], use_entry_points=False, disabled=[])
    return registry.commands


COMMANDS = registry_commands()


def _word(value: Any) -> str:
    """How argv spells a JSON value."""
    return value if isinstance(value, str) else json.dumps(value)


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_TEXT_OR_NUL = st.one_of(_TEXT, st.just("a\x00b"))
_NUMBER_WORDS = st.sampled_from(["12", "0", "-1", "abc", "1.5", "nan", "inf", "", " 7",
                                 "1e309", "9" * 30, "0x10"])
_NUMBERS = st.one_of(st.integers(-2**70, 2**70), _NUMBER_WORDS,
                     st.floats(allow_nan=False, allow_infinity=False, width=32),
                     st.booleans())
_DURATIONS = st.one_of(st.sampled_from(["30s", "5m", "2h", "7d", "1h30m", "90", "abc",
                                        "-5m", "nan", "36500d", "36501d", "", "1e-07"]),
                       st.integers(-10, 10**12),
                       st.floats(allow_nan=False, allow_infinity=False, width=32))
_BOOLS = st.one_of(st.booleans(), st.sampled_from(["yes", "no", "on", "OFF", "maybe", "2", ""]),
                   st.integers(0, 2))


@st.composite
def json_value(draw: st.DrawFn, param: Param) -> Any:
    """A JSON value for ``param``: valid or not, never one argv cannot spell."""
    kind = param.kind
    if kind in TEXT_KINDS:
        text = draw(_TEXT_OR_NUL)
        return text if not param.positional or text != "--execute-real" else "x"
    if kind in ("int", "size"):
        return draw(_NUMBERS)
    if kind == "duration":
        return draw(_DURATIONS)
    if kind in ("bool", "flag"):
        return draw(_BOOLS)
    if kind == "choice":
        return draw(st.sampled_from([*param.choices, "bogus", param.choices[0].upper()]))
    if kind == "list":
        items = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
        return draw(st.lists(items.filter(lambda s: s != "--execute-real"), min_size=1,
                             max_size=3))
    raise AssertionError(f"no strategy for the kind {kind}: add one")


def option_words(param: Param, value: Any) -> list[str]:
    if param.kind == "flag" and isinstance(value, bool):
        return [param.flag if value else "--no-" + param.flag[2:]]
    if param.kind == "list":
        return [f"{param.flag}={item}" for item in value]
    return [f"{param.flag}={_word(value)}"]


def outcome(bind: Any) -> tuple[Any, ...]:
    try:
        return ("bound", bind())
    except ParseError as exc:
        return ("refused", exc.message, exc.audit_message)


@st.composite
def requests(draw: st.DrawFn) -> tuple[CommandSpec, list[str], dict[str, Any]]:
    """A command, an argv and the equivalent JSON object of its parameters."""
    spec = COMMANDS[draw(st.sampled_from(sorted(COMMANDS)))]
    argv, body = list(spec.words), {}
    options = [p for p in spec.params if not p.positional]
    for param in draw(st.permutations(options)):
        if draw(st.booleans()):
            value = draw(json_value(param))
            body[binding.json_key(param)] = value
            argv += option_words(param, value)
    positionals = [p for p in spec.params if p.positional]
    given = draw(st.integers(0, len(positionals)))
    words: list[str] = []
    for param in positionals[:given]:
        value = draw(json_value(param))
        body[binding.json_key(param)] = value
        words += value if param.kind == "list" else [_word(value)]
    if words:
        argv += ["--", *words]
    return spec, argv, body


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_argv_and_json_bind_to_the_same_values_and_the_same_sentences(
        request: tuple[CommandSpec, list[str], dict[str, Any]]) -> None:
    spec, argv, body = request
    by_argv = outcome(lambda: grammar.parse(argv, COMMANDS).params)
    by_json = outcome(lambda: binding.bind_json(spec, body))
    assert by_argv == by_json, (argv, body)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_the_argv_a_json_request_is_sent_as_binds_to_the_same_values(
        request: tuple[CommandSpec, list[str], dict[str, Any]]) -> None:
    """The REST API sends argv_for(body) through the bus: what the bus parses from it is
    exactly what bind_json makes of the body, whenever bind_json accepts the body."""
    spec, _argv, body = request
    try:
        bound = binding.bind_json(spec, body)
    except ParseError:
        return
    if any(v == [] for v in body.values()):
        return  # an empty list binds as given; its argv gives nothing, i.e. the default
    assert grammar.parse(binding.argv_for(spec, body), COMMANDS).params == bound, body


def test_argv_for_keeps_a_value_that_starts_with_a_dash_a_value() -> None:
    spec = COMMANDS["user create"]
    body = {"address": "-a@example.com", "name": "--execute-real"}
    argv = binding.argv_for(spec, body)
    assert argv == ["user", "create", "--name=--execute-real", "--", "-a@example.com"]
    assert grammar.parse(argv, COMMANDS).params["name"] == "--execute-real"
    assert grammar.parse(argv, COMMANDS).execute_real is False


def test_the_property_covers_every_kind_of_parameter() -> None:
    kinds = {p.kind for spec in COMMANDS.values() for p in spec.params}
    assert kinds == set(binding.KINDS) - {"secret"}, "a new kind: give json_value a strategy"


def spec_of(name: str) -> CommandSpec:
    return COMMANDS[name]


@pytest.mark.parametrize(("command", "body", "sentence"), [
    ("user create", {"address": "a@example.com", "quota_mb": "lots"},
     "user create: --quota-mb must be a whole number, not 'lots'"),
    ("user create", {"address": "a@example.com", "quota_mb": 1.5},
     "user create: --quota-mb must be a whole number, not '1.5'"),
    ("user create", {"address": "a@example.com", "quota_mb": -1},
     "user create: --quota-mb must be at least 0, not -1"),
    ("user create", {"address": 42}, "user create: ADDRESS must be text, not 42"),
    ("user create", {"address": ["a@example.com"]},
     'user create: ADDRESS must be text, not ["a@example.com"]'),
    ("user create", {}, "user create: ADDRESS is required (usage: "
                        f"{spec_of('user create').usage})"),
    ("user create", {"address": "a@example.com", "quota": 5},
     "user create: unknown parameter 'quota' (parameters: address, name, quota_mb, "
     "password_stdin, generate_password, inactive, reuse_maildir)"),
    ("alias create", {"address": "a@example.com", "to": [1, 2]},
     "alias create: --to must be a list of text"),
    ("user list", {"domain": "example.com\x00"},
     "the request holds a NUL character, which no command accepts"),
    ("user list", ["example.com"], "user list: the parameters must be a JSON object"),
    ("alerts silence", {"for": "soon", "reason": "r"},
     "alerts silence: --for 'soon' is not a duration such as 30s, 5m, 2h or 7d"),
])
def test_a_bad_json_request_is_refused_with_one_sentence(command: str, body: Any,
                                                         sentence: str) -> None:
    with pytest.raises(ParseError) as info:
        binding.bind_json(COMMANDS[command], body)
    assert info.value.message == sentence
    assert info.value.exit_code == 2
    assert "lots" not in info.value.audit_message  # the audit keeps no word of the request


def test_json_binds_natural_values() -> None:
    params = binding.bind_json(COMMANDS["user create"], {
        "address": "alice@example.com", "quota_mb": 2048, "generate_password": True,
        "name": None})
    assert params["quota_mb"] == 2048 and params["generate_password"] is True
    assert params["name"] == "" and params["inactive"] is False  # defaults, as from argv
    silence = binding.bind_json(COMMANDS["alerts silence"], {
        "for": "2h", "reason": "r", "match": ["server=mx1", "severity=warning"]})
    assert silence["for_"] == 7200.0 and silence["match"] == ["server=mx1", "severity=warning"]


VALIDATOR = jsonschema.Draft202012Validator


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_declares_valid_input_and_reply_schemas(command: str) -> None:
    spec = COMMANDS[command]
    data = grammar.help_data(spec)
    VALIDATOR.check_schema(data["input_schema"])
    VALIDATOR.check_schema(data["reply_schema"])
    json.dumps(data)  # help --json carries them
    assert set(data["input_schema"]["properties"]) == {binding.json_key(p) for p in spec.params}


def test_list_and_show_commands_declare_the_shape_of_their_data() -> None:
    readers = [name for name, spec in COMMANDS.items()
               if name.split()[-1] in ("list", "show", "status", "query", "series", "history",
                                       "rules", "silences", "top", "report", "summary",
                                       "cycles", "commands")]
    assert len(readers) >= 20
    for name in readers:
        declared = COMMANDS[name].reply
        assert declared is not None and declared != {}, f"{name} declares no reply data"
    undeclared = sorted(n for n, s in COMMANDS.items() if s.reply is None)
    assert undeclared == ["confirm"]  # its reply is the confirmed command's


def test_the_input_schema_accepts_what_the_binding_accepts_and_refuses_a_wrong_type() -> None:
    spec = COMMANDS["user create"]
    schema = binding.input_schema(spec)
    body = {"address": "alice@example.com", "quota_mb": 2048, "inactive": True}
    VALIDATOR(schema).validate(body)
    binding.bind_json(spec, body)
    assert not VALIDATOR(schema).is_valid({"address": "alice@example.com", "quota_mb": "x"})
    assert not VALIDATOR(schema).is_valid({"quota_mb": 5})  # the address is required
    assert not VALIDATOR(schema).is_valid({"address": "a@example.com", "bogus": 1})
    quota = schema["properties"]["quota_mb"]
    assert quota["minimum"] == 0 and quota["x-podod-kind"] == "size"
    assert quota["x-podod-unit"] == "MB" and quota["description"]
    by = binding.input_schema(COMMANDS["traffic report"])["properties"]["by"]
    assert by["enum"] == ["day", "hour"] and by["default"] == "day"


def test_a_reply_is_checked_against_its_command_declaration() -> None:
    reply = {"ok": True, "message": "1 mailboxes", "code": "ok", "exit_code": 0,
             "data": [{"username": "a@example.com", "name": "", "quota": 0, "active": True,
                       "domain": "example.com", "used": 0, "messages": 0}]}
    validator = VALIDATOR(binding.reply_schema(COMMANDS["user list"]))
    validator.validate(reply)
    reply["data"][0]["quota"] = "lots"
    assert not validator.is_valid(reply)
    refused = {"ok": False, "message": "no", "code": "usage", "exit_code": 2, "data": None}
    validator.validate(refused)  # a refusal carries no data


def test_a_json_request_names_its_command_as_podoctl_would() -> None:
    spec, params = binding.bind_command("User  Show", {"address": "a@example.com"}, COMMANDS)
    assert spec.name == "user show" and params == {"address": "a@example.com"}
    assert binding.bind_command("status", None, COMMANDS)[1] == {}
    with pytest.raises(ParseError) as by_argv:
        grammar.parse(["user", "crate"], COMMANDS)
    assert by_argv.value.message.endswith("did you mean 'user create'?")
    for command, sentence in [
            ("user crate", by_argv.value.message),  # the same sentence as from podoctl
            ("user show alice", "unknown command 'user show alice'; try 'help' for the list "
                                "of commands"),
            ("user --help", "the command must be its name as text, e.g. 'user create'"),
            (["user", "show"], "the command must be its name as text, e.g. 'user create'")]:
        with pytest.raises(ParseError) as info:
            binding.bind_command(command, {}, COMMANDS)
        assert info.value.message == sentence
