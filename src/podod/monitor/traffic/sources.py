"""How podod reads a mail log on a server: the allow-listed commands, and what their output
means. Everything runs through the server's Runner (SSH, or directly for ``local: true``),
so a remote log is read exactly like a local one.

- ``stat -L -c '%i %s %Y %n' -- PATH ...``: inode, size and modification time.
- ``head -c 4096 -- PATH``: the first line, whose digest tells one file from another.
- the ``podod-logtail`` snippet (``sh -c SCRIPT podod-logtail PATH OFFSET MODE``): opens
  PATH once, prints ``inode size`` of what it opened, then the bytes from OFFSET on, and
  with MODE ``follow`` keeps following that same file (``tail -f`` on the descriptor, so a
  rotation never switches files under podod's feet; podod notices the rotation itself and
  finishes the old file first). tail's own notice of a truncation comes in band, at the
  exact place in the stream (``2>&1``).
- ``gzip -dc -- PATH`` / ``cat -- PATH``: whole files (rotated logs, backfill).
- ``journalctl --no-pager -o json -f --lines=all SYSLOG_FACILITY=2 --after-cursor=C`` (or
  ``--since=-Ns`` the first time; ``--directory=DIR`` for ``journal:DIR``): the mail
  facility of the journal, one JSON object per entry, each with its ``__CURSOR``
  (``-f`` alone would start with only the last 10 entries).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from podod.plugins import Registry
from podod.servers.allowlist import ABS_PATH

# An absolute path without "..": the only paths these commands accept.
LOG_PATH = r"/(?!.*(?:^|/)\.\.(?:/|$))[A-Za-z0-9@%+=:,./_-]+"
STAT_FORMAT = "%i %s %Y %n"
TRUNCATED = b"tail: /dev/fd/3: file truncated"

FOLLOW_SCRIPT = (
    'exec 3<"$1" || exit 66; '
    'stat -L -c "podod-logtail %i %s" /dev/fd/3 || exit 66; '
    'if [ "$3" = follow ]; then exec tail -c +"$2" -f /dev/fd/3 2>&1; fi; '
    'exec tail -c +"$2" /dev/fd/3 2>&1'
)
CURSOR = r"[A-Za-z0-9=;_.-]{1,400}"


def register(registry: Registry) -> None:
    """Declare the commands the traffic follower and backfill run on servers."""
    registry.remote_command("stat", "-L", "-c", re.escape(STAT_FORMAT), "--", rest=LOG_PATH,
                            purpose="inode, size and age of mail logs (rotation)")
    registry.remote_command("head", "-c", "4096", "--", LOG_PATH,
                            purpose="the first line of a mail log (which file it is)")
    registry.remote_command("sh", "-c", re.escape(FOLLOW_SCRIPT), "podod-logtail", LOG_PATH,
                            r"[1-9][0-9]{0,15}", "follow|rest",
                            purpose="read and follow a mail log from a byte offset")
    registry.remote_command("gzip", "-dc", "--", LOG_PATH,
                            purpose="read a compressed rotated mail log")
    registry.remote_command("cat", "--", LOG_PATH, purpose="read a rotated mail log")
    registry.remote_command("journalctl", "--no-pager", "-o", "json", "-f", "--lines=all",
                            "SYSLOG_FACILITY=2", rf"--after-cursor={CURSOR}|--since=-[0-9]+s",
                            rest=rf"--directory={ABS_PATH}",
                            purpose="follow the mail facility of the systemd journal")


def stat_argv(*paths: str) -> list[str]:
    return ["stat", "-L", "-c", STAT_FORMAT, "--", *paths]


def parse_stat(output: str) -> dict[str, tuple[int, int, int]]:
    """``stat`` output → path: (inode, size, mtime); missing files are simply absent."""
    found: dict[str, tuple[int, int, int]] = {}
    for line in output.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[0].isdigit() and parts[1].isdigit() and \
                parts[2].isdigit():
            found[parts[3]] = (int(parts[0]), int(parts[1]), int(parts[2]))
    return found


def follow_argv(path: str, offset: int, mode: str = "follow") -> list[str]:
    """Read ``path`` from byte ``offset`` (0-based; tail counts from 1)."""
    return ["sh", "-c", FOLLOW_SCRIPT, "podod-logtail", path, str(offset + 1), mode]


def head_digest(first_line: str) -> str | None:
    """The identity of a log file: a digest of (the first 1000 characters of) its first
    complete line, which ``head -c 4096`` always holds."""
    if not first_line.endswith("\n"):
        return None
    return hashlib.sha256(first_line[:-1][:1000].encode("utf-8")).hexdigest()[:32]


def first_line(text: str) -> str:
    """The first line of ``text`` with its newline ("" when there is no complete line),
    or its first 1000 characters and a newline when that line is longer."""
    end = text.find("\n")
    if end >= 0:
        return text[:end + 1]
    return text[:1000] + "\n" if len(text) >= 1000 else ""


def journal_argv(cursor: str | None, backlog: float, directory: str | None) -> list[str]:
    argv = ["journalctl", "--no-pager", "-o", "json", "-f", "--lines=all", "SYSLOG_FACILITY=2",
            f"--after-cursor={cursor}" if cursor else f"--since=-{max(int(backlog), 1)}s"]
    if directory:
        argv.append(f"--directory={directory}")
    return argv


def _text(value: Any) -> str:
    if isinstance(value, list):  # journald gives non-UTF-8 fields as byte arrays
        return bytes(v for v in value if isinstance(v, int) and 0 <= v < 256).decode(
            "utf-8", "replace")
    return str(value) if value is not None else ""


def journal_line(raw: bytes) -> tuple[str, str, float] | None:
    """A journal JSON entry as a syslog-style line (RFC 3339 UTC timestamp), its cursor and
    its time; None for what is not an entry."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict) or "__CURSOR" not in entry:
        return None
    try:
        stamp = int(entry.get("__REALTIME_TIMESTAMP", 0)) / 1e6
    except (TypeError, ValueError):
        stamp = 0.0
    when = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="microseconds")
    ident = _text(entry.get("SYSLOG_IDENTIFIER")) or "-"
    pid = _text(entry.get("SYSLOG_PID") or entry.get("_PID"))
    host = _text(entry.get("_HOSTNAME")) or "-"
    message = _text(entry.get("MESSAGE")).replace("\n", " ")
    tag = f"{ident}[{pid}]" if pid else ident
    return f"{when} {host} {tag}: {message}\n", str(entry["__CURSOR"]), stamp
