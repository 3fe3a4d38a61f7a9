"""The command bus on its own: parse → authorize → gates → handler → commit → after-actions
→ audit, with the real registry, audit log, plans and event bus; only the unit of work and
the handlers are the test's own (podod's own protocol, no outside component)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from podod.bus import commands as bus_commands
from podod.bus.audit import AuditLog
from podod.bus.context import CHAT, Actor, Change, CommandContext, Naming, Reply, Request
from podod.bus.core import CommandBus
from podod.bus.identity import actor_for, token_sha256
from podod.bus.ratelimit import RateLimiter
from podod.bus.render import render_html, render_text
from podod.bus.spec import Arg, Opt
from podod.config import AccessSettings, RateLimitSettings, parse_config
from podod.errors import BackupFailed, NotFound, RateLimited, Unauthenticated
from podod.events import AfterActionFailed
from podod.plugins import Registry
from podod.runtime import Runtime
from testbed.daemon import base_config
from testbed.runtime import EventLog, runtime_for

ADMIN = Actor("unix:root", "admin")
VIEWER = Actor("unix:carol", "viewer")


class FakeUnit:
    """A unit of work that writes to a dict only when committed."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.pending: list[Change] = []

    async def begin(self) -> None:
        self.world.steps.append("begin")

    def changes(self) -> list[Change]:
        return list(self.pending)

    async def commit(self, ctx: CommandContext) -> None:
        self.world.steps.append("commit")
        self.world.rows.extend(c.key for c in self.pending)
        await asyncio.sleep(self.world.commit_delay)

    async def rollback(self) -> None:
        self.world.steps.append("rollback")


class World:
    def __init__(self) -> None:
        self.steps: list[str] = []
        self.rows: list[str] = []
        self.outside: list[str] = []
        self.commit_delay = 0.0
        self.after_delay = 0.0
        self.after_fails = False
        self.gate_refuses = False


def make_registry(world: World) -> Registry:
    registry = Registry()
    bus_commands.setup(registry)
    registry.units["fake"] = lambda ctx: FakeUnit(world)

    @registry.gate("backup")
    async def backup(ctx: CommandContext) -> str | None:
        world.steps.append("gate backup")
        if world.gate_refuses:
            raise BackupFailed("the backup could not be taken (disk full); nothing was "
                               "changed")
        return "B1" if ctx.unit is not None else None

    @registry.gate("snapshot")
    async def snapshot(ctx: CommandContext) -> str | None:
        world.steps.append("gate snapshot")
        return "snap-1"

    @registry.command("row add", "Add a row", params=[Arg("key", "the row")],
                      permission="admin", mutating=True, unit="fake", timeout=1.0)
    async def row_add(ctx: CommandContext, key: str) -> Reply:
        world.steps.append("handler")
        ctx.unit.pending.append(Change("insert", "row", key))

        async def after() -> None:
            world.steps.append("after")
            await asyncio.sleep(world.after_delay)
            if world.after_fails:
                raise OSError("the mail server did not answer")

        ctx.after("reload the mail server", after)
        return Reply(message=f"row {key}")

    @registry.command("outside set", "Change something outside a transaction",
                      params=[Arg("key", "the thing"),
                              Opt("slow", "take longer than the time limit", kind="flag")],
                      permission="admin", mutating=True, timeout=1.0)
    async def outside_set(ctx: CommandContext, key: str, slow: bool) -> Reply:
        ctx.record("set", "thing", key)
        if ctx.execute_real:
            world.outside.append(key)
            if slow:
                await asyncio.sleep(30)
        return Reply(message=f"thing {key}")

    @registry.command("sleep", "Sleep longer than its own limit", timeout=0.5)
    async def sleep(ctx: CommandContext) -> Reply:
        await asyncio.sleep(30)
        return Reply()

    @registry.command("lookup", "Fail with not found")
    async def lookup(ctx: CommandContext) -> Reply:
        raise NotFound("there is no mailbox x@example.com")

    @registry.command("secret set", "Read a password when asked",
                      params=[Opt("password_stdin", "read it", kind="flag")],
                      permission="admin", mutating=True, stdin="secret",
                      stdin_option="password_stdin")
    async def secret_set(ctx: CommandContext, password_stdin: bool) -> Reply:
        return Reply(message=f"got {len(ctx.request.stdin or '')} characters")

    @registry.command("flood", "Report progress far faster than anyone reads it")
    async def flood(ctx: CommandContext) -> Reply:
        for done in range(2000):
            await ctx.progress("x" * 1000, done, 2000)
        world.steps.append("flooded")
        return Reply(message="flooded")

    @registry.command("rows import", "Read CSV data", permission="admin", stdin="data")
    async def rows_import(ctx: CommandContext) -> Reply:
        count = len((ctx.request.stdin or "").splitlines())
        for done in range(count):
            await ctx.progress("importing", done + 1, count)
        return Reply(message=f"{count} rows")

    return registry


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[tuple[CommandBus, World]]:
    world = World()
    async with runtime_for(tmp_path, make_registry(world)) as runtime:
        audit = AuditLog(runtime.state)
        await audit.setup()
        runtime.bus = CommandBus(runtime, audit)
        yield runtime.bus, world


