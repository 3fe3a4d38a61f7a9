"""Generate a realistic multi-day Postfix + Dovecot mail log with consistent message flows.

Every message follows the path Postfix logs: smtpd connect → ``QID: client=`` → cleanup
``message-id`` → qmgr ``from=, size=`` → smtp/lmtp/local ``to=, status=`` → qmgr
``removed`` → disconnect; deferred messages are retried (qmgr repeats ``from=``) until they
are delivered or expire (``status=expired`` and a non-delivery notice); bounces produce a
notice delivered back to the sender; mail relayed to an outbound instance appears again as
``postfix-out/...`` (multi-instance), submissions come through ``postfix/submission/smtpd``
and ``postfix/smtps/smtpd``. Around the mail: NOQUEUE rejects of several classes
(DNSBL via smtpd and postscreen, unknown recipient, relay, HELO, sender, client,
greylisting), header and milter rejects in cleanup, SASL brute force, Dovecot IMAP, POP3
and submission logins and failures in both the 2.3 and the 2.4 formats, and unrelated
lines (cron, kernel) that a parser must skip.

The generator knows what it wrote: :func:`generate` returns the true totals
(pflogsumm's meanings), so a test can compare any parser with the truth and with
pflogsumm. ``seed`` makes the output reproducible.

    python bench/loggen.py OUT.log [--lines 1000000] [--days 3] [--seed 1]
        [--format syslog|rfc3339|short-iso] [--start 2025-12-30T20:00] [--mix mx|relay]

``OUT.log.gz`` writes gzip. pflogsumm counts the outbound instance only with
``--syslog-name=postfix-out``.
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

LOCAL_DOMAINS = ("example.com", "example.org", "mail.example.net")
REMOTE_DOMAINS = ("gmail.test", "outlook.test", "yahoo.test", "gmx.test", "web.test",
                  "corp.test", "uni.test", "shop.test", "news.test", "bank.test")
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
         "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter",
         "info", "sales", "support", "admin", "billing", "noreply", "postmaster")
RBLS = ("zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org")


@dataclass
class GenCounts:
    """The truth about what was written (pflogsumm's meanings, per recipient line)."""

    lines: int = 0
    received: int = 0
    delivered: int = 0
    forwarded: int = 0
    deferred: int = 0
    deferrals: int = 0
    bounced: int = 0
    rejected: int = 0
    expired: int = 0
    held: int = 0
    sasl_failures: int = 0
    logins: dict[str, int] = field(default_factory=dict)
    auth_failures: dict[str, int] = field(default_factory=dict)
    rejects: dict[str, int] = field(default_factory=dict)
    first: float = 0.0
    last: float = 0.0

    def totals(self) -> dict[str, int]:
        return {"received": self.received, "delivered": self.delivered,
                "deferred": self.deferred, "deferrals": self.deferrals,
                "bounced": self.bounced, "rejected": self.rejected}


Event = tuple[str, ...] | None


def _num(value: float) -> str:
    """A delay as Postfix prints it: 0.4, 3.3, 120."""
    return f"{max(value, 0.0):.2f}".rstrip("0").rstrip(".") or "0"


class _Writer:
    """Formats and writes queued lines in time order, tallying their events."""

    def __init__(self, out: IO[str], fmt: str, host: str, limit: int) -> None:
        self.out = out
        self.fmt = fmt
        self.host = host
        self.limit = limit
        self.counts = GenCounts()
        self.deferred_ids: set[str] = set()
        self._stamp_second = -1
        self._stamp = ""

    def stamp(self, ts: float) -> str:
        second = int(ts)
        if self.fmt == "rfc3339":
            d = datetime.fromtimestamp(ts, UTC)
            return f"{d:%Y-%m-%dT%H:%M:%S}.{d.microsecond:06d}+00:00"
        if second != self._stamp_second:
            d = datetime.fromtimestamp(second, UTC)
            if self.fmt == "short-iso":
                self._stamp = f"{d:%Y-%m-%dT%H:%M:%S}+0000"
            else:
                self._stamp = f"{MONTHS[d.month - 1]} {d.day:2d} {d:%H:%M:%S}"
            self._stamp_second = second
        return self._stamp

    def write(self, ts: float, text: str, event: Event) -> bool:
        c = self.counts
        if c.lines >= self.limit:
            return False
        self.out.write(f"{self.stamp(ts)} {self.host} {text}\n")
        c.lines += 1
        if c.first == 0.0:
            c.first = ts
        c.last = ts
        if event is not None:
            kind = event[0]
            if kind == "deferral":
                c.deferrals += 1
                if event[1] not in self.deferred_ids:
                    self.deferred_ids.add(event[1])
                    c.deferred += 1
            elif kind == "removed":
                self.deferred_ids.discard(event[1])
            elif kind == "login":
                c.logins[event[1]] = c.logins.get(event[1], 0) + 1
            elif kind == "authfail":
                c.auth_failures[event[1]] = c.auth_failures.get(event[1], 0) + int(event[2])
            elif kind == "rejected":
                c.rejected += 1
                c.rejects[event[1]] = c.rejects.get(event[1], 0) + 1
            else:
                setattr(c, kind, getattr(c, kind) + 1)
        return True


class _Generator:
    def __init__(self, rng: random.Random, start: float, mix: str = "mx") -> None:
        self.rng = rng
        self.mix = _cumulative(MIXES[mix])
        self.now = start
        self.heap: list[tuple[float, int, str, Event]] = []
        self.seq = 0
        self.qn = rng.randrange(1 << 36, 1 << 40)
        self.sessions = 0
        self.qmgr_pid = rng.randrange(800, 2000)
        self.out_qmgr_pid = rng.randrange(2000, 3000)
        self.pickup_pid = rng.randrange(3000, 4000)
        self.pools: dict[str, list[list[int]]] = {}
        self.next_pid = rng.randrange(5000, 30000)

    # -- building blocks -------------------------------------------------------------------

    def at(self, ts: float, text: str, event: Event = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (ts, self.seq, text, event))

    def qid(self) -> str:
        self.qn += self.rng.randrange(1, 4096)
        return f"{self.qn & 0xFFFFFFFFFFF:011X}"

    def pid(self, process: str) -> int:
        """Postfix reuses its processes (max_use, max_idle): a few live pids per program,
        each replaced by a new one after a while, as a real log shows."""
        pool = self.pools.setdefault(process, [])
        if len(pool) < 4:
            self.next_pid += self.rng.randrange(1, 40)
            pool.append([self.next_pid % 60000 + 2000, self.rng.randrange(20, 120)])
        slot = self.rng.choice(pool)
        slot[1] -= 1
        if slot[1] <= 0:
            pool.remove(slot)
        return int(slot[0])

    def session(self) -> str:
        self.sessions += 1
        raw = self.rng.getrandbits(96).to_bytes(12, "big")
        import base64

        return base64.b64encode(raw).decode()[:16]

    def client(self) -> tuple[str, str]:
        r = self.rng
        ip = f"{r.choice((192, 198, 203))}.{r.randrange(0, 255)}.{r.randrange(0, 255)}." \
             f"{r.randrange(1, 254)}"
        name = "unknown" if r.random() < 0.3 else \
            f"mail{r.randrange(1, 99)}.{r.choice(REMOTE_DOMAINS)}"
        return name, ip

    def local_addr(self) -> str:
        return f"{self.rng.choice(USERS)}@{self.rng.choice(LOCAL_DOMAINS)}"

    def remote_addr(self) -> str:
        r = self.rng
        user = r.choice(USERS) if r.random() < 0.5 else f"user{r.randrange(1, 5000)}"
        return f"{user}@{r.choice(REMOTE_DOMAINS)}"

    def size(self) -> int:
        return int(self.rng.lognormvariate(8.5, 1.2)) + 600

    def delays(self, total: float) -> str:
        a = total * 0.4
        return f"delay={_num(total)}, delays={_num(a)}/0.01/0.05/{_num(total - a)}"

    # -- message legs ----------------------------------------------------------------------

    def deliver_local(self, t: float, qid: str, rcpts: list[str], size: int,
                      sender: str, instance: str = "postfix") -> float:
        """qmgr from= → lmtp status=sent per recipient → removed. Returns the end time."""
        r = self.rng
        self.at(t, f"{instance}/qmgr[{self.qmgr_pid}]: {qid}: from=<{sender}>, size={size}, "
                   f"nrcpt={len(rcpts)} (queue active)")
        t += r.uniform(0.01, 0.3)
        pid = self.pid("smtpd")
        for rcpt in rcpts:
            d = r.uniform(0.05, 0.9)
            self.at(t, f"{instance}/lmtp[{pid}]: {qid}: to=<{rcpt}>, "
                       f"relay=mail.example.com[private/dovecot-lmtp], {self.delays(d)}, "
                       f"dsn=2.0.0, status=sent (250 2.0.0 <{rcpt}> "
                       f"{self.session()} Saved)", ("delivered",))
        t += 0.01
        self.at(t, f"{instance}/qmgr[{self.qmgr_pid}]: {qid}: removed", ("removed", qid))
        return t

    def smtpd_session(self, t: float, service: str, client: tuple[str, str],
                      body: Callable[[float, int], float], sasl: str | None = None,
                      commands: str = "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5") -> float:
        """connect, ``body(t, pid)`` (returns when it is done), disconnect; returns that."""
        pid = self.pid("smtpd")
        name, ip = client
        self.at(t, f"{service}[{pid}]: connect from {name}[{ip}]")
        end = body(t + self.rng.uniform(0.05, 0.5), pid)
        self.at(end + self.rng.uniform(0.01, 0.2),
                f"{service}[{pid}]: disconnect from {name}[{ip}] {commands}")
        return end

    def inbound(self, t: float) -> None:
        r = self.rng
        client = self.client()
        n = 1 if r.random() < 0.8 else r.randrange(2, 4)
        rcpts = sorted({self.local_addr() for _ in range(n)})
        sender = self.remote_addr() if r.random() < 0.97 else ""
        unknown = r.random() < 0.06
        qid = self.qid()
        size = self.size()

        def body(t0: float, pid: int) -> float:
            self.at(t0, f"postfix/smtpd[{pid}]: {qid}: client={client[0]}[{client[1]}]",
                    ("received",))
            if unknown:
                bad = f"nobody{r.randrange(100)}@{r.choice(LOCAL_DOMAINS)}"
                self.at(t0 + 0.05, f"postfix/smtpd[{pid}]: {qid}: reject: RCPT from "
                                   f"{client[0]}[{client[1]}]: 550 5.1.1 <{bad}>: Recipient "
                                   f"address rejected: User unknown in virtual mailbox "
                                   f"table; from=<{sender}> to=<{bad}> proto=ESMTP "
                                   f"helo=<{client[0]}>", ("rejected", "unknown-recipient"))
            self.at(t0 + 0.1, f"postfix/cleanup[{self.pid('cleanup')}]: {qid}: message-id=<"
                              f"{self.session()}@{client[0]}>")
            self.deliver_local(t0 + 0.15, qid, rcpts, size, sender)
            return t0 + 0.2

        self.smtpd_session(t, "postfix/smtpd", client, body)

    def outbound(self, t: float, fate: str = "sent") -> None:
        """A submission relayed through the outbound instance (postfix-out) to the world."""
        r = self.rng
        sender = self.local_addr()
        rcpt = self.remote_addr()
        service = "postfix/submission/smtpd" if r.random() < 0.8 else "postfix/smtps/smtpd"
        qid, qid2 = self.qid(), self.qid()
        size = self.size()
        client = ("unknown", f"10.{r.randrange(255)}.{r.randrange(255)}.{r.randrange(1, 254)}")

        def body(t0: float, pid: int) -> float:
            self.at(t0, f"{service}[{pid}]: {qid}: client={client[0]}[{client[1]}], "
                        f"sasl_method=PLAIN, sasl_username={sender}", ("received",))
            self.at(t0 + 0.05, f"postfix/cleanup[{self.pid('cleanup')}]: {qid}: message-id=<"
                               f"{self.session()}@{sender.split('@')[1]}>")
            self.at(t0 + 0.1, f"postfix/qmgr[{self.qmgr_pid}]: {qid}: from=<{sender}>, "
                              f"size={size}, nrcpt=1 (queue active)")
            return t0 + 0.12

        queued = self.smtpd_session(
            t, service, client, body,
            commands="ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=8")
        # hand-off to the outbound instance
        t1 = queued + r.uniform(0.05, 0.3)
        spid = self.pid("smtpd")
        self.at(t1, f"postfix-out/smtpd[{spid}]: connect from localhost[127.0.0.1]")
        self.at(t1 + 0.01, f"postfix-out/smtpd[{spid}]: {qid2}: client=localhost[127.0.0.1]",
                ("received",))
        self.at(t1 + 0.02, f"postfix-out/cleanup[{self.pid('cleanup')}]: {qid2}: message-id=<"
                           f"{self.session()}@{sender.split('@')[1]}>")
        self.at(t1 + 0.03, f"postfix-out/qmgr[{self.out_qmgr_pid}]: {qid2}: from=<{sender}>, "
                           f"size={size + 500}, nrcpt=1 (queue active)")
        self.at(t1 + 0.04, f"postfix/smtp[{self.pid('smtp')}]: {qid}: to=<{rcpt}>, "
                           f"relay=127.0.0.1[127.0.0.1]:10025, {self.delays(0.4)}, "
                           f"dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as {qid2})",
                ("delivered",))
        self.at(t1 + 0.05, f"postfix-out/smtpd[{spid}]: disconnect from localhost[127.0.0.1] "
                           f"ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5")
        self.at(t1 + 0.06, f"postfix/qmgr[{self.qmgr_pid}]: {qid}: removed", ("removed", qid))
        domain = rcpt.split("@")[1]
        mx = f"mx{r.randrange(1, 4)}.{domain}[203.0.113.{r.randrange(1, 254)}]:25"
        t2 = t1 + r.uniform(0.2, 2.0)
        spid2 = self.pid("smtp")
        if fate == "sent":
            self.at(t2, f"postfix-out/smtp[{spid2}]: {qid2}: to=<{rcpt}>, relay={mx}, "
                        f"{self.delays(t2 - t1)}, dsn=2.0.0, status=sent (250 2.0.0 OK "
                        f"{r.randrange(10**9)} - gsmtp)", ("delivered",))
            self.at(t2 + 0.01, f"postfix-out/qmgr[{self.out_qmgr_pid}]: {qid2}: removed",
                    ("removed", qid2))
        elif fate == "bounced":
            self.at(t2, f"postfix-out/smtp[{spid2}]: {qid2}: to=<{rcpt}>, relay={mx}, "
                        f"{self.delays(t2 - t1)}, dsn=5.1.1, status=bounced (host {mx[:-3]} "
                        f"said: 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown "
                        f"(in reply to RCPT TO command))", ("bounced",))
            self.notice(t2 + 0.02, qid2, sender, "postfix-out")
            self.at(t2 + 0.05, f"postfix-out/qmgr[{self.out_qmgr_pid}]: {qid2}: removed",
                    ("removed", qid2))
        else:
            self.deferred_leg(t2, qid2, rcpt, sender, size + 500, mx, fate)

    def deferred_leg(self, t: float, qid: str, rcpt: str, sender: str, size: int, mx: str,
                     fate: str) -> None:
        r = self.rng
        tries = r.randrange(1, 5) if fate == "deferred" else 5
        reasons = (f"connect to {mx[:-3]}:25: Connection timed out",
                   f"host {mx[:-3]} said: 451 4.7.1 Greylisted, please try again later "
                   f"(in reply to RCPT TO command)",
                   f"host {mx[:-3]} said: 421 4.7.0 Try again later, closing connection. "
                   f"(in reply to MAIL FROM command)")
        backoff = 300.0
        start = t
        for attempt in range(tries):
            if attempt:
                self.at(t - 0.01, f"postfix-out/qmgr[{self.out_qmgr_pid}]: {qid}: from=<"
                                  f"{sender}>, size={size}, nrcpt=1 (queue active)")
            reason = r.choice(reasons)
            if attempt and r.random() < 0.15:
                self.at(t, f"postfix-out/qmgr[{self.out_qmgr_pid}]: {qid}: to=<{rcpt}>, "
                           f"relay=none, delay={t - start + 1:.0f}, delays={t - start:.0f}/0/0/0, "
                           f"dsn=4.4.1, status=deferred (delivery temporarily suspended: "
                           f"{reason})", ("deferral", qid))
            else:
                self.at(t, f"postfix-out/smtp[{self.pid('smtp')}]: {qid}: to=<{rcpt}>, "
                           f"relay=none, delay={t - start + 1:.0f}, "
                           f"delays={t - start:.0f}/0.01/30/0, dsn=4.4.1, status=deferred "
                           f"({reason})", ("deferral", qid))
            t += backoff * r.uniform(0.9, 1.2)
            backoff = min(backoff * 2, 4000.0)
        if fate == "deferred":
            self.at(t - 0.01, f"postfix-out/qmgr[{self.out_qmgr_pid}]: {qid}: from=<{sender}>, "
                              f"size={size}, nrcpt=1 (queue active)")
            self.at(t, f"postfix-out/smtp[{self.pid('smtp')}]: {qid}: to=<{rcpt}>, relay={mx}, "
                       f"{self.delays(t - start)}, dsn=2.0.0, status=sent (250 2.0.0 Ok: "
                       f"queued as {r.randrange(10**6)})", ("delivered",))
        else:
            self.at(t, f"postfix-out/qmgr[{self.out_qmgr_pid}]: {qid}: from=<{sender}>, "
                       f"status=expired, returned to sender", ("expired",))
            self.notice(t + 0.02, qid, sender, "postfix-out")
        self.at(t + 0.05, f"postfix-out/qmgr[{self.out_qmgr_pid}]: {qid}: removed",
                ("removed", qid))

    def notice(self, t: float, orig: str, sender: str, instance: str) -> None:
        """The non-delivery notice (not "received"), delivered back to the local sender."""
        qid = self.qid()
        self.at(t, f"{instance}/cleanup[{self.pid('cleanup')}]: {qid}: message-id=<"
                   f"{self.session()}@mail.example.com>")
        self.at(t + 0.01, f"{instance}/bounce[{self.pid('bounce')}]: {orig}: sender non-delivery "
                          f"notification: {qid}")
        qmgr = self.qmgr_pid if instance == "postfix" else self.out_qmgr_pid
        self.at(t + 0.02, f"{instance}/qmgr[{qmgr}]: {qid}: from=<>, size={self.size() + 2000}, "
                          f"nrcpt=1 (queue active)")
        self.at(t + 0.05, f"{instance}/lmtp[{self.pid('lmtp')}]: {qid}: to=<{sender}>, "
                          f"relay=mail.example.com[private/dovecot-lmtp], {self.delays(0.03)}, "
                          f"dsn=2.0.0, status=sent (250 2.0.0 <{sender}> {self.session()} Saved)",
                ("delivered",))
        self.at(t + 0.06, f"{instance}/qmgr[{qmgr}]: {qid}: removed", ("removed", qid))

    def pickup(self, t: float) -> None:
        r = self.rng
        qid = self.qid()
        rcpt = self.local_addr()
        sender = r.choice(("root", "www-data", "backup"))
        self.at(t, f"postfix/pickup[{self.pickup_pid}]: {qid}: uid={r.choice((0, 33, 1000))} "
                   f"from=<{sender}>", ("received",))
        self.at(t + 0.02, f"postfix/cleanup[{self.pid('cleanup')}]: {qid}: message-id=<"
                          f"{self.session()}@mail.example.com>")
        self.deliver_local(t + 0.05, qid, [rcpt], self.size(), f"{sender}@mail.example.com")

    def forward(self, t: float) -> None:
        """Local alias expansion: local(8) forwards to a new queue file ("forwarded")."""
        r = self.rng
        qid, qid2 = self.qid(), self.qid()
        client = self.client()
        sender = self.remote_addr()
        size = self.size()
        rcpt = self.local_addr()

        def body(t0: float, pid: int) -> float:
            self.at(t0, f"postfix/smtpd[{pid}]: {qid}: client={client[0]}[{client[1]}]",
                    ("received",))
            self.at(t0 + 0.05, f"postfix/cleanup[{self.pid('cleanup')}]: {qid}: message-id=<"
                               f"{self.session()}@{client[0]}>")
            self.at(t0 + 0.1, f"postfix/qmgr[{self.qmgr_pid}]: {qid}: from=<{sender}>, "
                              f"size={size}, nrcpt=1 (queue active)")
            self.at(t0 + 0.12, f"postfix/cleanup[{self.pid('cleanup')}]: {qid2}: message-id=<"
                               f"{self.session()}@{client[0]}>")
            self.at(t0 + 0.13, f"postfix/local[{self.pid('local')}]: {qid}: "
                               f"to=<root@mail.example.com>, orig_to=<root>, relay=local, "
                               f"{self.delays(0.05)}, dsn=2.0.0, "
                               f"status=sent (forwarded as {qid2})", ("forwarded",))
            self.at(t0 + 0.14, f"postfix/qmgr[{self.qmgr_pid}]: {qid}: removed",
                    ("removed", qid))
            self.deliver_local(t0 + 0.15, qid2, [rcpt], size + 300, sender)
            return t0 + 0.2

        self.smtpd_session(t, "postfix/smtpd", client, body)
        _ = r

    def noqueue_reject(self, t: float) -> None:
        r = self.rng
        name, ip = self.client()
        sender = self.remote_addr()
        rcpt = self.local_addr()
        pick = r.random()
        if pick < 0.12:  # postscreen DNSBL
            pid = self.pid("smtpd")
            port = r.randrange(1024, 65000)
            self.at(t, f"postfix/postscreen[{pid}]: CONNECT from [{ip}]:{port} to "
                       f"[192.0.2.1]:25")
            self.at(t + 0.1, f"postfix/postscreen[{pid}]: DNSBL rank 3 for [{ip}]:{port}")
            self.at(t + 6.1, f"postfix/postscreen[{pid}]: NOQUEUE: reject: RCPT from "
                             f"[{ip}]:{port}: 550 5.7.1 Service unavailable; client [{ip}] "
                             f"blocked using {r.choice(RBLS)}; from=<{sender}>, to=<{rcpt}>, "
                             f"proto=ESMTP, helo=<{name}>", ("rejected", "rbl"))
            self.at(t + 6.2, f"postfix/postscreen[{pid}]: DISCONNECT [{ip}]:{port}")
            return
        classes = (
            (0.40, "rbl", f"554 5.7.1 Service unavailable; Client host [{ip}] blocked using "
                          f"{r.choice(RBLS)}; https://www.spamhaus.org/query/ip/{ip}"),
            (0.60, "unknown-recipient", f"550 5.1.1 <{rcpt}>: Recipient address rejected: "
                                        f"User unknown in virtual mailbox table"),
            (0.70, "relay-denied", f"554 5.7.1 <{self.remote_addr()}>: Relay access denied"),
            (0.78, "helo", f"504 5.5.2 <{name.split('.')[0]}>: Helo command rejected: need "
                           f"fully-qualified hostname"),
            (0.86, "sender", f"450 4.1.8 <{sender}>: Sender address rejected: Domain not "
                             f"found"),
            (0.92, "client", f"450 4.7.25 Client host rejected: cannot find your hostname, "
                             f"[{ip}]"),
            (1.01, "policy", f"450 4.2.0 <{rcpt}>: Recipient address rejected: Greylisted, "
                             f"see https://postgrey.schweikert.ch/help/{rcpt.split('@')[1]}"
                             f".html"),
        )
        p = r.random()
        cls, reply = next((c, text) for limit, c, text in classes if p < limit)
        to = reply[reply.index("<") + 1:reply.index(">")] if cls == "relay-denied" else rcpt

        def body(t0: float, pid: int) -> float:
            self.at(t0, f"postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {name}[{ip}]: "
                        f"{reply}; from=<{sender}> to=<{to}> proto=ESMTP helo=<{name}>",
                    ("rejected", cls))
            return t0 + 0.1

        self.smtpd_session(t, "postfix/smtpd", (name, ip), body,
                           commands="ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4")

    def content_reject(self, t: float) -> None:
        r = self.rng
        client = self.client()
        qid = self.qid()
        sender = self.remote_addr()
        rcpt = self.local_addr()
        milter = r.random() < 0.3

        def body(t0: float, pid: int) -> float:
            self.at(t0, f"postfix/smtpd[{pid}]: {qid}: client={client[0]}[{client[1]}]",
                    ("received",))
            if milter:
                self.at(t0 + 0.3, f"postfix/cleanup[{self.pid('cleanup')}]: {qid}: milter-reject: "
                                  f"END-OF-MESSAGE from {client[0]}[{client[1]}]: 5.7.1 "
                                  f"Rejected as spam; from=<{sender}> to=<{rcpt}> proto=ESMTP "
                                  f"helo=<{client[0]}>", ("rejected", "milter"))
            else:
                self.at(t0 + 0.3, f"postfix/cleanup[{self.pid('cleanup')}]: {qid}: reject: header "
                                  f"Subject: Cheap pills online from {client[0]}[{client[1]}]; "
                                  f"from=<{sender}> to=<{rcpt}> proto=ESMTP helo=<{client[0]}>: "
                                  f"5.7.1 message content rejected", ("rejected", "content"))
            return t0 + 0.4

        self.smtpd_session(t, "postfix/smtpd", client, body,
                           commands="ehlo=1 mail=1 rcpt=1 data=0/1 quit=1 commands=4/5")

    def hold(self, t: float) -> None:
        client = self.client()
        qid = self.qid()
        sender = self.remote_addr()
        rcpt = self.local_addr()

        def body(t0: float, pid: int) -> float:
            self.at(t0, f"postfix/smtpd[{pid}]: {qid}: client={client[0]}[{client[1]}]",
                    ("received",))
            self.at(t0 + 0.05, f"postfix/smtpd[{pid}]: {qid}: hold: RCPT from "
                               f"{client[0]}[{client[1]}]: <{rcpt}>: Recipient address "
                               f"triggers HOLD action; from=<{sender}> to=<{rcpt}> "
                               f"proto=ESMTP helo=<{client[0]}>", ("held",))
            self.at(t0 + 0.1, f"postfix/cleanup[{self.pid('cleanup')}]: {qid}: message-id=<"
                              f"{self.session()}@{client[0]}>")
            return t0 + 0.2

        self.smtpd_session(t, "postfix/smtpd", client, body)

    def sasl_attack(self, t: float) -> None:
        r = self.rng
        name, ip = "unknown", f"{r.choice((45, 80, 185))}.{r.randrange(255)}." \
                              f"{r.randrange(255)}.{r.randrange(1, 254)}"
        service = r.choice(("postfix/submission/smtpd", "postfix/smtpd", "postfix/smtps/smtpd"))
        tries = r.randrange(1, 4)

        def body(t0: float, pid: int) -> float:
            for i in range(tries):
                mech = r.choice(("LOGIN", "PLAIN"))
                self.at(t0 + i * 2.1, f"{service}[{pid}]: warning: {name}[{ip}]: SASL {mech} "
                                      f"authentication failed: (reason unavailable), "
                                      f"sasl_username={r.choice(USERS)}@"
                                      f"{r.choice(LOCAL_DOMAINS)}", ("sasl_failures",))
            return t0 + tries * 2.1

        self.smtpd_session(t, service, (name, ip), body,
                           commands=f"ehlo=1 auth=0/{tries} quit=1 commands=2/{tries + 2}")

    def dovecot(self, t: float) -> None:
        r = self.rng
        user = self.local_addr()
        proto = r.choices(("imap", "pop3", "submission"), (0.8, 0.15, 0.05))[0]
        v24 = r.random() < 0.35
        ip = f"{r.choice((192, 198, 203, 10))}.{r.randrange(255)}.{r.randrange(255)}." \
             f"{r.randrange(1, 254)}"
        session = self.session()
        mpid = self.rng.randrange(10000, 65000)
        tls = r.choice(("TLS", "secured", "TLS"))
        if r.random() < 0.8:
            word = "Logged in" if v24 else "Login"
            self.at(t, f"dovecot[{self.qmgr_pid + 7}]: {proto}-login: {word}: user=<{user}>, "
                       f"method=PLAIN, rip={ip}, lip=192.0.2.1, mpid={mpid}, {tls}, "
                       f"session=<{session}>", ("login", proto))
            if proto == "imap":
                tail = "Logged out in=312 out=4812 deleted=0 expunged=0 trashed=0 hdr_count=3 " \
                       "hdr_bytes=1830 body_count=0 body_bytes=0"
            elif proto == "pop3":
                tail = "Logged out top=0/0, retr=2/20485, del=2/2, size=20447"
            else:
                tail = "Logged out in=1200 out=300"
            prefix = f"{proto}({user})<{mpid}><{session}>"
            self.at(t + r.uniform(1, 600), f"dovecot[{self.qmgr_pid + 7}]: {prefix}: "
                                           f"Disconnected: {tail}")
            return
        attempts = r.choice((1, 1, 1, 2, 3))
        secs = r.randrange(2, 20)
        if v24:
            self.at(t, f"dovecot[{self.qmgr_pid + 7}]: auth-worker({user},{ip})<{mpid}>"
                       f"<{session}>: request [{r.randrange(1, 999)}]: sql: Password mismatch")
            self.at(t + secs, f"dovecot[{self.qmgr_pid + 7}]: {proto}-login: Login aborted: "
                              f"Connection closed (auth failed, {attempts} attempts in {secs} "
                              f"secs) (auth_failed): user=<{user}>, method=PLAIN, rip={ip}, "
                              f"lip=192.0.2.1, {tls}, session=<{session}>",
                    ("authfail", proto, str(attempts)))
        else:
            self.at(t, f"dovecot[{self.qmgr_pid + 7}]: auth: sql({user},{ip},<{session}>): "
                       f"Password mismatch")
            self.at(t + secs, f"dovecot[{self.qmgr_pid + 7}]: {proto}-login: Disconnected "
                              f"(auth failed, {attempts} attempts in {secs} secs): "
                              f"user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, {tls}, "
                              f"session=<{session}>", ("authfail", proto, str(attempts)))

    def noise(self, t: float) -> None:
        r = self.rng
        pick = r.random()
        if pick < 0.35:  # a scanner
            name, ip = self.client()
            pid = self.pid("smtpd")
            self.at(t, f"postfix/smtpd[{pid}]: connect from {name}[{ip}]")
            self.at(t + 0.3, f"postfix/smtpd[{pid}]: lost connection after EHLO from "
                             f"{name}[{ip}]")
            self.at(t + 0.31, f"postfix/smtpd[{pid}]: disconnect from {name}[{ip}] ehlo=1 "
                              f"commands=1")
        elif pick < 0.5:
            self.at(t, f"postfix/smtpd[{self.pid('smtpd')}]: warning: hostname "
                       f"{self.client()[0]} does not resolve to address "
                       f"198.51.100.{r.randrange(1, 254)}: Name or service not known")
        elif pick < 0.6:
            self.at(t, f"postfix/anvil[{self.pid('anvil')}]: statistics: max connection rate "
                       f"{r.randrange(1, 9)}/60s for (smtp:198.51.100.{r.randrange(1, 254)}) at "
                       f"Dec 31 00:00:00")
        elif pick < 0.8:
            self.at(t, f"CRON[{self.pid('CRON')}]: (root) CMD (command -v debian-sa1 > "
                       f"/dev/null && debian-sa1 1 1)")
        elif pick < 0.9:
            self.at(t, f"kernel: [{r.randrange(10**6)}.{r.randrange(10**6):06d}] "
                       f"[UFW BLOCK] IN=eth0 OUT= SRC=198.51.100.{r.randrange(1, 254)} "
                       f"DST=192.0.2.1 PROTO=TCP SPT={r.randrange(1024, 65000)} DPT=23")
        else:
            self.at(t, f"postfix/scache[{self.pid('scache')}]: statistics: start interval Dec 31 "
                       f"00:00:00")

    # -- the mix ---------------------------------------------------------------------------

    def scenario(self, t: float) -> None:
        p = self.rng.random()
        for limit, name, arg in self.mix:
            if p < limit:
                if arg is None:
                    getattr(self, name)(t)
                else:
                    getattr(self, name)(t, arg)
                return


# The share of each kind of event (cumulative thresholds are built from these weights).
MIXES: dict[str, tuple[tuple[float, str, str | None], ...]] = {
    # an inbound MX with submission: what the tests and the first benchmark use
    "mx": ((0.30, "inbound", None), (0.10, "outbound", "sent"),
           (0.025, "outbound", "deferred"), (0.01, "outbound", "expired"),
           (0.02, "outbound", "bounced"), (0.025, "pickup", None), (0.01, "forward", None),
           (0.17, "noqueue_reject", None), (0.015, "content_reject", None),
           (0.003, "hold", None), (0.042, "sasl_attack", None), (0.18, "dovecot", None),
           (0.10, "noise", None)),
    # a relay with many users: mostly submissions out (more retries, bounces and expiries),
    # IMAP/POP3 logins, local mail; few rejects, much unrelated noise
    "relay": ((0.08, "inbound", None), (0.22, "outbound", "sent"),
              (0.08, "outbound", "deferred"), (0.02, "outbound", "expired"),
              (0.05, "outbound", "bounced"), (0.06, "pickup", None), (0.03, "forward", None),
              (0.04, "noqueue_reject", None), (0.005, "content_reject", None),
              (0.005, "hold", None), (0.02, "sasl_attack", None), (0.32, "dovecot", None),
              (0.07, "noise", None)),
}


def _cumulative(weights: tuple[tuple[float, str, str | None], ...]
                ) -> list[tuple[float, str, str | None]]:
    total = sum(w for w, _, _ in weights)
    out, acc = [], 0.0
    for w, name, arg in weights:
        acc += w / total
        out.append((acc, name, arg))
    out[-1] = (1.01, out[-1][1], out[-1][2])
    return out


def generate(out: IO[str], *, lines: int = 1_000_000, days: float = 3.0, seed: int = 1,
             start: datetime | None = None, fmt: str = "syslog",
             host: str = "mx1", mix: str = "mx") -> GenCounts:
    """Write about ``days`` of traffic, exactly ``lines`` lines, into ``out``."""
    if fmt not in ("syslog", "rfc3339", "short-iso"):
        raise ValueError(f"unknown format {fmt}")
    rng = random.Random(seed)
    t0 = (start or datetime(2025, 12, 30, 20, 0, tzinfo=UTC)).replace(tzinfo=UTC).timestamp()
    if mix not in MIXES:
        raise ValueError(f"unknown mix {mix}")
    gen = _Generator(rng, t0, mix)
    writer = _Writer(out, fmt, host, lines)
    gap = days * 86400 / max(lines / 6.2, 1)
    t = t0
    heap = gen.heap
    while writer.counts.lines < lines:
        t += rng.expovariate(1.0 / gap)
        gen.scenario(t)
        while heap and heap[0][0] <= t:
            ts, _seq, text, event = heapq.heappop(heap)
            if not writer.write(ts, text, event):
                break
    while heap and writer.counts.lines < lines:
        ts, _seq, text, event = heapq.heappop(heap)
        writer.write(ts, text, event)
    return writer.counts


def write(path: Path, **kwargs: object) -> GenCounts:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="\n") as out:  # type: ignore[operator]
        return generate(out, **kwargs)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--format", default="syslog", choices=("syslog", "rfc3339", "short-iso"))
    parser.add_argument("--mix", default="mx", choices=tuple(MIXES),
                        help="the share of each kind of traffic (default: mx)")
    parser.add_argument("--start", default="2025-12-30T20:00",
                        help="UTC start time (the default crosses New Year)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    counts = write(args.out, lines=args.lines, days=args.days, seed=args.seed, fmt=args.format,
                   mix=args.mix, start=datetime.fromisoformat(args.start).replace(tzinfo=UTC))
    print(f"wrote {counts.lines} lines to {args.out} in {time.monotonic() - started:.1f} s: "
          f"{counts.totals()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
