"""A private SOGo 5 on 127.0.0.1 whose SQL user source is the ``sogo_users`` view, with its
own memcached.

/etc/sogo stays untouched: ``GNUSTEP_CONFIG_FILE`` points at a copy of GNUstep.conf whose
user-defaults folder is under ``root`` and holds ``sogod.plist`` (those defaults override
/etc/sogo/sogo.conf). sogod runs as the ``sogo`` user in the foreground, stdio in a file; it
is stopped by its pid (TERM, then KILL for it and its workers: a clean SOGo stop takes
12-20 s). The user source is rendered by :mod:`podod.mail.serverconfig`, the text
config/sogo ships.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from podod.mail.serverconfig import SqlLogin, sogo_sieve_defaults, sogo_user_source
from testbed.ports import free_port
from testbed.postgres import let_others_traverse
from testbed.process import descendants, kill_pids, stop_process, wait_pids

GNUSTEP_CONF = Path("/etc/GNUstep/GNUstep.conf")


class Memcached:
    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Memcached:
        self.root.mkdir(parents=True, exist_ok=True)
        user = ["-u", "memcache"] if os.geteuid() == 0 else []
        with open(self.root / "memcached.out", "ab") as out:
            self.proc = subprocess.Popen(
                ["memcached", "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "16",
                 *user], stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "memcached")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, timeout=5)
            self.proc = None


class SOGo:
    def __init__(self, root: Path, *, user_source: SqlLogin, profile_db: SqlLogin,
                 imap_port: int, smtp_port: int, scheme: str = "SHA512-CRYPT",
                 port: int | None = None, sieve_port: int | None = None,
                 extra_defaults: str = "") -> None:
        """``sieve_port``: Dovecot's ManageSieve, where SOGo writes the users' Sieve scripts
        (vacation and forwarding switched on); without it SOGo has no Sieve server."""
        self.root = Path(root)
        self.sieve_port = sieve_port
        self.extra_defaults = extra_defaults  # more "Key = value;" lines for sogod.plist
        self.user_source = user_source
        self.profile_db = profile_db
        self.imap_port = imap_port
        self.smtp_port = smtp_port
        self.scheme = scheme
        self.port = port or free_port()
        self.defaults_dir = self.root / "defaults"
        self.log_path = self.root / "sogo.log"
        self.memcached = Memcached(self.root / "memcached")
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/SOGo"

    def write_config(self) -> dict[str, str]:
        self.defaults_dir.mkdir(parents=True, exist_ok=True)
        let_others_traverse(self.defaults_dir)
        profile = self.profile_db
        base = (f"postgresql://{profile.user}:{profile.password}@{profile.host}:"
                f"{profile.port}/{profile.dbname}")
        plist = f"""{{
  WOPort = "127.0.0.1:{self.port}";
  WONoDetach = YES;
  WOWorkersCount = 1;
  WOLogFile = "{self.log_path}";
  WOPidFile = "{self.root / 'sogo.pid'}";
  SOGoProfileURL = "{base}/sogo_user_profile";
  OCSFolderInfoURL = "{base}/sogo_folder_info";
  OCSSessionsFolderURL = "{base}/sogo_sessions_folder";
  OCSEMailAlarmsFolderURL = "{base}/sogo_alarms_folder";
  SOGoIMAPServer = "imap://127.0.0.1:{self.imap_port}";
  SOGoSMTPServer = "smtp://127.0.0.1:{self.smtp_port}";
  {self._sieve()}
  {self.extra_defaults}
  SOGoMailingMechanism = smtp;
  SOGoMemcachedHost = "127.0.0.1:{self.memcached.port}";
  SOGoPasswordChangeEnabled = YES;
  SOGoTimeZone = UTC;
  SOGoLanguage = English;
  {sogo_user_source(self.user_source, self.scheme)}}}
