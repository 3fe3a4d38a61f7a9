"""Addresses and domains are normalised as the mail database stores them, and a bad one gets
a sentence that names the offending part."""

from __future__ import annotations

import pytest

from podod.errors import ValidationError
from podod.mail.addresses import normalize_address, normalize_domain


@pytest.mark.parametrize(("raw", "stored"), [
    ("Example.COM", "example.com"),
    (" example.com. ", "example.com"),
    ("Bücher.example", "xn--bcher-kva.example"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("straße.de", "xn--strae-oqa.de"),  # UTS 46 non-transitional, as browsers do
    ("пример.рф", "xn--e1afmkfd.xn--p1ai"),
])
def test_domains(raw: str, stored: str) -> None:
    assert normalize_domain(raw) == stored


@pytest.mark.parametrize(("raw", "stored"), [
    ("Alice.Doe@Example.COM", "alice.doe@example.com"),
    ("o'brien+tag@bücher.example", "o'brien+tag@xn--bcher-kva.example"),
])
def test_addresses(raw: str, stored: str) -> None:
    assert normalize_address(raw) == stored


@pytest.mark.parametrize(("raw", "message"), [
    ("", "the domain is empty"),
    ("localhost", "'localhost' is not a valid domain name (it needs a dot, like example.com)"),
    ("a..b.example", "'a..b.example' is not a valid domain name (it has an empty label: two "
                     "dots in a row)"),
    ("ex-.example", "'ex-.example' is not a valid domain name (the label 'ex-' starts or ends "
                    "with a hyphen)"),
    ("b_d.example", "'b_d.example' is not a valid domain name (the character '_' (U+005F) at "
                    "position 2 of 'b_d' is not allowed)"),
    ("xn--zz.example", "'xn--zz.example' is not a valid domain name (the label 'xn--zz' is not "
                       "valid punycode)"),
    ("x" * 64 + ".com", f"'{'x' * 64}.com' is not a valid domain name (the label "
                        f"'{'x' * 20}…' is longer than 63 characters)"),
    ("10.0.0.1", "'10.0.0.1' is not a valid domain name (the last label is a number)"),
])
def test_bad_domains(raw: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        normalize_domain(raw)
    assert info.value.message == message


@pytest.mark.parametrize(("raw", "message"), [
    ("alice", "'alice' is not an e-mail address (it needs exactly one @)"),
    ("a@b@example.com", "'a@b@example.com' is not an e-mail address (it needs exactly one @)"),
    ("@example.com", "'@example.com' has no local part before the @"),
    ("alice@", "'alice@' has no domain after the @"),
    (".alice@example.com", "the local part '.alice' of '.alice@example.com' has characters "
                           "that are not allowed (or a leading, trailing or double dot)"),
    ("jürgen@example.com", "the local part 'jürgen' of 'jürgen@example.com' has characters "
                           "that are not allowed (or a leading, trailing or double dot)"),
    ("x" * 65 + "@example.com", f"the local part of '{'x' * 65}@example.com' is longer than "
                                "64 characters"),
    ("bob@exa mple.org", "'bob@exa mple.org': 'exa mple.org' is not a valid domain name (the "
                         "character ' ' (U+0020) at position 4 of 'exa mple' is not allowed)"),
])
def test_bad_addresses(raw: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        normalize_address(raw)
    assert info.value.message == message


def test_catch_all_only_where_allowed() -> None:
    assert normalize_address("@Example.com", allow_catchall=True) == "@example.com"
    with pytest.raises(ValidationError):
        normalize_address("@example.com")
