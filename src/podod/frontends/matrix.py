"""The Matrix admin bot: ``!podo NOUN VERB ...`` in the admin rooms, through the command bus.

A thin translation, like the Unix socket (docs/architecture.md, "Writing a frontend"):

1. who: ``bus.identify("matrix", sender)`` under ``access.matrix_users``; strangers are
   ignored, and audited once per user per ``matrix.stranger_audit_interval``;
2. rate limit: ``bus.admit``;
3. input: the message's text, normalised (reply fallbacks cut, smart quotes and phone
   dashes made plain) and split like a shell; no stdin: a password never comes through chat;
4. progress: one message, posted once a command has run ``matrix.progress_after`` and
   edited at most every ``matrix.progress_interval``: each phase on its line with its
   counts; a last edit marks them done before the reply is posted;
5. reply: ``render_text``/``render_html`` with :data:`CHAT` naming, an ``m.notice`` in a
   thread under the command, summarised under the 64 KiB event limit; secrets only by
   direct message to the requester (encrypted), else refused beforehand;
6. confirmation: ``--execute-real`` gives the sandbox plan first; ``!podo confirm ID`` by
   the same user in the same room, or a ✅ reaction by that user on the plan message.

The account, its sync loop and its room output queues are :mod:`podod.matrix.session`'s,
shared with the Matrix alert notifier, which posts through :meth:`MatrixBot.notify`: each
notification carries the ``alerts silence`` line that mutes its group, and ``!podo silence
2h`` in its thread silences exactly that group (plan, then confirm). See docs/matrix.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import shlex
import statistics
import time
from collections import Counter, OrderedDict, deque
from typing import TYPE_CHECKING, Any

from podod.bus import grammar
from podod.bus.context import CHAT, PODOCTL, CommandContext, Reply, Request, Table
from podod.bus.render import render_html, render_text
from podod.bus.shapes import BOOL, NUM, STR, arr, nullable, obj
from podod.bus.spec import Opt
from podod.errors import PododError, RateLimited, Unauthenticated, UsageError
from podod.matrix.session import Incoming, MatrixSession, SendError
from podod.plugins import Registry

if TYPE_CHECKING:
    from podod.alerts.notify import Notification
    from podod.bus.core import CommandBus
    from podod.matrix.settings import MatrixSettings
    from podod.runtime import Runtime

log = logging.getLogger(__name__)

ORIGIN = "matrix"
LIMIT_BYTES = 60_000  # of one event's content, under the homeserver's 65 536 for the event
CHECK = ("\u2705", "\u2705\ufe0f", "\u2714\ufe0f", "\u2714")  # ✅ ✔️
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
                         "\u00ab": '"', "\u00bb": '"', "\u2033": '"',
                         "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
                         "\u2032": "'", "\u00a0": " "})
_DASHES = re.compile(r"(?:(?<=\s)|^)[\u2014\u2013](?=[a-zA-Z])")  # phones: --opt -> —opt
_PASSWORD_WORD = re.compile(r"^--?(password|passwd|pass|pw|secret)([=_-].*)?$", re.I)
_KEPT = 2000  # plans and notifications remembered per bot (the oldest go first)
PROGRESS_KEY = "org.podod.progress"  # marks a progress message's content (true)
PROGRESS_LINES = 12  # phases shown in a progress message (the earliest are counted)


def normalise(body: str) -> str:
    """A chat line as the grammar reads it: a reply's quoted fallback cut, smart quotes
    and the dashes a phone makes of ``--`` made plain."""
    lines = body.split("\n")
    if lines and lines[0].startswith("> "):
        while lines and lines[0].startswith(">"):
            lines.pop(0)
        while lines and not lines[0].strip():
            lines.pop(0)
    text = "\n".join(lines).translate(_QUOTES)
    return _DASHES.sub("--", text.replace("\u2014\u2014", "--")).strip()


def words_of(text: str, prefix: str) -> list[str] | None:
    """The command's words after the prefix, or None when the text is no command."""
    first, _, rest = text.partition(" ") if " " in text else (text, "", "")
    first_line = first.split("\n", 1)
    if first_line[0] != prefix:
        return None
    rest = (first_line[1] if len(first_line) > 1 else "") + " " + rest
    try:
        return shlex.split(rest.replace("\n", " "))
    except ValueError as exc:
        raise UsageError(f"cannot read the command: {exc} (quote with \" or ')") from None


