"""The command bus: parse → authorize → validate → run (sandbox or real) → gates → commit →
after-actions → audit → reply. Every frontend goes through :meth:`CommandBus.execute`;
what a frontend implements is described in docs/architecture.md ("Writing a frontend")."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from podod.bus import grammar
from podod.bus.audit import AuditEntry, AuditLog, AuditUnavailable
from podod.bus.authz import authorize
from podod.bus.context import (
    Actor,
    AfterAction,
    BusRuntime,
    CommandContext,
    Progress,
    Reply,
    Request,
    _no_progress,
)
from podod.bus.identity import Kind, actor_for, refused_name
from podod.bus.plans import PlanBook
from podod.bus.ratelimit import RateLimiter
from podod.bus.spec import CommandSpec, StdinKind
from podod.errors import PododError, UsageError
from podod.events import AfterActionDone, AfterActionFailed, CommandCompleted

log = logging.getLogger(__name__)


_INLINE_WORDS = 512
_T = TypeVar("_T")


async def _run_parser(off_loop: bool, parse: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.to_thread(parse, *args) if off_loop else parse(*args)


def error_reply(exc: PododError) -> Reply:
    return Reply(ok=False, message=exc.message, code=exc.code, exit_code=exc.exit_code,
                 status=exc.status)


class CommandBus:
    def __init__(self, runtime: BusRuntime, audit: AuditLog) -> None:
        self.runtime = runtime
        self.audit = audit
        self.plans = PlanBook(ttl=runtime.config.commands.plan_ttl)
        self.limiter = RateLimiter(lambda: self.runtime.config.commands.rate_limit)

    # -- the edge: what a frontend calls besides execute --------------------------------

    def identify(self, kind: Kind, who: str | int) -> Actor:
        """The actor a frontend's caller is, under the grants in force now (raises
        :class:`~podod.errors.Unauthenticated`; answer it with :meth:`refuse`)."""
        return actor_for(self.runtime.config.access, kind, who)

    def refused_name(self, kind: Kind, who: str | int) -> str:
        return refused_name(kind, who)

    def admit(self, actor: Actor) -> None:
        """The rate limit (``commands.rate_limit``): raises RateLimited when over it."""
        self.limiter.check(actor.name)

    def stdin_wanted(self, argv: list[str]) -> StdinKind | None:
        """What this request would read from standard input (its command's declaration),
        or None; a request that does not parse reads nothing (execute says why)."""
        if len(argv) > _INLINE_WORDS:
            return None
        try:
            parsed = grammar.parse(argv, self.runtime.registry.commands)
        except PododError:
            return None
        if parsed.help:
            return None
        if parsed.spec.name == "confirm":
            return None
        return parsed.spec.wants_stdin(parsed.params)

    def plan_ttl(self, origin: str) -> float:
        settings = self.runtime.config.commands
        return settings.plan_ttl_by_origin.get(origin, settings.plan_ttl)

    def timeout_of(self, spec: CommandSpec) -> float | None:
        """A command's time limit: its own, else ``commands.timeout``. ``confirm`` has
        none of its own: the command it confirms runs under that command's limit."""
        if spec.name == "confirm" and spec.plugin == "core":
            return None
        return spec.timeout if spec.timeout is not None else self.runtime.config.commands.timeout

    async def execute(self, request: Request, progress: Progress = _no_progress) -> Reply:
        """Run one request from any frontend; never raises for a user's mistake."""
        started = time.monotonic()
        registry = self.runtime.registry
        # Until the request parses, the audit keeps only the words the grammar knows. A
        # request of many words (a list option repeated up to the socket's size limit) is
        # read in a worker thread: a few hundred ms of parsing would hold every other
        # request, and systemd's watchdog, on the event loop.
        off_loop = len(request.argv) > _INLINE_WORDS
        command, kept = await _run_parser(off_loop, grammar.audit_argv, request.argv,
                                          registry.commands)
        audit_args: dict[str, object] = {"argv": kept}
        audit_message: str | None = None
        ctx: CommandContext | None = None
        try:
            parsed = await _run_parser(off_loop, grammar.parse, request.argv, registry.commands)
            spec = parsed.spec
            command = spec.name
            if parsed.execute_real:
                request.execute_real = True
            if parsed.help:
                authorize(request.actor, spec)  # help of what the actor may not run: refused
                reply = Reply(message=grammar.command_help(spec), data=grammar.help_data(spec))
                await self._audit(request, command, audit_args, reply, started, None)
                return reply
            audit_args = grammar.redact(spec, parsed.params)
            authorize(request.actor, spec)
            if request.execute_real and not spec.mutating:
                request.execute_real = False  # nothing to make real; keep the audit honest
            if request.stdin is not None and spec.wants_stdin(parsed.params) is None:
                request.stdin = None  # input the command does not declare is dropped
            if request.execute_real and spec.mutating:
                await self._intent(request, command, audit_args)
            ctx = CommandContext(request=request, spec=spec, runtime=self.runtime,
                                 progress=progress)
            limit = self.timeout_of(spec)
            async with asyncio.timeout(limit):
                reply = await self._run(ctx, parsed.params)
        except grammar.ParseError as exc:
            reply = error_reply(exc)
            audit_message = exc.audit_message
        except PododError as exc:
            reply = error_reply(exc)
        except TimeoutError:
            reply = self._interrupted(ctx, command, f"did not finish within "
                                      f"{_seconds(self.timeout_of(ctx.spec) or 0 if ctx else 0)}",
                                      "timeout")
        except asyncio.CancelledError:
            reply = self._interrupted(ctx, command, "was cancelled because podod is stopping",
                                      "cancelled")
            if not reply.ok:
                reply.status = "unavailable"
            if ctx is not None and ctx.commit_state == "committed":
                _not_run(ctx, reply, ctx.after_actions)
            request.interrupted = reply  # what the frontend answers, if it still can
            await self._audit(request, command, audit_args, reply, started, ctx)
            raise
        except Exception:
            log.exception("command %s failed (request %s)", command, request.id)
            reply = self._interrupted(ctx, command, "failed on an internal error", "internal")
            reply.message += f" (request {request.id} in the daemon's log)"
        if ctx is not None and ctx.commit_state == "committed" and reply.ok:
            try:
                await self._after_actions(ctx, reply)  # outside the command's time limit
            except asyncio.CancelledError:  # podod is stopping: the change stands, say so
                request.interrupted = reply
                await self._audit(request, command, audit_args, reply, started, ctx)
                raise
        await self._audit(request, command, audit_args, reply, started, ctx,
                          message=audit_message)
        return reply

    def _interrupted(self, ctx: CommandContext | None, command: str, what: str,
                     code: str) -> Reply:
        """The reply to a command stopped before it answered, honest about what it left:
        a change committed before the stop is reported as committed, never as nothing."""
        state = ctx.commit_state if ctx is not None else "none"
        if state == "committed" and ctx is not None and ctx.reply is not None:
            reply = self._finish(ctx, ctx.reply)
            reply.notes.append(f"{command} {what} after its change was committed")
            return reply
        status = "internal" if code == "internal" else "timeout"
        if state == "committing":
            tail = ("its change may or may not have been committed; check with "
                    "'audit list' and 'backup list' before repeating it")
        elif state == "running":
            tail = "changes it made before it stopped are kept (it has no transaction)"
        else:
            tail = "nothing was committed"
        return Reply(ok=False, code=code, exit_code=1, status=status,
                     message=f"{command} {what}; {tail}")

    async def _run(self, ctx: CommandContext, params: dict[str, object]) -> Reply:
        spec = ctx.spec
        unit = None
        if spec.mutating and spec.unit:
            factory = self.runtime.registry.units.get(spec.unit)
            if factory is None:
                raise PododError(f"{spec.name} needs '{spec.unit}', which is not configured",
                                 code="unavailable")
            unit = factory(ctx)
            ctx.unit = unit
            await unit.begin()
        elif spec.mutating and not ctx.sandbox:
            if ctx.request.plan is not None:
                refused = await self._check_plan_first(ctx, params)
                if refused is not None:
                    return refused
            await self._gates(ctx)  # nothing to hold back later: the gates go first
            ctx.commit_state = "running"
        try:
            reply = await spec.handler(ctx, **params)
            if unit is not None:
                ctx.changes.extend(unit.changes())
                if ctx.sandbox or not reply.ok or not unit.changes():
                    await unit.rollback()
                else:
                    if ctx.request.plan is not None:  # a confirmation: exactly the plan
                        ctx.request.plan.check(ctx.all_changes(reply))
                    await self._gates(ctx)
                    ctx.reply = reply
                    ctx.commit_state = "committing"
                    await unit.commit(ctx)
                    ctx.commit_state = "committed"
            elif spec.mutating and not ctx.sandbox:
                ctx.reply = reply
                ctx.commit_state = "committed"
        except BaseException:
            if unit is not None and ctx.commit_state != "committed":
                await asyncio.shield(unit.rollback())
            raise
        if not reply.ok:
            return reply
        return self._finish(ctx, reply)

    def _finish(self, ctx: CommandContext, reply: Reply) -> Reply:
        if ctx.spec.mutating:
            reply.sandbox = ctx.sandbox
            reply.changes = ctx.all_changes(reply)
            reply.backup_id = reply.backup_id or ctx.backup_id
            if ctx.sandbox and not reply.plan_id:
                self.plans.ttl = self.runtime.config.commands.plan_ttl  # applied on reload
                reply.plan_id = self.plans.issue(ctx.actor, list(ctx.request.argv),
                                                 ctx.request.stdin, reply.changes,
                                                 ttl=self.plan_ttl(ctx.request.origin))
            _summarize(reply)
        return reply

    async def _gates(self, ctx: CommandContext) -> None:
        """The pre-change gates (the backup first, then any a plugin added), in order; one
        that raises refuses the change, and nothing is committed."""
        for gate in list(self.runtime.registry.gates.values()):
            record = await gate.func(ctx)
            if record is None:
                continue
            if gate.name == "backup":
                ctx.backup_id = record
            else:
                ctx.gate_records[gate.name] = record

    async def _after_actions(self, ctx: CommandContext, reply: Reply) -> None:
        """After a real commit, outside the command's time limit (each action has its own,
        ``commands.after_action_timeout``): a failure is a note in the reply and an event,
        and never undoes or hides the committed change."""
        limit = self.runtime.config.commands.after_action_timeout
        for name, record in ctx.gate_records.items():
            reply.notes.append(f"gate {name}: {record}")
        for index, action in enumerate(ctx.after_actions):
            try:
                async with asyncio.timeout(limit):
                    output = await action.run()
                shown = " ".join(str(output).split())[:300] if output else ""
                reply.notes.append(f"after: {action.description}: done"
                                   + (f" ({shown})" if shown else ""))
                self.runtime.events.publish(AfterActionDone(
                    command=ctx.spec.name, actor=ctx.actor.name, action=action.description,
                    output=shown, kind=action.kind))
            except asyncio.CancelledError:
                _not_run(ctx, reply, ctx.after_actions[index:])
                raise
            except Exception as exc:  # the change is committed; say what is left
                reason = (exc.message if isinstance(exc, PododError) else str(exc)) or (
                    "did not finish within " + _seconds(limit)
                    if isinstance(exc, TimeoutError) else type(exc).__name__)
                log.warning("after-action %s failed: %s", action.description, reason)
                reply.notes.append(f"after: {action.description}: FAILED ({reason})")
                self.runtime.events.publish(AfterActionFailed(
                    command=ctx.spec.name, actor=ctx.actor.name,
                    action=action.description, reason=reason, kind=action.kind))

    async def _check_plan_first(self, ctx: CommandContext,
                                params: dict[str, object]) -> Reply | None:
        """A confirmed command without a unit of work changes things as it runs, so there
        is no commit to hold back: run it in the sandbox once more first and refuse if it
        would no longer change what the plan showed. A refusal of that run is the reply."""
        plan = ctx.request.plan
        assert plan is not None
        dry = dataclasses.replace(ctx.request, execute_real=False, plan=None)
        check = CommandContext(request=dry, spec=ctx.spec, runtime=self.runtime)
        reply = await ctx.spec.handler(check, **params)
        if not reply.ok:
            return reply
        plan.check(check.all_changes(reply))
        return None

    async def refuse(self, actor_name: str, origin: str, argv: list[str],
                     exc: PododError) -> Reply:
        """A request refused before it reached the bus (an unknown local user): audited
        like any other, so attempts show in the log."""
        started = time.monotonic()
        reply = error_reply(exc)
        request = Request(argv=argv, actor=Actor(actor_name, "viewer"), origin=origin)
        command, kept = grammar.audit_argv(argv, self.runtime.registry.commands)
        await self._audit(request, command, {"argv": kept}, reply, started, None)
        return reply

    async def confirm(self, request: Request, plan_id: str,
                      progress: Progress = _no_progress) -> Reply:
        """Run a planned request for real (used by ``confirm`` and frontends' prompts)."""
        plan = self.plans.take(plan_id, request.actor)
        argv = [t for t in plan.argv if t != "--execute-real"]
        real = Request(argv=argv, actor=request.actor, origin=request.origin,
                       execute_real=True, stdin=plan.stdin, plan=plan, naming=request.naming)
        return await self.execute(real, progress)

    async def _intent(self, request: Request, command: str, args: dict[str, object]) -> None:
        """A real change is recorded before it runs (outcome ``intent``; its outcome record
        follows). When that record cannot be written, the change is refused: nothing runs,
        so no change goes unrecorded."""
        try:
            await self.audit.append(AuditEntry(
                request_id=request.id, actor=request.actor.name, origin=request.origin,
                command=command, args=args, execute_real=True, outcome="intent",
                message="about to run for real", duration_ms=0.0))
        except Exception as exc:
            log.error("could not write the audit record of request %s (%s): %s refused",
                      request.id, exc, command)
            raise AuditUnavailable(f"{command} was not run: its audit record could not be "
                                   f"written ({exc}); nothing was changed") from None

    async def _audit(self, request: Request, command: str, args: dict[str, object],
                     reply: Reply, started: float, ctx: CommandContext | None, *,
                     message: str | None = None) -> None:
        """Record the outcome. ``message`` replaces the reply's sentence in the record when
        that sentence quotes words of a request that did not parse."""
        duration = time.monotonic() - started
        outcome = ("sandbox" if reply.sandbox else "ok") if reply.ok else reply.code
        text = reply.message if message is None else message
        try:
            await self.audit.append(AuditEntry(
                request_id=request.id, actor=request.actor.name, origin=request.origin,
                command=command, args=args, execute_real=request.execute_real,
                outcome=outcome, message=text.splitlines()[0] if text else "",
                duration_ms=duration * 1000, backup_id=reply.backup_id))
        except Exception:
            log.exception("could not write the audit record of request %s", request.id)
        self.runtime.events.publish(CommandCompleted(
            command=command, origin=request.origin, actor=request.actor.name,
            result=outcome, duration=duration))
        log.info("command %s by %s via %s: %s in %.1f ms", command, request.actor.name,
                 request.origin, outcome, duration * 1000)


# A reply lists at most this many changes; the plan, its fingerprint and the backup still
# cover them all.
LISTED_CHANGES = 20


def _summarize(reply: Reply) -> None:
    """A change list of thousands (a bulk import) is answered with its first changes and
    the count per action and table, not with thousands of lines."""
    total = len(reply.changes)
    if total <= LISTED_CHANGES:
        return
    counts: dict[str, dict[str, int]] = {}
    for change in reply.changes:
        per = counts.setdefault(change.action, {})
        per[change.target] = per.get(change.target, 0) + 1
    summary = "; ".join(f"{action} " + ", ".join(f"{n} {t}" for t, n in per.items())
                        for action, per in counts.items())
    reply.changes = reply.changes[:LISTED_CHANGES]
    reply.changes_total = total
    reply.notes.insert(0, f"{total} changes in all ({summary}); the first "
                          f"{LISTED_CHANGES} are listed.")


def _not_run(ctx: CommandContext, reply: Reply, actions: list[AfterAction]) -> None:
    for action in actions:
        reply.notes.append(f"after: {action.description}: NOT RUN (podod is stopping; the "
                           "change is committed)")
        log.warning("after-action %s of %s not run: podod is stopping", action.description,
                    ctx.spec.name)


def _seconds(value: float) -> str:
    return f"{value:g} s"  # 300 s, 0.5 s


__all__ = ["CommandBus", "UsageError", "error_reply"]
