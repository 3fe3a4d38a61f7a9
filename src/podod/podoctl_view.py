"""podoctl's terminal output with rich: tables, messages and progress bars. Imported only
when something is shown on a terminal or as text: ``podoctl --json`` never imports rich
(docs/architecture.md, "Start-up budget")."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from podod.bus.context import PODOCTL, Reply
from podod.bus.render import Block, blocks, cell, visible

_CHUNK = 1000  # rows per write of a plain table


class _Console(Console):
    """podoctl's console: markup, emoji codes and highlighting are off, so a string is
    printed as it is; podoctl's own styles come as :class:`Text` (see :func:`_data`)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kw)

    def on_broken_pipe(self) -> None:
        """The reader went away ('| head'): main() ends quietly (rich would exit 1)."""
        self.quiet = True
        raise BrokenPipeError


_RICH_STYLES = {"": "", "bold": "bold", "error": "bold red", "banner": "bold yellow",
                "dim": "dim"}


def _data(value: Any, style: str = "", *, newlines: bool = False) -> Text:
    """Data from the daemon as rich sees it: plain text (never markup, never an emoji code)
    with its control characters shown as escapes (:func:`podod.bus.render.visible`). Every
    reply's text reaches rich through here."""
    return Text(visible(cell(value), newlines=newlines), style=style)


def _block(block: Block) -> Text:
    return Text.assemble(*(_data(p.text, _RICH_STYLES[p.style], newlines=True)
                           for p in block.parts))


# rich lays a table out cell by cell (70 s for 100 000 mailboxes); a longer table is written
# as plain aligned columns, streamed, with the same escaping of control characters.
RICH_ROWS = 1000


def _plain_table(columns: list[str], rows: list[list[Any]], console: Console) -> None:
    cells = [[visible(cell(v)) for v in row] for row in rows]
    head = [visible(c) for c in columns]
    widths = [len(h) for h in head]
    for row in cells:
        for i, text in enumerate(row[:len(widths)]):
            if len(text) > widths[i]:
                widths[i] = len(text)
    out = console.file

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()

    out.write(line(head) + "\n" + line(["-" * w for w in widths]) + "\n")
    for start in range(0, len(cells), _CHUNK):
        out.write("".join(line(row) + "\n" for row in cells[start:start + _CHUNK]))
    out.flush()


def render(reply: Reply, console: Console, err: Console, *, asking: bool = False) -> None:
    """The bus's rendering (:func:`podod.bus.render.blocks`) dressed for a terminal: only
    the table is podoctl's own (a rich table, or plain aligned columns past RICH_ROWS)."""
    for block in blocks(reply, PODOCTL, asking=asking):
        if block.kind == "error":
            err.print(_block(block))
        elif block.kind == "table":
            assert reply.table is not None
            title = reply.table.title
            if len(reply.table.rows) > RICH_ROWS:
                if title is not None:
                    console.print(_data(title))
                _plain_table(reply.table.columns, reply.table.rows, console)
                continue
            table = RichTable(title=_data(title) if title is not None else None,
                              show_lines=False)
            for column in reply.table.columns:
                table.add_column(_data(column), overflow="fold")
            for row in reply.table.rows:
                table.add_row(*[_data(v) for v in row])
            console.print(table)
        else:
            console.print(_block(block))


class ProgressView:
    """A long command's progress on stderr: a rich progress bar on a terminal when the
    command says how far it is (done of total), else a line per message."""

    def __init__(self, err: Console, quiet: bool) -> None:
        self.err = err
        self.quiet = quiet
        self.bar: Any = None
        self.task: Any = None

    def __call__(self, message: dict[str, Any]) -> None:
        if self.quiet:
            return
        text = visible(cell(message.get("message", "")))
        done, total = message.get("done"), message.get("total")
        counted = isinstance(done, int) and isinstance(total, int) and total > 0
        if counted and self.err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            if self.bar is None:
                self.bar = Progress(TextColumn("{task.description}", markup=False),
                                    BarColumn(), MofNCompleteColumn(), console=self.err,
                                    transient=True)
                self.bar.start()
                self.task = self.bar.add_task(text, total=total)
            self.bar.update(self.task, description=text, completed=done, total=total)
            return
        suffix = f" ({done}/{total})" if counted else ""
        self.err.print(Text(f"… {text}{suffix}", style="dim"))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
