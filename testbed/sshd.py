"""A real OpenSSH sshd on 127.0.0.1, for tests, benches and ``make demo``.

Everything lives under one folder: the sshd config, its host key, the client key podod logs
in with, the authorized_keys file, a known_hosts file that trusts the host key, the PID file
and the log. As root the server admits one dedicated unprivileged user (``podod-ssh``, shell
``/bin/sh``): a command then costs about 5 ms instead of the 100 ms bash spends on root's
``~/.bashrc``, and it is what production should use too. Not as root, it admits the user
running the tests.

``stop()`` ends the listening daemon AND its per-connection processes (OpenSSH leaves open
sessions running when only the listener dies), so a client really loses its connection.
``start()`` again reuses the same port; ``regenerate_host_key()`` gives the server a new
host key (the known_hosts file keeps the old one, so clients must refuse it); ``close()``
stops it and removes its public folder.

Files the login user must read (authorized_keys, and a test's mail log) live in
``public_dir``, a 0755 folder of its own under /tmp: NOT under pytest's temp tree, because
every pytest run on the machine resets /tmp/pytest-of-<user> to 0700, which would lock the
unprivileged user out in the middle of another run's tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from testbed.ports import free_port

TEST_USER = "podod-ssh"
SSHD = "/usr/sbin/sshd"


def _proc_state(pid: int) -> str | None:
    """The State: letter of a process, or None when it is gone (zombies are reaped slowly
    here, and ``kill -0`` sees them as alive)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("State:"):
                    return line.split()[1]
    except OSError:
        return None
    return None


def _alive(pid: int) -> bool:
    return _proc_state(pid) not in (None, "Z", "X")


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (sshd's per-connection monitors and their children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def ensure_test_user(name: str = TEST_USER) -> str:
    """Create the dedicated login user once per machine (as root): shell /bin/sh, home /,
    no password (``*``, which OpenSSH without PAM does not treat as a locked account), and
    in the groups a real podod SSH user has (``adm``, ``systemd-journal``) to read logs."""
    try:
        pwd.getpwnam(name)
        return name
    except KeyError:
        pass
    lock_path = Path("/run/lock/podod-testbed-user.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # engineers' test runs may race to create it
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
        groups = [g for g in ("adm", "systemd-journal") if _group_exists(g)]
        argv = ["useradd", "--system", "--shell", "/bin/sh", "--home-dir", "/",
                "--no-create-home", "--password", "*"]
        if groups:
            argv += ["--groups", ",".join(groups)]
        result = subprocess.run([*argv, name], capture_output=True, text=True)
        if result.returncode not in (0, 9):  # 9: it exists already
            raise RuntimeError(f"useradd {name} failed: {result.stderr.strip()}")
    return name


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _keygen(path: Path, comment: str) -> None:
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                    "-f", str(path)], check=True, capture_output=True)


class Sshd:
    """One sshd under ``root`` listening on 127.0.0.1:``port``."""

    def __init__(self, root: Path, port: int | None = None, *, user: str | None = None) -> None:
        if shutil.which("sshd") is None and not os.access(SSHD, os.X_OK):
            raise FileNotFoundError("sshd not found: install Debian's openssh-server")
        self.root = Path(root)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        if user is None:
            user = ensure_test_user() if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.user = user
        self.config_path = self.root / "sshd_config"
        self.host_key = self.root / "ssh_host_ed25519_key"
        self.client_key = self.root / "client_key"
        self.public_dir = Path(tempfile.mkdtemp(prefix="podod-sshd-"))
        os.chmod(self.public_dir, 0o755)
        self.authorized_keys = self.public_dir / "authorized_keys"
        self.known_hosts = self.root / "known_hosts"
        self.pid_file = self.root / "sshd.pid"
        self.log_path = self.root / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._prepared = False

    # -- set-up ------------------------------------------------------------------------------

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.host_key.exists():
            _keygen(self.host_key, "podod-testbed-host")
        if not self.client_key.exists():
            _keygen(self.client_key, "podod-testbed-client")
        # What docs/servers.md recommends for podod's key: no pty, agent or X11 forwarding,
        # only commands and local port forwards.
        self.authorized_keys.write_text(
            "restrict,port-forwarding " + Path(str(self.client_key) + ".pub").read_text())
        os.chmod(self.authorized_keys, 0o644)
        if not self.known_hosts.exists():
            self.trust_current_host_key()
        self.config_path.write_text(self._config())
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        self._prepared = True

    def _config(self) -> str:
        return "\n".join([
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"AllowUsers {self.user}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "AllowTcpForwarding yes",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "MaxStartups 1000",  # the fleet benchmark connects 200 names at once
            "MaxSessions 64",
            "LogLevel VERBOSE",
            "",
        ])

    def host_key_line(self) -> str:
        """The known_hosts line for the CURRENT host key: ``[127.0.0.1]:PORT type key``."""
        kind, key = Path(str(self.host_key) + ".pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {kind} {key}\n"

    def trust_current_host_key(self, path: Path | None = None) -> Path:
        """Write (replace) a known_hosts file that trusts the current host key."""
        path = path or self.known_hosts
        path.write_text(self.host_key_line())
        return path

    def regenerate_host_key(self) -> None:
        """A new host key, as after a reinstall (or an attacker); known_hosts is left alone.
        New connections see it at once (sshd re-reads its keys for every connection)."""
        _keygen(self.host_key, "podod-testbed-host-new")

    def fingerprint(self) -> str:
        out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f",
                              str(self.host_key) + ".pub"], capture_output=True, text=True,
                             check=True).stdout
        return out.split()[1]

    def public_file(self, name: str, content: bytes = b"") -> Path:
        """A file the login user can read (a mail log for a follower, say)."""
        path = self.public_dir / name
        path.write_bytes(content)
        os.chmod(path, 0o644)
        return path

    def server_entry(self, name: str, **overrides: Any) -> dict[str, Any]:
        """A ``servers:`` item of podod.yaml for this sshd (short timeouts for tests)."""
        entry: dict[str, Any] = {
            "name": name, "host": self.host, "port": self.port, "user": self.user,
            "key_file": str(self.client_key), "known_hosts": str(self.known_hosts),
            "connect_timeout": "5s", "keepalive": "2s", "reconnect_min": "0.2s",
            "reconnect_max": "2s",
        }
        entry.update(overrides)
        return entry

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Sshd:
        if not self._prepared:
            self.prepare()
        if self.running:
            return self
        self.pid_file.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-f", str(self.config_path), "-E", str(self.log_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}:\n"
                                   f"{self.log()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"SSH-"):
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"sshd did not listen on port {self.port}:\n{self.log()[-2000:]}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the daemon and every session it started (their clients lose the connection)."""
        if self.proc is None:
            return
        pid = self.proc.pid
        sessions = _descendants(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        for child in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(c) for c in sessions):
            time.sleep(0.02)
        self.proc = None

    def freeze_sessions(self) -> list[int]:
        """SIGSTOP the open sessions (not the listener): their clients hear nothing any more,
        as behind a dead link, while new connections are still accepted."""
        frozen = _descendants(self.pid) if self.pid else []
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        return frozen

    def thaw(self, pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def kill(self) -> None:
        """As abrupt as it gets: SIGKILL to the daemon and its sessions."""
        self.stop(signal.SIGKILL)

    def close(self) -> None:
        """Stop, and remove the public folder."""
        self.stop()
        shutil.rmtree(self.public_dir, ignore_errors=True)

    def restart(self) -> Sshd:
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
