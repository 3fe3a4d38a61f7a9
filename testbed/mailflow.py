"""A private Postfix 3.7 + Dovecot 2.3 pair on 127.0.0.1 that writes a REAL mail log with
known traffic, for the traffic parser's tests (``tests/data/maillog/`` was captured with it).

``MailFlow(root).run()`` starts both daemons from Debian's binaries (no SQL: a passwd-file
passdb and inline Postfix maps keep it self-contained), drives a fixed script of mail
flows through them and returns what it did (:class:`FlowCounts`), so a test can compare
the parser's counts with what really happened:

- inbound SMTP to virtual mailboxes (LMTP into Dovecot), one message with a rejected
  recipient after the first accepted one;
- NOQUEUE rejects of several classes: relay denied, unknown recipient, HELO, sender,
  client, greylisting (DEFER_IF_PERMIT), and a header_checks REJECT in cleanup;
- SASL failures and an authenticated send on ``postfix/submission/smtpd`` and
  ``postfix/smtps/smtpd`` (same daemon, master.cf service names), relayed by a
  ``postfix-out/smtp`` transport (``syslog_name``, as a multi-instance setup logs);
- a deferral retried twice and then delivered, a remote 550 bounce (and its non-delivery
  notice delivered back), an ``error:`` transport bounce, an expired message;
- the sendmail command (pickup);
- Dovecot IMAP and POP3 logins and failed logins, with ``auth_verbose`` lines.

Postfix logs through postlogd to ``maillog_file`` (the syslog line format); Dovecot writes
its own ``log_path`` format (no host name, ``Info:`` prefix).
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import poplib
import pwd
import shutil
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.dovecot import ensure_vmail
from testbed.ports import free_port

PASSWORD = "flow-secret"
USERS = ("alice@example.com", "bob@example.com")


@dataclass
class FlowCounts:
    """What the script did, in pflogsumm's terms (per recipient for deliveries)."""

    received: int = 0
    delivered: int = 0
    deferred: int = 0
    deferrals: int = 0
    bounced: int = 0
    rejected: int = 0
    expired: int = 0
    sasl_failures: int = 0
    logins: dict[str, int] = field(default_factory=dict)
    auth_failures: dict[str, int] = field(default_factory=dict)
    rejects: dict[str, int] = field(default_factory=dict)  # reason class -> count


class _Receiver:
    """A remote MX on loopback: 550 for @bounce.test recipients, 250 for the rest."""

    def __init__(self, port: int) -> None:
        from aiosmtpd.controller import Controller

        class Handler:
            async def handle_RCPT(self, server: Any, session: Any, envelope: Any,
                                  address: str, rcpt_options: list[str]) -> str:
                if address.endswith("@bounce.test"):
                    return f"550 5.1.1 <{address}>: Recipient address rejected: no such user"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                return "250 2.0.0 Ok: queued"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)

    def __enter__(self) -> _Receiver:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


