"""Several mail databases: the ``maildb`` component holds one :class:`MailDatabase` per name
(``mail.databases``, or ``mail.database`` as the one named ``main``) and the domain map that
says which database holds a domain (docs/databases.md).

The map is one small query per database (``domain`` and ``alias_domain``, thousands of rows
at most, never the mailboxes), read when first needed, again after ``maps_ttl`` and after
every commit that changed a domain or an alias domain, and at once (at most once a second)
when asked for a domain it does not know (one created by PostfixAdmin meanwhile). A database
that does not answer keeps the domains it had at its last answer, so commands on them say
that it is down (its own sentence) instead of "no such domain". With one database there is
no map: every domain is in it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from podod.errors import Conflict, NotFound, PododError, UsageError
from podod.mail.database import MailDatabase

if TYPE_CHECKING:
    from podod.runtime import Runtime

log = logging.getLogger(__name__)

MAP_TTL = 60.0  # seconds: changes made outside podod (PostfixAdmin) are seen this late at most
UNKNOWN_RETRY = 1.0  # an unknown domain re-reads the map at most this often
CHECK_TIMEOUT = 2.0  # seconds a change waits for another database's "do you hold it?"
HOLDS_SQL = ("SELECT EXISTS (SELECT 1 FROM domain WHERE domain = $1) OR EXISTS "
             "(SELECT 1 FROM alias_domain WHERE alias_domain = $1)")
MAP_SQL = ("SELECT domain FROM domain UNION SELECT alias_domain FROM alias_domain "
           "WHERE alias_domain IS NOT NULL")


class MailDatabases:
    """The ``maildb`` component."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.members: dict[str, MailDatabase] = {}
        self._held: dict[str, frozenset[str]] = {}  # per database: its domains, last answer
        self._where: dict[str, tuple[str, ...]] = {}  # domain -> databases holding it
        self._loaded = 0.0
        self._stale = True
        self._lock = asyncio.Lock()
        self._sync(runtime.config)

    def _sync(self, config: Any) -> None:
        wanted = config.mail.all_databases()
        for name in list(self.members):
            if name not in wanted:
                del self.members[name]
        for name in wanted:
            if name not in self.members:
                database = MailDatabase(self.runtime, name)
                database.domains_changed = self.invalidate
                self.members[name] = database

    # -- the databases ----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self.members)

    @property
    def several(self) -> bool:
        return len(self.members) > 1

    def get(self, name: str) -> MailDatabase:
        database = self.members.get(name)
        if database is None:
            raise NotFound(f"there is no mail database named {name} (the configured ones: "
                           f"{', '.join(self.members) or 'none'})")
        return database

    def only(self) -> MailDatabase | None:
        """The database when there is exactly one."""
        if len(self.members) == 1:
            return next(iter(self.members.values()))
        return None

    def chosen(self, on: str | None, what: str) -> MailDatabase:
        """The database ``--on NAME`` names, or the only one; with several and no --on,
        one sentence listing them."""
        if on is not None:
            return self.get(on)
        only = self.only()
        if only is None:
            raise UsageError(f"{what}: say which mail database with --on NAME (one of "
                             f"{', '.join(self.members)})")
        return only

    def selected(self, on: str | None) -> list[MailDatabase]:
        """The databases a listing reads: all, or the one ``--on`` names."""
        return [self.get(on)] if on is not None else list(self.members.values())

    # -- the domain map ---------------------------------------------------------------------

    def invalidate(self) -> None:
        self._stale = True

    async def _refresh(self, force: bool = False) -> None:
        async with self._lock:
            if not force and not self._stale and time.monotonic() - self._loaded < MAP_TTL:
                return
            started = time.monotonic()
            self._stale = False
            names = list(self.members)
            answers = await asyncio.gather(*(self._read(self.members[n]) for n in names),
                                           return_exceptions=True)
            for name, answer in zip(names, answers, strict=True):
                if isinstance(answer, BaseException):
                    if not isinstance(answer, PododError):
                        log.warning("mail database %s: reading its domains failed: %s", name,
                                    answer)
                    self._stale = True  # try again with the next command
                    continue
                self._held[name] = answer
            for name in list(self._held):
                if name not in self.members:
                    del self._held[name]
            where: dict[str, list[str]] = {}
            for name in self.members:
                for domain in self._held.get(name, ()):
                    where.setdefault(domain, []).append(name)
            self._where = {d: tuple(n) for d, n in where.items()}
            self._loaded = started

    async def _read(self, database: MailDatabase) -> frozenset[str]:
        pool = await database.pool()
        try:
            async with pool.acquire() as conn:
                rows = await conn.fetch(MAP_SQL)
        except (OSError, TimeoutError) as exc:
            raise database.unreachable(exc) from None
        return frozenset(str(r[0]) for r in rows)

    async def holders(self, domain: str) -> tuple[str, ...]:
        """The names of the databases holding ``domain`` (as a domain or an alias domain):
        none, one, or two and more (a duplicate to resolve)."""
        if not self.several:
            return tuple(self.members)
        await self._refresh()
        found = self._where.get(domain, ())
        if not found and time.monotonic() - self._loaded >= UNKNOWN_RETRY:
            await self._refresh(force=True)
            found = self._where.get(domain, ())
        return found

    async def locate(self, domain: str) -> MailDatabase:
        """The database of ``domain``; a domain in two databases, or in none, is one
        sentence."""
        only = None if self.several else self.only()
        if only is not None:
            return only
        found = await self.holders(domain)
        if len(found) > 1:
            found = await self._recheck(domain, found)
        if not found:
            down = [n for n in self.members if n not in self._held]
            extra = (f"; {', '.join(down)} did not answer, so it may be there"
                     if down else "")
            raise NotFound(f"the domain {domain} does not exist in any mail database (create "
                           f"it with 'domain create {domain} --on NAME'){extra}")
        return self.members[found[0]]

    async def held_now(self, domain: str, skip: str | None = None) -> list[str]:
        """The databases holding ``domain`` right now, asked directly (one indexed lookup
        each, at once), but ``skip``: what a change checks, since the map may be a minute
        old. A database that does not answer within :data:`CHECK_TIMEOUT` is left out (it
        is down: commands on its own domains say so)."""
        others = [m for n, m in self.members.items() if n != skip]
        answers = await asyncio.gather(*(asyncio.wait_for(self._holds(m, domain),
                                                          CHECK_TIMEOUT) for m in others),
                                       return_exceptions=True)
        found = [m.name for m, answer in zip(others, answers, strict=True) if answer is True]
        for m, answer in zip(others, answers, strict=True):
            if isinstance(answer, BaseException) and not isinstance(
                    answer, PododError | TimeoutError | OSError):
                log.warning("mail database %s: looking for %s failed: %s", m.name, domain,
                            answer)
        return found

    async def _holds(self, database: MailDatabase, domain: str) -> bool:
        pool = await database.pool()
        async with pool.acquire() as conn:
            return bool(await conn.fetchval(HOLDS_SQL, domain))

    async def locate_for_change(self, domain: str) -> MailDatabase:
        """:meth:`locate`, and the other databases asked directly whether they hold the
        domain too: a change is refused on a domain in two databases even when the map has
        not seen the second copy yet."""
        database = await self.locate(domain)
        if not self.several:
            return database
        found = await self.held_now(domain, skip=database.name)
        if found:
            self.invalidate()
            raise duplicate(domain, [n for n in self.members
                                     if n == database.name or n in found])
        return database

    def mapped(self, domain: str) -> tuple[str, ...]:
        """The databases the map (as last read) says hold ``domain``: no query."""
        return self._where.get(domain, ())

    async def refresh(self) -> None:
        """Read the map now (a domain move decides on it)."""
        await self._refresh(force=True)

    async def _recheck(self, domain: str, found: tuple[str, ...]) -> tuple[str, ...]:
        """A duplicate in the map, asked again directly (it may have been resolved since the
        map was read): still there (or a holder not answering) is the refusal."""
        answers = await asyncio.gather(*(asyncio.wait_for(
            self._holds(self.members[n], domain), CHECK_TIMEOUT) for n in found),
            return_exceptions=True)
        if any(isinstance(a, BaseException) for a in answers):
            raise duplicate(domain, found)
        still = tuple(n for n, a in zip(found, answers, strict=True) if a is True)
        if len(still) > 1:
            raise duplicate(domain, still)
        self.invalidate()
        return still

    async def duplicates(self) -> dict[str, tuple[str, ...]]:
        """Every domain held by two databases or more, read now."""
        await self._refresh(force=True)
        return {d: n for d, n in self._where.items() if len(n) > 1}

    def answered(self) -> Iterable[str]:
        return list(self._held)

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.gather(*(m.start() for m in self.members.values()))

    async def stop(self) -> None:
        await asyncio.gather(*(m.stop() for m in self.members.values()))

    async def reload(self, config: Any) -> None:
        gone = [m for n, m in self.members.items() if n not in config.mail.all_databases()]
        self._sync(config)
        await asyncio.gather(*(m.stop() for m in gone))
        await asyncio.gather(*(m.reload(config) for m in self.members.values()))
        for database in self.members.values():
            if database._sub is None:  # new in this configuration
                await database.start()
        self.invalidate()


def duplicate(domain: str, names: Iterable[str]) -> Conflict:
    both = " and ".join(names)
    return Conflict(f"the domain {domain} is in two mail databases ({both}); podod changes "
                    "nothing on it until one copy is removed or the move is finished "
                    f"('domain move {domain} --to NAME', see 'podod db check'); nothing was "
                    "changed")
