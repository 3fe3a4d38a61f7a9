"""The Matrix admin bot against a real Synapse, a real podod, the real mail database and a
real Dovecot: people in rooms (matrix-nio clients with end-to-end encryption) talk to it.

One Synapse, one daemon and one set of rooms for the module; each test uses its own
mailboxes. Users: alice (admin), dom (domain-admin of one domain), eve (a stranger).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROLES, STACK_DB, MailStack, make_mail_config, new_domain
from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.dovecot import Dovecot
from testbed.sshd import Sshd
from testbed.synapse import Synapse, available
from testbed.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PLAN_TTL = 8.0  # seconds a chat plan lives here (2 minutes by default)
MARKER = "Hunter2-zq8-MARKER"
PROGRESS = "org.podod.progress"  # the content key of the bot's progress messages


@dataclass
class World:
    synapse: Synapse
    daemon: DaemonProcess
    root: Path
    alice: Any
    dom: Any
    eve: Any
    room: str  # the admin room
    secret_room: str  # an encrypted admin room
    alert_room: str
    other_room: str  # a room the bot is in but that is not configured
    domain: str  # dom's domain
    other_domain: str
    sshd: Sshd
    bot: str
    bot_token: str

    def audit(self, *argv: str) -> list[dict[str, Any]]:
        reply = self.daemon.request(["audit", "list", "--limit", "500", *argv])
        assert reply["ok"], reply
        return list(reply["data"])


def _user(synapse: Synapse, name: str, root: Path, *, admin: bool = False) -> Any:
    from testbed.matrixchat import ChatClient

    synapse.register(name, f"{name}-pw-4711", admin=admin)
    token, device = synapse.login_device(name, f"{name}-pw-4711")
    return ChatClient(synapse.url, synapse.user_id(name), token, device, root / name)


@pytest.fixture(scope="module")
def world(stack: MailStack, dovecot: Dovecot,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not available():
        pytest.skip("Synapse is not installed: run 'make synapse'")
    root = tmp_path_factory.mktemp("matrix")
    synapse = Synapse(root / "synapse").start()
    sshd = Sshd(root / "sshd").start()
    clients: list[Any] = []
    daemon: DaemonProcess | None = None
    try:
        alice = _user(synapse, "alice", root, admin=True)
        dom = _user(synapse, "dom", root)
        eve = _user(synapse, "eve", root)
        clients += [alice, dom, eve]
        synapse.register("podod", "podod-pw-4711")
        bot = synapse.user_id("podod")
        token, _device = synapse.login_device("podod", "podod-pw-4711")
        (root / "matrix-token").write_text(token + "\n")
        people = [bot, dom.user_id, eve.user_id]
        power = {bot: 50}
        room = alice.create_room(people, power=power, name="admins")
        secret_room = alice.create_room(people, encrypted=True, power=power, name="secret")
        alert_room = alice.create_room([bot], name="alerts")
        other_room = alice.create_room([bot, eve.user_id], name="elsewhere")
        for client in (dom, eve):
            wait_for(lambda c=client: room in c.client.rooms, 30, "the invites accepted")
        domain, other_domain = new_domain(stack), new_domain(stack)
        rules = root / "rules.yaml"
        rules.write_text(yaml.safe_dump({"rules": [
            {"name": "ServerUnreachable", "series": "ssh_connected", "op": "==",
             "threshold": 0, "for": "1s", "severity": "critical",
             "summary": "{{ server }}: podod cannot reach the server over SSH"}]}))
        path = make_mail_config(
            stack.pg, root, STACK_DB, roles=ROLES,
            access={"matrix_users": {
                synapse.user_id("alice"): {"role": "admin"},
                synapse.user_id("dom"): {"role": "domain-admin", "domains": [domain]}}},
            matrix={"homeserver": synapse.url, "user_id": bot,
                    "access_token_file": str(root / "matrix-token"),
                    "rooms": [room, secret_room],
                    "alert_room": alert_room, "plan_ttl": f"{PLAN_TTL}s",
                    "backoff_initial": "0.2s", "backoff_max": "1s", "sync_timeout": "5s",
                    "progress_interval": "0.5s", "progress_after": "0s"},
            commands={"rate_limit": {"per_minute": 600, "burst": 30}},
            servers=[sshd.server_entry("mx9")],
            alerts={"enabled": True, "default_rules": False, "rule_files": [str(rules)],
                    "evaluation_interval": "0.5s", "group_wait": "0.5s",
                    "resolve_wait": "0.5s", "notifiers": [{"type": "matrix"}]},
            plugins={"dirs": [str(REPO / "plugins")], "entry_points": False})
        daemon = DaemonProcess(path).start()
        wait_for(lambda: daemon.request(["matrix", "status"])["data"].get("command_rooms"),
                 60, "the bot in its rooms")
        yield World(synapse, daemon, root, alice, dom, eve, room, secret_room, alert_room,
                    other_room, domain, other_domain, sshd, bot, token)
    finally:
        if daemon is not None:
            daemon.stop()
        for client in clients:
            client.close()
        sshd.close()
        synapse.stop()


def _body(event: dict[str, Any]) -> str:
    return str(event["content"].get("body", ""))


def _plan_id(text: str) -> str:
    assert "!podo confirm " in text, text
    for word in text.split("!podo confirm ", 1)[1].replace(".", " ").split():
        if len(word) == 8 and all(c in "0123456789abcdef" for c in word):
            return word
    raise AssertionError(f"no plan id in {text!r}")


def _answer(client: Any, room: str, event_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The bot's reply to a command: not its progress message, which is in the thread too
    (``progress_after`` is 0 here, so every command that reports progress shows it)."""
    def answers(e: dict[str, Any]) -> bool:
        rel = e["content"].get("m.relates_to") or {}
        return e["room"] == room and e["type"] == "m.room.message" and \
            not e["content"].get(PROGRESS) and \
            (rel.get("m.in_reply_to") or {}).get("event_id") == event_id
    return client.wait(answers, timeout, f"the reply to {event_id}")


