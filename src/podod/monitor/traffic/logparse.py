"""``podod logparse FILE... [--json]``: the traffic report of mail log files, no daemon.

Files are read in the order given (oldest first, as pflogsumm reads them: ``mail.log.2.gz
mail.log.1 mail.log``), plain or gzip-compressed; a message that starts in one file and ends
in the next is followed across them. Syslog timestamps have no year and no zone: the year
comes from each file's modification time, the zone is this machine's (set ``TZ`` to read
another server's logs).
"""

from __future__ import annotations

import argparse
import os
import sys

from podod.errors import PododError, UsageError
from podod.monitor.traffic.clock import LogClock, local_zone
from podod.monitor.traffic.parser import MailLogParser
from podod.monitor.traffic.tally import Tally

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing: mypy knows it)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import IO, Any, NoReturn

# The command's start-up is part of what a user waits for (docs/monitoring.md, Benchmark):
# this module imports what every run needs; gzip, json, the report and rich come when used.

READ_HINT = 1 << 16  # bytes per readlines() batch


class NotALog(PododError):
    code = "not-a-log"
    exit_code = 1


class ParseRun:
    def __init__(self, parser: MailLogParser) -> None:
        self.parser = parser
        self.files: list[dict[str, Any]] = []

    @property
    def tally(self) -> Tally:
        return self.parser.tally


def open_log(path: str | os.PathLike[str]) -> IO[str]:
    """A text stream of a plain or gzip-compressed log; errors name the file."""
    try:
        if os.path.isdir(path):
            raise UsageError(f"{os.fspath(path)}: is a folder, not a log file")
        with open(path, "rb") as probe:
            magic = probe.read(2)
        if magic == b"\x1f\x8b":
            import gzip

            return gzip.open(path, "rt", encoding="utf-8", errors="replace")
        return open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise UsageError(f"{os.fspath(path)}: no such file") from None
    except PermissionError:
        raise UsageError(f"{os.fspath(path)}: permission denied") from None
    except OSError as exc:
        raise UsageError(f"{os.fspath(path)}: cannot read it ({exc.strerror or exc})") \
            from None


def read_batches(path: str | os.PathLike[str], stream: IO[str]) -> Iterator[list[str]]:
    """The lines of an open log in batches (``readlines`` of about ``READ_HINT`` bytes);
    read errors name the file."""
    import zlib

    try:
        with stream:
            while True:
                batch = stream.readlines(READ_HINT)
                if not batch:
                    return
                yield batch
    except (EOFError, zlib.error) as exc:
        raise NotALog(f"{os.fspath(path)}: is not a complete gzip file") from exc
    except OSError as exc:
        import gzip

        if isinstance(exc, gzip.BadGzipFile):
            raise NotALog(f"{os.fspath(path)}: is not a complete gzip file") from None
        raise UsageError(f"{os.fspath(path)}: cannot read it ({exc.strerror or exc})") \
            from None


def parse_files(paths: list[str] | list[os.PathLike[str]], *,
                parser: MailLogParser | None = None) -> ParseRun:
    """Parse ``paths`` in order into one parser (a global top list unless one is given)."""
    if parser is None:
        parser = MailLogParser(Tally(top_scope="global", top_capacity=100_000),
                               clock=LogClock(local_zone()))
    run = ParseRun(parser)
    for path in paths:
        stream = open_log(path)
        parser.start_file(os.stat(path).st_mtime)
        lines = 0
        malformed = parser.malformed
        for batch in read_batches(path, stream):
            lines += len(batch)
            parser.feed_lines(batch)
        bad = parser.malformed - malformed
        if lines and bad == lines:
            raise NotALog(f"{os.fspath(path)}: does not look like a mail log (no line starts "
                          "with a syslog or RFC 3339 timestamp)")
        run.files.append({"file": os.fspath(path), "lines": lines, "without_timestamp": bad})
    parser.fold_tops()
    return run


def service_counts(parser: MailLogParser) -> tuple[dict[str, int], dict[str, int]]:
    lines: dict[str, int] = {}
    unparsed: dict[str, int] = {}
    for svc in parser.services():
        if svc.lines:
            lines[svc.name] = lines.get(svc.name, 0) + svc.lines
            unparsed[svc.name] = unparsed.get(svc.name, 0) + svc.unparsed
    return lines, unparsed


def report_of(run: ParseRun, *, by: str = "day", top: int = 10) -> dict[str, Any]:
    from podod.monitor.traffic import report as reports

    lines, unparsed = service_counts(run.parser)
    return reports.build(run.tally, zone=run.parser.clock.zone, by=by, top=top, lines=lines,
                         unparsed=unparsed, extra={"files": run.files})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"podod logparse: {message}\n")


def main(argv: list[str]) -> int:
    ap = _Parser(prog="podod logparse", description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", metavar="FILE")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--by", choices=("day", "hour"), default="day")
    ap.add_argument("--top", type=int, default=10, metavar="N")
    args = ap.parse_args(argv)
    if args.top < 0:
        ap.error("--top must not be negative")
    # A run's objects live until it ends, and the parser makes no reference cycles: the
    # cyclic garbage collector would only walk the messages in flight again and again.
    import gc

    collecting = gc.isenabled()
    gc.disable()
    try:
        run = parse_files(args.files)
        report = report_of(run, by=args.by, top=args.top)
    except PododError as exc:
        print(f"podod logparse: {exc.message}", file=sys.stderr)
        return exc.exit_code
    finally:
        if collecting:
            gc.enable()
    try:
        _print(report, as_json=args.json)
    except BrokenPipeError:  # '... | head': the reader went away, which is fine
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
    return 0


def _print(report: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        import json

        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        sys.stdout.flush()
        return
    from rich.console import Console

    from podod.monitor.traffic import report as reports

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich would exit 1
            self.quiet = True
            raise BrokenPipeError

    console = _Console(markup=False, emoji=False, highlight=False)  # log data is no markup
    for table in reports.rich_tables(report):
        console.print(table)
