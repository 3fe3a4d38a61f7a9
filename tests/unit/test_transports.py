"""domain.transport as transport(5) writes it: what Postfix takes is kept as written, what it
would refuse or misroute is one sentence."""

from __future__ import annotations

import pytest

from podod.errors import ValidationError
from podod.mail.transports import check_transport


@pytest.mark.parametrize("value", [
    "local", "relay", "relay:", "smtp", "relay:[mx.example.net]", "relay:[mx.example.net]:25",
    "smtp:[10.0.0.5]", "smtp:[10.0.0.5]:submission", "smtp:mx.example.net",
    "smtp:mx.example.net:2525", "smtp:[ipv6:2001:db8::1]:25", ":[gateway.example.net]",
    "lmtp:inet:127.0.0.1:24", "lmtp:inet:[10.0.0.6]:24", "lmtp:unix:private/dovecot-lmtp",
    "lmtp:[10.0.0.6]:24", "dovecot", "uucp:gateway", "error:5.7.1 no mail for this domain",
    "discard:", "retry:4.3.2 try later",
])
def test_transports_postfix_takes_are_kept_as_written(value: str) -> None:
    assert check_transport(value) == value


@pytest.mark.parametrize(("value", "stored"), [
    ("virtual", "virtual"), ("Virtual", "virtual"), ("default", None), ("", None),
    ("none", None), (" relay:[mx.example.net] ", "relay:[mx.example.net]"),
])
def test_the_default_and_postfixadmins_virtual(value: str, stored: str | None) -> None:
    assert check_transport(value) == stored


@pytest.mark.parametrize(("value", "why"), [
    ("smtp:[mx.example.net]:0", "the port 0 is not from 1 to 65535"),
    ("smtp:[mx.example.net]:65536", "the port 65536 is not from 1 to 65535"),
    ("smtp:[mx.example.net]:2 5", "it holds a space"),
    ("smtp:[mx.example.net]x", "'x' after the host's ']'"),
    ("smtp:[]", "an empty host in brackets"),
    ("smtp:[999.1.1.1]", "'999.1.1.1' is not a host name or an IP address"),
    ("smtp:[ipv6:2001:db8::zz]", "'ipv6:2001:db8::zz' is not an IPv6 address"),
    ("smtp:ipv6:2001:db8::1", "an IPv6 address goes in brackets"),
    ("smtp:-mx.example.net", "'-mx.example.net' is not a host name or an IP address"),
    ("smtp:[a.example],[b.example]", "a list of next hops is not a transport map value"),
    ("relay:unix:/run/x", "an inet: or unix: next hop is only for the lmtp transport"),
    ("lmtp:unix:", "'unix:' needs the path of a socket"),
    ("lmtp:inet:10.0.0.6", "'inet:' needs host:port"),
    ("sm/tp:[mx.example.net]", "'sm/tp' is not a master.cf service name"),
    ("error:5.7.1 bad\nline", "it holds a control character"),
    (":", "neither a transport nor a next hop"),
    ("relay:[" + "a" * 300 + "]", "longer than 255 characters"),
])
def test_what_postfix_would_refuse_is_one_sentence(value: str, why: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_transport(value)
    message = caught.value.message
    assert f"is not a Postfix transport: {why}" in message
    assert "\n" not in message and message.endswith("error:5.7.1 text)")