def _mailboxes(stack: MailStack, address: str) -> str:
    return stack.sql(f"SELECT count(*) FROM mailbox WHERE username = '{address}'")


def test_help_shows_only_what_the_sender_may_run(world: World) -> None:
    admin = world.alice.ask(world.room, "!podo help")
    assert "user create" in admin and "audit verify" in admin and "example hello" in admin
    assert "podoctl" not in admin
    limited = world.dom.ask(world.room, "!podo help")
    assert "user create" in limited and "audit verify" not in limited
    refused = world.dom.ask(world.room, "!podo help audit verify")
    assert refused.startswith("Error:") and "admin" in refused
    assert "alice" in world.alice.ask(world.room, "!podo example hello alice")


def test_a_sandbox_create_changes_nothing_and_the_reply_is_a_threaded_notice(
        world: World, stack: MailStack) -> None:
    address = f"sandbox@{world.domain}"
    event_id = world.alice.send(world.room, f"!podo user create {address} --generate-password")
    reply = world.alice.wait_reply(world.room, event_id)
    content = reply["content"]
    assert content["msgtype"] == "m.notice" and reply["sender"] == world.bot
    assert content["m.relates_to"]["rel_type"] == "m.thread"
    assert content["m.relates_to"]["event_id"] == event_id
    assert "SANDBOX: nothing was changed." in content["body"]
    assert "<b>SANDBOX" in content["formatted_body"]
    assert "!podo confirm" in content["body"]
    assert _mailboxes(stack, address) == "0"


def _real_create(world: World, address: str, *, by_reaction: bool) -> tuple[str, str]:
    """Plan, then confirm (by command or ✅); the final reply and the generated password."""
    event_id = world.alice.send(world.room, f"!podo user create {address} "
                                            "--generate-password --execute-real")
    plan = world.alice.wait_reply(world.room, event_id)
    assert "SANDBOX" in _body(plan) and "react" in _body(plan)
    plan_id = _plan_id(_body(plan))
    if by_reaction:
        world.alice.react(world.room, plan["event_id"])
        final = world.alice.wait(
            lambda e: e["room"] == world.room and e["sender"] == world.bot
            and "Backup" in _body(e) and address in _body(e), 60, "the final reply")
    else:
        final = world.alice.wait_reply(world.room, world.alice.send(
            world.room, f"!podo confirm {plan_id}"), 60)
    text = _body(final)
    dm = world.alice.wait(lambda e: e["sender"] == world.bot and e["room"] not in (
        world.room, world.secret_room, world.alert_room) and address in _body(e), 60,
        "the password by direct message")
    assert dm["encrypted"], "the direct message must be encrypted"
    password = _body(dm).rsplit(": ", 1)[1].strip()
    return text, password