@dataclasses.dataclass
class PlanMessage:
    plan_id: str
    user: str
    room_id: str
    thread: str
    secret: bool  # the confirmed command makes a secret (a generated password)
    argv: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class NotificationMessage:
    matchers: list[str]
    title: str


class MatrixBot:
    """The ``matrix`` component: the session, and (``matrix.bot``) the admin bot."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings: MatrixSettings = runtime.config.matrix
        self.session = MatrixSession(
            self.settings, runtime.config.state_dir, deliver=self._deliver,
            publish=runtime.events.publish,
            trusted=lambda: set(self.runtime.config.access.matrix_users))
        self.rooms: dict[str, str] = {}  # room id -> configured name (id or alias)
        self.alert_room: str | None = None
        self.plans: OrderedDict[str, PlanMessage] = OrderedDict()  # plan message id -> plan
        self.plan_rooms: dict[str, PlanMessage] = {}  # plan id -> plan
        self.notifications: OrderedDict[str, NotificationMessage] = OrderedDict()
        self.strangers: dict[str, float] = {}
        self.commands: Counter[str] = Counter()  # by outcome
        # podod's share of a round trip, in ms: from the sync reading a command to its
        # reply handed to the room's output queue (the last 1000 replies)
        self.handling: deque[float] = deque(maxlen=1000)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queue: asyncio.Queue[Incoming] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._rooms_ready = asyncio.Event()

    @property
    def bus(self) -> CommandBus:
        bus = self.runtime.bus
        assert bus is not None
        return bus

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.session.start()
        self._consumer = asyncio.create_task(self._consume(), name="matrix-bot")
        self._spawn(self._resolve_rooms())

    async def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _done, still = await asyncio.wait(pending, timeout=10.0)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        await self.session.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve_rooms(self) -> None:
        """The configured rooms' ids (aliases resolved, rooms joined) once logged in."""
        while not await self.session.wait_ready(30.0):
            pass  # the homeserver may be down for long: the session keeps trying
        if self.session.state == "stopped":
            self._rooms_ready.set()
            return
        wanted = list(self.settings.rooms) if self.settings.bot else []
        if self.settings.alert_room:
            wanted.append(self.settings.alert_room)
        for room in wanted:
            try:
                room_id = await self.session.resolve(room)
            except SendError as exc:
                log.warning("Matrix: %s", exc)
                self.session.last_error = str(exc)
                continue
            if room == self.settings.alert_room:
                self.alert_room = room_id
            if self.settings.bot:  # the alert room is an admin room too ("silence 2h")
                self.rooms[room_id] = room
        self._rooms_ready.set()

    async def ready(self, timeout: float = 60.0) -> bool:
        """True when logged in, synced once and the rooms are known."""
        if not await self.session.wait_ready(timeout):
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._rooms_ready.wait(), timeout)
        return self._rooms_ready.is_set()

    # -- incoming (the sync thread only queues) ---------------------------------------------

    def _deliver(self, incoming: Incoming) -> None:
        if self.settings.bot:
            self._queue.put_nowait(incoming)

    async def _consume(self) -> None:
        await self._rooms_ready.wait()
        while True:
            incoming = await self._queue.get()
            self._spawn(self._handle(incoming))  # a slow command holds nothing else

    async def _handle(self, incoming: Incoming) -> None:
        try:
            if incoming.kind == "invite":
                await self._invite(incoming)
            elif incoming.room_id not in self.rooms:
                return  # unconfigured rooms (and direct rooms) are ignored
            elif incoming.kind == "reaction":
                await self._reaction(incoming)
            elif incoming.kind == "undecryptable":
                await self._undecryptable(incoming)
            else:
                await self._message(incoming)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Matrix: handling %s in %s failed", incoming.event_id,
                          incoming.room_id)

    async def _invite(self, incoming: Incoming) -> None:
        allowed = incoming.sender in self.runtime.config.access.matrix_users
        configured = incoming.room_id in self.rooms or incoming.room_id == self.alert_room \
            or incoming.room_id in self.settings.rooms \
            or incoming.room_id == self.settings.alert_room
        if allowed and configured:
            if await self.session.join(incoming.room_id):
                log.info("Matrix: joined %s (invited by %s)", incoming.room_id,
                         incoming.sender)
                if self.settings.bot:
                    self.rooms.setdefault(incoming.room_id, incoming.room_id)
                if incoming.room_id == self.settings.alert_room:
                    self.alert_room = incoming.room_id
        else:
            log.info("Matrix: ignored an invite to %s from %s (%s)", incoming.room_id,
                     incoming.sender, "not a configured room" if allowed
                     else "not in access.matrix_users")

    def _actor_or_none(self, sender: str, argv: list[str]) -> Any:
        try:
            return self.bus.identify("matrix", sender)
        except Unauthenticated as exc:
            now = time.monotonic()
            last = self.strangers.get(sender)
            if last is None or now - last >= self.settings.stranger_audit_interval:
                self.strangers[sender] = now
                while len(self.strangers) > 10_000:
                    self.strangers.pop(next(iter(self.strangers)))
                self._spawn(self.bus.refuse(self.bus.refused_name("matrix", sender), ORIGIN,
                                            argv, exc))
            return None

    async def _message(self, incoming: Incoming) -> None:
        content = incoming.content
        raw = content.get("m.relates_to")
        relates: dict[str, Any] = raw if isinstance(raw, dict) else {}
        thread = incoming.event_id
        if relates.get("rel_type") == "m.thread" and isinstance(relates.get("event_id"), str):
            thread = relates["event_id"]
        if relates.get("rel_type") == "m.replace":  # an edit: never run (not twice either)
            new = content.get("m.new_content")
            body = new.get("body") if isinstance(new, dict) else None
            text = normalise(body if isinstance(body, str) else incoming.body.lstrip("* "))
            if text.startswith(self.settings.prefix) and \
                    self._actor_or_none(incoming.sender, []) is not None:
                original = relates.get("event_id")
                root = original if isinstance(original, str) else thread
                await self._answer(incoming, root, Reply(
                    ok=False, message="an edited command is not run (the first version was "
                    "read, or ignored); send the command again as a new message"),
                    reply_to=root)
            return
        text = normalise(incoming.body)
        if not text.startswith(self.settings.prefix):
            return
        in_reply_to = (relates.get("m.in_reply_to") or {}).get("event_id") \
            if isinstance(relates.get("m.in_reply_to"), dict) else None
        try:
            argv = words_of(text, self.settings.prefix)
        except UsageError as exc:
            if self._actor_or_none(incoming.sender, []) is not None:
                await self._answer(incoming, thread, _error(exc))
            return
        if argv is None:
            return
        actor = self._actor_or_none(incoming.sender, argv)
        if actor is None:
            return  # strangers get no answer (and are audited once an hour)
        try:
            self.bus.admit(actor)
        except RateLimited as exc:
            await self._answer(incoming, thread, await self.bus.refuse(
                actor.name, ORIGIN, argv, exc))
            return
        if not argv:
            argv = ["help"]
        refused = self._secret_in(argv)
        if refused is not None:
            if await self.session.redact(incoming.room_id, incoming.event_id,
                                         "podod: passwords are never accepted in chat"):
                refused += " (your message was removed from the room)"
            else:
                refused += "; delete your message, and change that password"
            await self._answer(incoming, thread, await self.bus.refuse(
                actor.name, ORIGIN, argv, UsageError(refused)))
            return
        data: str | None = None
        if self.bus.stdin_wanted(argv) == "data":
            try:
                data = await self._attached(incoming, in_reply_to)
            except UsageError as exc:
                await self._answer(incoming, thread, await self.bus.refuse(
                    actor.name, ORIGIN, argv, exc))
                return
        if argv[0].lower() == "silence" and len(argv) >= 2:
            parent = thread if thread != incoming.event_id else in_reply_to
            found = self.notifications.get(parent or "") or \
                self.notifications.get(in_reply_to or "")
            if found is None:
                await self._answer(incoming, thread, _error(UsageError(
                    "'silence DURATION' works in the thread of an alert notification; "
                    "elsewhere use 'alerts silence ...'")))
                return
            argv = self._silence_argv(found, argv[1], argv[2:], actor.name)
        if argv[0].lower() == "confirm" and len(argv) == 2:
            await self._confirm(incoming, thread, actor, argv[1])
            return
        await self._run(incoming, thread, actor, argv, data)

    async def _attached(self, incoming: Incoming, in_reply_to: str | None) -> str:
        """The CSV file a command that reads data replies to: posted by the same user in the
        same room, at most socket.max_data_bytes, UTF-8 text."""
        if not in_reply_to:
            raise UsageError("this command reads a file: post the CSV file in the room, then "
                             "send the command as a reply to it")
        limit = self.runtime.config.socket.max_data_bytes
        body = await self.session.attachment(incoming.room_id, in_reply_to, incoming.sender,
                                             limit)
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError("the attached file is not UTF-8 text") from None

    def _secret_in(self, argv: list[str]) -> str | None:
        """Why this request would bring a secret through chat, or None."""
        commands = self.runtime.registry.commands
        explain = ("passwords are never accepted in chat: use --generate-password (the new "
                   "password is sent to you by direct message) or podoctl")
        if any(_PASSWORD_WORD.match(w) for w in argv):
            return explain
        try:
            parsed = grammar.parse(argv, commands)
        except PododError:
            return None
        if parsed.help:
            return None
        if parsed.spec.wants_stdin(parsed.params) == "secret":
            return explain
        if any(p.secret and parsed.params.get(p.name) not in (None, False)
               for p in parsed.spec.params):
            return explain
        return None

    def _makes_secret(self, argv: list[str]) -> bool:
        """The request generates a secret (a password) shown once to the requester."""
        try:
            parsed = grammar.parse(argv, self.runtime.registry.commands)
        except PododError:
            return False
        return any(p.kind == "flag" and p.name.startswith("generate")
                   and parsed.params.get(p.name) for p in parsed.spec.params)

    # -- running a command ---------------------------------------------------------------------

    async def _run(self, incoming: Incoming, thread: str, actor: Any,
                   argv: list[str], data: str | None = None) -> None:
        argv, real = grammar.split_globals(argv)  # a real change is always planned first
        secret = self._makes_secret(argv)
        if secret and real and not self.session.e2ee:
            await self._answer(incoming, thread, await self.bus.refuse(
                actor.name, ORIGIN, argv, UsageError(
                    "a generated password can only be sent in an encrypted direct message, "
                    "and end-to-end encryption is not available to podod here: use podoctl "
                    "for this; nothing was changed")))
            return
        request = Request(argv=argv, actor=actor, origin=ORIGIN, naming=CHAT, stdin=data)
        reply = await self._execute(incoming, thread, request,
                                    lambda p: self.bus.execute(request, p))
        if reply is None:
            return
        asking = bool(reply.ok and reply.sandbox and reply.plan_id)
        extra = ""
        if asking:
            ttl = self.bus.plan_ttl(ORIGIN)
            extra = (f"To apply it, send {CHAT.command(f'confirm {reply.plan_id}')} or react "
                     f"\u2705 to this message within {_duration(ttl)} (only {actor.name} "
                     "can).")
            if secret and not self.session.e2ee:
                extra = ("A generated password can only be sent in an encrypted direct "
                         "message, which podod cannot send here: use podoctl to apply this.")
                asking = False
        event_id = await self._answer(incoming, thread, reply, asking=asking, extra=extra)
        if asking and reply.plan_id and event_id:
            plan = PlanMessage(reply.plan_id, actor.name, incoming.room_id, thread, secret,
                               argv)
            self.plans[event_id] = plan
            self.plan_rooms[reply.plan_id] = plan
            while len(self.plans) > _KEPT:
                _key, old = self.plans.popitem(last=False)
                self.plan_rooms.pop(old.plan_id, None)
            if secret:  # open the direct room now, so it is joined when the plan is confirmed
                self._spawn(self._open_direct(actor.name))

    async def _confirm(self, incoming: Incoming, thread: str, actor: Any,
                       plan_id: str) -> None:
        plan = self.plan_rooms.get(plan_id.strip().lower())
        if plan is not None and plan.room_id != incoming.room_id:
            await self._answer(incoming, thread, await self.bus.refuse(
                actor.name, ORIGIN, ["confirm", plan_id], UsageError(
                    f"plan {plan_id} was made in another room; confirm it there")))
            return
        if plan is not None and plan.user == actor.name and plan.secret:
            problem = await self._direct_ready(actor.name)
            if problem is not None:
                await self._answer(incoming, thread, await self.bus.refuse(
                    actor.name, ORIGIN, ["confirm", plan_id], UsageError(problem)))
                return
        request = Request(argv=["confirm", plan_id], actor=actor, origin=ORIGIN, naming=CHAT)
        reply = await self._execute(incoming, thread, request,
                                    lambda p: self.bus.execute(request, p),
                                    plan.argv if plan is not None else None)
        if reply is not None:
            await self._answer(incoming, plan.thread if plan else thread, reply)

    async def _reaction(self, incoming: Incoming) -> None:
        if incoming.key not in CHECK:
            return
        plan = self.plans.get(incoming.relates_to)
        if plan is None:
            return
        actor = self._actor_or_none(incoming.sender, ["confirm", plan.plan_id])
        if actor is None:
            return
        if actor.name != plan.user:
            await self._answer(incoming, plan.thread, await self.bus.refuse(
                actor.name, ORIGIN, ["confirm", plan.plan_id], UsageError(
                    f"only {plan.user} can confirm plan {plan.plan_id}, by a \u2705 on its "
                    "message or with confirm")), reply_to=incoming.relates_to)
            return
        try:
            self.bus.admit(actor)
        except RateLimited as exc:
            await self._answer(incoming, plan.thread, await self.bus.refuse(
                actor.name, ORIGIN, ["confirm", plan.plan_id], exc),
                reply_to=incoming.relates_to)
            return
        fake = dataclasses.replace(incoming, event_id=incoming.relates_to)
        await self._confirm(fake, plan.thread, actor, plan.plan_id)

    async def _execute(self, incoming: Incoming, thread: str, request: Request,
                       run: Any, planned: list[str] | None = None) -> Reply | None:
        progress = _ProgressMessage(self, incoming, thread)
        try:
            reply: Reply = await run(progress)
        except asyncio.CancelledError:
            progress.close()
            if request.interrupted is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._answer(incoming, thread, request.interrupted))
            raise
        except BaseException:
            progress.close()
            raise
        await progress.finish(reply.ok)  # its last edit comes before the reply
        self.commands["ok" if reply.ok else reply.code or "error"] += 1
        if reply.secrets:
            secrets, reply.secrets = reply.secrets, []
            sent = await self._send_secrets(request.actor.name, planned or request.argv,
                                            secrets)
            reply.notes.append(sent)
        return reply

    # -- secrets: by direct message only ----------------------------------------------------

    async def _open_direct(self, user: str) -> str | None:
        try:
            return await self.session.direct_room(user)
        except SendError as exc:
            log.warning("Matrix: %s", exc)
            return None

    async def _direct_ready(self, user: str) -> str | None:
        """None when a direct room with ``user`` is ready for a secret, else why not."""
        if not self.session.e2ee:
            return ("a generated password can only be sent in an encrypted direct message, "
                    "and end-to-end encryption is not available to podod here: use podoctl; "
                    "nothing was changed")
        room = await self._open_direct(user)
        if room is None:
            return "podod cannot open a direct room with you; nothing was changed"
        if not await self.session.wait_joined(room, user, 20.0):
            return ("accept podod's invitation to a direct (encrypted) room first: the "
                    "generated password is sent only there; then confirm again; nothing was "
                    "changed")
        members = set(await self.session.members(room))
        if members - {user, self.session.user_id}:
            return ("the direct room with podod has other members; nothing was changed "
                    "(leave it, and podod opens a new one)")
        return None

    async def _send_secrets(self, user: str, argv: list[str], secrets: list[Any]) -> str:
        room = await self._open_direct(user)
        if room is None or not self.session.e2ee:
            return ("The generated password could NOT be delivered (no encrypted direct "
                    "room): set a new one with podoctl.")
        words: list[str] = []
        for word in argv:
            if word.startswith("-") or len(words) == 4:
                break
            words.append(word)
        what = " ".join(words)
        lines = [f"{s.label} ({what}, shown once): {s.value}" for s in secrets]
        try:
            await self.session.send(room, {"msgtype": "m.notice", "body": "\n".join(lines)})
        except SendError as exc:
            log.warning("Matrix: a generated password was not delivered to %s: %s", user,
                        type(exc).__name__)
            return ("The generated password could NOT be delivered by direct message: set a "
                    "new one with podoctl.")
        return "The generated password was sent to you by direct message (encrypted)."

    # -- output -----------------------------------------------------------------------------

    def content(self, reply: Reply, thread: str, reply_to: str, *, asking: bool = False,
                extra: str = "") -> dict[str, Any]:
        return _fit(reply, thread, reply_to, asking=asking, extra=extra)

    async def _answer(self, incoming: Incoming, thread: str, reply: Reply, *,
                      asking: bool = False, extra: str = "",
                      reply_to: str | None = None) -> str | None:
        rows = len(reply.table.rows) if reply.table is not None else 0
        if rows > 500:  # rendering thousands of rows: off the event loop
            content = await asyncio.to_thread(self.content, reply, thread,
                                              reply_to or incoming.event_id, asking=asking,
                                              extra=extra)
        else:
            content = self.content(reply, thread, reply_to or incoming.event_id,
                                   asking=asking, extra=extra)
        self.handling.append((time.monotonic() - incoming.received) * 1000)
        try:
            return await self.session.send(incoming.room_id, content)
        except SendError as exc:
            log.warning("Matrix: a reply was not delivered: %s", exc)
            return None

    # -- alerts -----------------------------------------------------------------------------

    async def notify(self, room: str | None, content: dict[str, Any],
                     notification: Notification) -> str:
        """Post an alert notification (the Matrix notifier calls this); the message's
        thread then accepts ``silence DURATION`` for exactly its group."""
        if not self._rooms_ready.is_set():
            await self.ready(30.0)
        room_id = self.alert_room if room is None or room == self.settings.alert_room \
            else await self.session.resolve(room)
        if room_id is None:
            raise SendError("the alert room is not joined yet")
        matchers = silence_matchers(notification)
        naming = CHAT if self.settings.bot else PODOCTL
        line = naming.command("alerts silence " + " ".join(
            f"--match {shlex.quote(m)}" for m in matchers) + " --for 2h --reason "
            + shlex.quote(f"{notification.title}"))
        content = dict(content)
        content["body"] = f"{content['body']}\nMute it: {line}"
        if "formatted_body" in content:
            import html

            hint = (" (or reply <code>!podo silence 2h</code> in this thread)"
                    if self.settings.bot else "")
            content["formatted_body"] += (f"<p>Mute it: <code>{html.escape(line)}</code>"
                                          f"{hint}</p>")
        event_id = await self.session.send(room_id, content)
        self.notifications[event_id] = NotificationMessage(matchers, notification.title)
        while len(self.notifications) > _KEPT:
            self.notifications.popitem(last=False)
        return event_id

    def _silence_argv(self, found: NotificationMessage, duration: str, reason: list[str],
                      actor: str) -> list[str]:
        argv = ["alerts", "silence"]
        for matcher in found.matchers:
            argv += ["--match", matcher]
        why = " ".join(reason) or f"silenced in Matrix by {actor}: {found.title}"
        return [*argv, "--for", duration, "--reason", why]

    async def _undecryptable(self, incoming: Incoming) -> None:
        actor = self._actor_or_none(incoming.sender, [])
        if actor is None:
            return
        why = ("podod cannot read encrypted messages here: end-to-end encryption is not "
               "available (install matrix-nio[e2e]) or off (matrix.e2ee)") if \
            not self.session.e2ee else ("podod could not decrypt this message (its keys "
                                        "did not reach podod's device); send it again")
        log.warning("Matrix: an encrypted message from %s in %s could not be read",
                    incoming.sender, incoming.room_id)
        if self.session.e2ee:
            await self._answer(incoming, incoming.event_id, Reply(ok=False, message=why))

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        out = self.session.status()
        out["bot"] = self.settings.bot
        out["command_rooms"] = {rid: name for rid, name in self.rooms.items()}
        out["alert_room"] = self.alert_room
        out["commands"] = dict(self.commands)
        times = sorted(self.handling)
        out["handling_ms"] = {
            "count": len(times),
            "median": round(statistics.median(times), 3) if times else None,
            "p95": round(times[int(0.95 * (len(times) - 1))], 3) if times else None}
        return out


