"""Which program wrote a log line, from its syslog tag.

Postfix tags are ``<syslog_name>/<daemon>``: ``postfix/smtpd``, a master.cf service name in
between (``postfix/submission/smtpd``, ``postfix/relay/smtp``), or another instance's name
(``postfix-out/smtp`` in a multi-instance setup). Dovecot logs through syslog as
``dovecot`` with its process in the message (``dovecot: imap-login: Login: ...``), or into
its own ``log_path`` file with the process as the tag (``imap-login: Info: Login: ...``).
Everything else (sshd, the kernel, cron) cannot matter and is skipped after one lookup.
"""

from __future__ import annotations

# What the parser does with the line (kept small ints: compared on every line).
SKIP = 0
SMTPD = 1       # smtpd, postscreen
CLEANUP = 2
QMGR = 3        # qmgr, nqmgr, oqmgr
PICKUP = 4
DELIVERY = 5    # smtp, lmtp, local, virtual, pipe, error, retry, discard
BOUNCE = 6      # bounce (also runs as defer and trace)
POSTSUPER = 7
POSTFIX = 8     # every other Postfix program: counted, never "unparsed"
DOVECOT = 9     # tag "dovecot": the Dovecot process is in the message
DOVECOT_PROC = 10  # Dovecot's own log file: the tag is the process

_POSTFIX_KINDS = {
    "smtpd": SMTPD, "postscreen": SMTPD, "cleanup": CLEANUP, "qmgr": QMGR, "nqmgr": QMGR,
    "oqmgr": QMGR, "pickup": PICKUP, "smtp": DELIVERY, "lmtp": DELIVERY, "local": DELIVERY,
    "virtual": DELIVERY, "pipe": DELIVERY, "error": DELIVERY, "retry": DELIVERY,
    "discard": DELIVERY, "bounce": BOUNCE, "postsuper": POSTSUPER,
}

# Dovecot processes, as the tags of Dovecot's own log file (every Dovecot line is counted
# under the one service label "dovecot").
DOVECOT_PROCESSES = frozenset({
    "imap-login", "pop3-login", "submission-login", "managesieve-login", "auth",
    "auth-worker", "imap", "pop3", "lmtp", "submission", "managesieve", "lda", "master",
    "config", "anvil", "log", "stats", "dict", "indexer", "indexer-worker", "doveadm",
    "quota-status",
})


class Service:
    """One kind of line source, with its line counters (read and reset by the caller).
    (A plain class, not a dataclass: importing dataclasses costs ``podod logparse`` 5-8 ms
    of start-up.)"""

    __slots__ = ("forwards", "kind", "lines", "name", "sent_key", "transport", "unparsed")

    def __init__(self, name: str, kind: int, transport: str = "") -> None:
        self.name = name            # the label: "postfix/smtpd", "dovecot", ...
        self.kind = kind
        # delivery agents: the master.cf service name (smtp, relay, ...); Dovecot's own
        # file: the process (imap-login, auth, ...)
        self.transport = transport
        self.lines = 0
        self.unparsed = 0
        # the counter a delivered line of this agent increments
        self.sent_key = f"delivery\t{transport}\tsent"
        # local(8): "status=sent (forwarded as ...)" is a forward
        self.forwards = name == "postfix/local"

    def __repr__(self) -> str:
        return f"Service({self.name!r}, {self.kind}, transport={self.transport!r})"


SKIPPED = Service("", SKIP)


def dovecot_process(text: str) -> str:
    """``auth-worker(123)`` / ``imap(alice)<1><sess>`` → ``auth-worker`` / ``imap``."""
    end = len(text)
    for ch in "(<[":
        i = text.find(ch)
        if 0 <= i < end:
            end = i
    return text[:end]


def resolve(tag: str) -> tuple[Service, bool]:
    """The service of a tag without its ``[pid]``, and whether the answer may be cached
    (a Dovecot file tag carries the user and cannot be)."""
    if tag.startswith("postfix"):
        parts = tag.split("/")
        instance = parts[0]
        if instance != "postfix" and not instance.startswith(("postfix-", "postfix_")):
            return SKIPPED, True
        if len(parts) == 1:  # "postfix[123]: ..." (postfix-script and friends)
            return Service("postfix/postfix-script", POSTFIX), True
        daemon = parts[-1]
        if not daemon:
            return SKIPPED, True
        kind = _POSTFIX_KINDS.get(daemon, POSTFIX)
        transport = parts[-2] if len(parts) >= 3 and kind == DELIVERY else daemon
        return Service(f"postfix/{daemon}", kind, transport=transport), True
    if tag == "dovecot" or tag.startswith("dovecot-"):
        return Service("dovecot", DOVECOT), True
    process = dovecot_process(tag)
    if process in DOVECOT_PROCESSES:  # Dovecot's own log file: the process is the tag
        return Service("dovecot", DOVECOT_PROC, transport=process), process == tag
    return SKIPPED, True