def test_a_real_create_through_confirm_then_dovecot_accepts_it(
        world: World, stack: MailStack, dovecot: Dovecot) -> None:
    address = f"confirmed@{world.domain}"
    text, password = _real_create(world, address, by_reaction=False)
    assert "Backup" in text and "!podo backup restore" in text and "--execute-real" in text
    assert "sent to you by direct message" in text
    assert _mailboxes(stack, address) == "1"
    assert dovecot.auth_test(address, password)
    room_text = json.dumps(world.alice.seen(lambda e: e["room"] == world.room))
    assert password not in room_text
    assert password not in world.daemon.log()


def test_a_real_create_through_a_reaction(world: World, stack: MailStack,
                                          dovecot: Dovecot) -> None:
    address = f"reacted@{world.domain}"
    text, password = _real_create(world, address, by_reaction=True)
    assert "!podo backup restore" in text
    assert dovecot.auth_test(address, password)


def test_an_import_reads_the_csv_file_the_command_replies_to(world: World,
                                                            stack: MailStack) -> None:
    rows = "address,name,password_hash\n" + "".join(
        f"chat{i}@{world.domain},Chat {i},{{SHA512-CRYPT}}$6$rounds=5000$abcdefgh$"
        f"{'x' * 86}\n" for i in range(3))
    file_id = world.alice.send_file(world.room, "people.csv", rows.encode())
    reply = {"m.in_reply_to": {"event_id": file_id}}

    # without a file to read, or replying to a file someone else posted: one sentence
    alone = world.alice.ask(world.room, "!podo user import")
    assert "post the CSV file in the room, then send the command as a reply" in alone
    others = world.dom.send_file(world.room, "theirs.csv", rows.encode())
    asked = world.alice.send(world.room, "!podo user import",
                             {"m.in_reply_to": {"event_id": others}})
    assert "the file must be one you posted yourself" in _body(
        world.alice.wait_reply(world.room, asked))

    planned = world.alice.send(world.room, "!podo user import --execute-real", reply)
    plan = _answer(world.alice, world.room, planned)
    text = _body(plan)
    assert "3 mailboxes would be imported" in text and f"chat0@{world.domain}" in text, text
    assert stack.sql(f"SELECT count(*) FROM mailbox WHERE username LIKE 'chat%@{world.domain}'"
                     ) == "0"
    code = re.search(r"!podo confirm (\S+)", text)
    assert code, text
    done = _body(_answer(world.alice, world.room, world.alice.send(
        world.room, f"!podo confirm {code.group(1)}")))
    assert "3" in done, done
    assert stack.sql(f"SELECT count(*) FROM mailbox WHERE username LIKE 'chat%@{world.domain}'"
                     ) == "3"


def _progress(world: World, command: str) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """The one progress message in a command's thread, its edits (in order), and the
    position after the last of them in what alice saw."""
    seen = world.alice.seen(lambda e: e["room"] == world.room)
    posted = [e for e in seen if e["content"].get(PROGRESS) and (
        e["content"].get("m.relates_to") or {}).get("m.in_reply_to", {}).get(
            "event_id") == command]
    assert len(posted) == 1, posted  # one message, not one per report
    message = posted[0]
    edits = [e for e in seen if (e["content"].get("m.relates_to") or {}).get("rel_type") ==
             "m.replace" and e["content"]["m.relates_to"].get("event_id") ==
             message["event_id"]]
    last = max(seen.index(e) for e in [message, *edits])
    return message, edits, last


