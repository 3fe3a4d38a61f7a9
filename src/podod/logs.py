"""Structured logging to stderr (which systemd sends to the journal): ``text`` is
logfmt-like ``level=info logger=podod.daemon msg="..."``, ``json`` is one object per line."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class LogfmtFormatter(logging.Formatter):
    def __init__(self, *, journal: bool) -> None:
        super().__init__()
        self.journal = journal  # the journal stamps time itself

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        parts = []
        if not self.journal:
            parts.append("ts=" + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                         + f".{int(record.msecs):03d}Z")
        parts += [f"level={record.levelname.lower()}", f"logger={record.name}",
                  "msg=" + json.dumps(msg, ensure_ascii=False)]
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                parts.append(f"{key}={json.dumps(value, default=str, ensure_ascii=False)}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": record.created, "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                out[key] = value
        return json.dumps(out, default=str, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    import os

    handler = logging.StreamHandler(sys.stderr)
    journal = bool(os.environ.get("JOURNAL_STREAM"))
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter(journal=journal))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("asyncssh", "aiohttp.access", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # peewee (matrix-nio's crypto store) logs every SQL statement with its parameters at
    # debug: pickled Olm/Megolm keys among them, which must never reach a log.
    logging.getLogger("peewee").setLevel(logging.WARNING)
    # matrix-nio warns "Timed out, sleeping for 0s" for a refused connection too; the Matrix
    # notifier says what failed in a line of its own.
    logging.getLogger("nio").setLevel(max(logging.ERROR, root.level))
