"""The :class:`~podod.servers.runner.Runner` for a server reached over SSH.

The allow-list is checked first; the argv is then quoted with :func:`shlex.join` for the
remote user's shell (so an argument is always one word, whatever it contains), and a fixed
script runs as ``sh -c 'TEXT'``. Commands share the connection's slots (``max_commands``)
and each has a timeout (the slot wait included). ``stream`` does not take a slot: a log
follower holds its channel for hours and must not starve the collectors.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import asyncssh

from podod.servers.allowlist import AllowList
from podod.servers.runner import CommandResult, CommandTimeout, ServerUnreachable, failed

if TYPE_CHECKING:
    from podod.servers.connection import ServerConnection

# Errors that mean the connection (or the channel we asked for) is gone, not the command.
CONNECTION_ERRORS = (asyncssh.Error, OSError, EOFError)


def _signal_status(proc: asyncssh.SSHClientProcess[bytes]) -> int:
    """An exit status like a shell's: 128 + the signal number, 255 when there is neither."""
    status = proc.exit_status
    if status is not None and status >= 0:
        return status
    sig = proc.exit_signal
    if sig:
        number = getattr(signal, "SIG" + sig[0], None)
        if number is not None:
            return 128 + int(number)
    return 255


class SSHRunner:
    """Runs allow-listed commands on one server over its (current) SSH connection."""

    local = False

    def __init__(self, connection: ServerConnection, allowlist: AllowList) -> None:
        self.connection = connection
        self.allowlist = allowlist
        self.server = connection.config.name

    @property
    def timeout(self) -> float:
        return self.connection.config.command_timeout

    async def run(self, argv: Sequence[str], *, timeout: float | None = None,
                  input: bytes | None = None, check: bool = False) -> CommandResult:
        self.allowlist.check(argv)
        return await self._exec(shlex.join(argv), tuple(argv), timeout, input, check)

    async def run_script(self, name: str, *, timeout: float | None = None,
                         check: bool = False) -> CommandResult:
        script = self.allowlist.get_script(name)
        return await self._exec(shlex.join(["sh", "-c", script.text]), ("script", name),
                                timeout, None, check)

    async def _exec(self, command: str, shown: tuple[str, ...], timeout: float | None,
                    input: bytes | None, check: bool) -> CommandResult:
        limit = timeout if timeout is not None else self.timeout
        started = time.monotonic()
        proc: asyncssh.SSHClientProcess[bytes] | None = None
        try:
            async with asyncio.timeout(limit):
                async with self.connection.slots:
                    conn = self.connection.require()
                    self.connection.running += 1
                    try:
                        proc = await conn.create_process(command, encoding=None)
                        out, err = await proc.communicate(input)
                        await proc.wait_closed()
                    finally:
                        self.connection.running -= 1
        except TimeoutError:
            if proc is not None:
                proc.close()
            raise CommandTimeout(f"'{' '.join(shown)}' on {self.server} did not finish "
                                 f"within {limit:g} s") from None
        except asyncio.CancelledError:
            if proc is not None:
                proc.close()
            raise
        except ServerUnreachable:
            raise
        except CONNECTION_ERRORS as exc:
            if proc is not None:
                proc.close()
            raise self.connection.dropped_while(" ".join(shown), exc) from None
        if proc.exit_status is None and proc.exit_signal is None:
            # The channel closed without an exit status: the connection went away under it.
            raise self.connection.dropped_while(" ".join(shown), None)
        result = CommandResult(shown, _signal_status(proc),
                               (out or b"").decode("utf-8", "replace"),
                               (err or b"").decode("utf-8", "replace"),
                               time.monotonic() - started)
        if check and not result.ok:
            raise failed(result, self.server)
        return result

    async def stream(self, argv: Sequence[str]) -> AsyncIterator[bytes]:
        """Raw output lines of a long-running command; raises :class:`ServerUnreachable`
        when the connection drops (the caller resumes from its saved position later)."""
        self.allowlist.check(argv)
        shown = " ".join(argv)
        conn = self.connection.require()
        try:
            proc = await conn.create_process(shlex.join(argv), encoding=None,
                                             stdin=asyncssh.DEVNULL)
        except CONNECTION_ERRORS as exc:
            raise self.connection.dropped_while(shown, exc) from None
        try:
            while True:
                try:
                    line = await proc.stdout.readline()
                except CONNECTION_ERRORS as exc:
                    raise self.connection.dropped_while(shown, exc) from None
                if not line:
                    break
                yield line
            with contextlib.suppress(*CONNECTION_ERRORS):
                await asyncio.wait_for(proc.wait_closed(), 5)
            if proc.exit_status is None and proc.exit_signal is None:
                # EOF without an exit status: the connection went away under the command.
                raise self.connection.dropped_while(shown, None)
        finally:
            if not proc.is_closing():
                proc.close()