def test_an_import_shows_its_phases_in_one_edited_progress_message(world: World,
                                                                   stack: MailStack) -> None:
    domain = new_domain(stack)
    count = 400  # clear-text passwords: the hashing phase counts them
    rows = "address,password\n" + "".join(
        f"step{i:03d}@{domain},Chat-Progress-{i:04d}-pw\n" for i in range(count))
    file_id = world.alice.send_file(world.room, "steps.csv", rows.encode())
    planned = world.alice.send(world.room, "!podo user import --execute-real",
                               {"m.in_reply_to": {"event_id": file_id}})
    plan = _answer(world.alice, world.room, planned)
    assert f"{count} mailboxes would be imported" in _body(plan), _body(plan)

    message, edits, last = _progress(world, planned)
    assert message["sender"] == world.bot and message["content"]["msgtype"] == "m.notice"
    assert message["content"]["m.relates_to"]["rel_type"] == "m.thread"
    assert message["content"]["m.relates_to"]["event_id"] == planned
    assert edits, "the progress message is edited, not posted again"
    assert all(e["sender"] == world.bot for e in edits)
    final = edits[-1]["content"]["m.new_content"]["body"]
    assert edits[-1]["content"]["body"] == f"* {final}"  # the fallback of an edit
    # the last edit lists every phase, done, with its counts ...
    for line in ("\u2713 reading the file",
                 f"\u2713 checking rows against the database ({count}/{count})",
                 f"\u2713 checking rows again, inside the transaction ({count}/{count})",
                 f"\u2713 hashing passwords ({count}/{count})",
                 f"\u2713 writing rows ({count}/{count})"):
        assert line in final.split("\n"), final
    assert "\u23f3" not in final
    # ... and the reply comes after it
    seen = world.alice.seen(lambda e: e["room"] == world.room)
    assert seen.index(plan) > last
    assert stack.sql(f"SELECT count(*) FROM mailbox WHERE domain = '{domain}'") == "0"

    # the real run (the confirmation) shows its progress the same way, then its reply
    code = re.search(r"!podo confirm (\S+)", _body(plan))
    assert code, _body(plan)
    confirm = world.alice.send(world.room, f"!podo confirm {code.group(1)}")
    done = world.alice.wait(lambda e: e["room"] == world.room and e["sender"] == world.bot
                            and f"{count} mailboxes imported" in _body(e), 120, "the import")
    message, edits, last = _progress(world, confirm)
    final = (edits[-1]["content"]["m.new_content"]["body"] if edits else
             message["content"]["body"])
    assert f"\u2713 writing rows ({count}/{count})" in final.split("\n"), final
    seen = world.alice.seen(lambda e: e["room"] == world.room)
    assert seen.index(done) > last
    assert stack.sql(f"SELECT count(*) FROM mailbox WHERE domain = '{domain}'") == str(count)


def test_refusals_foreign_confirmation_reaction_other_domain_expired_replayed(
        world: World, stack: MailStack) -> None:
    address = f"refused@{world.domain}"
    event_id = world.alice.send(world.room, f"!podo domain show {world.domain} "
                                            "--execute-real")
    assert world.alice.wait_reply(world.room, event_id)  # nothing to plan: just shown
    # dom may not touch another domain
    other = world.dom.ask(world.room, f"!podo user create x@{world.other_domain} "
                                      "--generate-password")
    assert other.startswith("Error:") and world.other_domain in other
    # alice's plan: dom's confirmation and dom's ✅ are refused, alice's works once
    sent = world.alice.send(world.room, f"!podo alias create {address} "
                                        f"--to outside@example.org --execute-real")
    plan = world.alice.wait_reply(world.room, sent)
    plan_id = _plan_id(_body(plan))
    foreign = world.dom.ask(world.room, f"!podo confirm {plan_id}")
    assert foreign.startswith("Error:") and "not to you" in foreign
    world.dom.react(world.room, plan["event_id"])
    wait_for(lambda: world.dom.seen(lambda e: "only @alice" in _body(e)), 30,
             "the refused reaction")
    assert "Backup" in world.alice.ask(world.room, f"!podo confirm {plan_id}", 60)
    replayed = world.alice.ask(world.room, f"!podo confirm {plan_id}")
    assert replayed.startswith("Error:") and "no pending plan" in replayed
    # an expired plan
    sent = world.alice.send(world.room, f"!podo alias create late@{world.domain} "
                                        f"--to outside@example.org --execute-real")
    plan_id = _plan_id(_body(world.alice.wait_reply(world.room, sent)))
    time.sleep(PLAN_TTL + 1)
    expired = world.alice.ask(world.room, f"!podo confirm {plan_id}")
    assert expired.startswith("Error:") and "no pending plan" in expired
    assert stack.sql(f"SELECT count(*) FROM alias WHERE address = 'late@{world.domain}'") \
        == "0"