class _ProgressMessage:
    """A long command's progress: one message in the command's thread, posted once the
    command has run ``matrix.progress_after`` (or ``progress_interval``, if shorter) and
    edited (``m.replace``) at most every ``matrix.progress_interval``. Each phase the command
    reports is a line with its counts (``⏳`` the current one, ``✓`` those done), so a phase
    shorter than the interval still shows; when the command ends, a last edit marks the
    phases done (``✗`` the one it stopped in) before the reply is posted. Never waits on the
    homeserver while the handler runs (it may hold a transaction)."""

    def __init__(self, bot: MatrixBot, incoming: Incoming, thread: str) -> None:
        self.bot = bot
        self.incoming = incoming
        self.thread = thread
        self.event_id: str | None = None
        self.steps: list[tuple[str, str]] = []  # (phase, its counts), in order
        self.dropped = 0  # phases no longer shown (more than PROGRESS_LINES)
        self.shown = ""
        self.task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()
        self.ok = True
        self.closed = False

    async def __call__(self, message: str, done: int | None = None,
                       total: int | None = None) -> None:
        phase = " ".join(message.split())[:200]  # one line, bounded
        count = f" ({done}/{total})" if done is not None and total else \
            (f" ({done})" if done is not None else "")
        if self.steps and self.steps[-1][0] == phase:
            self.steps[-1] = (phase, count)
        else:
            self.steps.append((phase, count))
            if len(self.steps) > PROGRESS_LINES:
                del self.steps[0]
                self.dropped += 1
        if self.task is None and not self.closed and not self.finished.is_set():
            self.task = asyncio.create_task(self._update())

    def text(self, final: bool = False) -> str:
        lines = [f"({self.dropped} earlier steps)"] if self.dropped else []
        for index, (phase, count) in enumerate(self.steps):
            last = index == len(self.steps) - 1
            mark = "\u23f3" if last and not final else (
                "\u2717" if last and not self.ok else "\u2713")
            lines.append(f"{mark} {phase}{count}")
        return "\n".join(lines)

    async def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until the command ends; whether it has ended."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.finished.wait(), seconds)
        return self.finished.is_set()

    async def _update(self) -> None:
        settings = self.bot.settings
        interval = settings.progress_interval
        try:
            if await self._wait(min(settings.progress_after, interval)):
                return  # a quick command shows none
            while True:
                final = self.finished.is_set()
                text = self.text(final)
                if text != self.shown:
                    await self._show(text)
                if final:
                    return
                await self._wait(interval)
        except SendError as exc:
            log.debug("Matrix: progress not shown: %s", exc)

    async def _show(self, text: str) -> None:
        self.shown = text
        room = self.incoming.room_id
        if self.event_id is None:
            self.event_id = await self.bot.session.send(room, {
                "msgtype": "m.notice", "body": text, PROGRESS_KEY: True,
                "m.relates_to": _thread(self.thread, self.incoming.event_id)})
        else:
            await self.bot.session.send(room, {
                "msgtype": "m.notice", "body": f"* {text}", PROGRESS_KEY: True,
                "m.new_content": {"msgtype": "m.notice", "body": text, PROGRESS_KEY: True},
                "m.relates_to": {"rel_type": "m.replace", "event_id": self.event_id}})

    async def finish(self, ok: bool) -> None:
        """The command ended: the last edit (if a message was posted), then return, so the
        reply comes after it; at most 10 s on a slow homeserver."""
        self.ok = ok
        self.finished.set()
        task = self.task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), 10.0)
        except TimeoutError:
            task.cancel()

    def close(self) -> None:
        self.closed = True
        self.finished.set()
        if self.task is not None:
            self.task.cancel()


