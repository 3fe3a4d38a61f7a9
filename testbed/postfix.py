"""A private Postfix 3.x on 127.0.0.1 whose virtual maps query the mail database.

Its config folder, queue, data directory and log live under ``root``; the SMTP port comes
from :func:`free_port`; it delivers to Dovecot over LMTP. The pgsql map files are rendered by
:mod:`podod.mail.serverconfig` (the text config/postfix ships). After ``postfix check`` made
the queue, the master runs in the foreground (``master -d``) as our child and is stopped by
its pid.

Postfix commands sleep up to 2.4 s while main.cf is younger than about 2 s, so the config
files are backdated after writing.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import smtplib
import subprocess
import time
from pathlib import Path

from podod.mail.serverconfig import (
    POSTFIX_MAPS,
    POSTFIX_PARAMETERS,
    SqlLogin,
    postfix_main_cf,
    postfix_map,
)
from testbed.ports import free_port
from testbed.postgres import let_others_traverse
from testbed.process import ForegroundDaemon

# Only what a virtual-mailbox host on loopback needs; chroot off (the queue is a temp dir).
MASTER_CF = """\
{smtp}      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix(ForegroundDaemon):
    stop_timeout = 15.0

    def __init__(self, root: Path, login: SqlLogin, *, lmtp_port: int,
                 smtp_port: int | None = None) -> None:
        self.root = Path(root)
        self.login = login
        self.lmtp_port = lmtp_port
        self.smtp_port = smtp_port or free_port()
        self.config_dir = self.root / "etc"
        self.map_dir = self.config_dir / "pgsql"
        self.queue_dir = self.root / "queue"
        self.data_dir = self.root / "data"
        self.log_path = self.root / "postfix.log"

    def map_path(self, name: str) -> Path:
        return self.map_dir / name

    def write_config(self) -> None:
        self.map_dir.mkdir(parents=True, exist_ok=True)
        let_others_traverse(self.map_dir)
        for folder in (self.queue_dir, self.data_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # postfix-script creates the queue's own folders
            shutil.chown(self.data_dir, "postfix", "postfix")
        for name in POSTFIX_MAPS:
            path = self.map_path(name)
            path.write_text(postfix_map(name, self.login))
            os.chmod(path, 0o640)  # it holds a password: root:postfix as in production
            if os.geteuid() == 0:
                os.chown(path, 0, grp.getgrnam("postfix").gr_gid)
        main = f"""\
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
maillog_file = {self.log_path}
maillog_file_prefixes = {self.root}
myhostname = mx.podod.test
mydomain = podod.test
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps =
alias_database =
relayhost =
default_transport = error:outbound mail is off in the test bed
relay_transport = error:outbound mail is off in the test bed
smtp_dns_support_level = disabled
disable_dns_lookups = yes
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
virtual_transport = lmtp:inet:127.0.0.1:{self.lmtp_port}
smtputf8_enable = no
biff = no
""" + postfix_main_cf(self.map_dir, proxy=False)
        (self.config_dir / "main.cf").write_text(main)
        (self.config_dir / "master.cf").write_text(
            MASTER_CF.format(smtp=f"127.0.0.1:{self.smtp_port}"))
        old = time.time() - 60  # postfix sleeps while main.cf looks freshly edited
        for path in self.config_dir.rglob("*"):
            os.utime(path, (old, old))
        os.utime(self.config_dir, (old, old))

    def command(self, *argv: str, input: str | None = None
                ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*argv], capture_output=True, text=True, timeout=60,
                              input=input, env={**os.environ,
                                                "MAIL_CONFIG": str(self.config_dir)})

    def lookup(self, map_name: str, key: str) -> str | None:
        """``postmap -q KEY pgsql:FILE``: the value, or None when the key is not found."""
        result = self.command("postmap", "-c", str(self.config_dir), "-q", key,
                              f"pgsql:{self.map_path(map_name)}")
        if result.returncode == 1 and not result.stderr.strip():
            return None
        if result.returncode != 0:
            raise RuntimeError(f"postmap -q {key} {map_name} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def resolve(self, parameter: str, key: str) -> str | None:
        """What a main.cf parameter's maps answer for ``key``, the first map that knows it
        (Postfix searches them in order)."""
        for name in POSTFIX_PARAMETERS[parameter]:
            value = self.lookup(name, key)
            if value is not None:
                return value
        return None

    def start(self, timeout: float = 20.0) -> Postfix:
        self.write_config()
        check = self.command("postfix", "-c", str(self.config_dir), "check")
        if check.returncode != 0:
            raise RuntimeError(f"postfix check failed: {check.stderr.strip()}")
        daemons = self.command("postconf", "-c", str(self.config_dir), "-h",
                               "daemon_directory").stdout.strip()
        with open(self.root / "postfix.out", "ab") as out:  # master -d: stay our child
            self.proc = subprocess.Popen(
                [f"{daemons}/master", "-d", "-c", str(self.config_dir)], stdout=out,
                stderr=out, stdin=subprocess.DEVNULL,
                env={**os.environ, "MAIL_CONFIG": str(self.config_dir)})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postfix exited with {self.proc.returncode}: "
                                   f"{self.output()}")
            try:
                with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=2) as smtp:
                    smtp.noop()
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postfix is not answering on port {self.smtp_port}: "
                           f"{self.output()}")

    def output(self) -> str:
        parts = []
        for path in (self.root / "postfix.out", self.log_path):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(parts)

    def queue(self) -> list[dict[str, object]]:
        """``postqueue -j``: the messages still queued (deferred, held, active)."""
        result = self.command("postqueue", "-c", str(self.config_dir), "-j")
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def __enter__(self) -> Postfix:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