def test_strangers_and_unconfigured_rooms_are_ignored_and_audited_once(world: World) -> None:
    before = len(world.audit("--actor", world.eve.user_id))
    first = world.eve.send(world.room, "!podo user list")
    second = world.eve.send(world.room, "!podo status")
    elsewhere = world.alice.send(world.other_room, "!podo status")
    check = world.alice.send(world.room, "!podo status")  # the bot is alive and answering
    world.alice.wait_reply(world.room, check)
    time.sleep(1.0)
    assert not world.eve.replies_to(world.room, first)
    assert not world.eve.replies_to(world.room, second)
    assert not world.alice.replies_to(world.other_room, elsewhere)
    joined = world.daemon.request(["matrix", "status", "--rooms"])["data"]["rooms"]
    assert world.other_room not in joined  # invited by alice, but not a configured room
    records = world.audit("--actor", world.eve.user_id)
    assert len(records) == before + 1 and records[0]["outcome"] == "unauthenticated"


def test_a_password_in_chat_is_refused_and_kept_nowhere(world: World, stack: MailStack) -> None:
    address = f"typed@{world.domain}"
    event_id = world.alice.send(world.room, f"!podo user create {address} --password "
                                            f"{MARKER}")
    reply = _body(world.alice.wait_reply(world.room, event_id))
    assert reply.startswith("Error:") and "--generate-password" in reply
    assert "removed from the room" in reply
    assert _mailboxes(stack, address) == "0"
    stdin = world.alice.ask(world.room, f"!podo user create {address} --password-stdin")
    assert stdin.startswith("Error:") and "never accepted in chat" in stdin
    # the room's history, as the homeserver serves it now: the message was redacted
    token = world.synapse.login("alice", "alice-pw-4711")
    history = json.dumps(world.synapse.messages(token, world.room, limit=200))
    assert MARKER not in history
    assert MARKER not in world.daemon.log()
    state = world.root / "state"
    for path in state.glob("*.db*"):
        assert MARKER.encode() not in path.read_bytes(), path


def test_phone_typing_reply_fallbacks_and_edits(world: World) -> None:
    quoted = world.alice.ask(world.room, "!podo example hello \u201cbig world\u201d "
                                         "\u2014shout")
    assert "BIG WORLD" in quoted
    fallback = world.alice.ask(world.room, "> <@dom:localhost> can you greet me?\n\n"
                                           "!podo example hello dom")
    assert "dom" in fallback and "Error" not in fallback
    before = len(world.audit("--command", "example hello"))
    original = world.alice.send(world.room, "!podo example hello first")
    world.alice.wait_reply(world.room, original)
    world.alice.send_event(world.room, "m.room.message", {
        "msgtype": "m.text", "body": "* !podo example hello second",
        "m.new_content": {"msgtype": "m.text", "body": "!podo example hello second"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original}})
    answer = world.alice.wait(lambda e: "edited command is not run" in _body(e), 30,
                              "the edit refused")
    assert answer["sender"] == world.bot
    assert len(world.audit("--command", "example hello")) == before + 1


