"""The one grammar: what parses, and the sentence for what does not."""

from __future__ import annotations

from typing import Any

import pytest

from podod.bus import grammar
from podod.bus.context import Reply
from podod.bus.spec import Arg, CommandSpec, Opt
from podod.errors import UsageError


async def _handler(ctx: Any, **kw: Any) -> Reply:
    return Reply()


def spec(name: str, *params: Any, **kw: Any) -> CommandSpec:
    return CommandSpec(name=name, summary=name, handler=_handler, params=params, **kw)


COMMANDS = {s.name: s for s in [
    spec("status"),
    spec("user create", Arg("address", "the address"), Opt("name", "full name"),
         Opt("quota_mb", "quota", kind="int"), Opt("password", "pw", secret=True),
         Opt("generate_password", "gen", kind="flag"), mutating=True),
    spec("user list", Opt("domain", "d"), Opt("active", "a", kind="bool"),
         Opt("limit", "at most", kind="int", default=100, minimum=1, maximum=1000)),
    spec("alias update", Arg("address", "a"), Opt("add", "targets", kind="list")),
    spec("alerts silence", Arg("rule", "r"), Opt("for_", "how long", kind="duration",
                                                  metavar="DURATION")),
    spec("traffic report", Opt("by", "bucket", kind="choice", choices=("hour", "day"),
                                default="hour")),
]}


def test_parses_positional_options_and_flags() -> None:
    parsed = grammar.parse(["user", "create", "Alice@Example.com", "--name", "Alice Doe",
                            "--quota-mb=2048", "--generate-password"], COMMANDS)
    assert parsed.spec.name == "user create"
    assert parsed.params == {"address": "Alice@Example.com", "name": "Alice Doe",
                             "quota_mb": 2048, "password": None, "generate_password": True}
    assert parsed.execute_real is False


def test_execute_real_anywhere() -> None:
    parsed = grammar.parse(["user", "create", "a@b.c", "--execute-real", "--name", "A"],
                           COMMANDS)
    assert parsed.execute_real is True and parsed.params["name"] == "A"


def test_lists_repeat_and_split_and_booleans() -> None:
    parsed = grammar.parse(["alias", "update", "x@y.z", "--add", "a@b.c,d@e.f", "--add",
                            "g@h.i"], COMMANDS)
    assert parsed.params["add"] == ["a@b.c", "d@e.f", "g@h.i"]
    assert grammar.parse(["user", "list", "--active", "no"], COMMANDS).params["active"] is False
    assert grammar.parse(["traffic", "report"], COMMANDS).params["by"] == "hour"