async def run(bus: CommandBus, *argv: str, actor: Actor = ADMIN, real: bool = False,
              origin: str = "socket", **kw: Any) -> Reply:
    async with asyncio.timeout(20):  # a hang is a failure, not a stuck test run
        return await bus.execute(Request(argv=list(argv), actor=actor, origin=origin,
                                         execute_real=real), **kw)


async def outcomes(bus: CommandBus, command: str) -> list[str]:
    records = await bus.audit.list(50, None, command, None)
    return [r["outcome"] for r in reversed(records)]


async def test_a_real_change_runs_gates_then_commits_then_after_actions(bus: Any) -> None:
    bus, world = bus
    reply = await run(bus, "row", "add", "r1", real=True)
    assert reply.ok and reply.backup_id == "B1", reply
    assert world.steps == ["begin", "handler", "gate backup", "gate snapshot", "commit",
                           "after"]
    assert world.rows == ["r1"]
    assert "gate snapshot: snap-1" in reply.notes
    assert "after: reload the mail server: done" in reply.notes
    assert await outcomes(bus, "row add") == ["intent", "ok"]


async def test_the_sandbox_rolls_back_and_runs_no_gate(bus: Any) -> None:
    bus, world = bus
    reply = await run(bus, "row", "add", "r1")
    assert reply.ok and reply.sandbox and reply.plan_id
    assert world.steps == ["begin", "handler", "rollback"] and world.rows == []


async def test_a_refusing_gate_commits_nothing(bus: Any) -> None:
    bus, world = bus
    world.gate_refuses = True
    reply = await run(bus, "row", "add", "r1", real=True)
    assert not reply.ok and reply.resolved_status() == "unavailable"
    assert reply.to_dict()["http_status"] == 503 and reply.to_dict()["exit_code"] == 1
    assert "commit" not in world.steps and "rollback" in world.steps and world.rows == []
    assert "after" not in world.steps


async def test_a_command_without_a_unit_passes_the_gates_before_it_runs(bus: Any) -> None:
    bus, world = bus
    world.gate_refuses = True
    reply = await run(bus, "outside", "set", "t1", real=True)
    assert not reply.ok and world.outside == []  # refused before it changed anything


async def test_after_actions_run_outside_the_time_limit(bus: Any) -> None:
    """row add may take 1 s; its after-action takes 1.5 s more, after the commit."""
    bus, world = bus
    world.after_delay = 1.5
    reply = await run(bus, "row", "add", "r1", real=True)
    assert reply.ok, reply.message
    assert "after: reload the mail server: done" in reply.notes


async def test_a_failed_after_action_is_reported_and_the_change_stands(bus: Any) -> None:
    bus, world = bus
    world.after_fails = True
    events = EventLog(bus.runtime, AfterActionFailed)
    reply = await run(bus, "row", "add", "r1", real=True)
    assert reply.ok and world.rows == ["r1"]
    assert ("after: reload the mail server: FAILED (the mail server did not answer)"
            in reply.notes)
    [event] = await events.wait_for(AfterActionFailed)
    assert event.action == "reload the mail server" and event.command == "row add"


async def test_a_commit_cut_by_the_time_limit_is_not_called_uncommitted(bus: Any) -> None:
    bus, world = bus
    world.commit_delay = 5
    reply = await run(bus, "row", "add", "r1", real=True)
    assert not reply.ok and reply.resolved_status() == "timeout"
    assert "nothing was committed" not in reply.message
    assert "may or may not have been committed" in reply.message


async def test_a_change_without_a_transaction_cut_by_the_time_limit_says_so(bus: Any) -> None:
    bus, world = bus
    reply = await run(bus, "outside", "set", "t1", "--slow", real=True)
    assert world.outside == ["t1"]
    assert not reply.ok and "nothing was committed" not in reply.message, reply.message
    assert "changes it made before it stopped are kept" in reply.message


async def test_a_command_has_its_own_time_limit(bus: Any) -> None:
    bus, _world = bus
    started = time.monotonic()
    reply = await run(bus, "sleep")
    assert time.monotonic() - started < 15  # its own 0.5 s, not commands.timeout (5 min)
    assert not reply.ok and reply.message == "sleep did not finish within 0.5 s; nothing " \
        "was committed"
    assert reply.to_dict()["http_status"] == 504


