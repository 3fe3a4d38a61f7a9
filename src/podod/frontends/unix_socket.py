"""The local control socket: newline-delimited JSON, the caller identified by SO_PEERCRED.

Protocol (one JSON object per line, both ways)::

    → {"argv": ["user", "list"], "execute_real": false, "stdin": null}
    ← {"type": "progress", "message": "..."}          (zero or more, for long operations)
    ← {"type": "reply", "ok": true, "message": "...", ...}

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
import pwd
import socket
import struct
from pathlib import Path
from typing import Any

from podod.bus.context import Actor, Reply, Request
from podod.bus.paging import INLINE_ROWS
from podod.config import AccessSettings, SocketSettings
from podod.errors import ConfigError, Unauthenticated
from podod.runtime import Runtime

log = logging.getLogger(__name__)

_PEERCRED = struct.Struct("3i")


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def actor_for_uid(uid: int, access: AccessSettings) -> Actor:
    """root, and the user the daemon runs as, are admin; others as ``access.unix_users``."""
    name = user_name(uid)
    if uid in (0, os.geteuid()):
        return Actor(f"unix:{name}", "admin")
    grant = access.unix_users.get(name) or access.unix_users.get(str(uid))
    if grant is None:
        raise Unauthenticated(
            f"the local user {name} may not use podod; an administrator can allow it under "
            f"access.unix_users in podod.yaml")
    return Actor(f"unix:{name}", grant.role, tuple(grant.domains))


def peer_uid(sock: socket.socket) -> int:
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _pid, uid, _gid = _PEERCRED.unpack(data)
    return int(uid)


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, default=str, ensure_ascii=False).encode("utf-8", "replace") + b"\n"


def _bad(message: str, code: str = "bad-request") -> dict[str, Any]:
    return {"type": "reply", **Reply(ok=False, message=message, code=code,
                                     exit_code=2).to_dict()}


class UnixSocketFrontend:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings: SocketSettings = runtime.config.socket
        self.path = Path(self.settings.path)
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()  # handlers running a request right now
        self._stopping = False

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
            with contextlib.suppress(Exception):
                await writer.wait_closed()

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
        try:
            actor = actor_for_uid(uid, self.runtime.config.access)
        except Unauthenticated as exc:
            # Read the request before refusing it: closing first would make the client's
            # write fail with a broken pipe instead of showing it this sentence.
            line = b""
            with contextlib.suppress(Exception):
                line = await asyncio.wait_for(reader.readline(), 5.0)
            parsed = self._request(line, Actor(f"unix:{user_name(uid)}", "viewer"))
            argv = parsed.argv if isinstance(parsed, Request) else []
            bus = self.runtime.bus
            assert bus is not None
            reply = await bus.refuse(f"unix:{user_name(uid)}", "socket", argv, exc)
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
            # Every request under the grants in force now: a reload (SIGHUP) that removed or
            # changed this user's grant applies to an open connection's next request too.
            try:
                request.actor = actor = actor_for_uid(uid, self.runtime.config.access)
            except Unauthenticated as exc:
                bus = self.runtime.bus
                assert bus is not None
                reply = await bus.refuse(f"unix:{user_name(uid)}", "socket", request.argv, exc)
                await self._send(writer, {"type": "reply", **reply.to_dict()})
                return

            async def progress(message: str) -> None:
                await self._send(writer, {"type": "progress", "message": message})

            bus = self.runtime.bus
            assert bus is not None
            self._busy.add(task)
            try:
                reply = await bus.execute(request, progress)
            except asyncio.CancelledError:
                # Stopping: say so instead of just closing (the bus rolled back and audited).
                with contextlib.suppress(Exception):
                    writer.write(_encode(_bad(
                        "the request was cancelled because podod is stopping; nothing was "
                        "committed", "cancelled") | {"exit_code": 1}))
                raise
            finally:
                self._busy.discard(task)
            await self._reply(writer, reply)

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
        return Request(argv=argv, actor=actor, origin="socket",
                       execute_real=obj.get("execute_real") is True, stdin=stdin)