@pytest.mark.parametrize(("argv", "message"), [
    ([], "no command given; try 'help' for the list of commands"),
    (["frobnicate"], "unknown command 'frobnicate'; try 'help' for the list of commands"),
    (["user", "crate"], "unknown command 'user crate': 'user' has create, list; did you mean "
                        "'user create'?"),
    (["user", "create"], "user create: ADDRESS is required (usage: user create ADDRESS "
                         "[--name TEXT] [--quota-mb N] [--password TEXT] "
                         "[--generate-password] [--execute-real])"),
    (["user", "create", "a@b.c", "--quota-mb", "lots"],
     "user create: --quota-mb must be a whole number, not 'lots'"),
    (["user", "create", "a@b.c", "--quota", "1"],
     "user create: unknown option --quota; did you mean --quota-mb?"),
    (["user", "create", "a@b.c", "--name"], "user create: --name needs a value"),
    (["user", "create", "a@b.c", "extra"],
     "user create: unexpected argument 'extra' (usage: user create ADDRESS"),
    (["user", "list", "--active", "maybe"], "user list: --active must be yes or no, not 'maybe'"),
    (["alerts", "silence", "r", "--for", "soon"],
     "alerts silence: --for 'soon' is not a duration such as 30s, 5m, 2h or 7d"),
    (["traffic", "report", "--by", "week"],
     "traffic report: --by must be one of hour, day, not 'week'"),
    (["user"], "'user' needs one of the words create, list (see 'help user')"),
    (["user", "list", "--limit", "0"], "user list: --limit must be at least 1, not 0"),
    (["user", "list", "--limit", "-5"], "user list: --limit must be at least 1, not -5"),
    (["user", "list", "--limit", "1001"], "user list: --limit must be at most 1000, not 1001"),
    (["user", "create", "a@b.c", "--quota-mb", "9" * 25],
     f"user create: --quota-mb must be at most {2**63 - 1}, not {'9' * 25}"),
])
def test_errors_are_one_sentence(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        grammar.parse(argv, COMMANDS)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_help_flag_and_generated_help() -> None:
    parsed = grammar.parse(["user", "create", "--help"], COMMANDS)
    assert parsed.help
    text = grammar.command_help(COMMANDS["user create"])
    assert text.startswith("Usage: user create ADDRESS")
    assert "--quota-mb N" in text and "sandbox dry run unless --execute-real" in text
    assert "(default: )" not in grammar.command_help(
        spec("x y", Opt("name", "a name", default="")))


def test_secrets_are_redacted() -> None:
    parsed = grammar.parse(["user", "create", "a@b.c", "--password", "hunter2hunter2"],
                           COMMANDS)
    assert grammar.redact(parsed.spec, parsed.params)["password"] == "***"
    assert grammar.audit_argv(["user", "create", "--password", "x", "--password=y"],
                              COMMANDS) == ("user create", ["user", "create", "--password",
                                                            "?", "--password=?"])


MARK = "Hunter2Hunter2"
MALFORMED = [
    ["user", "create", "a@b.c", "--passwd", MARK],  # an unknown option and its value
    ["user", "create", "a@b.c", f"--passwd={MARK}"],
    ["user", "create", "a@b.c", f"--generate-password={MARK}"],  # a flag given a value
    ["user", "create", "a@b.c", f"--{MARK}={MARK}"],
    ["user", "create", "a@b.c", MARK],  # a stray positional
    ["user", "create", "a@b.c", "--generate-password", MARK],
    ["user", "create", "a@b.c", "--name", "A", "--name", MARK],  # given twice
    ["user", "create", "a@b.c", "--quota-mb", MARK],
    ["user", "list", "--active", MARK],
    ["user", "list", "--limit", "9" * 30 + MARK],
    ["alerts", "silence", "r", "--for", MARK],
    ["traffic", "report", "--by", MARK],
    [MARK],
    ["!podo", MARK],
    ["user", MARK],
    [f"--{MARK}"],
    ["user", "create", "a@b.c", "--name", f"{MARK}\x00"],
    ["user", "create", "a@b.c", *[MARK] * 5000],
]


@pytest.mark.parametrize("argv", MALFORMED)
def test_what_the_audit_keeps_of_a_request_that_does_not_parse(argv: list[str]) -> None:
    """The requester is told which word was wrong; the audit record keeps only the words the
    grammar knows: a password typed in the wrong place must not reach the log."""
    with pytest.raises(grammar.ParseError) as info:
        grammar.parse(argv, COMMANDS)
    command, kept = grammar.audit_argv(argv, COMMANDS)
    assert MARK not in info.value.audit_message and "\n" not in info.value.audit_message
    assert MARK not in command and MARK not in repr(kept)
    assert command in COMMANDS or command == "(unknown command)"
    assert len(kept) <= grammar.AUDIT_MAX_WORDS + 4


def test_the_audit_keeps_declared_option_names_and_global_flags() -> None:
    argv = ["user", "create", "a@b.c", "--name=Al", "--quota", "5", "--execute-real",
            "--no-generate-password", "--help"]
    assert grammar.audit_argv(argv, COMMANDS) == (
        "user create", ["user", "create", "?", "--name=?", "?", "?", "--execute-real",
                        "--no-generate-password", "--help"])
    assert grammar.audit_argv(["frobnicate", "x"], COMMANDS) == (
        "(unknown command)", ["(unknown command)", "?", "?"])
    assert grammar.audit_argv(["status"] + ["x"] * 60, COMMANDS)[1][-1] == "... (10 more)"


def test_an_option_is_given_once_unless_it_is_a_list() -> None:
    with pytest.raises(UsageError, match=r"^user create: --name is given twice; give it once$"):
        grammar.parse(["user", "create", "a@b.c", "--name", "A", "--name=B"], COMMANDS)
    with pytest.raises(UsageError, match="--generate-password is given twice"):
        grammar.parse(["user", "create", "a@b.c", "--generate-password",
                       "--no-generate-password"], COMMANDS)


def test_long_values_are_cut_in_the_audit_record() -> None:
    parsed = grammar.parse(["alias", "update", "x@y.z", "--add", ",".join(["a@b.c"] * 80)],
                           COMMANDS)
    kept = grammar.redact(parsed.spec, parsed.params)
    assert len(kept["add"]) == grammar.AUDIT_MAX_ITEMS + 1 and kept["add"][-1] == "... (30 more)"
    parsed = grammar.parse(["user", "create", "a@b.c", "--name", "n" * 5000], COMMANDS)
    assert grammar.redact(parsed.spec, parsed.params)["name"] == \
        "n" * grammar.AUDIT_MAX_TEXT + "... (5000 characters)"


FOUR_WORDS = {s.name: s for s in [
    spec("api account create", Arg("name", "n")),
    spec("api account 2fa enable", Arg("name", "n"), mutating=True),
    spec("api account 2fa disable", Arg("name", "n"), mutating=True),
    spec("api rotate-key", mutating=True),
]}


@pytest.mark.parametrize(("argv", "message"), [
    (["api"], "'api' needs one of the words account 2fa disable, account 2fa enable, account "
              "create, rotate-key (see 'help api')"),
    (["api", "account"], "'api account' needs one of the words 2fa disable, 2fa enable, create "
                         "(see 'help api account')"),
    (["api", "account", "2fa"], "'api account 2fa' needs one of the words disable, enable (see "
                                "'help api account 2fa')"),
    (["api", "account", "2fa", "enabel"], "unknown command 'api account 2fa enabel': 'api "
                                          "account 2fa' has disable, enable; did you mean 'api "
                                          "account 2fa enable'?"),
    (["api", "acount"], "unknown command 'api acount': 'api' has account 2fa disable, account "
                        "2fa enable, account create, rotate-key"),
])
def test_names_of_up_to_four_words(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        grammar.parse(argv, FOUR_WORDS)
    assert str(info.value).startswith(message)


def test_a_four_word_name_parses() -> None:
    parsed = grammar.parse(["API", "account", "2fa", "enable", "alice", "--execute-real"],
                           FOUR_WORDS)
    assert parsed.spec.name == "api account 2fa enable"
    assert parsed.params == {"name": "alice"} and parsed.execute_real
