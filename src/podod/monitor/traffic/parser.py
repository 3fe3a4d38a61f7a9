"""The mail-log parser: Postfix and Dovecot lines into the counts pflogsumm would report.

Speed comes from doing nothing for lines that cannot matter: per line, a few ``str.find``
calls locate the timestamp, the host and the syslog tag; one dictionary lookup on the tag
(without its ``[pid]``) picks the service, or skips the line; only then does the service's
handler look at the message, with ``startswith`` at known offsets. No regular expression
runs on the hot path. The module is compiled with mypyc at install time, with the modules it
imports (``podod.compiled``): keep them typed, importing only the standard library and
each other.

Counting follows pflogsumm 1.1.5 (Debian's), so totals agree with it on the same file:

- received: an smtpd/postscreen ``QID: client=`` line, or a pickup ``uid=``/``sender=``
  line (a message Postfix took in; bounce notices and forwards are not "received");
- delivered: a ``status=sent`` recipient line of any delivery agent, except
  ``forwarded as`` (counted as forwarded); deferrals: every ``status=deferred`` line;
  deferred: messages with at least one; bounced: every ``status=bounced`` line;
- rejected: smtpd/postscreen ``reject:`` lines (NOQUEUE or with a queue id) and cleanup
  ``reject:``/``milter-reject:`` of a header, body or END-OF-MESSAGE; reject warnings,
  holds and discards are counted apart;
- senders: the ``from=`` of a received message (once per queue id, as qmgr repeats it on
  every retry); recipients: delivered addresses.

Beyond pflogsumm: expired messages (qmgr ``status=expired``), deliveries by transport
and status, rejects by reason class and reply code, smtpd SASL failures, smtpd
``milter-reject`` lines (pflogsumm misses them), Dovecot logins and failed logins by
protocol (2.3 ``Login:`` / ``Disconnected (auth failed, N attempts ...)``, 2.4
``Logged in:`` / ``Login aborted: ... (auth failed, N attempts ...) (auth_failed)``; a
failed login counts its attempts), Dovecot auth process rejections (``Password
mismatch``, ``unknown user``), lines per service and lines a known service wrote that
the parser did not recognise ("unparsed").

Per-message state (was it received, its size, was it deferred) lives in ``pending``, keyed
by queue id, bounded by ``max_messages`` and ``max_age``: queue ids that never complete
(a log cut mid-flow, a lost ``removed`` line) are evicted oldest first.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator

from podod.monitor.traffic import tally as t
from podod.monitor.traffic.clock import LogClock, iso_seconds, syslog_seconds
from podod.monitor.traffic.rejects import classify, dsn_reply_code, reply_code
from podod.monitor.traffic.services import (
    BOUNCE,
    CLEANUP,
    DELIVERY,
    DOVECOT,
    DOVECOT_PROC,
    PICKUP,
    POSTSUPER,
    QMGR,
    SKIP,
    SMTPD,
    Service,
    resolve,
)
from podod.monitor.traffic.tally import Tally
from podod.monitor.traffic.top import TopCounter

Counts = defaultdict[str, int]

# Flags of a pending message.
F_RECEIVED = 1
F_FROM = 2       # qmgr logged its from= (sender counted once)
F_DEFERRED = 4

_DIGITS = "0123456789"
# No line starts with two newlines (lines end at their first one): the hour key before the
# first line, which sends it down the slow path.
_NO_LINE = "\n\n"
_LEVELS = ("Info: ", "Warning: ", "Error: ", "Fatal: ", "Panic: ", "Debug: ")

# Lines of smtpd/postscreen without a queue id that are understood (and not counted).
_SMTPD_NOISE = (
    "connect from", "disconnect from", "lost connection", "timeout after", "too many errors",
    "improper command pipelining", "Anonymous TLS", "Untrusted TLS", "Trusted TLS",
    "Verified TLS", "SSL_accept", "TLS library problem", "setting up TLS", "non-SMTP command",
    "warning:", "error:", "fatal:", "panic:", "statistics:", "NOQUEUE: lost connection",
    "CONNECT from", "PASS NEW", "PASS OLD", "DNSBL rank", "HANGUP", "PREGREET", "DISCONNECT",
    "WHITELISTED", "WHITELIST VETO", "BLACKLISTED", "ALLOWLISTED", "ALLOWLIST VETO",
    "DENYLISTED", "COMMAND ", "BARE NEWLINE", "NON-SMTP COMMAND", "cache ", "reject: connect",
    "proxy-", "Connection ", "SASL ", "lost ", "NOQUEUE: filter:", "auth=",
)
_SMTPD_QUEUE_NOISE = ("filter: ", "redirect: ", "warn: ", "info: ", "prepend: ", "replace: ",
                      "milter-hold: ", "milter-discard: ", "proxy-", "lost connection",
                      "enabling PIX")
_CLEANUP_NOISE = ("message-id=", "resent-message-id=", "replace: ", "prepend: ", "info: ",
                  "filter: ", "redirect: ", "milter-", "warning: ", "bcc: ", "upd ", "hold: ",
                  "discard: ")
_QMGR_NOISE = ("skipped, still being delivered", "status=", "to=<")
_NOQID_DELIVERY = ("connect to", "warning:", "error:", "fatal:", "panic:", "Untrusted TLS",
                   "Trusted TLS", "Verified TLS", "Anonymous TLS", "SSL_connect",
                   "certificate", "server certificate", "host ", "lost connection",
                   "statistics:", "Host offered STARTTLS", "TLS ", "mailbox")
_LOGIN_NOISE = ("Disconnected", "Aborted login", "Login aborted", "Connection closed",
                "Maximum number of", "proxy", "Login failed", "ID sent", "Server shutting down",
                "Inactivity", "Error", "Warning", "Fatal", "Panic", "Debug", "Info")


def _at(line: str, prefix: str, start: int) -> bool:
    """``line.startswith(prefix, start)`` for ``start >= 0``. mypyc compiles a
    ``startswith`` with a start to a generic method call (a tuple of arguments, boxed
    integers, argument parsing: about a tenth of the parser's time); ``str.find`` with both
    bounds is one of its primitives."""
    return line.find(prefix, start, start + len(prefix)) == start


def _seconds(line: str) -> int:
    return iso_seconds(line) if line[:1] in _DIGITS else syslog_seconds(line)


class MailLogParser:
    """Feed it lines (``str``, newline optional); read ``tally`` and the service counters.

    ``max_messages`` bounds the per-queue-id state; ``max_age`` (seconds) evicts queue ids
    older than a message can stay queued. ``track_changes`` records which queue ids changed
    so a follower can persist exactly that state with the counts (see ``take_changes``).
    ``until`` skips lines from that time on (a backfill of logs podod already followed).
    """

    def __init__(self, tally: Tally | None = None, *, clock: LogClock | None = None,
                 max_messages: int = 200_000, max_age: int = 6 * 86400,
                 track_changes: bool = False) -> None:
        self.tally = tally if tally is not None else Tally()
        self.clock = clock if clock is not None else LogClock()
        self.max_messages = max_messages
        self.max_age = max_age
        self.pending: dict[str, list[object]] = {}  # qid -> [flags, size, hour, transport]
        self.changed: set[str] | None = set() if track_changes else None
        self.until: int | None = None   # count only lines older than this (backfill)
        self._until_reached = False
        self.malformed = 0      # lines without a timestamp podod understands
        self.skipped_live = 0   # lines from ``until`` on
        self.first_hour: int | None = None
        self.last_hour: int | None = None
        self._services: dict[str, Service] = {}  # "host tag[pid]" -> service
        self._bases: dict[str, Service] = {}     # "host tag" -> service
        self._named: dict[tuple[str, str], Service] = {}
        self._last_key = _NO_LINE
        self._last_off = ""
        self._iso = False
        self._hour = 0
        self._bucket: defaultdict[str, int] = defaultdict(int)
        self._tops: tuple[TopCounter, ...] = ()
        self._senders: list[str] = []
        self._rcpts: list[str] = []
        if self.tally.top_scope != "hour":
            lists = self.tally.top_lists(0)
            self._tops = tuple(lists[k] for k in t.TOP_KINDS)

    # -- services ------------------------------------------------------------------------

    def services(self) -> list[Service]:
        return list(self._named.values())

    def _intern(self, svc: Service) -> Service:
        existing = self._named.get((svc.name, svc.transport))
        if existing is None:
            self._named[(svc.name, svc.transport)] = svc
            return svc
        return existing

    def _service(self, key: str) -> Service:
        """Resolve a cache key: ``host tag[pid]`` (or, in Dovecot's own file, ``tag``,
        ``tag(pid)`` or ``tag(user)<pid><session>``). The key without its pid, user and
        session is the base, cached once; a key with a user or session is not kept in the
        per-key cache (there is one per login)."""
        cut = len(key)
        for mark in "[(<":
            i = key.find(mark)
            if 0 < i < cut:
                cut = i
        base = key[:cut] if cut < len(key) else key
        svc = self._bases.get(base)
        if svc is None:
            svc, cacheable = resolve(base[base.rfind(" ") + 1:])
            if svc.kind != SKIP:
                svc = self._intern(svc)
            if not cacheable:
                return svc
            if len(self._bases) < 4096:
                self._bases[base] = svc
        if cut < len(key) and key[cut] != "[":
            return svc
        if len(self._services) >= 50_000:  # bounded: pids come and go
            self._services.clear()
        self._services[key] = svc
        return svc

    # -- the hot loop ----------------------------------------------------------------------
    #
    # One long function on purpose: a method call costs as much as the work of a typical
    # line, so the frequent cases (smtpd connect/client=, qmgr from=/removed, delivery
    # status lines) are handled inline with local variables; rarer lines go to methods.

    def feed(self, line: str) -> None:
        self.feed_lines((line,))

    def feed_lines(self, lines: Iterable[str]) -> None:
        if self.until is not None:
            lines = self._before(lines, self.until)
        services = self._services
        pending = self.pending
        changed = self.changed
        last_key, last_off, iso = self._last_key, self._last_off, self._iso
        hour, bucket = self._hour, self._bucket
        # Addresses are collected and counted in bulk when the hour changes (fold_tops):
        # list.append here, collections.Counter (in C) there.
        sender_append = self._senders.append
        rcpt_append = self._rcpts.append
        received, delivered = t.RECEIVED, t.DELIVERED
        bytes_received, bytes_delivered = t.BYTES_RECEIVED, t.BYTES_DELIVERED
        for line in lines:
            # -- the hour: lines of the previous line's hour take the fast path
            if line.startswith(last_key):
                if iso:
                    te = line.find(" ") + 1
                    if te <= len(last_off) or not _at(line, last_off, te - 1 - len(last_off)):
                        te = self._retime(line)
                        if te < 0:
                            continue
                        last_key, last_off, iso = self._last_key, self._last_off, self._iso
                        hour, bucket = self._hour, self._bucket
                else:
                    te = 16
            else:
                te = self._retime(line)
                if te < 0:
                    continue
                last_key, last_off, iso = self._last_key, self._last_off, self._iso
                hour, bucket = self._hour, self._bucket
            # (te is now where the host begins)
            # -- the service: "host tag[pid]" is the key of a cache (Postfix and Dovecot
            #    reuse their processes, so a pid repeats for many lines); Dovecot's own file
            #    has no host: "imap-login"
            colon = line.find(": ", te)
            if colon < 0:
                continue
            svc = services.get(line[te:colon])
            if svc is None:
                svc = self._service(line[te:colon])
            kind = svc.kind
            if kind == SKIP:
                continue
            p = colon + 2
            svc.lines += 1
            if kind == SMTPD:
                if _at(line, "connect from ", p) or _at(line, "disconnect from ", p):
                    continue
                q = line.find(": ", p)
                if q > 0 and _at(line, "client=", q + 2):
                    bucket[received] += 1
                    qid = line[p:q]
                    state = pending.get(qid)
                    if state is None:  # (the bound on pending is kept hourly: _set_hour)
                        pending[qid] = [F_RECEIVED, -1, hour, ""]
                    else:
                        state[0] |= F_RECEIVED  # type: ignore[operator]
                    if changed is not None:
                        changed.add(qid)
                    continue
                self._smtpd(line, p, q, svc, bucket)
            elif kind == QMGR:
                if line.endswith(": removed\n"):
                    qid = line[p:-10]
                    if pending.pop(qid, None) is not None and changed is not None:
                        changed.add(qid)
                    continue
                q = line.find(": ", p)
                if q < 0:
                    svc.unparsed += 1
                    continue
                r = q + 2
                if _at(line, "from=<", r):
                    gt = line.find(">", r + 6)
                    if gt > 0 and _at(line, ", size=", gt + 1):
                        qid = line[p:q]
                        state = pending.get(qid)
                        if state is None:
                            state = pending[qid] = [0, -1, hour, ""]
                        flags: int = state[0]  # type: ignore[assignment]
                        if flags & F_FROM:
                            continue  # qmgr repeats from= on every retry: count it once
                        try:
                            size = int(line[gt + 8:line.find(",", gt + 8)])
                        except ValueError:
                            size = 0
                        state[1] = size
                        state[0] = flags | F_FROM
                        if changed is not None:
                            changed.add(qid)
                        if flags & F_RECEIVED:
                            sender_append(line[r + 6:gt])
                            bucket[bytes_received] += size
                        continue
                self._qmgr(line, p, q, svc, hour, bucket)
            elif kind == DELIVERY:
                q = line.find(": ", p)
                if q > 0 and _at(line, "to=<", q + 2):
                    gt = line.find(">", q + 6)
                    st = line.find(", status=", gt)
                    if st > 0 and _at(line, "sent ", st + 9):
                        if svc.forwards and line.find("forwarded as ", st) > 0:
                            bucket[t.FORWARDED] += 1
                            continue
                        bucket[delivered] += 1
                        bucket[svc.sent_key] += 1
                        rcpt_append(line[q + 6:gt])
                        state = pending.get(line[p:q])
                        if state is not None and state[1] > 0:  # type: ignore[operator]
                            bucket[bytes_delivered] += state[1]  # type: ignore[operator]
                        continue
                self._delivery(line, p, q, svc, hour, bucket)
            elif kind == CLEANUP:
                q = line.find(": ", p)
                if q > 0 and _at(line, "message-id=", q + 2):
                    continue
                self._cleanup(line, p, svc, bucket)
            elif kind == PICKUP:
                self._pickup(line, p, svc, hour, bucket)
            elif kind == BOUNCE:
                if "notification: " not in line and "warning:" not in line:
                    svc.unparsed += 1
            elif kind == POSTSUPER:
                q = line.find(": ", p)
                if q > 0 and _at(line, "removed", q + 2):
                    self._forget(line[p:q])
            elif kind == DOVECOT:
                self._dovecot(line, p, svc, bucket)
            elif kind == DOVECOT_PROC:
                self._dovecot_message(line, p, svc.transport, bucket, svc)
            # POSTFIX: counted, nothing to parse

    def _retime(self, line: str) -> int:
        """The slow path of the hour: parse the timestamp, switch buckets. Returns where
        the host begins (after the timestamp's space), or -1 for a line without a timestamp
        podod understands."""
        if line[:1] in _DIGITS:
            te = line.find(" ")
            if te < 19:
                self.malformed += 1
                return -1
            h = self.clock.iso_hour(line, te)
            if h is None:
                self.malformed += 1
                return -1
            self._iso = True
            self._last_key = line[:13]
            self._last_off = line[te - 6:te] if line[te - 3] == ":" else \
                line[te - 1:te] if line[te - 1] == "Z" else line[te - 5:te]
        else:
            if len(line) < 17 or line[15] != " ":
                self.malformed += 1
                return -1
            h = self.clock.syslog_hour(line[:9])
            if h is None:
                self.malformed += 1
                return -1
            te = 15
            self._iso = False
            self._last_key = line[:9]
            self._last_off = ""
        self._set_hour(h)
        return te + 1

    def _set_hour(self, hour: int) -> None:
        # Per-hour top lists need the addresses of the hour that ends; one global list can
        # wait (folding less often counts each distinct address fewer times).
        if (self._senders or self._rcpts) and (
                self.tally.top_scope == "hour" or len(self._rcpts) > 500_000
                or len(self._senders) > 500_000):
            self.fold_tops()
        self._hour = hour
        self._bucket = self.tally.bucket(hour)
        if self.tally.top_scope == "hour":
            lists = self.tally.top_lists(hour)
            self._tops = tuple(lists[k] for k in t.TOP_KINDS)
        if self.first_hour is None or hour < self.first_hour:
            self.first_hour = hour
        if self.last_hour is None or hour > self.last_hour:
            self.last_hour = hour
            self._evict_old(hour)
        self.bound_pending()

    def bound_pending(self) -> None:
        """Evict the oldest queue ids beyond ``max_messages`` (the hot loop leaves this to
        every hour change and every flush)."""
        while len(self.pending) > self.max_messages:
            self._evict_one()

    def fold_tops(self) -> None:
        """Count the addresses collected since the last fold into the top lists (of the
        current hour): domains are lower-cased (pflogsumm's normal form), the empty sender
        is ``from=<>``."""
        if not (self._senders or self._rcpts):
            return
        tops = self._tops
        for addresses, top_addr, top_domain in ((self._senders, tops[0], tops[2]),
                                                (self._rcpts, tops[1], tops[3])):
            if not addresses:
                continue
            normal: dict[str, int] = {}
            domains: dict[str, int] = {}
            for raw, n in Counter(addresses).items():
                at = raw.rfind("@")
                if at < 0:
                    addr = domain = raw
                    if not raw:
                        addr, domain = "from=<>", "<>"
                elif raw.islower():  # most addresses: nothing to normalise
                    addr, domain = raw, raw[at + 1:]
                else:
                    domain = raw[at + 1:].lower()
                    addr = raw[:at + 1] + domain
                normal[addr] = normal.get(addr, 0) + n
                domains[domain] = domains.get(domain, 0) + n
            top_addr.merge(normal.items())
            top_domain.merge(domains.items())
            addresses.clear()

    def take_tally(self) -> Tally:
        """The counts so far; counting goes on into a fresh tally (a follower's flush)."""
        self.fold_tops()
        old = self.tally
        self.tally = Tally(top_capacity=old.top_capacity, top_scope=old.top_scope)
        self._last_key = _NO_LINE  # the next line fetches its bucket from the new tally
        self._bucket = defaultdict(int)
        self._tops = ()
        if self.tally.top_scope != "hour":
            lists = self.tally.top_lists(0)
            self._tops = tuple(lists[k] for k in t.TOP_KINDS)
        return old

    def take_service_counts(self) -> dict[str, tuple[int, int]]:
        """Lines and unrecognised lines per service label since the last call."""
        out: dict[str, tuple[int, int]] = {}
        for svc in self._named.values():
            if svc.lines or svc.unparsed:
                lines, unparsed = out.get(svc.name, (0, 0))
                out[svc.name] = (lines + svc.lines, unparsed + svc.unparsed)
                svc.lines = svc.unparsed = 0
        return out

    def start_file(self, reference: float) -> None:
        """A new file begins: its syslog year is inferred from ``reference`` (its mtime)."""
        self.clock.set_reference(reference)
        self._last_key = _NO_LINE
        self._until_reached = False

    def _before(self, lines: Iterable[str], until: int) -> Iterator[str]:
        """Lines older than ``until`` (a backfill skips what the follower counted live).
        Logs are in time order: once a line reaches ``until``, the rest is skipped."""
        clock = self.clock
        for line in lines:
            if self._until_reached:
                self.skipped_live += 1
                continue
            if line[:1] in _DIGITS:
                te = line.find(" ")
                h = clock.iso_hour(line, te) if te >= 19 else None
            else:
                h = clock.syslog_hour(line[:9]) if len(line) > 16 and line[15] == " " \
                    else None
            if h is not None and h + _seconds(line) >= until:
                self._until_reached = True
                self.skipped_live += 1
                continue
            yield line

    # -- per-message state -----------------------------------------------------------------

    def _state(self, qid: str, hour: int) -> list[object]:
        state = self.pending.get(qid)
        if state is None:
            state = self.pending[qid] = [0, -1, hour, ""]
            if len(self.pending) > self.max_messages:
                self._evict_one()
        if self.changed is not None:
            self.changed.add(qid)
        return state

    def _evict_one(self) -> None:
        oldest = next(iter(self.pending))
        del self.pending[oldest]
        if self.changed is not None:
            self.changed.add(oldest)

    def _forget(self, qid: str) -> None:
        if self.pending.pop(qid, None) is not None and self.changed is not None:
            self.changed.add(qid)

    def _evict_old(self, hour: int) -> None:
        pending = self.pending
        limit = hour - self.max_age
        while pending:
            qid = next(iter(pending))
            if pending[qid][2] >= limit:  # type: ignore[operator]
                break
            del pending[qid]
            if self.changed is not None:
                self.changed.add(qid)

    def take_changes(self) -> tuple[dict[str, list[object]], list[str]]:
        """Queue ids whose state changed since the last call: (kept states, removed ids)."""
        changed = self.changed or set()
        kept = {q: list(self.pending[q]) for q in changed if q in self.pending}
        gone = [q for q in changed if q not in self.pending]
        if self.changed is not None:
            self.changed = set()
        return kept, gone

    def restore(self, states: Iterable[tuple[str, int, int, int, str]]) -> None:
        """Load persisted per-message state (qid, flags, size, hour, transport)."""
        for qid, flags, size, hour, transport in states:
            self.pending[qid] = [flags, size, hour, transport]

    # -- Postfix, the rarer lines ----------------------------------------------------------

    def _smtpd(self, line: str, p: int, q: int, svc: Service, bucket: Counts) -> None:
        if q > p and line.find(" ", p, q) < 0:  # "QID: ...", "NOQUEUE: ...", "warning: ..."
            r = q + 2
            if _at(line, "reject: ", r):
                bucket[_reject(line, r + 8)] += 1
                bucket[t.REJECTED] += 1
            elif _at(line, "reject_warning: ", r):
                bucket[t.REJECT_WARNINGS] += 1
            elif _at(line, "hold: ", r):
                bucket[t.HELD] += 1
            elif _at(line, "discard: ", r):
                bucket[t.DISCARDED] += 1
            elif _at(line, "milter-reject: ", r):  # (pflogsumm does not count these)
                code = reply_code(line, r)
                bucket[_reject_key("milter", code if code != "other"
                                   else dsn_reply_code(line))] += 1
                bucket[t.REJECTED] += 1
            elif _at(line, "warning: ", p):
                if "authentication failed" in line:
                    bucket[t.SASL_FAILURES] += 1
            elif not (line.startswith(_SMTPD_QUEUE_NOISE, r) or
                      line.startswith(_SMTPD_NOISE, p)):
                svc.unparsed += 1
            return
        if not line.startswith(_SMTPD_NOISE, p):
            svc.unparsed += 1

    def _cleanup(self, line: str, p: int, svc: Service, bucket: Counts) -> None:
        q = line.find(": ", p)
        if q < 0:
            svc.unparsed += 1
            return
        r = q + 2
        for word, counter in (("reject: ", t.REJECTED), ("milter-reject: ", t.REJECTED),
                              ("warning: ", t.REJECT_WARNINGS), ("hold: ", t.HELD),
                              ("discard: ", t.DISCARDED)):
            if _at(line, word, r):
                if line.startswith(("header ", "body ", "END-OF-MESSAGE"), r + len(word)):
                    bucket[counter] += 1
                    if counter is t.REJECTED:
                        cls = "milter" if word[0] == "m" else "content"
                        bucket[_reject_key(cls, dsn_reply_code(line))] += 1
                return
        if not (line.startswith(_CLEANUP_NOISE, r) or line.startswith(_CLEANUP_NOISE, p)):
            svc.unparsed += 1

    def _qmgr(self, line: str, p: int, q: int, svc: Service, hour: int,
              bucket: Counts) -> None:
        r = q + 2
        if _at(line, "removed", r):  # (a line without its newline)
            self._forget(line[p:q])
            return
        if _at(line, "from=<", r):
            gt = line.find(">", r + 6)
            if gt > 0 and _at(line, ", status=expired", gt + 1):
                state = self._state(line[p:q], hour)
                bucket[t.key(t.DELIVERY, str(state[3] or "none"), "expired")] += 1
                bucket[t.EXPIRED] += 1
            elif gt < 0:
                svc.unparsed += 1
            return
        if _at(line, "to=<", r):  # "delivery temporarily suspended" and the like
            self._delivery(line, p, q, svc, hour, bucket)
        elif not (line.startswith(_QMGR_NOISE, r) or line.startswith(("warning:", "fatal:"), p)):
            svc.unparsed += 1

    def _pickup(self, line: str, p: int, svc: Service, hour: int, bucket: Counts) -> None:
        q = line.find(": ", p)
        if q > 0 and line.startswith(("uid=", "sender="), q + 2):
            bucket[t.RECEIVED] += 1
            state = self._state(line[p:q], hour)
            state[0] = state[0] | F_RECEIVED  # type: ignore[operator]
        elif not line.startswith(("warning:", "fatal:", "error:"), p):
            svc.unparsed += 1

    def _delivery(self, line: str, p: int, q: int, svc: Service, hour: int,
                  bucket: Counts) -> None:
        """A delivery agent's line that is not a plain ``status=sent`` (handled inline)."""
        if q < 0 or line.find(" ", p, q) >= 0:
            if not line.startswith(_NOQID_DELIVERY, p):
                svc.unparsed += 1
            return
        r = q + 2
        if not _at(line, "to=<", r):
            return  # "host ... said", "lost connection with", ...: informational
        st = line.find(", status=", r)
        if st < 0:
            svc.unparsed += 1
            return
        st += 9
        end = line.find(" ", st)
        status = line[st:end] if end > 0 else line[st:].rstrip()
        if status == "sent":  # the inline path only takes "sent " with its explanation
            if line.find("forwarded as ", st) > 0:
                bucket[t.FORWARDED] += 1
                return
            bucket[t.DELIVERED] += 1
            bucket[svc.sent_key] += 1
            self._rcpts.append(line[r + 4:line.find(">", r + 4)])
            state = self.pending.get(line[p:q])
            if state is not None and state[1] > 0:  # type: ignore[operator]
                bucket[t.BYTES_DELIVERED] += state[1]  # type: ignore[operator]
        elif status == "deferred":
            bucket[t.DEFERRALS] += 1
            bucket[t.key(t.DELIVERY, svc.transport, "deferred")] += 1
            state = self._state(line[p:q], hour)
            flags: int = state[0]  # type: ignore[assignment]
            if not flags & F_DEFERRED:
                state[0] = flags | F_DEFERRED
                bucket[t.DEFERRED] += 1
            state[3] = svc.transport
        elif status == "bounced":
            bucket[t.BOUNCED] += 1
            bucket[t.key(t.DELIVERY, svc.transport, "bounced")] += 1
        # deliverable / undeliverable (address verification probes), and the like

    # -- Dovecot ---------------------------------------------------------------------------

    def _dovecot(self, line: str, p: int, svc: Service, bucket: Counts) -> None:
        """``dovecot: imap-login: Login: ...``: the process is the message's first word."""
        q = line.find(": ", p)
        proto = _LOGIN_PROTOCOLS.get(line[p:q])
        if proto is not None:
            self._login(line, q + 2, proto, bucket, svc)
        elif _at(line, "auth: ", p) or _at(line, "auth-worker(", p):
            self._auth(line, bucket)

    def _dovecot_message(self, line: str, r: int, process: str, bucket: Counts,
                         svc: Service) -> None:
        """A line of Dovecot's own log file, whose tag was ``process``."""
        if process.endswith("-login"):
            self._login(line, r, process[:-6], bucket, svc)
        elif process == "auth" or process == "auth-worker":
            self._auth(line, bucket)

    def _login(self, line: str, r: int, proto: str, bucket: Counts, svc: Service) -> None:
        if _at(line, "Info: ", r) or line.startswith(_LEVELS, r):
            r = line.find(": ", r) + 2  # Dovecot's own file: "Info: Login: ..."
        if _at(line, "Login: ", r) or _at(line, "Logged in: ", r):
            bucket[_login_key(proto)] += 1
            return
        i = line.find("(auth failed, ", r)
        if i > 0:
            j = i + 14
            attempts = line[j:line.find(" ", j)]
            bucket[_login_key(proto, t.AUTH_FAILURE)] += int(attempts) \
                if attempts.isdigit() else 1
        elif not line.startswith(_LOGIN_NOISE, r):
            svc.unparsed += 1

    @staticmethod
    def _auth(line: str, bucket: Counts) -> None:
        if "assword mismatch" in line:
            bucket[_AUTH_PASSWORD] += 1
        elif "unknown user" in line or "User not known" in line:
            bucket[_AUTH_UNKNOWN] += 1


_LOGIN_PROTOCOLS = {f"{proto}-login": proto
                    for proto in ("imap", "pop3", "submission", "managesieve")}
_AUTH_PASSWORD = t.key(t.AUTH_REJECT, "password")
_AUTH_UNKNOWN = t.key(t.AUTH_REJECT, "unknown-user")
_login_keys: dict[tuple[str, str], str] = {}


def _login_key(proto: str, metric: str = t.LOGIN) -> str:
    k = _login_keys.get((proto, metric))
    if k is None:
        k = _login_keys[(proto, metric)] = t.key(metric, proto)
    return k


_reject_keys: dict[tuple[str, str], str] = {}


def _reject(line: str, start: int) -> str:
    """The counter of a ``reject: RCPT from host[1.2.3.4]: 554 5.7.1 ...; from=<...`` line
    (``start`` is after ``reject: ``): its class, from the reply text only, and its code."""
    c = line.find(": ", start)  # after the client (postscreen: "[1.2.3.4]:5678: ")
    if c < 0:
        return _reject_key("other", "other")
    code = line[c + 2:c + 5]
    if not (code.isdigit() and code[0] in "2345"):
        code = "other"
    end = line.find("; from=<", c)
    return _reject_key(classify(line[c + 5:end] if end > 0 else line[c + 5:]), code)


def _reject_key(cls: str, code: str) -> str:
    k = _reject_keys.get((cls, code))
    if k is None:
        k = _reject_keys[(cls, code)] = t.key(t.REJECT, cls, code)
    return k