"""
        (self.defaults_dir / "sogod.plist").write_text(plist)
        gnustep = self.root / "GNUstep.conf"
        lines = [line for line in GNUSTEP_CONF.read_text().splitlines()
                 if not line.startswith("GNUSTEP_USER_DEFAULTS_DIR=")]
        lines.append(f"GNUSTEP_USER_DEFAULTS_DIR={self.defaults_dir}")
        gnustep.write_text("\n".join(lines) + "\n")
        if os.geteuid() == 0:
            for path in (self.root, self.defaults_dir, self.defaults_dir / "sogod.plist",
                         gnustep):
                shutil.chown(path, "sogo", "sogo")
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(home, "sogo", "sogo")
        return {"GNUSTEP_CONFIG_FILE": str(gnustep), "HOME": str(home),
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}

    def _sieve(self) -> str:
        if self.sieve_port is None:
            return 'SOGoSieveServer = "";'
        return sogo_sieve_defaults(f"sieve://127.0.0.1:{self.sieve_port}")

    @property
    def environment(self) -> dict[str, str]:
        """What sogo-tool needs to read this SOGo's defaults (``mail.sogo.environment``)."""
        return {"GNUSTEP_CONFIG_FILE": str(self.root / "GNUstep.conf")}

    def start(self, timeout: float = 20.0) -> SOGo:
        self.root.mkdir(parents=True, exist_ok=True)
        self.memcached.start()
        env = self.write_config()
        as_sogo: dict[str, Any] = {}
        if os.geteuid() == 0:  # sogod refuses to run as root
            entry = pwd.getpwnam("sogo")
            as_sogo = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        with open(self.root / "sogo.out", "ab") as out:
            self.proc = subprocess.Popen(["sogod"], stdout=out, stderr=out,
                                         stdin=subprocess.DEVNULL, env=env, cwd=self.root,
                                         **as_sogo)
        try:
            _wait_http(self.url, self.proc, timeout)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}: {self.output()}") from None
        return self

    def output(self) -> str:
        parts = []
        for path in (self.root / "sogo.out", self.log_path):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        self.stop_begin()
        self.stop_wait()

    def stop_begin(self) -> None:
        """TERM to sogod (its workers noted first); :meth:`stop_wait` finishes the job, so
        several test beds can stop side by side."""
        if self.proc is not None and not self._stopping:
            self._stopping = [self.proc.pid, *descendants(self.proc.pid)]
            self.proc.send_signal(signal.SIGTERM)

    def stop_wait(self) -> None:
        if self.proc is not None:
            pids = self._stopping or [self.proc.pid, *descendants(self.proc.pid)]
            if not wait_pids(pids, 0.5):  # a clean stop takes 12-20 s: not worth waiting
                kill_pids(pids)
            stop_process(self.proc, signal.SIGKILL, timeout=5)
            self.proc = None
            self._stopping = []
        self.memcached.stop()

    def session(self) -> SOGoSession:
        return SOGoSession(self.url)

    def __enter__(self) -> SOGo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SOGoSession:
    """A browser-like client: the login cookie and the XSRF token SOGo sets."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies))

    def post(self, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        for cookie in self.cookies:
            if cookie.name == "XSRF-TOKEN" and cookie.value:
                headers["X-XSRF-TOKEN"] = cookie.value
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                         headers=headers, method="POST")
        try:
            with self.opener.open(request, timeout=15) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())

    def login(self, user: str, password: str) -> int:
        """POST /SOGo/connect: 200 and a session cookie when SOGo accepts the login."""
        status, _ = self.post("/connect", {"userName": user, "password": password,
                                           "rememberLogin": 0})
        return status

    def change_password(self, user: str, old: str, new: str) -> tuple[int, dict[str, Any]]:
        """What SOGo's web UI posts; SOGo then runs UPDATE on the user source's view."""
        return self.post("/so/changePassword",
                         {"userName": user, "oldPassword": old, "newPassword": new})


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        return {"raw": data.decode(errors="replace")[:500]}
    return value if isinstance(value, dict) else {"value": value}


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Ready when a worker answers HTTP (the listening socket opens before that)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sogod exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/", timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("sogod is not answering HTTP")


def _wait_port(port: int, proc: subprocess.Popen[bytes], name: str,
               timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} is not answering on port {port}")
