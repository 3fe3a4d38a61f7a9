"""Addresses and domains are normalised as the mail database stores them, and a bad one gets
a sentence that names the offending part."""

from __future__ import annotations

import posixpath
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podod.errors import ValidationError
from podod.mail.addresses import (
    ADDRESS_COLUMNS,
    DOMAIN_COLUMNS,
    LOCAL_COLUMNS,
    MAILBOX_COLUMNS,
    MAILDIR_COLUMN,
    MAX_ADDRESS,
    MAX_DOMAIN,
    MAX_LOCAL,
    MAX_MAILBOX,
    normalize_address,
    normalize_domain,
    normalize_mailbox,
)
from podod.mail.maildirs import split_maildir
from podod.mail.schema import TEXT_COLUMNS


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


# -- issue 11: addresses that are safe as maildir names, and lengths the columns hold --------

@pytest.mark.parametrize(("raw", "message"), [
    # The two examples.
    ("alice\n@demo.example", "the address 'alice\\u000a@demo.example' contains the control "
                             "character U+000A; addresses and domains may not have any"),
    ("x/.sent@demo.example", "the local part 'x/.sent' of 'x/.sent@demo.example' contains '/', "
                             "which would make it a folder path in a maildir"),
    ("a\\b@demo.example", "the local part 'a\\b' of 'a\\b@demo.example' contains '\\', which "
                          "would make it a folder path in a maildir"),
    ("alice@demo.example\n", "the address 'alice@demo.example\\u000a' contains the control "
                             "character U+000A"),
    ("al\x7fice@demo.example", "the address 'al\\u007fice@demo.example' contains the control "
                               "character U+007F"),
    ("al\x85ice@demo.example", "the address 'al\\u0085ice@demo.example' contains the control "
                               "character U+0085"),
    ("al\u2028ice@demo.example", "the address 'al\\u2028ice@demo.example' contains the control "
                                 "character U+2028"),
    ("\u202eelpmaxe@demo.example", "the address '\\u202eelpmaxe@demo.example' contains the "
                                   "control character U+202E"),
    ("tab\t@demo.example", "the address 'tab\\u0009@demo.example' contains the control "
                           "character U+0009"),
    ("-rf@demo.example", "the local part '-rf' of '-rf@demo.example' starts with '-', which "
                         "programs would read as an option"),
    (".@demo.example", "the local part '.' of '.@demo.example' has characters that are not "
                       "allowed (or a leading, trailing or double dot)"),
    ("..@demo.example", "the local part '..' of '..@demo.example' has characters"),
    ('"a b"@demo.example', 'the local part "a b" of \'"a b"@demo.example\' is quoted; podod '
                           "does not accept quoted local parts"),
    ("a@demo\x00.example", "the address 'a@demo\\u0000.example' contains the control "
                           "character U+0000"),
])
def test_addresses_unsafe_as_paths_are_refused(raw: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        normalize_address(raw)
    assert info.value.message.startswith(message), info.value.message
    assert "\n" not in info.value.message


def test_a_domain_with_a_control_character_or_slash_is_refused() -> None:
    for raw in ("demo\n.example", "demo.example\r", "de/mo.example", "..", "."):
        with pytest.raises(ValidationError) as info:
            normalize_domain(raw)
        assert "\n" not in info.value.message and "\r" not in info.value.message


def test_a_mailbox_name_is_a_safe_maildir_name() -> None:
    """An alias or a remote target may be o'brien@...; a mailbox's local part names its
    maildir, which podod's maildir commands move with sudo: letters, digits and '._+-'."""
    assert normalize_address("o'brien@example.com") == "o'brien@example.com"
    assert normalize_mailbox("Anna.Berg+x_1-2@Example.com") == "anna.berg+x_1-2@example.com"
    for raw in ("o'brien@example.com", "a$b@example.com", "+tag@example.com",
                "a{b}@example.com", "a|b@example.com"):
        with pytest.raises(ValidationError) as info:
            normalize_mailbox(raw)
        assert "a mailbox may not have: its maildir is named after it" in info.value.message


def test_limits_are_derived_from_the_schema() -> None:
    assert TEXT_COLUMNS["quota2"]["username"] == 100
    assert TEXT_COLUMNS["alias"]["goto"] is None  # text: the target count bounds it
    assert (MAX_LOCAL, MAX_DOMAIN, MAX_ADDRESS, MAX_MAILBOX) == (64, 253, 254, 100)


def _domain_of(length: int) -> str:
    """A valid domain of exactly ``length`` characters ending in '.example'."""
    left, labels = length - len(".example"), []
    while left > 63:
        size = 63 if left > 64 else 61  # never leave an empty label
        labels.append("d" * size)
        left -= size + 1
    labels.append("d" * left)
    name = ".".join(labels) + ".example"
    assert len(name) == length
    return name


@pytest.mark.parametrize("kind", ["domain", "alias", "mailbox"])
def test_the_longest_accepted_value_fits_every_column_it_is_written_to(kind: str) -> None:
    """Walk the schema's columns: the longest domain, alias address and mailbox the
    validator accepts fit each column podod writes them to, and one character more is
    refused with podod's own sentence (never the database's)."""
    if kind == "domain":
        longest = _domain_of(MAX_DOMAIN)
        assert normalize_domain(longest) == longest
        for table, column in DOMAIN_COLUMNS:
            assert _fits(table, column, longest)
        with pytest.raises(ValidationError, match="longer than 253 characters"):
            normalize_domain(_domain_of(MAX_DOMAIN + 1))
        return
    if kind == "alias":
        address = "a" * MAX_LOCAL + "@" + _domain_of(MAX_ADDRESS - MAX_LOCAL - 1)
        assert normalize_address(address) == address and len(address) == MAX_ADDRESS
        for table, column in ADDRESS_COLUMNS:
            assert _fits(table, column, address)
        with pytest.raises(ValidationError, match="an e-mail address may have at most 254"):
            normalize_address("a" * MAX_LOCAL + "@" + _domain_of(MAX_ADDRESS - MAX_LOCAL))
        return
    local = "m" * MAX_LOCAL
    address = local + "@" + _domain_of(MAX_MAILBOX - MAX_LOCAL - 1)
    assert normalize_mailbox(address) == address and len(address) == MAX_MAILBOX
    domain = address.split("@")[1]
    written = {**dict.fromkeys(MAILBOX_COLUMNS, address),
               **dict.fromkeys(LOCAL_COLUMNS, local),
               **dict.fromkeys(DOMAIN_COLUMNS, domain),
               MAILDIR_COLUMN: f"{domain}/{local}/"}  # as user create writes it
    for (table, column), value in written.items():
        assert _fits(table, column, value), (table, column, len(value))
    with pytest.raises(ValidationError) as info:
        normalize_mailbox(local + "@" + _domain_of(MAX_MAILBOX - MAX_LOCAL))
    assert info.value.message == (
        f"the mailbox address '{'m' * 40}…' has 101 characters; a mailbox address may have "
        "at most 100 (the database column quota2.username holds no more)")


def _fits(table: str, column: str, value: str) -> bool:
    length = TEXT_COLUMNS[table][column]
    return length is None or len(value) <= length


_LOCAL_CHARS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=70) | st.text(
    st.sampled_from(list("aZ09.-_/\\+'\"!#$%&*=?^`{|}~\n\x00\x7f\u2028 ")), min_size=1,
    max_size=12)


