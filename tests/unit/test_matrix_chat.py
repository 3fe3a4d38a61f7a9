"""The Matrix bot's pieces that need no homeserver: reading a chat line, fitting a reply in
one event, the silence of a notification's group, and the matrix: section's checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from podod.alerts.notify import AlertSnapshot, Notification
from podod.bus.context import Reply, Table
from podod.config import Config, load_config
from podod.errors import ConfigError, UsageError
from podod.frontends.matrix import LIMIT_BYTES, _fit, normalise, silence_matchers, words_of

MATRIX = ("matrix:\n  homeserver: https://matrix.example.org\n"
          "  user_id: '@podod:example.org'\n  access_token: abc\n"
          "  rooms: ['!ops:example.org']\n")
ACCESS = "access:\n  matrix_users:\n    '@alice:example.org': {role: admin}\n"


def test_a_phone_line_reads_like_a_typed_one() -> None:
    assert normalise("!podo user create \u201cJane Doe\u201d \u2014quota-mb 5") == \
        '!podo user create "Jane Doe" --quota-mb 5'
    assert normalise("!podo alias show \u2018a b\u2019") == "!podo alias show 'a b'"
    fallback = "> <@bob:example.org> the mailbox is full\n> second line\n\n!podo user show x"
    assert normalise(fallback) == "!podo user show x"
    assert words_of(normalise("!podo user create \u201cJane Doe\u201d"), "!podo") == \
        ["user", "create", "Jane Doe"]
    assert words_of("!podo", "!podo") == []
    assert words_of("!podox status", "!podo") is None
    assert words_of("hello !podo status", "!podo") is None
    with pytest.raises(UsageError, match="cannot read the command"):
        words_of('!podo user create "unclosed', "!podo")


def test_a_large_listing_is_cut_to_what_fits_and_says_how_many() -> None:
    rows = [[f"user{i:05d}@big.example", f"User <b>{i}</b>", 1024] for i in range(10_000)]
    reply = Reply(message="10000 mailboxes", table=Table(["address", "name", "quota"], rows))
    content = _fit(reply, "$root", "$cmd")
    size = len(json.dumps(content, ensure_ascii=False).encode())
    assert size <= LIMIT_BYTES < 65_536
    assert "10000 rows in all; only the first" in content["body"]
    assert "user00000@big.example" in content["body"]
    assert "<b>1</b>" not in content["formatted_body"]  # data is escaped, never markup
    assert "User &lt;b&gt;1&lt;/b&gt;" in content["formatted_body"]
    assert content["msgtype"] == "m.notice"
    assert content["m.relates_to"] == {"rel_type": "m.thread", "event_id": "$root",
                                       "is_falling_back": False,
                                       "m.in_reply_to": {"event_id": "$cmd"}}
    small = _fit(Reply(message="ok"), "$cmd", "$cmd")
    assert small["body"] == "ok" and small["m.relates_to"]["is_falling_back"] is True


def test_a_huge_message_without_a_table_is_cut() -> None:
    content = _fit(Reply(message="x" * 200_000), "$a", "$a")
    assert len(json.dumps(content).encode()) <= LIMIT_BYTES
    assert "use podoctl" in content["body"]


def _alert(rule: str, server: str) -> AlertSnapshot:
    return AlertSnapshot(fingerprint=rule + server, status="firing",
                         labels={"alertname": rule, "server": server}, annotations={},
                         starts_at=0.0, ends_at=None)


def test_the_silence_line_matches_exactly_the_group() -> None:
    grouped = Notification("matrix", "k", {"server": "mx1"}, [_alert("A", "mx1")])
    assert silence_matchers(grouped) == ["server=mx1"]
    one_rule = Notification("matrix", "k", {}, [_alert("A", "mx1"), _alert("A", "mx2")])
    assert silence_matchers(one_rule) == ["alertname=A"]
    rules = Notification("matrix", "k", {}, [_alert("A", "mx1"), _alert("B.x", "mx2")])
    assert silence_matchers(rules) == ["alertname=~A|B\\.x"]


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "podod.yaml"
    path.write_text(text)
    return load_config(path)


@pytest.mark.parametrize(("text", "message"), [
    ("matrix: {homeserver: matrix.example.org}\n",
     "matrix.homeserver: must be an http:// or https:// URL"),
    ("matrix: {homeserver: 'https://m.example.org', access_token: x, rooms: ['!a:b']}\n",
     "matrix: user_id is required"),
    ("matrix: {homeserver: 'https://m.example.org', user_id: '@p:example.org', rooms: "
     "['!a:b']}\n", "matrix: give access_token_file (a token of the bot's account) or "
     "password_file"),
    ("matrix: {homeserver: 'https://m.example.org', user_id: '@p:example.org', "
     "access_token: x, password: y, rooms: ['!a:b']}\n",
     "matrix: give access_token_file or password_file, not both"),
    ("matrix: {homeserver: 'https://m.example.org', user_id: '@p:example.org', "
     "access_token: x}\n", "matrix: rooms: list the admin rooms"),
    ("matrix: {homeserver: 'https://m.example.org', user_id: 'podod', access_token: x}\n",
     "matrix.user_id: 'podod' is not a Matrix user id"),
    ("matrix: {homeserver: 'https://m.example.org', user_id: '@p:e.org', access_token: x, "
     "rooms: [ops]}\n", "matrix.rooms: 'ops' is not a room id"),
    ("matrix: {user_id: '@p:e.org'}\n", "matrix: homeserver is required"),
    (MATRIX, "matrix.bot is on but access.matrix_users names nobody"),
    ("access:\n  matrix_users:\n    alice: {role: admin}\n",
     "access.matrix_users: 'alice' is not a Matrix user id"),
    ("alerts:\n  notifiers: [{type: matrix}]\n",
     "a matrix notifier without homeserver posts through podod's own account"),
    (MATRIX + ACCESS + "alerts:\n  notifiers: [{type: matrix}]\n",
     "room_id is required (or set matrix.alert_room)"),
    ("alerts:\n  notifiers: [{type: matrix, user_id: '@p:e.org', room_id: '!a:b'}]\n",
     "homeserver is required with user_id"),
])
def test_check_config_explains_each_mistake(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert message in str(info.value)
    assert "\n" not in str(info.value).strip()


def test_a_valid_section_and_the_chat_plan_lifetime(tmp_path: Path) -> None:
    config = _load(tmp_path, MATRIX + ACCESS + "alerts:\n  notifiers: [{type: matrix, "
                                               "room_id: '!alerts:example.org'}]\n")
    assert config.matrix.enabled and config.matrix.e2ee == "auto"
    assert config.commands.plan_ttl_by_origin == {"matrix": 120.0}
    config = _load(tmp_path, MATRIX + ACCESS + "commands: {plan_ttl_by_origin: {matrix: 5m}}\n")
    assert config.commands.plan_ttl_by_origin == {"matrix": 300.0}
    # a notifier with an account of its own needs no matrix: section (as before the bot)
    config = _load(tmp_path, "alerts:\n  notifiers: [{type: matrix, homeserver: "
                             "'https://m.example.org', user_id: '@p:e.org', access_token: x, "
                             "room_id: '!a:b'}]\n")
    assert not config.matrix.enabled


def test_a_long_command_edits_one_progress_message() -> None:
    import asyncio
    from types import SimpleNamespace

    from podod.frontends import matrix
    from podod.matrix.session import Incoming

    sent: list[dict[str, object]] = []

    async def send(room: str, content: dict[str, object]) -> str:
        sent.append(content)
        return f"$p{len(sent)}"

    bot = SimpleNamespace(settings=SimpleNamespace(progress_interval=0.1, progress_after=0.01),
                          session=SimpleNamespace(send=send))
    incoming = Incoming(kind="message", room_id="!r", event_id="$cmd", sender="@a:b", ts=0)

    async def run(phases: list[tuple[str, int]], pause: float, ok: bool = True) -> None:
        progress = matrix._ProgressMessage(bot, incoming, "$cmd")  # type: ignore[arg-type]
        for phase, steps in phases:
            for done in range(1, steps + 1):
                await progress(phase, done, steps)
                await asyncio.sleep(pause)
        await progress.finish(ok)
        sent.append({"reply": True})

    asyncio.run(run([("counting", 10)], 0.03))
    assert sent[0]["body"] == "\u23f3 counting (1/10)"
    assert sent[0]["m.relates_to"]["rel_type"] == "m.thread"  # type: ignore[index]
    assert sent[0][matrix.PROGRESS_KEY] is True
    edits = sent[1:-1]
    assert edits and all(e["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$p1"}
                         for e in edits)
    assert len(sent) < 10  # coalesced, not one message per report
    # the last edit, before the reply: the phase done, with its final counts
    assert edits[-1]["m.new_content"]["body"] == "\u2713 counting (10/10)"  # type: ignore[index]
    assert sent[-1] == {"reply": True}

    # phases shorter than the interval still show, each on its line; a failure marks the
    # phase the command stopped in
    sent.clear()
    asyncio.run(run([("reading the file", 1), ("hashing passwords", 3), ("writing rows", 2)],
                    0.02, ok=False))
    last = sent[-2]["m.new_content"]["body"]  # type: ignore[index]
    assert last == ("\u2713 reading the file (1/1)\n\u2713 hashing passwords (3/3)\n"
                    "\u2717 writing rows (2/2)")

    # a report's text is one bounded line; the earliest of many phases are counted
    sent.clear()
    asyncio.run(run([(f"step\n{n} " + "x" * 300, 1) for n in range(20)], 0.002))
    body = str(sent[-2]["m.new_content"]["body"])  # type: ignore[index]
    lines = body.split("\n")
    assert lines[0] == f"({20 - matrix.PROGRESS_LINES} earlier steps)"
    assert len(lines) == matrix.PROGRESS_LINES + 1 and all(len(x) < 220 for x in lines)

    sent.clear()
    asyncio.run(run([("counting", 3)], 0.0))  # a quick command shows no progress at all
    assert sent == [{"reply": True}]


def test_check_config_warns_of_a_clear_text_homeserver_and_a_readable_token(
        tmp_path: Path) -> None:
    import subprocess
    import sys

    token = tmp_path / "token"
    token.write_text("syt_secret\n")
    token.chmod(0o644)
    path = tmp_path / "podod.yaml"
    path.write_text(ACCESS + "matrix:\n  homeserver: http://matrix.example.org\n"
                    "  user_id: '@podod:example.org'\n  access_token_file: token\n"
                    "  rooms: ['!ops:example.org']\n")
    run = subprocess.run([sys.executable, "-m", "podod.cli", "check-config", "-c", str(path)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "matrix.homeserver http://matrix.example.org is plain http" in run.stderr
    assert f"matrix.access_token_file: {token} can be read by other users" in run.stderr
    assert "syt_secret" not in run.stderr + run.stdout
    token.chmod(0o600)
    path.write_text(path.read_text().replace("http://matrix.example.org",
                                             "http://127.0.0.1:8008"))
    run = subprocess.run([sys.executable, "-m", "podod.cli", "check-config", "-c", str(path)],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "matrix." not in run.stderr, run.stderr


def _text_event(event_id: str, sender: str, ts_ms: int, body: str) -> object:
    from nio import RoomMessageText

    return RoomMessageText.from_dict({
        "type": "m.room.message", "event_id": event_id, "sender": sender,
        "origin_server_ts": ts_ms, "content": {"msgtype": "m.text", "body": body}})


def test_old_own_and_handled_events_are_never_handed_on(tmp_path: Path) -> None:
    import time

    from podod.matrix.session import MatrixSession
    from podod.matrix.settings import MatrixSettings

    settings = MatrixSettings(homeserver="https://m.example.org", user_id="@podod:e.org",
                              access_token="x", rooms=["!r:e.org"])
    got: list[str] = []
    session = MatrixSession(settings, tmp_path)
    session.store.mkdir(parents=True)
    session._hand = lambda incoming: got.append(incoming.event_id)  # type: ignore[method-assign]
    session._load_handled()
    now = time.time() + 1.0
    since = session.started_at
    session._consider("!r", _text_event("$old", "@a:e.org", int((since - 5) * 1000), "!podo x"),
                      since, now)
    session._consider("!r", _text_event("$own", "@podod:e.org", int(now * 1000), "!podo x"),
                      since, now)
    session._consider("!r", _text_event("$new", "@a:e.org", int(now * 1000), "!podo x"),
                      since, now)
    session._consider("!r", _text_event("$new", "@a:e.org", int(now * 1000), "!podo x"),
                      since, now)  # the same event in a second sync
    assert got == ["$new"]
    session._save_handled()
    assert (session.store / "handled.json").stat().st_mode & 0o777 == 0o600
    again = MatrixSession(settings, tmp_path)  # after a restart: still handled
    again._hand = lambda incoming: got.append(incoming.event_id)  # type: ignore[method-assign]
    again._load_handled()
    again._consider("!r", _text_event("$new", "@a:e.org", int(now * 1000), "!podo x"),
                    0.0, now)
    assert got == ["$new"]


def test_metrics_expose_the_matrix_session() -> None:
    from podod.frontends.metrics import SelfMetrics

    own = SelfMetrics(matrix={"up": 1.0, "sync_age": 2.5, "event_lag": 0.04, "sent": 7.0,
                              "send_failures": 1.0})
    series = {s.series: s.value for s in own.samples()}
    assert series["matrix_up"] == 1.0 and series["matrix_sync_lag_seconds"] == 0.04
    assert series["matrix_send_failures_total"] == 1.0
    assert series["matrix_messages_sent_total"] == 7.0
    assert "matrix_up" not in {s.series for s in SelfMetrics().samples()}


class _FakeClient:
    """Answers room_send and sync from scripted lists (no homeserver)."""

    def __init__(self, sends: list[object], syncs: list[object]) -> None:
        self.sends, self.syncs = sends, syncs
        self.send_calls = 0
        self.tx_ids: list[object] = []
        self.sync_calls = 0
        self.next_batch = None

    async def room_send(self, *args: object, **kw: object) -> object:
        self.send_calls += 1
        self.tx_ids.append(kw.get("tx_id"))
        answer = self.sends.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sync(self, *args: object, **kw: object) -> object:
        self.sync_calls += 1
        answer = self.syncs.pop(0) if self.syncs else OSError("down")
        if isinstance(answer, Exception):
            raise answer
        return answer


def _session(tmp_path: Path, **keys: object) -> object:
    from podod.matrix.session import MatrixSession
    from podod.matrix.settings import MatrixSettings

    settings = MatrixSettings(homeserver="https://m.example.org", user_id="@podod:e.org",
                              access_token="x", rooms=["!r:e.org"], **keys)
    return MatrixSession(settings, tmp_path)


def test_a_429_is_honoured_then_the_message_is_sent(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import random

    from nio import RoomSendError, RoomSendResponse

    from podod.matrix.session import SendError

    session: Any = _session(tmp_path)
    session._client = _FakeClient([RoomSendError("slow down", "M_LIMIT_EXCEEDED", 20),
                                   RoomSendResponse("$x", "!r")], [])
    assert asyncio.run(session._post("!r", "m.room.message", {"body": "hi"})) == "$x"
    assert session._client.send_calls == 2 and session.sent == 1
    # a connection lost: tried again with the same transaction id (never posted twice)
    monkeypatch.setattr(random, "uniform", lambda a, b: 0.01)
    session._client = _FakeClient([ConnectionResetError("gone"), RoomSendResponse("$y", "!r")],
                                  [])
    assert asyncio.run(session._post("!r", "m.room.message", {"body": "hi"})) == "$y"
    assert len(set(session._client.tx_ids)) == 1 and len(session._client.tx_ids) == 2
    session._client = _FakeClient([RoomSendError("no", "M_FORBIDDEN")], [])
    with pytest.raises(SendError, match="refused the message"):
        asyncio.run(session._post("!r", "m.room.message", {"body": "hi"}))
    assert session.send_failures == 1


def test_a_refused_token_stops_the_sync_and_errors_back_off(tmp_path: Path) -> None:
    import asyncio

    from nio import SyncError

    session: Any = _session(tmp_path, backoff_initial=0.05, backoff_max=0.2)
    events: list[object] = []

    async def run(client: _FakeClient, seconds: float) -> None:
        session._main = asyncio.get_running_loop()
        session.publish = events.append
        try:
            await asyncio.wait_for(session._sync_loop(client), seconds)
        except TimeoutError:
            pass

    down = _FakeClient([], [])
    asyncio.run(run(down, 1.0))  # the homeserver away for a second: backoff, no storm
    assert 3 <= down.sync_calls <= 12
    assert session.state == "backing-off" and "down" in session.last_error
    refused = _FakeClient([], [SyncError("Invalid access token", "M_UNKNOWN_TOKEN")])
    asyncio.run(run(refused, 2.0))
    assert refused.sync_calls == 1 and session.state == "stopped"
    assert "no longer accepts the access token" in session.last_error
    assert len(events) == 1 and type(events[0]).__name__ == "MatrixSessionStopped"
