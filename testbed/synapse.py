"""A real Matrix homeserver (Synapse, from PyPI, in its own virtualenv) on loopback.

``make synapse`` installs it into ``.cache/synapse`` (or ``$PODOD_SYNAPSE_VENV``); Debian has
no package. The config is generated, then made fit for tests: one client listener on
127.0.0.1, no key servers, rate limits raised, the log in the temp folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from testbed.ports import free_port

REPO = Path(__file__).resolve().parents[1]
_FAST = {"per_second": 1000, "burst_count": 1000}


def synapse_venv() -> Path:
    return Path(os.environ.get("PODOD_SYNAPSE_VENV", REPO / ".cache" / "synapse"))


def available() -> bool:
    return (synapse_venv() / "bin" / "python").is_file() and \
        (synapse_venv() / ".installed").is_file()


class Synapse:
    def __init__(self, root: Path, server_name: str = "localhost") -> None:
        self.root = root
        self.server_name = server_name
        self.port = free_port()
        self.python = synapse_venv() / "bin" / "python"
        self.config_path = root / "homeserver.yaml"
        self.log_path = root / "synapse.out"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _configure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(self.python), "-m", "synapse.app.homeserver", "--server-name",
                        self.server_name, "--config-path", str(self.config_path),
                        "--generate-config", "--report-stats=no", "--data-directory",
                        str(self.root)], check=True, capture_output=True, cwd=self.root)
        config = yaml.safe_load(self.config_path.read_text())
        config["listeners"] = [{"port": self.port, "bind_addresses": ["127.0.0.1"],
                                "type": "http", "tls": False, "x_forwarded": False,
                                "resources": [{"names": ["client"], "compress": False}]}]
        config["trusted_key_servers"] = []
        config["suppress_key_server_warning"] = True
        config["enable_registration"] = False
        config["rc_message"] = _FAST
        config["rc_registration"] = _FAST
        config["rc_login"] = {"address": _FAST, "account": _FAST, "failed_attempts": _FAST}
        config["rc_joins"] = {"local": _FAST, "remote": _FAST}
        config["rc_joins_per_room"] = _FAST
        config["rc_invites"] = {"per_room": _FAST, "per_user": _FAST, "per_issuer": _FAST}
        config["report_stats"] = False
        self.config_path.write_text(yaml.safe_dump(config))
        log_config = Path(config["log_config"])
        text = log_config.read_text()
        lines = []
        for line in text.splitlines():
            if line.strip().startswith("filename:"):
                indent = line[: len(line) - len(line.lstrip())]
                line = f"{indent}filename: {self.root / 'homeserver.log'}"
            lines.append(line)
        log_config.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 60.0) -> Synapse:
        self._configure()
        return self._launch(timeout)

    def restart(self, timeout: float = 60.0) -> Synapse:
        """Stop and start again on the same port, data and config."""
        self.stop()
        return self._launch(timeout)

    def _launch(self, timeout: float) -> Synapse:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [str(self.python), "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=self.root,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"synapse exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                self.request("GET", "/_matrix/client/versions")
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("synapse did not answer on /_matrix/client/versions")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def request(self, method: str, path: str, body: Any = None, token: str | None = None
                ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: HTTP {exc.code} {exc.read()[:300]!r}") \
                from None

    def register(self, user: str, password: str, *, admin: bool = False) -> str:
        """Create a user with the shared secret; returns its access token."""
        tool = self.python.parent / "register_new_matrix_user"
        subprocess.run([str(tool), "-c", str(self.config_path), "-u", user, "-p", password,
                        "--admin" if admin else "--no-admin", self.url],
                       check=True, capture_output=True)
        return self.login(user, password)

    def login(self, user: str, password: str) -> str:
        return self.login_device(user, password)[0]

    def login_device(self, user: str, password: str) -> tuple[str, str]:
        """A new login (a new device): its access token and device id."""
        reply = self.request("POST", "/_matrix/client/v3/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
            "password": password})
        return str(reply["access_token"]), str(reply["device_id"])

    def user_id(self, user: str) -> str:
        return f"@{user}:{self.server_name}"

    def create_room(self, token: str, invite: list[str]) -> str:
        reply = self.request("POST", "/_matrix/client/v3/createRoom",
                             {"preset": "private_chat", "invite": invite,
                              "name": "podod alerts"}, token)
        return str(reply["room_id"])

    def messages(self, token: str, room_id: str, limit: int = 50) -> list[dict[str, Any]]:
        room = urllib.parse.quote(room_id)
        reply = self.request("GET", f"/_matrix/client/v3/rooms/{room}/messages?dir=b&"
                                    f"limit={limit}", token=token)
        return [e for e in reply.get("chunk", []) if e.get("type") == "m.room.message"]

    def __enter__(self) -> Synapse:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
