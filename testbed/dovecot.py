"""A private Dovecot 2.3 on 127.0.0.1 with SQL passdb/userdb on the mail database.

Everything lives under ``root`` (config, sockets, state, log, maildirs); the ports come from
:func:`free_port`. Dovecot runs in the foreground (``-F``) as our child, its stdio in a file,
and is stopped by its pid. The SQL config is rendered by :mod:`podod.mail.serverconfig`, the
same text the documentation ships. It defines the stats metrics docs/monitoring.md recommends
(``podod.monitor.collectors.dovecot.METRICS_CONF``) and lets group ``stats_group`` (``adm``:
the SSH test bed's login is a member) read them with ``doveadm stats dump``.
"""

from __future__ import annotations

import grp
import hashlib
import imaplib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from podod.mail.serverconfig import (
    SqlLogin,
    dovecot_dict_sql_conf,
    dovecot_quota_conf,
    dovecot_sql_conf,
)
from podod.monitor.collectors.dovecot import METRICS_CONF, stats_reader_conf
from testbed.ports import free_port
from testbed.postgres import let_others_traverse
from testbed.process import ForegroundDaemon


def ensure_vmail() -> tuple[int, int]:
    """The uid and gid mail is stored as (Debian's packages do not create one)."""
    try:
        entry = pwd.getpwnam("vmail")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", "vmail"], check=True, capture_output=True)
        entry = pwd.getpwnam("vmail")
    return entry.pw_uid, entry.pw_gid


# A Unix socket's path holds at most 107 bytes, and Dovecot's longest socket lies about 40
# below base_dir (token-login/imap-urlauth); pytest-xdist's deeper temp folders pass that.
_SOCKET_ROOM = 60


def short_base_dir(wanted: Path) -> Path:
    """``wanted`` when its sockets fit, else a short folder under /tmp named after it."""
    if len(str(wanted)) <= _SOCKET_ROOM:
        return wanted
    digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"pdv-{digest}"


class Dovecot(ForegroundDaemon):
    def __init__(self, root: Path, login: SqlLogin, *, imap_port: int | None = None,
                 lmtp_port: int | None = None, quota_login: SqlLogin | None = None,
                 stats_group: str = "adm", extra_conf: str = "") -> None:
        """``quota_login``: write quota usage into quota2 through the SQL dict (the role of
        ``mail.roles.quota``); without it, the count backend keeps usage to itself.
        ``stats_group``: the group that may read the statistics (stats-reader).
        ``extra_conf``: settings appended to dovecot.conf (``auth_cache_size = 1M``)."""
        self.root = Path(root)
        self.extra_conf = extra_conf
        self.stats_group = stats_group
        self.login = login
        self.quota_login = quota_login
        self.imap_port = imap_port or free_port()
        self.lmtp_port = lmtp_port or free_port()
        self.config = self.root / "dovecot.conf"
        self.sql_config = self.root / "dovecot-sql.conf.ext"
        self.dict_config = self.root / "dovecot-dict-sql.conf.ext"
        self.base_dir = short_base_dir(self.root / "run")
        self.mail_dir = self.root / "mail"
        self.log_path = self.root / "dovecot.log"

    def write_config(self) -> None:
        uid, gid = ensure_vmail()
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.mail_dir, uid, gid)
        let_others_traverse(self.mail_dir)  # vmail must reach it through 0700 temp folders
        (self.root / "state").mkdir(exist_ok=True)
        self.sql_config.write_text(dovecot_sql_conf(self.login))
        os.chmod(self.sql_config, 0o600)
        if self.quota_login is not None:
            self.dict_config.write_text(dovecot_dict_sql_conf(self.quota_login))
            os.chmod(self.dict_config, 0o640)  # read by the dict process, user dovecot
            os.chown(self.dict_config, 0, grp.getgrnam("dovecot").gr_gid)
            quota = dovecot_quota_conf(self.dict_config, mail_user="vmail")
        else:
            quota = ("mail_plugins = quota\nplugin {\n  quota = count:User quota\n"
                     "  quota_vsizes = yes\n}\nprotocol imap {\n"
                     "  mail_plugins = $mail_plugins imap_quota\n}\n")
        self.config.write_text(f"""\
instance_name = podod-test-{self.imap_port}
base_dir = {self.base_dir}
state_dir = {self.root / 'state'}
log_path = {self.log_path}
listen = 127.0.0.1
protocols = imap lmtp
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_username_format = %Lu
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
mail_home = {self.mail_dir}/%d/%n
mail_location = maildir:~/Maildir
{quota}default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = sql
  args = {self.sql_config}
}}
userdb {{
  driver = sql
  args = {self.sql_config}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@localhost
}}
{stats_reader_conf(self.stats_group)}{METRICS_CONF}{self.extra_conf}""")

    def start(self, timeout: float = 15.0) -> Dovecot:
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_config()
        shutil.rmtree(self.base_dir, ignore_errors=True)  # stale sockets cost 5 s
        with open(self.root / "dovecot.out", "ab") as out:
            self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(self.config)],
                                         stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self.proc.returncode}: "
                                   f"{self.output()}")
            try:
                with imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot is not answering on port {self.imap_port}: "
                           f"{self.output()}")

    def stop_wait(self) -> None:
        super().stop_wait()
        if self.base_dir != self.root / "run":  # the short folder outside the temp tree
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def output(self) -> str:
        parts = []
        for path in (self.root / "dovecot.out", self.log_path):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(parts)

    @property
    def stats_socket(self) -> Path:
        """What ``doveadm stats dump -s`` reads."""
        return self.base_dir / "stats-reader"

    def reload(self) -> None:
        """``doveadm reload`` (as ``systemctl reload dovecot`` does): the stats process starts
        again, every counter from zero."""
        result = self.doveadm("reload")
        if result.returncode != 0:
            raise RuntimeError(f"doveadm reload failed: {result.stderr.strip()}")

    def doveadm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["doveadm", "-c", str(self.config), *args],
                              capture_output=True, text=True, timeout=30)

    def auth_test(self, user: str, password: str) -> bool:
        """``doveadm auth test``: exit 0 accepted, 77 refused; anything else is a broken
        test bed and raises."""
        result = self.doveadm("auth", "test", "-x", "no-penalty", "--", user, password)
        if result.returncode not in (0, 77):
            raise RuntimeError(f"doveadm auth test failed ({result.returncode}): "
                               f"{result.stderr.strip()} {self.output()}")
        return result.returncode == 0

    def imap_login(self, user: str, password: str) -> bool:
        with imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=10) as imap:
            try:
                imap.login(user, password)
            except imaplib.IMAP4.error:
                return False
            imap.logout()
            return True

    def quota_limit_kib(self, user: str) -> str:
        """The STORAGE limit ``doveadm quota get`` reports, in KiB ('-' for unlimited)."""
        result = self.doveadm("-f", "tab", "quota", "get", "-u", user)
        if result.returncode != 0:
            raise RuntimeError(f"doveadm quota get failed: {result.stderr.strip()}")
        lines = [line.split("\t") for line in result.stdout.splitlines()]
        header = lines[0]
        for row in lines[1:]:
            record = dict(zip(header, row, strict=False))
            if record.get("Type") == "STORAGE":
                return record["Limit"]
        raise RuntimeError(f"no STORAGE quota in: {result.stdout}")

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
