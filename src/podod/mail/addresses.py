"""E-mail addresses and domains as the mail database stores them: validated and normalised
(lower-case, IDN domains as punycode), with errors that name the offending part."""

from __future__ import annotations

import re

import idna

from podod.errors import ValidationError

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# RFC 5322 dot-atom characters; no quoted local parts (Postfix maps and Dovecot would differ).
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


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
    if "too long" in message.lower():
        return "a label is longer than 63 characters"
    return message[:1].lower() + message[1:]


def normalize_domain(raw: str) -> str:
    """The domain as stored: lower case, IDN labels as punycode (``xn--``)."""
    text = raw.strip().rstrip(".")
    if not text:
        raise ValidationError("the domain is empty")

    def bad(reason: str) -> ValidationError:
        return ValidationError(f"'{raw}' is not a valid domain name ({reason})")

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
        if not _LABEL.match(label):
            raise bad(f"label '{label}'")
    if len(ascii_name) > 253:
        raise bad("longer than 253 characters")
    if ascii_labels[-1].isdigit():
        raise bad("the last label is a number")
    return ascii_name


def split_address(raw: str, *, allow_catchall: bool = False) -> tuple[str, str]:
    """``(local_part, domain)``; local part '' for a catch-all ``@domain``."""
    text = raw.strip()
    if text.count("@") != 1:
        raise ValidationError(f"'{raw}' is not an e-mail address (it needs exactly one @)")
    local, domain_part = text.split("@")
    try:
        domain = normalize_domain(domain_part) if domain_part else ""
    except ValidationError as exc:
        raise ValidationError(f"'{raw}': {exc.message}") from None
    if not domain:
        raise ValidationError(f"'{raw}' has no domain after the @")
    if local == "":
        if allow_catchall:
            return "", domain
        raise ValidationError(f"'{raw}' has no local part before the @")
    if len(local) > 64:
        raise ValidationError(f"the local part of '{raw}' is longer than 64 characters")
    if not _LOCAL.match(local):
        raise ValidationError(f"the local part '{local}' of '{raw}' has characters that are "
                              "not allowed (or a leading, trailing or double dot)")
    return local.lower(), domain


MAX_ADDRESS = 254  # RFC 5321's limit for a path, and what a varchar(255) column holds


def normalize_address(raw: str, *, allow_catchall: bool = False) -> str:
    local, domain = split_address(raw, allow_catchall=allow_catchall)
    address = f"{local}@{domain}"
    if len(address) > MAX_ADDRESS:
        raise ValidationError(f"the address '{address[:40]}…' has {len(address)} characters; "
                              f"an e-mail address may have at most {MAX_ADDRESS}")
    return address