async def test_statuses_map_to_exit_codes_and_http(bus: Any) -> None:
    bus, _world = bus
    missing = (await run(bus, "lookup")).to_dict()
    assert (missing["status"], missing["exit_code"], missing["http_status"]) == (
        "not-found", 1, 404)
    bad = (await run(bus, "row", "add")).to_dict()
    assert (bad["status"], bad["exit_code"], bad["http_status"]) == ("invalid", 2, 400)
    denied = (await run(bus, "row", "add", "x", actor=VIEWER)).to_dict()
    assert (denied["status"], denied["exit_code"], denied["http_status"]) == (
        "permission", 1, 403)
    ok = (await run(bus, "status")).to_dict()
    assert (ok["status"], ok["exit_code"], ok["http_status"]) == ("ok", 0, 200)


async def test_help_is_filtered_and_help_requests_are_authorized(bus: Any) -> None:
    bus, _world = bus
    everything = await run(bus, "help")
    assert "audit list" in everything.message and "row add" in everything.message
    mine = await run(bus, "help", actor=VIEWER)
    assert "audit list" not in mine.message and "row add" not in mine.message
    assert "status" in mine.message and "lookup" in mine.message
    assert not (await run(bus, "help", "audit", "list", actor=VIEWER)).ok
    refused = await run(bus, "audit", "list", "--help", actor=VIEWER)
    assert not refused.ok and refused.resolved_status() == "permission"
    assert (await outcomes(bus, "audit list"))[-1] == "forbidden"


async def test_input_is_declared_not_guessed(bus: Any) -> None:
    bus, _world = bus
    assert bus.stdin_wanted(["secret", "set", "--password-stdin"]) == "secret"
    assert bus.stdin_wanted(["secret", "set"]) is None
    assert bus.stdin_wanted(["rows", "import"]) == "data"
    assert bus.stdin_wanted(["status"]) is None
    assert bus.stdin_wanted(["no", "such", "command"]) is None
    # input a request did not declare never reaches the handler
    reply = await bus.execute(Request(["secret", "set"], ADMIN, "socket", stdin="pw"))
    assert reply.message.startswith("got 0 characters")


async def test_progress_carries_how_far(bus: Any) -> None:
    bus, _world = bus
    seen: list[tuple[str, int | None, int | None]] = []

    async def progress(message: str, done: int | None = None, total: int | None = None
                       ) -> None:
        seen.append((message, done, total))

    reply = await bus.execute(Request(["rows", "import"], ADMIN, "socket", stdin="a\nb\nc"),
                              progress)
    assert reply.message == "3 rows"
    assert seen == [("importing", 1, 3), ("importing", 2, 3), ("importing", 3, 3)]


async def test_plan_lifetime_per_origin_and_on_reload(bus: Any, tmp_path: Path) -> None:
    bus, _world = bus
    runtime: Runtime = bus.runtime
    runtime.config = parse_config(base_config(tmp_path, commands={
        "plan_ttl": "10m", "plan_ttl_by_origin": {"chat": "2m"}}), source="t",
        base_dir=tmp_path)

    def lifetime(reply: Reply) -> float:
        assert reply.plan_id is not None
        return bus.plans._plans[reply.plan_id].expires - time.time()

    assert 100 < lifetime(await run(bus, "row", "add", "a", origin="chat")) <= 120
    assert 500 < lifetime(await run(bus, "row", "add", "b", origin="socket")) <= 600
    runtime.config = parse_config(base_config(tmp_path, commands={"plan_ttl": "30s"}),
                                  source="t", base_dir=tmp_path)  # as a SIGHUP does
    assert 0 < lifetime(await run(bus, "row", "add", "c")) <= 30


def test_rate_limit_per_actor() -> None:
    now = [0.0]
    settings = RateLimitSettings(per_minute=60, burst=2)
    limiter = RateLimiter(lambda: settings, clock=lambda: now[0])
    limiter.check("unix:alice")
    limiter.check("unix:alice")
    with pytest.raises(RateLimited, match="try again in 1 s"):
        limiter.check("unix:alice")
    limiter.check("unix:bob")  # another actor has its own bucket
    for _ in range(100):
        limiter.check("unix:root")  # exempt by default
    now[0] = 1.0
    limiter.check("unix:alice")  # one second later: one more
    settings = RateLimitSettings(per_minute=0)
    for _ in range(100):
        limiter.check("unix:alice")  # 0: no limit


