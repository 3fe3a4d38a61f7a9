"""A private Dovecot 2.3 on 127.0.0.1 with SQL passdb/userdb on the mail database."""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from podod.testbed.ports import free_port


def ensure_vmail() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("vmail")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", "vmail"], check=True, capture_output=True)
        entry = pwd.getpwnam("vmail")
    return entry.pw_uid, entry.pw_gid


class Dovecot:
    def __init__(self, root: Path, *, pg_port: int, db: str, user: str, password: str,
                 imap_port: int | None = None, lmtp_port: int | None = None) -> None:
        self.root = Path(root)
        self.imap_port = imap_port or free_port()
        self.lmtp_port = lmtp_port or free_port()
        self.config = self.root / "dovecot.conf"
        self.base_dir = self.root / "run"
        self.log_path = self.root / "dovecot.log"
        self.sql = (f"host=127.0.0.1 port={pg_port} dbname={db} user={user} "
                    f"password={password}")

    def write_config(self) -> None:
        uid, gid = ensure_vmail()
        mail = self.root / "mail"
        mail.mkdir(parents=True, exist_ok=True)
        os.chown(mail, uid, gid)
        (self.root / "state").mkdir(exist_ok=True)
        sql_conf = self.root / "dovecot-sql.conf.ext"
        sql_conf.write_text(
            "driver = pgsql\n"
            f"connect = {self.sql}\n"
            "default_pass_scheme = SHA512-CRYPT\n"
            "password_query = SELECT username AS user, password FROM mailbox "
            "WHERE username = '%u' AND active\n"
            "user_query = SELECT '*:bytes=' || quota AS quota_rule FROM mailbox "
            "WHERE username = '%u' AND active\n"
            "iterate_query = SELECT username AS user FROM mailbox WHERE active\n")
        os.chmod(sql_conf, 0o600)
        self.config.write_text(f"""
instance_name = podod-test-{self.imap_port}
base_dir = {self.base_dir}
state_dir = {self.root / 'state'}
log_path = {self.log_path}
listen = 127.0.0.1
protocols = imap lmtp
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
mail_home = {mail}/%d/%n
mail_location = maildir:~/Maildir
mail_plugins = quota
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = sql
  args = {sql_conf}
}}
userdb {{
  driver = sql
  args = {sql_conf}
}}
plugin {{
  quota = count:User quota
  quota_vsizes = yes
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
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}
""")

    def start(self) -> Dovecot:
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_config()
        shutil.rmtree(self.base_dir, ignore_errors=True)  # stale sockets cost 5 s
        result = subprocess.run(["dovecot", "-c", str(self.config)], capture_output=True,
                                text=True)
        if result.returncode != 0:
            raise RuntimeError(f"dovecot did not start: {result.stderr.strip()}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot is not answering on {self.imap_port}")

    def stop(self) -> None:
        subprocess.run(["doveadm", "-c", str(self.config), "stop"], capture_output=True)
        pidfile = self.base_dir / "master.pid"
        deadline = time.monotonic() + 10
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def auth_test(self, user: str, password: str) -> bool:
        result = subprocess.run(["doveadm", "-c", str(self.config), "auth", "test", "-x",
                                 "no-penalty", user, password], capture_output=True, text=True)
        return result.returncode == 0

    def imap_login(self, user: str, password: str) -> bool:
        with imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=5) as imap:
            try:
                imap.login(user, password)
            except imaplib.IMAP4.error:
                return False
            imap.logout()
            return True

    def quota_get(self, user: str) -> str:
        return subprocess.run(["doveadm", "-c", str(self.config), "quota", "get", "-u", user],
                              capture_output=True, text=True).stdout


__all__ = ["Dovecot", "ensure_vmail", "grp"]
