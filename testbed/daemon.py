"""Run ``podod run`` as a real subprocess and talk to it the way a user does."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from testbed import schemas

REPO = Path(__file__).resolve().parents[1]


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def base_config(root: Path, **sections: Any) -> dict[str, Any]:
    """A loopback-only config under ``root`` with no plugins from outside the test."""
    config: dict[str, Any] = {
        "state_dir": str(root / "state"),
        "log": {"level": "debug"},
        "socket": {"path": str(root / "podod.sock")},
        "plugins": {"dirs": [], "entry_points": False},
        "metrics": {"enabled": False},
        "monitor": {"enabled": False},
        "alerts": {"enabled": False},
    }
    config.update(sections)
    return config


class DaemonProcess:
    def __init__(self, config_path: Path, *, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        data = yaml.safe_load(config_path.read_text()) or {}
        sock = (data.get("socket") or {}).get("path", "/run/podod/podod.sock")
        self.socket_path = (config_path.parent / sock) if not os.path.isabs(sock) else Path(sock)
        self.log_path = config_path.parent / "podod.log"
        self.env = {**os.environ, **(env or {})}
        # The daemon needs no testbed, but a test plugin it loads may (tests/plugins/feeder.py
        # uses testbed.fleet): the checkout's top folder goes on its path, wherever pytest runs.
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), self.env.get("PYTHONPATH", "")) if p)
        self.proc: subprocess.Popen[bytes] | None = None
        self._schemas: schemas.ReplySchemas | None = None  # read on the first checked reply

    def start(self, timeout: float = 15.0) -> DaemonProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "podod.cli", "run", "-c", str(self.config_path)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=self.env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"podod exited with {self.proc.returncode}:\n{self.log()}")
            if self.socket_path.exists():
                try:
                    self.request(["status"])
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"podod did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def request(self, argv: list[str], *, execute_real: bool = False,
                stdin: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """One request over the socket; returns the final reply (progress dropped). With
        ``PODOD_CHECK_REPLY_SCHEMAS=1`` the reply is checked against its declared schema."""
        return self.checked(argv, self._request(argv, execute_real=execute_real, stdin=stdin,
                                                timeout=timeout))

    def checked(self, argv: list[str], reply: dict[str, Any]) -> dict[str, Any]:
        """``reply`` to ``argv``, after checking it against the command's reply schema (when
        switched on, see :mod:`testbed.schemas`)."""
        if schemas.enabled() and isinstance(reply, dict) and "ok" in reply:
            if self._schemas is None:
                self._schemas = schemas.ReplySchemas.from_config(self.config_path)
            self._schemas.check(list(argv), reply)
        return reply

    def _request(self, argv: list[str], *, execute_real: bool = False,
                 stdin: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.socket_path))
            sock.sendall(json.dumps({"argv": argv, "execute_real": execute_real,
                                     "stdin": stdin}).encode() + b"\n")
            buf = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("podod closed the connection")
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    message: dict[str, Any] = json.loads(line)
                    if message.get("type") == "reply":
                        return message

    def request_as(self, uid: int, argv: list[str], *, execute_real: bool = False,
                   stdin: str | None = None) -> dict[str, Any]:
        """The same request from another local user: fork, drop to ``uid`` (no exec, so the
        interpreter need not be readable by that user) and ask over the socket."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.close(read_end)
                os.setgid(uid)
                os.setuid(uid)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.connect(str(self.socket_path))
                    sock.sendall(json.dumps({"argv": argv, "execute_real": execute_real,
                                             "stdin": stdin}).encode() + b"\n")
                    lines = sock.makefile("rb")
                    line = lines.readline()
                    while line and json.loads(line).get("type") == "progress":
                        line = lines.readline()  # a long command reports first
                    os.write(write_end, line)
            except BaseException as exc:  # report, never return into the test runner
                os.write(write_end, json.dumps({"ok": False, "code": "child",
                                                "message": repr(exc)}).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        reply: dict[str, Any] = json.loads(data)
        return self.checked(argv, reply) if reply.get("code") != "child" else reply

    def podoctl(self, *args: str, input: str | None = None, timeout: float = 60.0,
                json_output: bool = False) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "podod.podoctl", "--socket", str(self.socket_path)]
        if json_output:
            argv.append("--json")
        done = subprocess.run(argv + list(args), input=input if input is not None else "",
                              capture_output=True, text=True, timeout=timeout, env=self.env)
        if json_output and done.stdout.startswith("{"):
            try:
                reply = json.loads(done.stdout)
            except ValueError:
                reply = None  # not one reply (a test of podoctl's own output decides)
            if isinstance(reply, dict):
                self.checked([a for a in args if a not in ("--yes", "-y", "--json")], reply)
        return done

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
