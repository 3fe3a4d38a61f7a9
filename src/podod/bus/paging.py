"""Pages of a listing, for every frontend alike: a command that lists rows without a natural
bound (mailboxes, aliases, domains, audit records) shows the first ``--limit`` (default
:data:`PAGE_SIZE`) in key order, counts the rest, and names the exact command that shows the
next page (``--after KEY``, a keyset cursor: as fast on the last page of 100 000 rows as on
the first). ``--all`` shows every row, for scripts.

``--sort FIELD`` (``--sort -FIELD``: descending) orders a listing by one of its fields, the
key breaking ties; the cursor is then the last row's sort value and key as a JSON array
(``["Bob Smith", "bob@example.com"]``) and the query compares the pair,
``(field, key) > ($1, $2)``, so a page under any sort is as exact (every row once, rows with
equal values across a page boundary included) as in key order.

The database does the work: ``LIMIT n+1`` tells whether there is more, and only then is the
rest counted, from the cursor on, with the listing's own filter.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any, Literal, TypeVar

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


SortKind = Literal["text", "int", "bool", "time"]
# The SQL type of a cursor's value, and what NULL counts as (NULLs sort as the smallest
# value, in both directions consistently; podod's columns are NOT NULL anyway).
_CAST: dict[str, tuple[str, str]] = {
    "text": ("text", "''"), "int": ("bigint", "0"), "bool": ("boolean", "false"),
    "time": ("timestamptz", "'epoch'::timestamptz")}


@dataclass(frozen=True)
class Sort:
    """A field a listing can be sorted by: its SQL column (None: the listing's key itself)
    and its type."""

    column: str | None = None
    kind: SortKind = "text"

    @property
    def expression(self) -> str:
        assert self.column is not None
        cast, null = _CAST[self.kind]
        return f"coalesce({self.column}, {null})::{cast}"


def sort_choices(sorts: Mapping[str, Sort]) -> tuple[str, ...]:
    """``--sort`` takes a field, or the field after a dash for the descending order."""
    return tuple(word for name in sorts for word in (name, "-" + name))


def page_options(what: str, key: str, *, default: int = PAGE_SIZE,
                 cursor: str = "after", sorts: Mapping[str, Sort] | None = None
                 ) -> list[Param]:
    """``--limit N``, ``--after KEY`` (or ``--before`` for newest-first listings) and
    ``--all`` for a listing of ``what`` ordered by ``key``; ``--sort FIELD`` when ``sorts``
    names the fields it can be ordered by instead (the first is the key)."""
    where = "after" if cursor == "after" else "before"
    sort: list[Param] = [] if not sorts else [
        Opt("sort", f"order the {what} by one of {', '.join(sorts)}; -FIELD for the "
            f"descending order (default {next(iter(sorts))}; equal values in {key} order)",
            kind="choice",
            choices=sort_choices(sorts), metavar="FIELD")]
    return [*sort,
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
    sort: str | None = None  # as given: "name", "-quota"; None: the key's order
    by: Sort | None = None  # the sort field's column; None: the key
    descending: bool = False
    value: Any = None  # the cursor's sort value (``by`` not None)

    @classmethod
    def of(cls, command: str, limit: int | None, cursor: str | None, all: bool,
           default: int = PAGE_SIZE, option: str = "after", sort: str | None = None,
           sorts: Mapping[str, Sort] | None = None) -> Page:
        if all and limit is not None:
            raise UsageError(f"{command}: --limit and --all do not go together; give one")
        if cursor is not None and not cursor.strip():
            raise UsageError(f"{command}: --{option} needs a value from the previous page")
        shown = None if all else (limit or default)
        if sort is None:
            return cls(shown, cursor, option)
        name = sort.removeprefix("-")
        if sorts is None or name not in sorts:  # the binding checked it; a caller's slip
            allowed = ", ".join(sort_choices(sorts or {}))
            raise UsageError(f"{command}: --sort must be one of {allowed}")
        by = sorts[name]
        if by.column is None:  # the key itself: the cursor is the key, as unsorted
            return cls(shown, cursor, option, sort, None, sort.startswith("-"))
        value = None
        if cursor is not None:
            value, cursor = _sorted_cursor(command, option, sort, by, cursor)
        return cls(shown, cursor, option, sort, by, sort.startswith("-"), value)

    def cursor_of(self, row: Mapping[str, Any], key: str) -> str:
        """The cursor that starts the page after ``row``."""
        if self.by is None:
            return str(row[key])
        value = row["_sort"]
        if isinstance(value, datetime):
            value = value.isoformat()
        return json.dumps([value, str(row[key])], ensure_ascii=False)

    @property
    def fetch(self) -> int | None:
        """How many rows to ask the database for: one more than shown tells if there is
        more."""
        return None if self.limit is None else self.limit + 1


def _sorted_cursor(command: str, option: str, sort: str, by: Sort, cursor: str
                   ) -> tuple[Any, str]:
    """A sorted listing's cursor, ``[VALUE, KEY]``, as the value and the key."""
    bad = UsageError(f"{command}: --{option} must be the value the previous page named for "
                     f"--sort {sort}, e.g. [VALUE, KEY]")
    try:
        pair = json.loads(cursor)
    except ValueError:
        raise bad from None
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
        raise bad
    value = pair[0]
    if by.kind == "text" and isinstance(value, str):
        return value, pair[1]
    if by.kind == "int" and isinstance(value, int) and not isinstance(value, bool) \
            and -2**63 <= value < 2**63:
        return value, pair[1]
    if by.kind == "bool" and isinstance(value, bool):
        return value, pair[1]
    if by.kind == "time" and isinstance(value, str) and len(value) <= 64:
        try:
            return datetime.fromisoformat(value), pair[1]
        except ValueError:
            raise bad from None
    raise bad


async def fetch_page(db: Any, page: Page, *, select: str, count: str, where: str,
                     args: list[Any], key: str, descending: bool = False,
                     collate: bool = False, keep_sort: bool = False
                     ) -> tuple[list[Any], int, str]:
    """The page's rows, how many more match after them (PostgreSQL) and the cursor of the
    page after them ("" when there are no rows).

    ``select`` and ``count`` are the listing's ``SELECT ... FROM ...`` and
    ``SELECT count(*) FROM ...``; ``where`` its filter over ``args`` ($1..$n); ``key`` the
    unique column it is ordered by, or that breaks the ties of ``page``'s sort field (whose
    column must be one of the table ``count`` counts).

    ``collate`` orders and compares text in byte order (``COLLATE "C"``, Python's order of
    str), so pages of several databases merge exactly (:func:`merge_pages`), whatever each
    database's collation; ``keep_sort`` keeps the sort value (``_sort``) in the rows for
    that merge."""
    desc = descending != page.descending
    compare = "<" if desc else ">"
    order = " DESC" if desc else ""
    n = len(args)
    name = key.rpartition(".")[2]
    if collate:
        key = f'{key} COLLATE "C"'

    if page.by is None:
        cursor = f"(${n + 1}::text IS NULL OR {key} {compare} ${n + 1}::text)"
        sql = f"{select} WHERE ({where}) AND {cursor} ORDER BY {key}{order} LIMIT ${n + 2}"
        rows = list(await db.fetch(sql, *args, page.cursor, page.fetch))
        if page.limit is not None and len(rows) > page.limit:
            rows = rows[:page.limit]
            last = page.cursor_of(rows[-1], name)
            more = await db.fetchval(f"{count} WHERE ({where}) AND {key} {compare} "
                                     f"${n + 1}::text", *args, last)
            return rows, int(more), last
        return rows, 0, page.cursor_of(rows[-1], name) if rows else ""
    column, cast = page.by.expression, _CAST[page.by.kind][0]
    if collate and page.by.kind == "text":
        column = f'({column}) COLLATE "C"'

    pair = f"({column}, {key}) {compare} (${n + 1}::{cast}, ${n + 2}::text)"
    select = select.strip()
    assert select.startswith("SELECT ")
    sql = (f"SELECT {column} AS _sort, {select[7:]} WHERE ({where}) AND "
           f"(${n + 2}::text IS NULL OR {pair}) "
           f"ORDER BY {column}{order}, {key}{order} LIMIT ${n + 3}")
    found = list(await db.fetch(sql, *args, page.value, page.cursor, page.fetch))
    if page.limit is not None and len(found) > page.limit:
        found = found[:page.limit]
        more = await db.fetchval(f"{count} WHERE ({where}) AND {pair}", *args,
                                 found[-1]["_sort"], str(found[-1][name]))
    else:
        more = 0
    last = page.cursor_of(found[-1], name) if found else ""
    if keep_sort:
        return found, int(more), last
    # The sort value is the cursor's, not the listing's.
    rows = await off_loop(len(found) > INLINE_ROWS, _without_sort, found)
    return rows, int(more), last


async def merge_pages(page: Page, pages: list[tuple[str, tuple[list[Any], int, str]]], *,
                      key: str, descending: bool = False
                      ) -> tuple[list[dict[str, Any]], int, str]:
    """Pages of the same listing from several databases (``fetch_page(..., collate=True,
    keep_sort=True)``), by database name, as one page: every row marked with its
    ``database``, in the listing's order (the databases' byte order is Python's), the
    first ``page.limit`` shown, the rest counted (each database's rest plus its rows not
    shown) and the cursor of the last row shown, which each database then pages from."""
    name = key.rpartition(".")[2]
    total = sum(len(rows) for _n, (rows, _m, _l) in pages)
    return await off_loop(total > INLINE_ROWS, _merge, page, pages, name,
                          descending != page.descending)


def _merge(page: Page, pages: list[tuple[str, tuple[list[Any], int, str]]], name: str,
           desc: bool) -> tuple[list[dict[str, Any]], int, str]:
    more = 0
    merged: list[dict[str, Any]] = []
    for database, (rows, rest, _last) in pages:
        more += rest
        merged.extend([dict(row, database=database) for row in rows])
    # Each database's page is in order already: list.sort finds those runs and merges them
    # in C (n log k for k databases; heapq.merge's Python loop took 5 times as long), equal
    # keys in the databases' order. The keys are text, compared as they are.
    merged.sort(key=itemgetter(name) if page.by is None else itemgetter("_sort", name),
                reverse=desc)
    shown = merged if page.limit is None else merged[:page.limit]
    more += len(merged) - len(shown)
    last = page.cursor_of(shown[-1], name) if shown else ""
    if page.by is not None:
        for row in shown:
            del row["_sort"]
    return shown, more, last


def _without_sort(rows: list[Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "_sort"} for r in rows]


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
    paged = {"shown": page.limit, "more": more, "next": command, page.option: last}
    if page.sort is not None:
        paged["sort"] = page.sort
    return [note], paged


def page_message(count: int, more: int, one: str, many: str) -> str:
    """'100 mailboxes (12 345 more)' / '3 mailboxes'."""
    words = one if count == 1 else many
    return f"{count} {words}" + (f" shown, {more} more" if more else "")
