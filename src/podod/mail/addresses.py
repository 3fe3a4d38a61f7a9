"""E-mail addresses and domains as the mail database stores them: validated and normalised
(lower-case, IDN domains as punycode), with errors that name the offending part."""

from __future__ import annotations

import re

import idna

from podod.errors import ValidationError

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# RFC 5322 dot-atom characters; no quoted local parts (Postfix maps and Dovecot would differ).
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


def normalize_domain(raw: str) -> str:
    text = raw.strip().rstrip(".")
    if not text:
        raise ValidationError("the domain is empty")
    try:
        ascii_name = idna.encode(text.lower(), uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValidationError(f"'{raw}' is not a valid domain name ({exc})") from None
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise ValidationError(f"'{raw}' is not a valid domain name (it needs a dot, like "
                              "example.com)")
    for label in labels:
        if not _LABEL.match(label):
            raise ValidationError(f"'{raw}' is not a valid domain name (label '{label}')")
    if len(ascii_name) > 253:
        raise ValidationError(f"'{raw}' is not a valid domain name (longer than 253 characters)")
    if labels[-1].isdigit():
        raise ValidationError(f"'{raw}' is not a valid domain name (the last label is a number)")
    return ascii_name


def split_address(raw: str, *, allow_catchall: bool = False) -> tuple[str, str]:
    """``(local_part, domain)``; local part '' for a catch-all ``@domain``."""
    text = raw.strip()
    if text.count("@") != 1:
        raise ValidationError(f"'{raw}' is not an e-mail address (it needs exactly one @)")
    local, domain_part = text.split("@")
    domain = normalize_domain(domain_part) if domain_part else ""
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


def normalize_address(raw: str, *, allow_catchall: bool = False) -> str:
    local, domain = split_address(raw, allow_catchall=allow_catchall)
    return f"{local}@{domain}"
