"""Login throttling (``api.login_throttle``; the policy is in docs/api-auth.md).

Failures slow down where they come from: each client address, and each (account, client
address) pair, waits ``base_delay * 2**k`` (up to ``max_delay``) after ``free_failures``
failures before its next attempt is looked at. Failures of one account from anywhere lock it
for ``lockout_time``, but only from addresses it has not logged in from before (the caller
says which): an attacker elsewhere cannot lock an admin out of their own address.

Everything is in memory and bounded (:data:`MAX_ENTRIES` per table, the oldest forgotten
first); a restart forgets failures, which only an administrator can cause. Names that are
no account are counted exactly like accounts, so the answers do not tell which exist.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from podod.api.auth_settings import LoginThrottleSettings

MAX_ENTRIES = 50_000


@dataclass
class Failures:
    count: int = 0
    last: float = 0.0
    until: float = 0.0  # no attempt is looked at before this time


@dataclass(frozen=True)
class Verdict:
    """Why an attempt is not looked at now, and for how long (seconds)."""

    reason: str  # "address" | "pair" | "locked"
    wait: float

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.wait))


class LoginThrottle:
    def __init__(self, settings: Callable[[], LoginThrottleSettings],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self.by_address: OrderedDict[Hashable, Failures] = OrderedDict()
        self.by_pair: OrderedDict[Hashable, Failures] = OrderedDict()
        self.by_account: OrderedDict[Hashable, Failures] = OrderedDict()

    def _get(self, table: OrderedDict[Hashable, Failures], key: Hashable,
             now: float) -> Failures | None:
        entry = table.get(key)
        if entry is not None and now - entry.last > self._settings().window:
            del table[key]
            return None
        return entry

    def check(self, account: str | None, address: str, *, known: bool) -> Verdict | None:
        """None when the attempt may be looked at now; else why not. ``known``: the account
        has logged in from this address recently (the lockout does not apply there)."""
        now = self._clock()
        settings = self._settings()
        entry = self._get(self.by_address, address, now)
        if entry is not None and entry.until > now:
            return Verdict("address", entry.until - now)
        if account is None:
            return None
        entry = self._get(self.by_pair, (account, address), now)
        if entry is not None and entry.until > now:
            return Verdict("pair", entry.until - now)
        entry = self._get(self.by_account, account, now)
        if (not known and entry is not None and entry.count >= settings.lockout_failures
                and now - entry.last < settings.lockout_time):
            return Verdict("locked", entry.last + settings.lockout_time - now)
        return None

    def failed(self, account: str | None, address: str) -> None:
        """Count a failure (a wrong password or code, an unknown name, a forged token)."""
        now = self._clock()
        self._count(self.by_address, address, now, delays=True)
        if account is not None:
            self._count(self.by_pair, (account, address), now, delays=True)
            self._count(self.by_account, account, now, delays=False)

    def succeeded(self, account: str, address: str) -> None:
        """A login that succeeded clears its (account, address) pair, nothing else: a
        valid account of one's own must not wipe an address's record of guesses."""
        self.by_pair.pop((account, address), None)

    def clear_account(self, account: str) -> None:
        """``api account unlock``: the account's lockout and its pairs' delays."""
        self.by_account.pop(account, None)
        for key in [k for k in self.by_pair if isinstance(k, tuple) and k[0] == account]:
            del self.by_pair[key]

    def _count(self, table: OrderedDict[Hashable, Failures], key: Hashable, now: float, *,
               delays: bool) -> None:
        settings = self._settings()
        entry = self._get(table, key, now) or Failures()
        entry.count += 1
        entry.last = now
        if delays and entry.count > settings.free_failures:
            steps = min(entry.count - settings.free_failures - 1, 40)
            entry.until = now + min(settings.max_delay, settings.base_delay * 2 ** steps)
        table[key] = entry
        table.move_to_end(key)
        while len(table) > MAX_ENTRIES:
            table.popitem(last=False)