class MailFlow:
    """``shared_log``: Dovecot writes into Postfix's log file too (one mail log with both,
    as syslog gives), instead of its own ``dovecot.log``."""

    def __init__(self, root: Path, *, shared_log: bool = False) -> None:
        self.root = Path(root)
        self.smtp_port = free_port()
        self.submission_port = free_port()
        self.smtps_port = free_port()
        self.lmtp_port = free_port()
        self.imap_port = free_port()
        self.pop3_port = free_port()
        self.dc_submission_port = free_port()
        self.mx_port = free_port()       # the "remote" receiver
        self.closed_port = free_port()   # nothing listens: deferrals
        self.pf_dir = self.root / "postfix"
        self.dc_dir = self.root / "dovecot"
        self.maillog = self.root / "maillog"
        self.dovecot_log = self.maillog if shared_log else self.root / "dovecot.log"
        self.counts = FlowCounts()

    # -- configuration ---------------------------------------------------------------------

    def _dovecot_config(self) -> None:
        uid, gid = ensure_vmail()
        d = self.dc_dir
        (d / "mail").mkdir(parents=True, exist_ok=True)
        os.chown(d / "mail", uid, gid)
        (d / "state").mkdir(exist_ok=True)
        users = d / "users"
        users.write_text("".join(f"{u}:{{PLAIN}}{PASSWORD}::::::\n" for u in USERS))
        (d / "dovecot.conf").write_text(f"""
instance_name = podod-flow-{self.imap_port}
base_dir = {d / 'run'}
state_dir = {d / 'state'}
log_path = {self.dovecot_log}
listen = 127.0.0.1
protocols = imap pop3 lmtp submission
hostname = mx.example.com
submission_relay_host = 127.0.0.1
submission_relay_port = {self.smtp_port}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
mail_home = {d / 'mail'}/%d/%n
mail_location = maildir:~/Maildir
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {users}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid}
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
    address = 127.0.0.1
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    address = 127.0.0.1
    port = {self.dc_submission_port}
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
service auth {{
  unix_listener {d / 'auth-postfix'} {{
    mode = 0666
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
""")

    def _postfix_config(self) -> None:
        p = self.pf_dir
        p.mkdir(parents=True, exist_ok=True)
        (self.root / "queue").mkdir(exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.root / "data", postfix_user.pw_uid, postfix_user.pw_gid)
        (p / "header_checks").write_text("/^Subject: .*cheap pills/ REJECT spam content\n")
        mx = f"[127.0.0.1]:{self.mx_port}"
        main = f"""
compatibility_level = 3.6
queue_directory = {self.root / 'queue'}
data_directory = {self.root / 'data'}
maillog_file = {self.maillog}
maillog_file_prefixes = {self.root}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.example.com
mydomain = example.com
myorigin = example.com
mydestination =
mynetworks = 127.0.0.2/32
smtp_dns_support_level = disabled
alias_maps =
alias_database =
smtpd_helo_required = yes
virtual_mailbox_domains = example.com
virtual_mailbox_maps = inline:{{ {", ".join(f"{u}=ok" for u in USERS)} }}
virtual_transport = lmtp:inet:127.0.0.1:{self.lmtp_port}
transport_maps = inline:{{ ok.test=relay:{mx}, bounce.test=relay:{mx},
    defer.test=relay:[127.0.0.1]:{self.closed_port}, {{nosuch.test=error:5.1.2 no such domain}} }}
smtpd_sasl_type = dovecot
smtpd_sasl_path = {self.dc_dir / 'auth-postfix'}
smtpd_sasl_auth_enable = yes
smtpd_client_restrictions = check_client_access inline:{{ 127.0.0.3=REJECT }}
smtpd_helo_restrictions = check_helo_access inline:{{ bad.helo.test=REJECT }}
smtpd_sender_restrictions = check_sender_access inline:{{ spammer@bad.test=REJECT }}
smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated,
    reject_unauth_destination,
    check_recipient_access inline:{{ {{grey@example.com=DEFER_IF_PERMIT Greylisted, try later}} }}
header_checks = regexp:{p / 'header_checks'}
minimal_backoff_time = 3600s
maximal_backoff_time = 4000s
queue_run_delay = 1s
"""
        (p / "main.cf").write_text(main)
        opts = "-o smtpd_recipient_restrictions=permit_sasl_authenticated,reject"
        master = [
            f"127.0.0.1:{self.smtp_port} inet n - n - - smtpd",
            f"127.0.0.1:{self.submission_port} inet n - n - - smtpd "
            f"-o syslog_name=postfix/submission {opts}",
            f"127.0.0.1:{self.smtps_port} inet n - n - - smtpd "
            f"-o syslog_name=postfix/smtps {opts}",
        ]
        entries: list[list[str]] = []  # master.cf entries: first line + continuation lines
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            if line[0].isspace() and entries:
                entries[-1].append(line)
            else:
                entries.append([line])
        for entry in entries:
            fields = entry[0].split()
            if fields[:2] == ["smtp", "inet"]:
                continue
            if fields[0] == "relay":  # the outbound relay logs as another instance would
                master.append("relay unix - - n - - smtp -o syslog_name=postfix-out")
                continue
            fields[4] = "n"  # no chroot
            master.append(" ".join(fields))
            master.extend(entry[1:])
        (p / "master.cf").write_text("\n".join(master) + "\n")
        old = time.time() - 60  # postfix commands sleep while main.cf is younger than ~2 s
        os.utime(p / "main.cf", (old, old))
        os.utime(p / "master.cf", (old, old))

    def _postconf(self, *settings: str) -> None:
        subprocess.run(["postconf", "-c", str(self.pf_dir), "-e", *settings], check=True,
                       capture_output=True)
        old = time.time() - 60
        os.utime(self.pf_dir / "main.cf", (old, old))
        subprocess.run(["postfix", "-c", str(self.pf_dir), "reload"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> MailFlow:
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in (self.root, *self.root.parents):
            if folder.stat().st_mode & 0o001 == 0:
                raise RuntimeError(f"{folder} is not searchable by others: Postfix's "
                                   "unprivileged processes could not reach their queue "
                                   "(use a root like tempfile.mkdtemp() with mode 0755)")
        self._dovecot_config()
        self._postfix_config()
        shutil.rmtree(self.dc_dir / "run", ignore_errors=True)
        conf = str(self.dc_dir / "dovecot.conf")
        # The daemons must not inherit a pipe (a caller reading it would wait for them).
        out = self.root / "daemons.out"
        for argv in (["dovecot", "-c", conf], ["postfix", "-c", str(self.pf_dir), "start"]):
            with open(out, "ab") as sink:
                result = subprocess.run(argv, stdout=sink, stderr=sink,
                                        stdin=subprocess.DEVNULL)
            if result.returncode != 0:
                self.stop()
                raise RuntimeError(f"{argv[0]} did not start: "
                                   f"{out.read_text(errors='replace').strip()[-500:]}")
        self._wait_port(self.smtp_port)
        self._wait_port(self.imap_port)
        self._wait_port(self.lmtp_port)
        return self

    def stop(self) -> None:
        for argv in (["postfix", "-c", str(self.pf_dir), "stop"],
                     ["doveadm", "-c", str(self.dc_dir / "dovecot.conf"), "stop"]):
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           stdin=subprocess.DEVNULL)

    @staticmethod
    def _wait_port(port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            time.sleep(0.05)
        raise RuntimeError(f"nothing answers on 127.0.0.1:{port}")

    def _queue_empty(self) -> bool:
        out = subprocess.run(["postqueue", "-c", str(self.pf_dir), "-j"], capture_output=True,
                             text=True).stdout
        return not out.strip()

    def _queue_ids(self) -> list[str]:
        import json

        out = subprocess.run(["postqueue", "-c", str(self.pf_dir), "-j"], capture_output=True,
                             text=True).stdout
        return [json.loads(line)["queue_id"] for line in out.splitlines() if line.strip()]

    def _flush(self) -> None:
        subprocess.run(["postqueue", "-c", str(self.pf_dir), "-f"], capture_output=True)

    def _wait_log(self, needle: str, count: int = 1, timeout: float = 30.0,
                  path: Path | None = None) -> None:
        path = path or self.maillog
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = path.read_text(errors="replace") if path.exists() else ""
            if text.count(needle) >= count:
                return
            time.sleep(0.1)
        raise RuntimeError(f"'{needle}' did not appear {count} times in {path}")

    # -- the traffic -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _smtp(self, port: int | None = None, source: str = "127.0.0.1",
              helo: str = "client.example.net") -> Iterator[smtplib.SMTP]:
        client = smtplib.SMTP(timeout=10, source_address=(source, 0))
        client.connect("127.0.0.1", port or self.smtp_port)
        try:
            client.ehlo(helo)
            yield client
        finally:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()

    @staticmethod
    def _message(sender: str, rcpt: str, subject: str = "hello") -> str:
        return (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
                f"Message-ID: <{time.time_ns()}@client.example.net>\r\n\r\nbody\r\n")

    @staticmethod
    def _auth_plain(client: smtplib.SMTP, user: str, password: str) -> None:
        """One AUTH PLAIN (smtplib's login() would try LOGIN too after a failure)."""
        client.user, client.password = user, password
        client.auth("PLAIN", client.auth_plain)

    def _reject(self, cls: str) -> None:
        self.counts.rejected += 1
        self.counts.rejects[cls] = self.counts.rejects.get(cls, 0) + 1

    def run(self) -> FlowCounts:
        c = self.counts
        n_logs = 0
        with _Receiver(self.mx_port):
            # 1. inbound to two mailboxes, one unknown recipient rejected after a QID exists
            with self._smtp() as s:
                s.mail("carol@client.example.net")
                s.rcpt("alice@example.com")
                s.rcpt("bob@example.com")
                code, _ = s.rcpt("nobody@example.com")
                assert code >= 500, code
                s.data(self._message("carol@client.example.net", "alice@example.com"))
            c.received += 1
            c.delivered += 2
            self._reject("unknown-recipient")
            # 2. NOQUEUE rejects
            with self._smtp() as s:
                s.mail("carol@client.example.net")
                assert s.rcpt("someone@ok.test")[0] >= 400
            self._reject("relay-denied")
            with self._smtp(helo="bad.helo.test") as s:
                s.mail("carol@client.example.net")
                assert s.rcpt("alice@example.com")[0] >= 400
            self._reject("helo")
            with self._smtp() as s:
                s.mail("spammer@bad.test")
                assert s.rcpt("alice@example.com")[0] >= 400
            self._reject("sender")
            with self._smtp(source="127.0.0.3") as s:
                s.mail("carol@client.example.net")
                assert s.rcpt("alice@example.com")[0] >= 400
            self._reject("client")
            with self._smtp() as s:
                s.mail("carol@client.example.net")
                assert s.rcpt("grey@example.com")[0] >= 400
            self._reject("policy")
            # 3. header_checks REJECT in cleanup
            with self._smtp() as s, contextlib.suppress(smtplib.SMTPDataError):
                s.sendmail("carol@client.example.net", ["alice@example.com"],
                           self._message("carol@client.example.net", "alice@example.com",
                                         "cheap pills"))
            c.received += 1  # smtpd logged client= before cleanup rejected the content
            self._reject("content")
            # 4. SASL: a failure on submission and smtps, then authenticated sends out
            for port in (self.submission_port, self.smtps_port):
                with self._smtp(port) as s, \
                        contextlib.suppress(smtplib.SMTPAuthenticationError):
                    self._auth_plain(s, "alice@example.com", "wrong")
                c.sasl_failures += 1
            with self._smtp(self.submission_port) as s:
                s.login("alice@example.com", PASSWORD)
                s.sendmail("alice@example.com", ["friend@ok.test"],
                           self._message("alice@example.com", "friend@ok.test"))
            with self._smtp(self.smtps_port) as s:
                s.login("bob@example.com", PASSWORD)
                s.sendmail("bob@example.com", ["ghost@bounce.test"],
                           self._message("bob@example.com", "ghost@bounce.test"))
            c.received += 2
            c.delivered += 1          # friend@ok.test
            c.bounced += 1            # ghost@bounce.test (remote 550)
            c.delivered += 1          # the non-delivery notice to bob
            # 5. the sendmail command (pickup), once to the error: transport (smtpd would
            #    refuse that recipient at RCPT time), once to a mailbox
            for rcpt in ("x@nosuch.test", "alice@example.com"):
                subprocess.run(["sendmail", "-C", str(self.pf_dir), "-f", "root@example.com",
                                rcpt], input=self._message("root@example.com", rcpt),
                               text=True, check=True, capture_output=True)
            c.received += 2
            c.bounced += 1            # x@nosuch.test by the error: transport
            c.delivered += 1          # alice
            # The notice to root@example.com is rejected by LMTP (no such mailbox): bounced.
            c.bounced += 1
            self._wait_log("status=sent", count=c.delivered)
            self._wait_log("status=bounced", count=c.bounced)
            # 6. a deferral, retried twice, then delivered once the "remote" listens
            with self._smtp(self.submission_port) as s:
                s.login("alice@example.com", PASSWORD)
                s.sendmail("alice@example.com", ["later@defer.test"],
                           self._message("alice@example.com", "later@defer.test"))
            c.received += 1
            self._wait_log("status=deferred", count=1)
            self._flush()  # a retry now (the backoff is an hour: no retry by itself)
            self._wait_log("status=deferred", count=2)
            c.deferred += 1
            c.deferrals += 2
            with _Receiver(self.closed_port):
                self._flush()
                self._wait_log("status=sent", count=c.delivered + 1)
            c.delivered += 1
            # 7. an expired message: queue lifetime shortened, then a retry finds it too old
            self._postconf("maximal_queue_lifetime=1s", "bounce_queue_lifetime=1s")
            with self._smtp(self.submission_port) as s:
                s.login("bob@example.com", PASSWORD)
                s.sendmail("bob@example.com", ["late@defer.test"],
                           self._message("bob@example.com", "late@defer.test"))
            c.received += 1
            self._wait_log("status=deferred", count=3)
            c.deferred += 1
            time.sleep(1.5)  # older than the queue lifetime now
            self._flush()
            self._wait_log("status=expired", count=1)
            # the first attempt, and usually a retry after which it expires; on a busy
            # machine Postfix may expire it without that retry, so Postfix's own log says
            c.deferrals += sum("to=<late@defer.test>" in line and "status=deferred" in line
                               for line in self.maillog.read_text().splitlines())
            c.expired += 1
            c.delivered += 1          # the expiry notice to bob
            self._wait_log("status=sent", count=c.delivered)
        # 8. Dovecot: logins and failures over IMAP and POP3
        for user, password, proto in (
            ("alice@example.com", PASSWORD, "imap"), ("alice@example.com", "bad", "imap"),
            ("nobody@example.com", "bad", "imap"), ("bob@example.com", PASSWORD, "pop3"),
            ("bob@example.com", "bad", "pop3"), ("alice@example.com", PASSWORD, "submission"),
            ("alice@example.com", "bad", "submission"),
        ):
            ok = self._dovecot_login(proto, user, password)
            if ok:
                c.logins[proto] = c.logins.get(proto, 0) + 1
            else:
                c.auth_failures[proto] = c.auth_failures.get(proto, 0) + 1
            n_logs += 1
        self._wait_log("session=<", count=n_logs, path=self.dovecot_log)
        deadline = time.monotonic() + 30
        while not self._queue_empty() and time.monotonic() < deadline:
            time.sleep(0.2)
        self._wait_log(": removed", count=c.received)
        return c

    def _dovecot_login(self, proto: str, user: str, password: str) -> bool:
        if proto == "imap":
            imap = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=10)
            try:
                imap.login(user, password)
            except imaplib.IMAP4.error:
                with contextlib.suppress(Exception):
                    imap.logout()
                return False
            imap.logout()
            return True
        if proto == "submission":
            with self._smtp(self.dc_submission_port) as s:
                try:
                    self._auth_plain(s, user, password)
                except smtplib.SMTPAuthenticationError:
                    return False
                return True
        pop = poplib.POP3("127.0.0.1", self.pop3_port, timeout=10)
        try:
            pop.user(user)
            pop.pass_(password)
        except poplib.error_proto:
            with contextlib.suppress(Exception):
                pop.quit()
            return False
        pop.quit()
        return True


def capture(dest: Path) -> FlowCounts:
    """Run the flows in a temporary folder and copy the two logs into ``dest``."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="podod-flow-") as tmp:
        os.chmod(tmp, 0o755)
        flow = MailFlow(Path(tmp))
        flow.start()
        try:
            counts = flow.run()
        finally:
            flow.stop()
        time.sleep(0.5)
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(flow.maillog, dest / "postfix-3.7.log")
        shutil.copy(flow.dovecot_log, dest / "dovecot-2.3.log")
        return counts


if __name__ == "__main__":
    import sys

    print(capture(Path(sys.argv[1] if len(sys.argv) > 1 else "maillog-capture")))