def test_a_listing_too_large_for_one_event_is_summarised(world: World,
                                                          stack: MailStack) -> None:
    domain = "big-matrix.example"
    digest = "{SHA512-CRYPT}$6$rounds=5000$abcdefgh$" + "x" * 86
    stack.sql(
        f"INSERT INTO domain (domain) VALUES ('{domain}');"
        "INSERT INTO mailbox (username, password, name, maildir, quota, local_part, domain) "
        f"SELECT 'user' || lpad(i::text, 5, '0') || '@{domain}', '{digest}', "
        f"'User Number ' || i, '{domain}/user' || i || '/', 1073741824, "
        f"'user' || lpad(i::text, 5, '0'), '{domain}' FROM generate_series(1, 10000) AS i;")
    try:
        event_id = world.alice.send(world.room, f"!podo user list --domain {domain} --all")
        reply = world.alice.wait_reply(world.room, event_id, 60)
        assert len(json.dumps(reply["content"], ensure_ascii=False).encode()) < 65_536
        text = _body(reply)
        assert "10000 rows in all; only the first" in text and "--limit" in text
        assert "user00001@big-matrix.example" in text
        assert "<table>" in reply["content"]["formatted_body"]
    finally:
        stack.sql(f"DELETE FROM mailbox WHERE domain = '{domain}';"
                  f"DELETE FROM domain WHERE domain = '{domain}';")


def test_a_command_sent_while_the_bot_is_stopped_is_never_run(world: World) -> None:
    world.daemon.stop()
    missed = world.alice.send(world.room, "!podo example note missed --execute-real")
    world.daemon.start()
    wait_for(lambda: world.daemon.request(["matrix", "status"])["data"].get("command_rooms"),
             60, "the bot back in its rooms")
    assert "alive" in world.alice.ask(world.room, "!podo example hello alive")
    time.sleep(1.0)
    assert not world.alice.replies_to(world.room, missed)
    assert not [r for r in world.audit("--command", "example note")]


def test_the_bot_reconnects_after_synapse_restarts(world: World) -> None:
    world.synapse.restart()
    wait_for(lambda: world.daemon.request(["matrix", "status"])["data"]["state"] == "syncing",
             60, "syncing again")
    assert "again" in world.alice.ask(world.room, "!podo example hello again", 60)
    # podod starting while the homeserver is down: it keeps trying, then works
    world.synapse.stop()
    world.daemon.stop()
    world.daemon.start()

    def backing_off() -> bool:
        data = world.daemon.request(["matrix", "status"])["data"]
        return data["state"] == "backing-off" and "cannot reach" in data["last_error"]

    wait_for(backing_off, 60, "the login retried")
    assert world.daemon.request(["status"])["ok"]
    world.synapse.restart()
    wait_for(lambda: world.daemon.request(["matrix", "status"])["data"]["state"] == "syncing",
             90, "logged in and syncing")
    wait_for(lambda: world.daemon.request(["matrix", "status"])["data"].get("command_rooms"),
             60, "the bot back in its rooms")
    assert "later" in world.alice.ask(world.room, "!podo example hello later", 60)


def test_an_encrypted_room_round_trip(world: World) -> None:
    event_id = world.alice.send(world.secret_room, "!podo example hello secretly")
    reply = world.alice.wait_reply(world.secret_room, event_id, 60)
    assert reply["encrypted"] and "secretly" in _body(reply)


def test_matrix_status_and_metrics(world: World) -> None:
    reply = world.daemon.request(["matrix", "status"])
    data = reply["data"]
    assert reply["ok"] and data["state"] == "syncing" and data["user_id"] == world.bot
    assert set(data["command_rooms"]) == {world.room, world.secret_room, world.alert_room}
    assert data["e2ee"] is True and world.secret_room in data["encrypted_rooms"]
    text = world.alice.ask(world.room, "!podo matrix status")
    assert "syncing" in text and world.bot in text


