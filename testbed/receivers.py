"""Things that receive notifications, on loopback, for tests and ``make demo``: an HTTP
webhook receiver and an SMTP server (aiosmtpd), each on a free port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from testbed.ports import free_port


class WebhookReceiver:
    """Collects every POST body (JSON decoded when it is JSON) with its headers.

    ``fail_next`` makes the next N requests answer 503, to exercise retries.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    if receiver.fail_next > 0:
                        receiver.fail_next -= 1
                        self.send_response(503)
                        self.end_headers()
                        return
                    try:
                        payload: Any = json.loads(body)
                    except ValueError:
                        payload = body.decode(errors="replace")
                    receiver.requests.append({"path": self.path, "body": payload,
                                              "headers": dict(self.headers.items())})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r["body"] for r in self.requests]

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 30.0
                 ) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            bodies = self.bodies()
            if predicate(bodies):
                return bodies
            time.sleep(0.05)
        raise TimeoutError(f"the webhook receiver did not get what was expected: "
                           f"{json.dumps(self.bodies())[:2000]}")

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) on loopback that keeps every message it accepts.

    With ``login=(user, password)`` it requires SMTP AUTH (PLAIN/LOGIN; without TLS, as this
    is loopback) and refuses other credentials.
    """

    def __init__(self, port: int | None = None, *,
                 login: tuple[str, str] | None = None) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.port = port or free_port()
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                receiver.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                receiver.messages.append(message_from_bytes(envelope.content))
                return "250 Message accepted for delivery"

        self.logins: list[str] = []
        options: dict[str, Any] = {}
        if login is not None:
            def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                             data: Any) -> AuthResult:
                if isinstance(data, LoginPassword):
                    user = data.login.decode()
                    receiver.logins.append(user)
                    ok = (user, data.password.decode()) == login
                    return AuthResult(success=ok, handled=False)
                return AuthResult(success=False, handled=False)

            options = {"authenticator": authenticate, "auth_required": True,
                       "auth_require_tls": False}
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                      **options)

    def start(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return list(self.messages)
            time.sleep(0.05)
        raise TimeoutError(f"the SMTP receiver got {len(self.messages)} messages, not {count}")

    def __enter__(self) -> SmtpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
