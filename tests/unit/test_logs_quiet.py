"""Libraries that would log secrets at debug stay quiet even when podod logs at debug."""

from __future__ import annotations

import logging

from podod.logs import setup_logging


def test_the_crypto_stores_sql_never_reaches_a_debug_log() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("debug")
        peewee = logging.getLogger("peewee")
        # matrix-nio's key store logs each statement with its parameters (pickled keys)
        assert not peewee.isEnabledFor(logging.DEBUG)
        assert not peewee.isEnabledFor(logging.INFO)
        assert logging.getLogger("podod").isEnabledFor(logging.DEBUG)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