def _thread(root: str, reply_to: str) -> dict[str, Any]:
    return {"rel_type": "m.thread", "event_id": root, "is_falling_back": root == reply_to,
            "m.in_reply_to": {"event_id": reply_to}}


def _error(exc: PododError) -> Reply:
    return Reply(ok=False, message=exc.message, code=exc.code, status=exc.status)


def _duration(seconds: float) -> str:
    from podod.durations import format_duration

    return format_duration(seconds)


def _size(content: dict[str, Any]) -> int:
    return len(json.dumps(content, ensure_ascii=False).encode())


def _content(reply: Reply, thread: str, reply_to: str, asking: bool,
             extra: str) -> dict[str, Any]:
    import html

    body = render_text(reply, CHAT, asking=asking)
    formatted = render_html(reply, CHAT, asking=asking)
    if extra:
        body += "\n" + extra
        formatted += "<br/>\n" + html.escape(extra)
    return {"msgtype": "m.notice", "body": body, "format": "org.matrix.custom.html",
            "formatted_body": formatted, "m.relates_to": _thread(thread, reply_to)}


def _fit(reply: Reply, thread: str, reply_to: str, *, asking: bool = False,
         extra: str = "") -> dict[str, Any]:
    """The reply as one event's content under :data:`LIMIT_BYTES`: a table too large is cut
    to the rows that fit, with a note saying how many there are and how to narrow it."""
    content = _content(reply, thread, reply_to, asking, extra)
    if _size(content) <= LIMIT_BYTES:
        return content
    table = reply.table
    if table is not None and table.rows:
        total = len(table.rows)
        low, high = 0, total  # the most rows that fit: binary search
        best = None
        while low <= high:
            mid = (low + high) // 2
            trimmed = dataclasses.replace(
                reply, table=Table(table.columns, table.rows[:mid], table.title),
                notes=[*reply.notes, _cut_note(mid, total)])
            candidate = _content(trimmed, thread, reply_to, asking, extra)
            if _size(candidate) <= LIMIT_BYTES:
                best, low = candidate, mid + 1
            else:
                high = mid - 1
        if best is not None:
            return best
    body = content["body"]
    note = "\n... (cut: the reply is larger than one Matrix message; use podoctl)"
    cut = body.encode()[:LIMIT_BYTES // 2].decode(errors="ignore")
    return {"msgtype": "m.notice", "body": cut + note,
            "m.relates_to": _thread(thread, reply_to)}


def _cut_note(shown: int, total: int) -> str:
    return (f"{total} rows in all; only the first {shown} fit in one Matrix message. "
            "Narrow it (a domain or filter, --limit N, --after KEY) or use podoctl for all.")


def silence_matchers(notification: Notification) -> list[str]:
    """The label matchers that select exactly the notification's group."""
    matchers = [f"{k}={v}" for k, v in sorted(notification.group_labels.items()) if v]
    if matchers:
        return matchers
    names = sorted({a.rule for a in notification.alerts if a.rule})
    if len(names) == 1:
        return [f"alertname={names[0]}"]
    return [f"alertname=~{'|'.join(re.escape(n) for n in names)}"] if names else []


# -- the bus command and the component -------------------------------------------------------

STATUS_REPLY = obj({
    "configured": BOOL, "user_id": nullable(STR), "device_id": nullable(STR),
    "homeserver": nullable(STR), "state": STR, "e2ee": BOOL, "bot": BOOL,
    "rooms": {"type": "object", "additionalProperties": STR},
    "command_rooms": {"type": "object", "additionalProperties": STR},
    "alert_room": nullable(STR), "encrypted_rooms": arr(STR),
    "last_sync": nullable(NUM), "sync_age": nullable(NUM), "event_lag": NUM,
    "last_error": STR, "sent": {"type": "integer"}, "send_failures": {"type": "integer"},
    "commands": {"type": "object", "additionalProperties": {"type": "integer"}},
    "handling_ms": obj({"count": {"type": "integer"}, "median": nullable(NUM),
                        "p95": nullable(NUM)},
                       description="podod's share of a reply (ms): from the sync reading "
                                   "the command to the reply handed to the output queue")},
    optional=("user_id", "device_id", "homeserver", "e2ee", "bot", "rooms", "command_rooms",
              "alert_room", "encrypted_rooms", "last_sync", "sync_age", "event_lag",
              "last_error", "sent", "send_failures", "commands", "handling_ms"),
    description="the Matrix session and bot")


def factory(runtime: Runtime) -> MatrixBot | None:
    if not runtime.config.matrix.enabled:
        return None
    return MatrixBot(runtime)


def setup(registry: Registry) -> None:
    registry.component("matrix", factory)

    @registry.command(
        "matrix status", "Show the Matrix account: login, rooms, sync lag, last error",
        params=[Opt("rooms", "list every joined room", kind="flag")],
        reply=STATUS_REPLY,
        description="The account of the matrix: section (shared by the admin bot and the "
                    "Matrix alert notifier): whether it is logged in and syncing, its "
                    "device, end-to-end encryption, the command and alert rooms, the age of "
                    "the last sync, the lag of the last event, and the last error.")
    async def matrix_status(ctx: CommandContext, rooms: bool) -> Reply:
        bot = ctx.runtime.component("matrix")
        if bot is None:
            return Reply(message="Matrix is not configured (no homeserver in the matrix: "
                         "section)", data={"configured": False, "state": "off"})
        data = {"configured": True, **bot.status()}
        when = (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(data["last_sync"]))
                if data["last_sync"] else "never")
        lag = f"{data['sync_age']:.1f} s ago" if data["sync_age"] is not None else ""
        table_rows = [
            ["account", f"{data['user_id']} (device {data['device_id'] or '?'})"],
            ["homeserver", data["homeserver"]], ["state", data["state"]],
            ["end-to-end encryption", "on" if data["e2ee"] else "off"],
            ["bot", "on" if data["bot"] else "off (alerts only)"],
            ["command rooms", ", ".join(data["command_rooms"].values()) or "none joined"],
            ["alert room", data["alert_room"] or "none"],
            ["last sync (UTC)", f"{when} {lag}".strip()],
            ["event lag", f"{data['event_lag']:.3f} s"],
            ["messages sent / failed", f"{data['sent']} / {data['send_failures']}"],
            ["last error", data["last_error"] or "none"]]
        if rooms:
            table_rows += [["joined room", f"{rid} ({name})"]
                           for rid, name in sorted(data["rooms"].items())]
        ok = data["state"] != "stopped"
        return Reply(ok=ok, message=f"Matrix: {data['user_id']} is {data['state']}"
                     + ("" if ok else f": {data['last_error']}"),
                     code="ok" if ok else "unavailable", exit_code=0 if ok else 1,
                     status="ok" if ok else "unavailable", data=data,
                     table=Table(["item", "value"], table_rows, title="matrix"))
