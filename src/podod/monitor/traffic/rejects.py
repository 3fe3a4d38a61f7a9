"""Classes of Postfix rejects, read from the reply text of a ``reject:`` line.

The classes are few and fixed (they become a Prometheus label): what an admin acts on
differs by class: a DNSBL hit, an unknown recipient (directory harvest, a typo, a removed
mailbox), an attempt to relay, a bad HELO, sender or client, a policy service or
greylisting, a protocol violation, content (header/body checks, milters).
"""

from __future__ import annotations

CLASSES = ("rbl", "unknown-recipient", "relay-denied", "helo", "sender", "client",
           "recipient", "policy", "protocol", "content", "milter", "other")

# Checked in this order: the first phrase found in the reply decides the class.
_PHRASES: tuple[tuple[str, str], ...] = (
    (" blocked using ", "rbl"),
    ("User unknown", "unknown-recipient"),
    ("Relay access denied", "relay-denied"),
    ("Recipient address rejected: undeliverable address", "unknown-recipient"),
    ("Recipient address rejected: unverified address", "unknown-recipient"),
    ("Helo command rejected", "helo"),
    ("Sender address rejected", "sender"),
    ("Client host rejected", "client"),
    ("reylist", "policy"),
    ("Policy ", "policy"),
    ("policy", "policy"),
    ("Recipient address rejected", "recipient"),
    ("Improper use of SMTP command pipelining", "protocol"),
    ("Data command rejected", "protocol"),
    ("Protocol error", "protocol"),
    ("Service unavailable", "client"),
)


def classify(reply: str) -> str:
    """The class of an smtpd/postscreen reject, from its reply text."""
    for phrase, cls in _PHRASES:
        if phrase in reply:
            return cls
    return "other"


def reply_code(text: str, start: int = 0) -> str:
    """The three-digit SMTP reply code after the client: ``RCPT from host[1.2.3.4]: 554 ...``
    (smtpd) or ``RCPT from [1.2.3.4]:5678: 550 ...`` (postscreen)."""
    at = text.find(" from ", start)
    if at < 0:
        return "other"
    at = text.find(": ", at + 6)
    if at < 0:
        return "other"
    code = text[at + 2:at + 5]
    return code if len(code) == 3 and code.isdigit() and code[0] in "2345" else "other"


def dsn_reply_code(text: str) -> str:
    """For cleanup/milter rejects, which log only the DSN (``...: 5.7.1 text``): 550 or 450."""
    return "450" if text.rfind(": 4.") > text.rfind(": 5.") else "550"