def test_identity_in_one_place() -> None:
    token = "s3cret-token"
    access = AccessSettings.model_validate({
        "unix_users": {"nobody": {"role": "viewer"}},
        "matrix_users": {"@bob:example.org": {"role": "domain-admin",
                                              "domains": ["example.com"]}},
        "api_tokens": {"crm": {"role": "admin", "sha256": token_sha256(token)}}})
    assert actor_for(access, "unix", 0).role == "admin"
    bob = actor_for(access, "matrix", "@bob:example.org")
    assert (bob.name, bob.role, bob.domains) == ("@bob:example.org", "domain-admin",
                                                 ("example.com",))
    assert actor_for(access, "api", token) == Actor("api:crm", "admin")
    for kind, who in (("matrix", "@eve:example.org"), ("api", "guess"),
                      ("api", token_sha256(token))):
        with pytest.raises(Unauthenticated):
            actor_for(access, kind, who)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="64 hex digits"):
        AccessSettings.model_validate({"api_tokens": {"x": {"role": "admin",
                                                            "sha256": token}}})


def test_replies_name_commands_as_the_frontend_does() -> None:
    reply = Reply(sandbox=True, plan_id="ab12", message="would add <b>row</b>",
                  changes=[Change("insert", "row", "<script>")])
    text = render_text(reply, CHAT)
    assert "podoctl" not in text and "!podo confirm ab12" in text
    done = Reply(message="done", backup_id="B1")
    assert "!podo backup restore B1 --execute-real" in render_text(done, CHAT)
    page = render_html(reply, CHAT)
    assert "podoctl" not in page and "&lt;script&gt;" in page and "<script>" not in page
    assert "&lt;b&gt;row&lt;/b&gt;" in page


async def test_a_stop_after_the_commit_reports_the_change_as_committed(bus: Any) -> None:
    """SIGTERM cancels requests in flight: one whose change is committed (here: during its
    after-action) is answered as committed, never as "nothing was committed"."""
    bus, world = bus
    world.after_delay = 30
    request = Request(argv=["row", "add", "r1"], actor=ADMIN, origin="socket",
                      execute_real=True)
    task = asyncio.create_task(bus.execute(request))
    async with asyncio.timeout(20):
        while "after" not in world.steps:
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert world.rows == ["r1"]
    reply = request.interrupted
    assert reply is not None and reply.ok and reply.backup_id == "B1", reply
    assert "nothing was committed" not in reply.message
    assert any("reload the mail server: NOT RUN" in n for n in reply.notes), reply.notes
    assert (await outcomes(bus, "row add"))[-1] == "ok"


async def test_a_stop_before_the_commit_says_nothing_was_committed(bus: Any) -> None:
    bus, world = bus
    world.commit_delay = 0
    request = Request(argv=["sleep"], actor=ADMIN, origin="socket")
    task = asyncio.create_task(bus.execute(request))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert request.interrupted is not None and not request.interrupted.ok
    assert request.interrupted.message == ("sleep was cancelled because podod is stopping; "
                                           "nothing was committed")
    assert request.interrupted.resolved_status() == "unavailable"


def test_a_frontend_may_spell_commands_its_own_way() -> None:
    http = Naming(spell=lambda words: "POST /v1/" + "/".join(w for w in words.split()
                                                          if not w.startswith("--")))
    text = render_text(Reply(message="done", backup_id="B1"), http)
    assert "POST /v1/backup/restore/B1" in text and "podoctl" not in text


async def test_progress_never_waits_for_a_slow_client(bus: Any, tmp_path: Path) -> None:
    """A client that does not read must not hold the handler (it may be inside a database
    transaction): progress it cannot take is dropped, the reply still comes."""
    import json

    from podod.frontends.unix_socket import UnixSocketFrontend

    bus, world = bus
    frontend = UnixSocketFrontend(bus.runtime)
    await frontend.start()
    reader, writer = await asyncio.open_unix_connection(str(frontend.path))
    try:
        writer.write(b'{"argv": ["flood"]}\n')
        await writer.drain()
        async with asyncio.timeout(20):  # 2 MB of progress, and nobody reading
            while "flooded" not in world.steps:
                await asyncio.sleep(0.05)
        messages = []
        async with asyncio.timeout(20):
            while True:
                message = json.loads(await reader.readuntil(b"\n"))
                messages.append(message)
                if message["type"] == "reply":
                    break
        assert messages[-1]["ok"] and messages[-1]["message"] == "flooded"
        progress = [m for m in messages if m["type"] == "progress"]
        assert 0 < len(progress) < 2000 and progress[0]["total"] == 2000
    finally:
        writer.close()
        async with asyncio.timeout(30):
            await frontend.stop(grace=1)