@given(local=_LOCAL_CHARS, domain=st.sampled_from(["demo.example", "xn--bcher-kva.example"]),
       mailbox=st.booleans())
@settings(max_examples=2000, deadline=None, derandomize=True, database=None)
def test_an_accepted_address_is_one_folder_inside_its_domain(
        local: str, domain: str, mailbox: bool) -> None:
    """Whatever the local part, an address the validator accepts yields a maildir
    (<root>/DOMAIN/LOCAL/) that stays inside the domain's folder and names exactly one
    folder level for the local part."""
    try:
        address = (normalize_mailbox if mailbox else normalize_address)(f"{local}@{domain}")
    except ValidationError as exc:
        assert "\n" not in exc.message
        return
    name, stored_domain = address.split("@")
    assert stored_domain == domain
    root = "/var/vmail"
    home = posixpath.normpath(f"{root}/{stored_domain}/{name}")
    assert posixpath.dirname(home) == f"{root}/{stored_domain}"
    assert posixpath.basename(home) == name
    assert name not in (".", "..") and not name.startswith((".", "-"))
    assert not any(unicodedata.category(c)[0] in "CZ" for c in name)
    if mailbox:  # podod's own maildir commands accept it (user delete --remove-maildir)
        assert split_maildir(f"{stored_domain}/{name}/", address) == (stored_domain, name)
