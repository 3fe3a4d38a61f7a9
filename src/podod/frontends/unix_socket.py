"""The local control socket: newline-delimited JSON, the caller identified by SO_PEERCRED.

Protocol (one JSON object per line, both ways)::

    → {"argv": ["user", "list"], "execute_real": false, "stdin": null, "stdin_offer": true}
    ← {"type": "stdin", "kind": "secret" | "data", "limit": N}   (only if the command
                                    declares input, none was sent, and the client offered)
    → {"stdin": "..."}                                (a line of at most N bytes)
    ← {"type": "progress", "message": "...", "done": 3, "total": 10}   (zero or more)
    ← {"type": "reply", "ok": true, "status": "ok", "message": "...", ...}

A client of before ``stdin_offer`` sends its input with the request (as a secret, within
``socket.max_request_bytes``) and reads ``progress`` messages' ``message`` only; both still
work. This frontend is a thin translation: who the peer is (``bus.identify``), its rate
limit (``bus.admit``), what input the command declares (``bus.stdin_wanted``) and the reply
all come from the bus.

A connection may carry several requests, one after the other; each is authorized under the
grants in force when it arrives (a reload applies to open connections). A malformed request
gets an error reply and the connection stays usable; an oversized one gets an error reply and
the connection is closed. Nothing a client sends can crash the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Any

from podod.bus.context import Actor, Reply, Request
from podod.bus.paging import INLINE_ROWS
from podod.config import SocketSettings
from podod.errors import ConfigError, RateLimited, Unauthenticated
from podod.runtime import Runtime

log = logging.getLogger(__name__)

_PEERCRED = struct.Struct("3i")
_PROGRESS_BACKLOG = 65_536  # bytes unsent to a slow client before progress is dropped
_JSON_INLINE = 1_048_576  # larger lines are decoded in a worker thread


class _TooLarge(Exception):
    pass


def peer_uid(sock: socket.socket) -> int:
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _pid, uid, _gid = _PEERCRED.unpack(data)
    return int(uid)


# The C encoder, without its check for reference cycles (a reply is a tree the daemon built;
# the check's bookkeeping for each of a listing's 60 000 dicts and lists cost 8 % of 80 ms).
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False, check_circular=False)


def _encode(obj: dict[str, Any]) -> bytes:
    return _ENCODER.encode(obj).encode("utf-8", "replace") + b"\n"


def _bad(message: str, code: str = "bad-request") -> dict[str, Any]:
    return {"type": "reply", **Reply(ok=False, message=message, code=code,
                                     exit_code=2, status="invalid").to_dict()}


async def _read_line(reader: asyncio.StreamReader, limit: int) -> bytes:
    """One line of at most ``limit`` bytes, even past the reader's own limit (declared data
    may be larger than a request); :class:`_TooLarge` as soon as it is longer."""
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            part = await reader.readuntil(b"\n")
            done = True
        except asyncio.LimitOverrunError as exc:
            part = await reader.readexactly(exc.consumed)
            done = False
        except asyncio.IncompleteReadError as exc:
            part = exc.partial
            done = True
        size += len(part)
        if size > limit:
            raise _TooLarge
        chunks.append(part)
        if done:
            return b"".join(chunks)


class UnixSocketFrontend:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings: SocketSettings = runtime.config.socket
        self.path = Path(self.settings.path)
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()  # handlers running a request right now
        self._stopping = False
        self._offers: set[str] = set()  # ids of requests whose client can send input

    async def ensure_free(self) -> None:
        """Refuse early, before anything else starts, when another podod serves the path."""
        if (self.path.exists() or self.path.is_symlink()) and await self._someone_listening():
            raise ConfigError(f"another podod is already listening on {self.path}")

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            await self.ensure_free()
            self.path.unlink()
        old_umask = os.umask(0o117)  # no window in which the socket is world-accessible
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=self.settings.max_request_bytes)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, self.settings.mode_bits)
        if self.settings.group:
            try:
                gid = grp.getgrnam(self.settings.group).gr_gid
            except KeyError:
                raise ConfigError(f"socket.group: there is no group '{self.settings.group}'")
            os.chown(self.path, -1, gid)
        log.info("listening on %s", self.path)

    async def _someone_listening(self) -> bool:
        try:
            _r, writer = await asyncio.open_unix_connection(str(self.path))
        except OSError:
            return False
        writer.close()
        return True

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting; connections waiting for their next request are closed at once,
        requests in flight get ``grace`` seconds to finish, then are cancelled."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        idle = [t for t in self._handlers if not t.done() and t not in self._busy]
        for task in idle:
            task.cancel()
        await asyncio.gather(*idle, return_exceptions=True)
        pending = [t for t in self._handlers if not t.done()]
        if pending:
            log.info("waiting up to %.0f s for %d request(s) in flight", grace, len(pending))
            _done, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        if self._server is None:
            return  # never listened: the path may be another podod's live socket
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._conversation(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the daemon is stopping; this task is the connection's own, nothing awaits it
        except Exception:
            log.exception("socket connection failed")
        finally:
            self._handlers.discard(task)
            writer.close()
            try:  # a client that stopped reading would hold the close (and a stop) for ever
                await asyncio.wait_for(writer.wait_closed(), 5.0)
            except Exception:
                writer.transport.abort()

    async def _send(self, writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
        writer.write(_encode(obj))
        await writer.drain()

    async def _reply(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        """A reply; a large one (a listing with --all) is encoded in a worker thread, so
        its few hundred ms do not hold every other request."""
        obj = {"type": "reply", **reply.to_dict()}
        rows = len(reply.table.rows) if reply.table is not None else 0
        if isinstance(reply.data, list):
            rows = max(rows, len(reply.data))
        writer.write(await asyncio.to_thread(_encode, obj) if rows > INLINE_ROWS
                     else _encode(obj))
        await writer.drain()

    async def _conversation(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock)
        bus = self.runtime.bus
        assert bus is not None
        try:
            actor = bus.identify("unix", uid)
        except Unauthenticated as exc:
            # Read the request before refusing it: closing first would make the client's
            # write fail with a broken pipe instead of showing it this sentence.
            line = b""
            with contextlib.suppress(Exception):
                line = await asyncio.wait_for(reader.readline(), 5.0)
            parsed = self._request(line, Actor(bus.refused_name("unix", uid), "viewer"))
            argv = parsed.argv if isinstance(parsed, Request) else []
            if isinstance(parsed, Request):
                self._offers.discard(parsed.id)
            reply = await bus.refuse(bus.refused_name("unix", uid), "socket", argv, exc)
            await self._send(writer, {"type": "reply", **reply.to_dict()})
            return
        limit = self.settings.max_request_bytes
        task = asyncio.current_task()
        assert task is not None
        while not self._stopping:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial.strip():
                    return
                line = exc.partial
            except (asyncio.LimitOverrunError, ValueError):
                await self._send(writer, _bad(f"request larger than {limit} bytes; refused"))
                return
            if len(line) > limit:
                await self._send(writer, _bad(f"request larger than {limit} bytes; refused"))
                return
            if not line.strip():
                continue
            request = self._request(line, actor)
            if isinstance(request, dict):
                await self._send(writer, request)
                continue
            offered = request.id in self._offers
            self._offers.discard(request.id)
            # Every request under the grants in force now: a reload (SIGHUP) that removed or
            # changed this user's grant applies to an open connection's next request too.
            try:
                request.actor = actor = bus.identify("unix", uid)
                bus.admit(actor)
            except (Unauthenticated, RateLimited) as exc:
                reply = await bus.refuse(actor.name if isinstance(exc, RateLimited)
                                         else bus.refused_name("unix", uid),
                                         "socket", request.argv, exc)
                await self._send(writer, {"type": "reply", **reply.to_dict()})
                if isinstance(exc, Unauthenticated):
                    return
                continue
            if request.stdin is None and offered:
                refused = await self._ask_stdin(reader, writer, request)
                if refused is not None:
                    await self._send(writer, refused)
                    if refused.get("code") == "too-large":
                        return
                    continue

            async def progress(message: str, done: int | None = None,
                               total: int | None = None) -> None:
                # Never waits for the client: a slow reader loses progress messages, and a
                # handler inside a database transaction is never held by one.
                if writer.transport.get_write_buffer_size() > _PROGRESS_BACKLOG:
                    return
                update: dict[str, Any] = {"type": "progress", "message": message}
                if done is not None or total is not None:  # as before when there is no count
                    update |= {"done": done, "total": total}
                writer.write(_encode(update))

            self._busy.add(task)
            try:
                reply = await bus.execute(request, progress)
            except asyncio.CancelledError:
                # Stopping: say so instead of just closing; the bus says what was committed.
                with contextlib.suppress(Exception):
                    if request.interrupted is not None:
                        writer.write(_encode({"type": "reply",
                                              **request.interrupted.to_dict()}))
                    else:
                        writer.write(_encode(_bad(
                            "the request was cancelled because podod is stopping; nothing "
                            "was committed", "cancelled") | {"exit_code": 1,
                                                             "status": "unavailable"}))
                raise
            finally:
                self._busy.discard(task)
            await self._reply(writer, reply)

    async def _ask_stdin(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         request: Request) -> dict[str, Any] | None:
        """Ask the client for the input the command declares, and read it (a secret within
        ``max_request_bytes``, data within ``max_data_bytes``). An error reply, or None."""
        bus = self.runtime.bus
        assert bus is not None
        kind = bus.stdin_wanted(request.argv)
        if kind is None:
            return None
        limit = (self.settings.max_data_bytes if kind == "data"
                 else self.settings.max_request_bytes)
        await self._send(writer, {"type": "stdin", "kind": kind, "limit": limit})
        try:
            line = await _read_line(reader, limit)
        except _TooLarge:
            what = "input" if kind == "data" else "request"
            return _bad(f"{what} larger than {limit} bytes; refused", "too-large")
        try:
            obj = (await asyncio.to_thread(json.loads, line) if len(line) > _JSON_INLINE
                   else json.loads(line))
        except (ValueError, RecursionError):
            return _bad("the input is not a JSON object with a 'stdin' string")
        stdin = obj.get("stdin") if isinstance(obj, dict) else None
        if not isinstance(stdin, str):
            return _bad("the input is not a JSON object with a 'stdin' string")
        try:
            stdin.encode("utf-8")
        except UnicodeEncodeError:
            return _bad("the input holds text that is not valid Unicode")
        request.stdin = stdin
        return None

    def _request(self, line: bytes, actor: Actor) -> Request | dict[str, Any]:
        try:
            obj = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _bad("the request is not valid JSON")
        except RecursionError:
            return _bad("the request is nested too deeply")
        except ValueError:  # e.g. an integer of more than 4300 digits
            return _bad("the request holds a value that cannot be read")
        if not isinstance(obj, dict):
            return _bad("the request must be a JSON object with an 'argv' list")
        argv = obj.get("argv")
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            return _bad("the request needs 'argv', a list of strings")
        stdin = obj.get("stdin")
        if stdin is not None and not isinstance(stdin, str):
            return _bad("'stdin' must be a string")
        try:
            for text in (*argv, stdin or ""):
                text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate such as "\ud800"
            return _bad("the request holds text that is not valid Unicode")
        request = Request(argv=argv, actor=actor, origin="socket",
                          execute_real=obj.get("execute_real") is True, stdin=stdin)
        if obj.get("stdin_offer") is True:  # the client reads input when asked
            self._offers.add(request.id)
        return request
