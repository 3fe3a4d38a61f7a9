"""podoctl shows data literally: a mailbox named ``[/]`` used to crash ``podoctl user list``
with rich's MarkupError, ``[link=...]`` or ``[conceal]`` in data could disguise or hide text,
and an ESC sequence in data reached the terminal raw (``\\x1b[2J`` clears the screen)."""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest
from rich.console import Console

from podod.bus.context import Change, Reply, Secret, Table
from podod.bus.render import JSON_ESCAPES, render_text, visible
from podod.frontends.unix_socket import _encode
from podod.podoctl import _OK_REPLY, Screens, _finish, print_raw
from podod.podoctl_view import _Console, render

TRICKS = ["[/]", "[link=http://x]y[/link]", "[conceal]secret[/conceal]", "\x1b[2J",
          "[bold red]Error:[/] fake", ":thumbs_up:", "a\rb", "\x9b31m", "evil\u202etxt.exe",
          "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "\x07bell", "[/bold]"]
SHOWN = ["[/]", "[link=http://x]y[/link]", "[conceal]secret[/conceal]", "\\x1b[2J",
         "[bold red]Error:[/] fake", ":thumbs_up:", "a\\x0db", "\\x9b31m", "evil\\u202etxt.exe",
         "\\x1b]8;;http://x\\x1b\\link\\x1b]8;;\\x1b\\", "\\x07bell", "[/bold]"]


def reply_with_tricks(**kw: object) -> Reply:
    return Reply(
        message="first " + " ".join(TRICKS) + "\nsecond line",
        table=Table(columns=["name", "[/]"], rows=[[t, t] for t in TRICKS],
                    title="mailboxes [conceal]x[/conceal] \x1b[2J"),
        changes=[Change("insert", "mailbox", TRICKS[1], {"name": TRICKS[2]})],
        notes=["note " + t for t in TRICKS], backup_id="[/]\x1b[2J",
        secrets=[Secret("Generated password", "[conceal]pw[/conceal]")], **kw)  # type: ignore[arg-type]


def printed(reply: Reply, *, terminal: bool) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    console = _Console(file=out, force_terminal=terminal, width=10_000, soft_wrap=True,
                       color_system="truecolor" if terminal else None)
    error = _Console(file=err, force_terminal=terminal, width=10_000, soft_wrap=True,
                     color_system="truecolor" if terminal else None)
    render(reply, console, error)
    return out.getvalue(), err.getvalue()


@pytest.mark.parametrize("terminal", [False, True])
def test_data_in_every_part_of_a_reply_is_shown_literally(terminal: bool) -> None:
    out, err = printed(reply_with_tricks(), terminal=terminal)
    assert err == ""
    plain = _strip_styles(out) if terminal else out
    for shown in SHOWN:
        assert shown in plain, shown
        assert f"note {shown}" in plain  # notes
    assert "mailboxes [conceal]x[/conceal] \\x1b[2J" in plain  # the table's title
    assert "Did insert mailbox [link=http://x]y[/link] (name=[conceal]secret[/conceal])" in plain
    assert "Generated password (shown once): [conceal]pw[/conceal]" in plain
    assert "Backup [/]\\x1b[2J was taken before the change" in plain
    assert "👍" not in out  # no emoji codes either
    # nothing from the data reaches the terminal as a control sequence: no clear screen, no
    # hyperlink (OSC 8), no concealed text (SGR 8), no carriage return, bell or C1 CSI
    for raw in ("\x1b[2J", "\x1b]8;", "\x1b[8m", "\r", "\x07", "\x9b", "\u202e"):
        assert raw not in out, repr(raw)
    if not terminal:
        assert "\x1b" not in out
    untitled = reply_with_tricks()
    assert untitled.table is not None
    untitled.table.title = None  # then the message follows the table, with its line break
    out, _ = printed(untitled, terminal=terminal)
    plain = _strip_styles(out) if terminal else out
    assert "first " + " ".join(SHOWN) + "\nsecond line" in plain
    assert "\x1b[2J" not in out


def test_an_error_message_with_markup_is_shown_literally() -> None:
    reply = Reply(ok=False, message="there is no mailbox [/]@x [link=http://x]y[/link] "
                                     "\x1b[2J", code="not-found", exit_code=1)
    for terminal in (False, True):
        out, err = printed(reply, terminal=terminal)
        assert out == ""
        plain = _strip_styles(err) if terminal else err
        assert plain == "Error: there is no mailbox [/]@x [link=http://x]y[/link] \\x1b[2J\n"
        assert "\x1b[2J" not in err and "\x1b]8;" not in err


def test_a_sandbox_plan_with_markup_in_its_data() -> None:
    reply = Reply(sandbox=True, message="would create [/]",
                  changes=[Change("insert", "mailbox", "[/]@example.com")], plan_id="ab12")
    out, _ = printed(reply, terminal=False)
    assert out.splitlines() == [
        "SANDBOX: nothing was changed.", "would create [/]",
        "  Would insert mailbox [/]@example.com",
        "To apply it, repeat the command with --execute-real, or run: podoctl confirm ab12."]


def test_plain_text_rendering_and_json_show_control_characters_too() -> None:
    reply = reply_with_tricks()
    assert reply.table is not None
    reply.table.title = None  # a titled table stands for the message, as in podoctl
    text = render_text(reply)
    assert "\x1b" not in text and "\r" not in text and "\\x1b[2J" in text
    assert "\nsecond line" in text  # a message keeps its line breaks
    assert visible("a\nb") == "a\\x0ab" and visible("a\nb", newlines=True) == "a\nb"
    assert render_text(Reply(ok=False, message="no [/] \x1b[2J")) == "Error: no [/] \\x1b[2J"
    buffer = io.StringIO()
    console = Console(file=buffer)
    with contextlib.redirect_stdout(buffer):
        _finish(reply_with_tricks(), {"json": True}, Screens(console, console))
    printed_json = buffer.getvalue()
    for raw in ("\x1b", "\x9b", "\u202e", "\r", "\x07"):
        assert raw not in printed_json
    assert json.loads(printed_json)["table"]["rows"][8][0] == "evil\u202etxt.exe"
    assert "\u009b" not in "".join(JSON_ESCAPES.values())


def test_json_passed_through_is_the_reply_with_control_characters_escaped() -> None:
    """A large successful reply goes to 'podoctl --json' output as the daemon sent it: the
    same JSON as the decoded and re-encoded reply, without the protocol's type, and with
    every character JSON_ESCAPES names escaped (also past the first match, and the
    non-ASCII text around them left as it is)."""
    extra = ["DEL\x7fx", "\u0085nel", "\u2028ls", "\u2066iso\u2069", "é ü € … — ©"]
    reply = Reply(message="1000 mailboxes", data=[{"name": t} for t in TRICKS + extra] * 50,
                  table=Table(["row", "name"], [[str(i), t] for i, t in enumerate(
                      TRICKS + extra)] * 50, title="m"))
    line = _encode({"type": "reply", **reply.to_dict()})
    assert line.startswith(_OK_REPLY)  # what podoctl looks for to pass a reply through
    out = io.BytesIO()
    print_raw(line, out)
    printed = out.getvalue()
    assert printed.endswith(b"}\n")
    lines = printed.decode().splitlines()
    # One row of the data, and one of the table, per line: 'grep' finds a row's line.
    assert len(lines) == 2 * len(reply.table.rows) - 1
    assert sum('{"name": "DEL\\u007fx"}' in line for line in lines) == 50
    text = printed.decode()
    for raw in ("\x1b", "\x9b", "\u202e", "\r", "\x07", "\x7f", "\x85", "\u2028", "\u2066"):
        assert raw not in text
    assert "é ü € … — ©" in text
    assert json.loads(text) == json.loads(json.dumps(reply.to_dict()))
    assert "type" not in json.loads(text)
    # Text in a row that looks like the place between two rows stays whole (the reply is
    # then printed on one line).
    for text in ('x}, {', 'x], [', 'x}, {"', '}, {"a": 1}, {"'):
        tricky = Reply(message="m", data=[{"name": text}, {"name": "b"}],
                       table=Table(["name"], [[text], ["b"]]))
        out = io.BytesIO()
        print_raw(_encode({"type": "reply", **tricky.to_dict()}), out)
        assert json.loads(out.getvalue()) == tricky.to_dict()
    # Every character the bus escapes for JSON output, also when the reply is passed through.
    every = Reply(message="m", data=[{"name": f"a{chr(c)}b"} for c in JSON_ESCAPES])
    out = io.BytesIO()
    print_raw(_encode({"type": "reply", **every.to_dict()}), out)
    assert not set(out.getvalue().decode()) & {chr(c) for c in JSON_ESCAPES}
    assert json.loads(out.getvalue()) == json.loads(json.dumps(every.to_dict()))
    plain = io.BytesIO()
    print_raw(_encode({"type": "reply", **Reply(message="plain ascii").to_dict()}), plain)
    assert json.loads(plain.getvalue()) == Reply(message="plain ascii").to_dict()


def _strip_styles(text: str) -> str:
    """What a person reads: rich's own SGR style sequences removed (data has none left)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_podod_logparse_tables_show_log_data_literally() -> None:
    """`podod logparse` prints senders and reject reasons from a mail log in rich tables."""
    from podod.monitor.traffic.logparse import _print

    counts = ("received", "delivered", "forwarded", "deferred", "deferrals", "bounced",
              "rejected", "reject_warnings", "held", "discarded", "expired", "bytes_received",
              "bytes_delivered", "sasl_auth_failures")
    report = {**dict.fromkeys(counts, 0),
              "top_senders": [{"address": t, "count": 1} for t in TRICKS],
              "rejects": [{"reason": "[conceal]hidden[/conceal]", "code": "554", "count": 2}]}
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        _print(report, as_json=False)
    out = buffer.getvalue()
    for shown in SHOWN:
        assert shown in out, shown
    assert "[conceal]hidden[/conceal]" in out and "\x1b" not in out


def test_progress_is_a_bar_on_a_terminal_and_lines_otherwise() -> None:
    from podod.podoctl_view import ProgressView

    for terminal in (True, False):
        buffer = io.StringIO()
        err = _Console(file=buffer, force_terminal=terminal, width=120)
        view = ProgressView(err, quiet=False)
        view({"type": "progress", "message": "importing \x1b[2J", "done": 5, "total": 10})
        view({"type": "progress", "message": "importing", "done": 10, "total": 10})
        view({"type": "progress", "message": "connecting"})  # no count: a line
        view.close()
        shown = buffer.getvalue()
        assert "\x1b[2J" not in shown and "connecting" in shown
        if not terminal:
            assert shown.splitlines() == ["… importing \\x1b[2J (5/10)", "… importing (10/10)",
                                          "… connecting"]
    quiet = io.StringIO()
    view = ProgressView(_Console(file=quiet), quiet=True)  # --json: nothing on stderr
    view({"message": "importing", "done": 1, "total": 2})
    assert quiet.getvalue() == ""
