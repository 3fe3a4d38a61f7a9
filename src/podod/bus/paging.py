"""Pages of a listing, for every frontend alike: a command that lists rows without a natural
bound (mailboxes, aliases, domains, audit records) shows the first ``--limit`` (default
:data:`PAGE_SIZE`) in key order, counts the rest, and names the exact command that shows the
next page (``--after KEY``, a keyset cursor: as fast on the last page of 100 000 rows as on
the first). ``--all`` shows every row, for scripts.

The database does the work: ``LIMIT n+1`` tells whether there is more, and only then is the
rest counted, from the cursor on, with the listing's own filter.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from podod.bus.context import CommandContext
from podod.bus.spec import Opt, Param
from podod.errors import UsageError

PAGE_SIZE = 100  # a terminal's worth: the first screen comes at once at any size
MAX_LIMIT = 1_000_000  # one page; --all has no limit
# Turning more rows than this into a reply's data and table is done in a worker thread:
# 100 000 of them take a few hundred ms, which must not hold every other request.
INLINE_ROWS = 2000

_T = TypeVar("_T")


async def off_loop(big: bool, build: Callable[..., _T], *args: Any) -> _T:
    """``build(*args)``, in a worker thread when ``big``."""
    return await asyncio.to_thread(build, *args) if big else build(*args)


def page_options(what: str, key: str, *, default: int = PAGE_SIZE,
                 cursor: str = "after") -> list[Param]:
    """``--limit N``, ``--after KEY`` (or ``--before`` for newest-first listings) and
    ``--all`` for a listing of ``what`` ordered by ``key``."""
    where = "after" if cursor == "after" else "before"
    return [
        Opt("limit", f"show at most this many {what} (default {default}); the reply counts "
            "the rest and names the command for the next page", kind="int", minimum=1,
            maximum=MAX_LIMIT),
        Opt(cursor, f"start {where} this {key} (the previous page names it)",
            metavar=key.upper().replace(" ", "_")),
        Opt("all", f"show every one of the {what}, however many (scripts: podoctl --json "
            "... --all)", kind="flag"),
    ]


@dataclass(frozen=True)
class Page:
    """Which rows a request asks for: at most ``limit`` (None: all) after ``cursor``."""

    limit: int | None
    cursor: str | None
    option: str = "after"

    @classmethod
    def of(cls, command: str, limit: int | None, cursor: str | None, all: bool,
           default: int = PAGE_SIZE, option: str = "after") -> Page:
        if all and limit is not None:
            raise UsageError(f"{command}: --limit and --all do not go together; give one")
        if cursor is not None and not cursor.strip():
            raise UsageError(f"{command}: --{option} needs a value from the previous page")
        return cls(None if all else (limit or default), cursor, option)

    @property
    def fetch(self) -> int | None:
        """How many rows to ask the database for: one more than shown tells if there is
        more."""
        return None if self.limit is None else self.limit + 1


async def fetch_page(db: Any, page: Page, *, select: str, count: str, where: str,
                     args: list[Any], key: str, descending: bool = False
                     ) -> tuple[list[Any], int]:
    """The page's rows and how many more match after them (PostgreSQL).

    ``select`` and ``count`` are the listing's ``SELECT ... FROM ...`` and
    ``SELECT count(*) FROM ...``; ``where`` its filter over ``args`` ($1..$n); ``key`` the
    unique column it is ordered by."""
    compare = "<" if descending else ">"
    n = len(args)
    cursor = f"(${n + 1}::text IS NULL OR {key} {compare} ${n + 1}::text)"
    sql = (f"{select} WHERE ({where}) AND {cursor} ORDER BY {key}"
           f"{' DESC' if descending else ''} LIMIT ${n + 2}")
    rows = list(await db.fetch(sql, *args, page.cursor, page.fetch))
    if page.limit is None or len(rows) <= page.limit:
        return rows, 0
    rows = rows[:page.limit]
    last = rows[-1][key.rpartition(".")[2]]
    more = await db.fetchval(f"{count} WHERE ({where}) AND {key} {compare} ${n + 1}::text",
                             *args, str(last))
    return rows, int(more)


def next_page(ctx: CommandContext, page: Page, last: str) -> str:
    """The exact command for the page after ``last``: the request's own words, its cursor
    replaced."""
    option = "--" + page.option
    words: list[str] = []
    skip = False
    for word in ctx.request.argv:
        if skip:
            skip = False
            continue
        if word == option:
            skip = True
            continue
        if word.startswith(option + "=") or word == "--execute-real":
            continue
        words.append(word)
    return "podoctl " + shlex.join([*words, option, last])


def page_note(ctx: CommandContext, page: Page, more: int, last: str, what: str
              ) -> tuple[list[str], dict[str, Any] | None]:
    """The reply's note and ``page`` data when ``more`` rows follow the page."""
    if not more:
        return [], None
    command = next_page(ctx, page, last)
    note = (f"{more} more {what} after these; the next {min(more, page.limit or more)}: "
            f"{command} (or --limit N, or --all for every one)")
    return [note], {"shown": page.limit, "more": more, "next": command,
                    page.option: last}


def page_message(count: int, more: int, one: str, many: str) -> str:
    """'100 mailboxes (12 345 more)' / '3 mailboxes'."""
    words = one if count == 1 else many
    return f"{count} {words}" + (f" shown, {more} more" if more else "")
