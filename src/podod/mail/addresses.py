"""E-mail addresses and domains as the mail database stores them: validated and normalised
(lower-case, IDN domains as punycode), with errors that name the offending part.

Every command that takes an address or a domain passes it through here, and what is accepted
is safe where podod writes it:

- **as a path**: a mailbox's maildir is ``<root>/DOMAIN/LOCAL/``, so neither part may hold a
  ``/``, a control character or a leading ``.`` or ``-``, nor be ``.`` or ``..``; a
  mailbox's local part is also limited to the characters podod's maildir commands (run with
  sudo) accept: letters, digits and ``. _ + -``;
- **in the database**: every address fits every column it is written to. The limits are
  derived from the schema's column lengths (``schema.TEXT_COLUMNS``) and RFC 5321's limits;
  a mailbox address is bounded by Dovecot's ``quota2.username`` (100 characters).
"""

from __future__ import annotations

import re
import unicodedata

import idna

from podod.errors import ValidationError
from podod.mail.schema import TEXT_COLUMNS

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# RFC 5322 atext without '/': a '/' would make a local part two folders of a maildir path.
_ATEXT = r"A-Za-z0-9!#$%&'*+=?^_`{|}~-"
# Dot-atom: no leading, trailing or double dot (so never '.' or '..'). No quoted local parts:
# Postfix's maps, Dovecot and SOGo would not agree on them.
_LOCAL = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
# A mailbox's local part names its maildir (DOMAIN/LOCAL/): the characters of a path segment
# of podod's maildir commands (maildirs.SEG), lower case, in dot-atom form.
_MAILBOX_LOCAL = re.compile(r"[a-z0-9_][a-z0-9_+-]*(?:\.[a-z0-9_+-]+)*")

# RFC limits: RFC 5321 4.5.3.1.1 (local part), 4.5.3.1.3 (a path is 256 octets with its
# angle brackets), RFC 1035 (a name of 255 octets on the wire is 253 characters written out).
RFC_LOCAL, RFC_ADDRESS, RFC_DOMAIN = 64, 254, 253

# Where podod writes a domain, an alias address or target, and a mailbox's address.
DOMAIN_COLUMNS = [("domain", "domain"), ("mailbox", "domain"), ("alias", "domain"),
                  ("alias_domain", "alias_domain"), ("alias_domain", "target_domain")]
ADDRESS_COLUMNS = [("alias", "address"), ("alias", "goto")]
MAILBOX_COLUMNS = [*ADDRESS_COLUMNS, ("mailbox", "username"), ("quota2", "username")]
LOCAL_COLUMNS = [("mailbox", "local_part")]
MAILDIR_COLUMN = ("mailbox", "maildir")  # DOMAIN/LOCAL/: the address's length plus one


def _shortest(columns: list[tuple[str, str]], rfc: int) -> int:
    lengths = [TEXT_COLUMNS[table][column] for table, column in columns]
    return min([rfc, *(n for n in lengths if n is not None)])


MAX_DOMAIN = _shortest(DOMAIN_COLUMNS, RFC_DOMAIN)
MAX_LOCAL = _shortest(LOCAL_COLUMNS, RFC_LOCAL)
MAX_ADDRESS = _shortest(ADDRESS_COLUMNS, RFC_ADDRESS)
MAX_MAILBOX = min(_shortest(MAILBOX_COLUMNS, RFC_ADDRESS),
                  _shortest([MAILDIR_COLUMN], RFC_ADDRESS + 1) - 1)
# The column that sets MAX_MAILBOX, for the sentence that refuses a longer one.
_MAILBOX_BOUND = next((f"{t}.{c}" for t, c in [*MAILBOX_COLUMNS, MAILDIR_COLUMN]
                       if TEXT_COLUMNS[t][c] == MAX_MAILBOX), None)

_SHOWN = 100  # characters of a rejected value a sentence repeats


def _is_control(char: str) -> bool:
    """C0, DEL, C1, the Unicode line and paragraph separators, and invisible format
    characters (a right-to-left override would disguise an address)."""
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")


def shown(raw: str) -> str:
    """A value as a sentence may repeat it: control characters escaped, at most 100
    characters."""
    text = "".join(f"\\u{ord(c):04x}" if _is_control(c) else c for c in raw[:_SHOWN])
    return text + ("…" if len(raw) > _SHOWN else "")


def _refuse_control(raw: str, what: str) -> None:
    bad = next((c for c in raw if _is_control(c)), None)
    if bad is not None:
        raise ValidationError(f"{what} '{shown(raw)}' contains the control character "
                              f"U+{ord(bad):04X}; addresses and domains may not have any")


_CODEPOINT = re.compile(r"Codepoint U\+([0-9A-F]+) at position (\d+) of '(.*)' not allowed")


def _idna_reason(message: str, labels: list[str]) -> str:
    """idna's message, in words that name the offending label or character."""
    found = _CODEPOINT.search(message)
    if found:
        code, position, label = found.groups()
        return (f"the character {chr(int(code, 16))!r} (U+{code}) at position {position} of "
                f"'{label}' is not allowed")
    if "A-label" in message:
        bad = [label for label in labels if label.startswith("xn--")]
        if bad:
            return f"the label '{bad[0]}' is not valid punycode"
    if "domain too long" in message.lower():
        return f"longer than {MAX_DOMAIN} characters"
    if "too long" in message.lower():
        return "a label is longer than 63 characters"
    return message[:1].lower() + message[1:]