def test_an_alert_in_the_alert_room_is_silenced_from_its_thread(world: World) -> None:
    wait_for(lambda: world.daemon.request(["server", "show", "mx9"])["data"]["state"]
             == "connected", 60, "mx9 connected")
    world.sshd.stop()
    try:
        alert = world.alice.wait(
            lambda e: e["room"] == world.alert_room and e["sender"] == world.bot
            and "[FIRING]" in _body(e), 60, "the alert")
        assert "Mute it: !podo alerts silence --match server=mx9 --for 2h" in _body(alert)
        assert "ServerUnreachable" in _body(alert)
        sent = world.alice.in_thread(world.alert_room, alert["event_id"], "!podo silence 2h")
        plan = world.alice.wait_reply(world.alert_room, sent)
        assert plan["content"]["m.relates_to"]["event_id"] == alert["event_id"]  # its thread
        assert "SANDBOX" in _body(plan) and "server=mx9" in _body(plan)
        assert not world.daemon.request(["alerts", "silences"])["data"]["silences"]
        world.alice.react(world.alert_room, plan["event_id"])
        wait_for(lambda: world.daemon.request(["alerts", "silences"])["data"]["silences"],
                 30, "the silence")
        silence = world.daemon.request(["alerts", "silences"])["data"]["silences"][0]
        assert silence["matchers"] == "server=mx9"  # exactly the notification's group
        outside = world.alice.ask(world.room, "!podo silence 2h")
        assert outside.startswith("Error:") and "thread of an alert" in outside
    finally:
        world.sshd.start()


def test_alerts_only_with_a_password_login_kept_for_the_next_start(world: World) -> None:
    """matrix.bot off: the shared account still posts alerts. A password login happens once:
    the token and device id are kept (0600) and the next start restores them."""
    world.synapse.register("alerter", "alerter-pw-4711")
    alerter = world.synapse.user_id("alerter")
    room = world.alice.create_room([alerter], name="alerts only")
    root = world.root / "alerts-only"
    root.mkdir()
    (root / "password").write_text("alerter-pw-4711\n")
    rules = root / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [
        {"name": "ServiceDown", "series": "service_up", "op": "==", "threshold": 0,
         "for": "0s", "severity": "critical", "summary": "{{ server }}: service down"}]}))
    config = base_config(
        root, matrix={"homeserver": world.synapse.url, "user_id": alerter,
                      "password_file": str(root / "password"), "bot": False,
                      "alert_room": room},
        alerts={"enabled": True, "default_rules": False, "rule_files": [str(rules)],
                "evaluation_interval": "0.3s", "group_wait": "0.3s",
                "notifiers": [{"type": "matrix"}]},
        plugins={"dirs": [str(REPO / "tests" / "plugins")], "entry_points": False})
    daemon = DaemonProcess(write_config(root / "podod.yaml", config))
    try:
        daemon.start()
        session = root / "state" / "matrix" / "session.json"
        wait_for(session.exists, 60, "the stored login")
        assert session.stat().st_mode & 0o777 == 0o600
        device = json.loads(session.read_text())["device_id"]
        reply = daemon.request(["feed", "samples"], stdin=json.dumps(
            [{"series": "service_up", "server": "mx7", "value": 0,
              "labels": {"service": "postfix"}}]))
        assert reply["ok"], reply
        alert = world.alice.wait(lambda e: e["room"] == room and e["sender"] == alerter
                                 and "[FIRING]" in _body(e), 60, "the alert")
        assert "Mute it: podoctl alerts silence --match server=mx7" in _body(alert)
        daemon.stop()
        daemon.start()
        wait_for(lambda: daemon.request(["matrix", "status"])["data"]["state"] == "syncing",
                 60, "syncing again")
        status = daemon.request(["matrix", "status"])["data"]
        assert status["device_id"] == device and status["bot"] is False
        assert "alerter-pw-4711" not in daemon.log()
    finally:
        daemon.stop()


def test_a_revoked_token_stops_the_bot_and_nothing_else(world: World) -> None:
    """Last: the bot's token is logged out on the homeserver (M_UNKNOWN_TOKEN)."""
    world.synapse.request("POST", "/_matrix/client/v3/logout", {}, token=world.bot_token)
    wait_for(lambda: world.daemon.request(["matrix", "status"])["data"]["state"] == "stopped",
             60, "the session stopped")
    status = world.daemon.request(["matrix", "status"])
    assert not status["ok"] and "no longer accepts the access token" in status["message"]
    assert world.daemon.request(["status"])["ok"]  # the rest of podod goes on
    time.sleep(2.0)  # no retry storm: one line, then silence
    assert world.daemon.log().count("Matrix session stopped") == 1

