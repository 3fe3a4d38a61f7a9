"""How podod runs a command on a server: the :class:`Runner` protocol, and the runner for
the machine podod itself runs on (``local: true``), which needs no SSH.

Every runner checks the allow-list first (``podod.servers.allowlist``), bounds the number of
concurrent commands per server, and gives every command a timeout. ``stream`` is for long
readers such as a log follower: it yields raw lines (bytes, newline included, so a caller
can count byte offsets exactly) until the command ends or the connection drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from podod.errors import PododError, Unavailable
from podod.servers.allowlist import AllowList


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class ServerUnreachable(Unavailable):
    """The server cannot be reached right now (not connected, connection dropped)."""

    code = "server-unreachable"


class CommandTimeout(PododError):
    code = "timeout"
    http_status = 504


class CommandFailed(PododError):
    """An allow-listed command ran and exited non-zero (raised only with ``check=True``)."""

    code = "command-failed"
    http_status = 502


@runtime_checkable
class Runner(Protocol):
    server: str
    local: bool

    async def run(self, argv: Sequence[str], *, timeout: float | None = None,
                  input: bytes | None = None, check: bool = False) -> CommandResult:
        """Run an allow-listed command and collect its output."""
        ...

    async def run_script(self, name: str, *, timeout: float | None = None,
                         check: bool = False) -> CommandResult:
        """Run an allow-listed fixed script by name (``sh -c TEXT``)."""
        ...

    def stream(self, argv: Sequence[str]) -> AsyncIterator[bytes]:
        """Yield the raw output lines of a long-running allow-listed command."""
        ...


def failed(result: CommandResult, server: str) -> CommandFailed:
    detail = (result.stderr or result.stdout).strip().splitlines()
    reason = detail[-1] if detail else f"exit status {result.exit_status}"
    return CommandFailed(f"'{' '.join(result.argv)}' failed on {server}: {reason}")


class LocalRunner:
    """Runs allow-listed commands on this machine, as podod's own user."""

    local = True

    def __init__(self, server: str, allowlist: AllowList, *, max_commands: int = 4,
                 timeout: float = 30.0) -> None:
        self.server = server
        self.allowlist = allowlist
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max_commands)

    async def run(self, argv: Sequence[str], *, timeout: float | None = None,
                  input: bytes | None = None, check: bool = False) -> CommandResult:
        self.allowlist.check(argv)
        return await self._exec(tuple(argv), timeout, input, check)

    async def run_script(self, name: str, *, timeout: float | None = None,
                         check: bool = False) -> CommandResult:
        script = self.allowlist.get_script(name)
        return await self._exec(("sh", "-c", script.text), timeout, None, check,
                                shown=("script", name))

    async def _exec(self, argv: tuple[str, ...], timeout: float | None, input: bytes | None,
                    check: bool, shown: tuple[str, ...] | None = None) -> CommandResult:
        limit = timeout if timeout is not None else self.timeout
        async with self._slots:
            started = time.monotonic()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.PIPE if input is not None
                    else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            except FileNotFoundError:
                result = CommandResult(shown or argv, 127, "", f"{argv[0]}: command not found",
                                       time.monotonic() - started)
                if check:
                    raise failed(result, self.server) from None
                return result
            try:
                out, err = await asyncio.wait_for(proc.communicate(input), limit)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise CommandTimeout(f"'{' '.join(shown or argv)}' on {self.server} did not "
                                     f"finish within {limit:g} s") from None
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
        result = CommandResult(shown or argv, proc.returncode or 0,
                               out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                               time.monotonic() - started)
        if check and not result.ok:
            raise failed(result, self.server)
        return result

    async def stream(self, argv: Sequence[str]) -> AsyncIterator[bytes]:
        self.allowlist.check(argv)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, limit=1 << 20)
        assert proc.stdout is not None
        try:
            while True:
                line = await proc.stdout.readline()
                if not line:
                    break
                yield line
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()