def normalize_domain(raw: str) -> str:
    """The domain as stored: lower case, IDN labels as punycode (``xn--``)."""
    _refuse_control(raw, "the domain")
    text = raw.strip().rstrip(".")
    if not text:
        raise ValidationError("the domain is empty")

    def bad(reason: str) -> ValidationError:
        return ValidationError(f"'{shown(raw)}' is not a valid domain name ({reason})")

    if len(text) > 4 * RFC_DOMAIN:  # beyond any name idna could shorten to 253 characters
        raise bad(f"longer than {MAX_DOMAIN} characters")
    labels = text.lower().split(".")
    if len(labels) < 2:
        raise bad("it needs a dot, like example.com")
    for label in labels:
        if not label:
            raise bad("it has an empty label: two dots in a row")
        if label.startswith("-") or label.endswith("-"):
            raise bad(f"the label '{label}' starts or ends with a hyphen")
        if len(label) > 63:
            raise bad(f"the label '{label[:20]}…' is longer than 63 characters")
    try:
        ascii_name = idna.encode(text.lower(), uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise bad(_idna_reason(str(exc), labels)) from None
    ascii_labels = ascii_name.split(".")
    for label in ascii_labels:
        if len(label) > 63:
            raise bad(f"the label '{label[:20]}…' is longer than 63 characters")
        if not _LABEL.fullmatch(label):
            raise bad(f"label '{label}'")
    if len(ascii_name) > MAX_DOMAIN:
        raise bad(f"longer than {MAX_DOMAIN} characters")
    if ascii_labels[-1].isdigit():
        raise bad("the last label is a number")
    return ascii_name


def split_address(raw: str, *, allow_catchall: bool = False,
                  domains: dict[str, str] | None = None) -> tuple[str, str]:
    """``(local_part, domain)``; local part '' for a catch-all ``@domain``.

    ``domains`` caches normalised domains across many addresses (a list of targets)."""
    _refuse_control(raw, "the address")
    text = raw.strip()
    if text.count("@") != 1:
        raise ValidationError(f"'{shown(raw)}' is not an e-mail address (it needs exactly "
                              "one @)")
    local, domain_part = text.split("@")
    try:
        domain = (domains or {}).get(domain_part, "")
        if domain_part and not domain:
            domain = normalize_domain(domain_part)
            if domains is not None:
                domains[domain_part] = domain
    except ValidationError as exc:
        raise ValidationError(f"'{shown(raw)}': {exc.message}") from None
    if not domain:
        raise ValidationError(f"'{shown(raw)}' has no domain after the @")
    if local == "":
        if allow_catchall:
            return "", domain
        raise ValidationError(f"'{shown(raw)}' has no local part before the @")
    if len(local) > MAX_LOCAL:
        raise ValidationError(f"the local part of '{shown(raw)}' is longer than {MAX_LOCAL} "
                              "characters")
    if local.startswith('"'):
        raise ValidationError(f"the local part {local} of '{shown(raw)}' is quoted; podod "
                              "does not accept quoted local parts")
    if local.startswith("-"):
        raise ValidationError(f"the local part '{local}' of '{shown(raw)}' starts with '-', "
                              "which programs would read as an option")
    for char in "/\\":
        if char in local:
            raise ValidationError(f"the local part '{local}' of '{shown(raw)}' contains "
                                  f"'{char}', which would make it a folder path in a maildir")
    if not _LOCAL.fullmatch(local):
        raise ValidationError(f"the local part '{local}' of '{shown(raw)}' has characters "
                              "that are not allowed (or a leading, trailing or double dot)")
    return local.lower(), domain


def normalize_address(raw: str, *, allow_catchall: bool = False,
                      domains: dict[str, str] | None = None) -> str:
    """An alias, a target or an address to look up."""
    local, domain = split_address(raw, allow_catchall=allow_catchall, domains=domains)
    address = f"{local}@{domain}"
    if len(address) > MAX_ADDRESS:
        raise ValidationError(f"the address '{address[:40]}…' has {len(address)} characters; "
                              f"an e-mail address may have at most {MAX_ADDRESS}")
    return address


def normalize_mailbox(raw: str) -> str:
    """A new mailbox's address: an address whose local part is a safe maildir name and
    which fits every column a mailbox is written to (its maildir and quota2 row too)."""
    address = normalize_address(raw)
    local = address.split("@")[0]
    if not _MAILBOX_LOCAL.fullmatch(local):
        raise ValidationError(f"the local part '{local}' of the mailbox {address} has "
                              "characters a mailbox may not have: its maildir is named after "
                              "it, so only letters, digits and '._+-', starting with a "
                              "letter, a digit or '_'")
    if len(address) > MAX_MAILBOX:
        raise ValidationError(f"the mailbox address '{address[:40]}…' has {len(address)} "
                              f"characters; a mailbox address may have at most {MAX_MAILBOX} "
                              f"(the database column {_MAILBOX_BOUND} holds no more)")
    return address
