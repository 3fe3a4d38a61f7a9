"""The command bus: parse → authorize → validate → run (sandbox or real) → audit → reply."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from podod.bus import grammar
from podod.bus.audit import AuditEntry, AuditLog, AuditUnavailable
from podod.bus.authz import authorize
from podod.bus.context import Actor, CommandContext, Progress, Reply, Request, _no_progress
from podod.bus.plans import PlanBook
from podod.errors import PododError, UsageError
from podod.events import CommandCompleted

if TYPE_CHECKING:
    from podod.runtime import Runtime

log = logging.getLogger(__name__)


_INLINE_WORDS = 512
_T = TypeVar("_T")


async def _run_parser(off_loop: bool, parse: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.to_thread(parse, *args) if off_loop else parse(*args)


def error_reply(exc: PododError) -> Reply:
    return Reply(ok=False, message=exc.message, code=exc.code, exit_code=exc.exit_code)


class CommandBus:
    def __init__(self, runtime: Runtime, audit: AuditLog) -> None:
        self.runtime = runtime
        self.audit = audit
        self.plans = PlanBook(ttl=runtime.config.commands.plan_ttl)
        self.inflight: set[asyncio.Task[object]] = set()

    @property
    def commands(self) -> dict[str, object]:
        return self.runtime.registry.commands  # type: ignore[return-value]

    async def execute(self, request: Request, progress: Progress = _no_progress) -> Reply:
        """Run one request from any frontend; never raises for a user's mistake."""
        task = asyncio.current_task()
        if task is not None:
            self.inflight.add(task)
        try:
            return await self._execute(request, progress)
        finally:
            if task is not None:
                self.inflight.discard(task)

    async def _execute(self, request: Request, progress: Progress) -> Reply:
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
                reply = Reply(message=grammar.command_help(spec), data=grammar.help_data(spec))
                await self._audit(request, command, audit_args, reply, started, None)
                return reply
            audit_args = grammar.redact(spec, parsed.params)
            authorize(request.actor, spec)
            if request.execute_real and not spec.mutating:
                request.execute_real = False  # nothing to make real; keep the audit honest
            if spec.reads_stdin is False and request.stdin is not None:
                request.stdin = None
            if request.execute_real and spec.mutating:
                await self._intent(request, command, audit_args)
            ctx = CommandContext(request=request, spec=spec, runtime=self.runtime,
                                 progress=progress)
            async with asyncio.timeout(self.runtime.config.commands.timeout):
                reply = await self._run(ctx, parsed.params)
        except grammar.ParseError as exc:
            reply = error_reply(exc)
            audit_message = exc.audit_message
        except PododError as exc:
            reply = error_reply(exc)
        except TimeoutError:
            reply = Reply(ok=False, code="timeout", exit_code=1,
                          message=f"{command} did not finish within "
                                  f"{int(self.runtime.config.commands.timeout)} s; "
                                  "nothing was committed")
        except asyncio.CancelledError:
            reply = Reply(ok=False, code="cancelled", exit_code=1,
                          message=f"{command} was cancelled because podod is stopping; "
                                  "nothing was committed")
            await self._audit(request, command, audit_args, reply, started, ctx)
            raise
        except Exception:
            log.exception("command %s failed (request %s)", command, request.id)
            reply = Reply(ok=False, code="internal", exit_code=1,
                          message=f"{command} failed on an internal error; nothing was "
                                  f"committed (request {request.id} in the daemon's log)")
        await self._audit(request, command, audit_args, reply, started, ctx,
                          message=audit_message)
        return reply

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
        elif spec.mutating and ctx.request.plan is not None and not ctx.sandbox:
            refused = await self._check_plan_first(ctx, params)
            if refused is not None:
                return refused
        try:
            reply = await spec.handler(ctx, **params)
            if unit is not None:
                ctx.changes.extend(unit.changes())
                if ctx.sandbox or not reply.ok:
                    await unit.rollback()
                else:
                    if ctx.request.plan is not None:  # a confirmation: exactly the plan
                        ctx.request.plan.check(ctx.all_changes(reply))
                    ctx.backup_id = await unit.commit(ctx)
        except BaseException:
            if unit is not None:
                await asyncio.shield(unit.rollback())
            raise
        if not reply.ok:
            return reply
        if spec.mutating:
            reply.sandbox = ctx.sandbox
            reply.changes = ctx.all_changes(reply)
            reply.backup_id = reply.backup_id or ctx.backup_id
            if ctx.sandbox:
                reply.plan_id = self.plans.issue(ctx.actor, list(ctx.request.argv),
                                                 ctx.request.stdin, reply.changes)
            else:
                for action in ctx.after_actions:
                    try:
                        await action.run()
                        reply.notes.append(f"after: {action.description}: done")
                    except Exception as exc:  # the change is committed; say what is left
                        log.warning("after-action %s failed: %s", action.description, exc)
                        reply.notes.append(f"after: {action.description}: FAILED ({exc})")
        return reply

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
                       execute_real=True, stdin=plan.stdin, plan=plan)
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


__all__ = ["CommandBus", "UsageError", "error_reply"]
