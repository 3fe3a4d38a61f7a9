"""A domain's Postfix transport (``domain.transport``), checked as transport(5) writes one.

PostfixAdmin stores ``virtual``, ``local`` or ``relay`` (its ``transport_options``), and
administrators put full entries there: ``relay:[mx.example.net]:25``, ``smtp:[10.0.0.5]``,
``lmtp:inet:127.0.0.1:24``, ``lmtp:unix:private/dovecot-lmtp``, ``error:5.7.1 no mail
here``. The form is ``transport:nexthop``; the transport is a master.cf service name, and
either part may be empty (``:[gateway]`` keeps the default transport, ``relay:`` the default
next hop). What Postfix would refuse or misroute is refused here with one sentence:
whitespace or control characters, a bracketed host that is not a host name or address, a
port out of range, an ``inet:``/``unix:`` next hop on a transport that is not LMTP.

``virtual`` (PostfixAdmin's default, on every domain it creates) means "no entry": the
shipped ``transport_maps`` query skips it, so the domain keeps ``virtual_transport`` (Dovecot's
LMTP) rather than being sent to Postfix's own virtual(8) delivery agent.
"""

from __future__ import annotations

import ipaddress
import re

from podod.errors import ValidationError

MAX_LENGTH = 255  # domain.transport is varchar(255)
DEFAULT = "virtual"
# transport names that take a host next hop ([host]:port, host:port)
HOST_TRANSPORTS = {"smtp", "relay", "lmtp"}
# transport names whose next hop is text (error:5.7.1 reason)
TEXT_TRANSPORTS = {"error", "retry", "discard"}
_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)"
                       r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$")
_PORT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,31}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

FORMS = ("virtual, local, relay, relay:[host]:port, smtp:[host]:port, lmtp:inet:host:port, "
         "lmtp:unix:/path, error:5.7.1 text")


def _refuse(value: str, why: str) -> ValidationError:
    shown = _CONTROL.sub("?", value[:80])  # never a line break in the sentence
    return ValidationError(f"--transport '{shown}' is not a Postfix transport: {why} "
                           f"(transport(5) forms: {FORMS})")


def _host(value: str, host: str) -> None:
    if host.lower().startswith("ipv6:"):
        try:
            ipaddress.IPv6Address(host[5:])
        except ValueError:
            raise _refuse(value, f"'{host}' is not an IPv6 address") from None
        return
    try:
        ipaddress.IPv4Address(host)
        return
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+", host) or not _HOSTNAME.match(host):
        raise _refuse(value, f"'{host}' is not a host name or an IP address")


def _port(value: str, port: str) -> None:
    if port.isdigit():
        if not 1 <= int(port) <= 65535:
            raise _refuse(value, f"the port {port} is not from 1 to 65535")
    elif not _PORT_NAME.match(port):
        raise _refuse(value, f"'{port}' is not a port number or service name")


def _host_port(value: str, nexthop: str) -> None:
    """``[host]``, ``[host]:port``, ``host`` or ``host:port`` (ipv6 only in brackets)."""
    if nexthop.startswith("["):
        end = nexthop.find("]")
        if end < 0:
            raise _refuse(value, "a '[' without its ']'")
        host, rest = nexthop[1:end], nexthop[end + 1:]
        if not host:
            raise _refuse(value, "an empty host in brackets")
        _host(value, host)
        if rest:
            if not rest.startswith(":"):
                raise _refuse(value, f"'{rest}' after the host's ']'")
            _port(value, rest[1:])
        return
    host, colon, port = nexthop.partition(":")
    if host.lower() == "ipv6":
        raise _refuse(value, "an IPv6 address goes in brackets, e.g. [ipv6:2001:db8::1]")
    _host(value, host)
    if colon:
        _port(value, port)


def check_transport(value: str) -> str | None:
    """The transport to store (None: the default, no transport_maps entry), or a
    ValidationError with one sentence."""
    text = value.strip()
    if text.lower() in ("", "default", "none", DEFAULT):
        return None if text.lower() != DEFAULT else DEFAULT
    if len(text) > MAX_LENGTH:
        raise _refuse(text, f"longer than {MAX_LENGTH} characters")
    if _CONTROL.search(text):
        raise _refuse(text, "it holds a control character")
    service, _, nexthop = text.partition(":")
    if service and not _SERVICE.match(service):
        raise _refuse(text, f"'{service[:40]}' is not a master.cf service name (letters, "
                            "digits, '.', '_', '-')")
    if not service and not nexthop:
        raise _refuse(text, "neither a transport nor a next hop")
    kind = service.lower()
    if kind in TEXT_TRANSPORTS:
        return text  # free text after the colon, as Postfix shows it in the bounce
    if any(c.isspace() for c in text):
        raise _refuse(text, "it holds a space")
    if not nexthop:
        return text
    if nexthop.startswith(("inet:", "unix:")):
        if kind != "lmtp":
            raise _refuse(text, "an inet: or unix: next hop is only for the lmtp transport")
        where = nexthop[5:]
        if nexthop.startswith("unix:"):
            if not where or "," in where:
                raise _refuse(text, "'unix:' needs the path of a socket")
            return text
        _host_port(text, where)
        if not where.startswith("[") and ":" not in where:
            raise _refuse(text, "'inet:' needs host:port, e.g. lmtp:inet:127.0.0.1:24")
        return text
    if "," in nexthop:
        raise _refuse(text, "a list of next hops is not a transport map value")
    if kind in HOST_TRANSPORTS or not service:
        _host_port(text, nexthop)
    return text
