"""Host-key verification, explained to a person.

podod always verifies a server's host key against a known_hosts file (OpenSSH's format) and
never trusts a key on first use. When a key is refused, the message says which server, which
file, whether the key is unknown or has CHANGED, the fingerprint the server presented, and the
commands that fix it after the admin has checked that fingerprint on the server itself.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from podod.servers.settings import ServerConfig

if TYPE_CHECKING:
    import asyncssh

KeyStatus = Literal["trusted", "unknown", "no-file", "unreadable"]


def known_hosts_path(config: ServerConfig) -> Path:
    """The file podod checks: the configured one, or OpenSSH's default for podod's user."""
    if config.known_hosts is not None:
        return Path(config.known_hosts)
    return Path("~", ".ssh", "known_hosts").expanduser()


def _host_pattern(config: ServerConfig) -> str:
    host = config.host or ""
    return host if config.port == 22 else f"[{host}]:{config.port}"


def _ip_or_empty(value: str | None) -> str:
    try:
        return str(ipaddress.ip_address(value or ""))
    except ValueError:
        return ""


def key_status(config: ServerConfig, addr: str | None = None) -> KeyStatus:
    """Whether the known_hosts file has a key for this server (without connecting)."""
    path = known_hosts_path(config)
    if not path.is_file():
        return "no-file"
    if not os.access(path, os.R_OK):
        return "unreadable"
    import asyncssh  # only when a remote server is checked: never at start-up

    try:
        known = asyncssh.read_known_hosts(str(path))
        port = config.port if config.port != 22 else None
        trusted = known.match(config.host or "", _ip_or_empty(addr or config.host), port)[0]
    except (OSError, ValueError):
        return "unreadable"
    return "trusted" if trusted else "unknown"


def keyscan_hint(config: ServerConfig) -> str:
    path = shlex.quote(str(known_hosts_path(config)))
    port = f"-p {config.port} " if config.port != 22 else ""
    return f"ssh-keyscan {port}{shlex.quote(config.host or '')} >> {path}"


def explain_refused_key(config: ServerConfig, presented: asyncssh.SSHKey | None,
                        addr: str | None = None) -> str:
    """One message for a refused host key: unknown, or changed (which may be an attack)."""
    path = known_hosts_path(config)
    who = f"{config.name} ({config.address})"
    shown = f" (it presents {presented.get_fingerprint('sha256')})" if presented else ""
    status = key_status(config, addr)
    check = ("check the fingerprint on the server itself (ssh-keygen -lf "
             "/etc/ssh/ssh_host_ed25519_key.pub)")
    if status == "no-file":
        return (f"the host key of {who} cannot be verified: the known_hosts file {path} does "
                f"not exist{shown}; {check}, then add it: {keyscan_hint(config)}")
    if status == "unreadable":
        return (f"the host key of {who} cannot be verified: the known_hosts file {path} "
                f"cannot be read by podod{shown}; fix its permissions")
    if status == "trusted":
        pattern = shlex.quote(_host_pattern(config))
        return (f"the host key of {who} has CHANGED{shown}: {path} holds a different key for "
                f"it, so podod refuses to connect (someone may be intercepting the "
                f"connection); if the server was reinstalled, {check}, then replace the old "
                f"entry: ssh-keygen -R {pattern} -f {shlex.quote(str(path))} && "
                f"{keyscan_hint(config)}")
    return (f"the host key of {who} is unknown: {path} has no entry for it{shown}, and podod "
            f"never trusts a key on first use; {check}, then add it: {keyscan_hint(config)}")
