"""One rendering of a reply for every frontend: :func:`blocks` decides what is shown and in
which order (error, sandbox banner, table, message, plan, secrets, backup, notes, the hint to
confirm), told how the frontend names commands (:class:`~podod.bus.context.Naming`); then
:func:`render_text` (plain text), :func:`render_html` (chat) and podoctl's terminal output
(rich) only dress the blocks.

Data in a reply (names, addresses, audit argv, senders from a mail log) is shown as it is:
:func:`visible` turns the characters a terminal acts on into escapes such as ``\\x1b``, HTML
output escapes ``<``, ``&`` and quotes too, and podoctl hands data to rich only as plain
text, never as markup.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any, Literal

from podod.bus.context import PODOCTL, Naming, Reply

SANDBOX_BANNER = "SANDBOX: nothing was changed."

# C0 controls (ESC, CR, BEL, BS, ...), DEL and C1 controls (0x9b is a one-byte CSI), and the
# characters that reorder or break what a terminal shows (bidi overrides, line separators).
_REORDERING = (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_SHOWN = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_SHOWN.update({c: f"\\u{c:04x}" for c in _REORDERING})
_SHOWN_KEEP_NEWLINES = {c: text for c, text in _SHOWN.items() if c != 0x0A}
# For JSON text made with ensure_ascii=False (which escapes only C0 itself): the same
# characters as JSON escapes; they only occur inside strings, so the JSON stays equal.
JSON_ESCAPES = {c: f"\\u{c:04x}" for c in (*range(0x7F, 0xA0), *_REORDERING)}

Style = Literal["", "bold", "error", "banner", "dim"]
Kind = Literal["error", "banner", "table", "message", "change", "secret", "backup", "note",
               "hint"]


def visible(text: str, *, newlines: bool = False) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\r``
    becomes ``\\x0d``), so data can neither move the cursor, clear the screen, set a title
    nor reorder what is shown. With ``newlines`` a line break stays a line break (messages);
    in a table cell it is shown as ``\\x0a`` too. Linear in the length of ``text``."""
    return text.translate(_SHOWN_KEEP_NEWLINES if newlines else _SHOWN)


def cell(value: Any) -> str:
    """A table cell as text: nothing for None, yes/no, JSON for lists and dicts."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)


@dataclass(frozen=True)
class Part:
    """A run of text in one style; ``data`` text came from the reply (shown literally)."""

    text: str
    style: Style = ""
    data: bool = True


@dataclass(frozen=True)
class Block:
    """One line (or the table) of a rendered reply."""

    kind: Kind
    parts: tuple[Part, ...] = ()

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts)


def _own(text: str, style: Style = "") -> Part:
    return Part(text, style, data=False)


def plan_lines(reply: Reply) -> list[str]:
    if not reply.changes:
        return ["(no changes)"] if reply.sandbox else []
    verb = "Would" if reply.sandbox else "Did"
    lines = [f"{verb} {c.describe()}" for c in reply.changes]
    if reply.changes_total is not None and reply.changes_total > len(reply.changes):
        lines.append(f"… and {reply.changes_total - len(reply.changes)} more changes")
    return lines


def blocks(reply: Reply, naming: Naming = PODOCTL, *, asking: bool = False) -> list[Block]:
    """What a frontend shows of ``reply``, in order. ``asking``: the frontend asks for the
    confirmation itself (podoctl's prompt), so the hint to confirm is left out."""
    if not reply.ok:
        error = Block("error", (_own("Error:", "error"), _own(" "), Part(reply.message)))
        # A refusal may carry a table of what was refused (an import's bad rows).
        return [error, Block("table")] if reply.table is not None else [error]
    out: list[Block] = []
    if reply.sandbox:
        out.append(Block("banner", (_own(SANDBOX_BANNER, "banner"),)))
    if reply.table is not None:
        out.append(Block("table"))
        if reply.message and reply.table.title is None:
            out.append(Block("message", (Part(reply.message),)))
    elif reply.message:
        out.append(Block("message", (Part(reply.message),)))
    out += [Block("change", (Part("  " + line),)) for line in plan_lines(reply)]
    for secret in reply.secrets:
        out.append(Block("secret", (Part(f"{secret.label} (shown once):", "bold"), _own(" "),
                                    Part(secret.value))))
    if reply.backup_id:
        out.append(Block("backup", (
            _own("Backup "), Part(reply.backup_id, "bold"),
            _own(" was taken before the change; undo with: "),
            Part(naming.command(f"backup restore {reply.backup_id} --execute-real")))))
    out += [Block("note", (Part(note),)) for note in reply.notes]
    if reply.sandbox and not asking:
        hint = (f", or run: {naming.command(f'confirm {reply.plan_id}')}"
                if reply.plan_id else "")
        out.append(Block("hint", (Part(f"To apply it, repeat the command with --execute-real"
                                       f"{hint}."),)))
    return out


def _table_text(reply: Reply) -> list[str]:
    table = reply.table
    assert table is not None
    head = [visible(cell(c)) for c in table.columns]
    rows = [[visible(cell(v)) for v in row] for row in table.rows]
    widths = [len(h) for h in head]
    for row in rows:
        for i, value in enumerate(row[:len(widths)]):
            widths[i] = max(widths[i], len(value))
    lines = [visible(table.title)] if table.title is not None else []
    for row in (head, *rows):
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False))
                     .rstrip())
    return lines


def render_text(reply: Reply, naming: Naming = PODOCTL, *, asking: bool = False) -> str:
    """A reply as lines of plain text, every piece of data shown literally. ``asking``: as
    for :func:`blocks` (the frontend words the confirmation itself)."""
    lines: list[str] = []
    for block in blocks(reply, naming, asking=asking):
        if block.kind == "table":
            lines += _table_text(reply)
        else:
            lines.append(visible(block.text, newlines=True))
    return "\n".join(lines)


_HTML_TAGS = {"bold": ("<b>", "</b>"), "error": ("<b>", "</b>"), "banner": ("<b>", "</b>"),
              "dim": ("<i>", "</i>"), "": ("", "")}


def _html(text: str) -> str:
    return html.escape(visible(text, newlines=True)).replace("\n", "<br/>")


def render_html(reply: Reply, naming: Naming, *, asking: bool = False) -> str:
    """A reply as HTML for chat (Matrix's formatted body): data escaped, never markup."""
    lines: list[str] = []
    for block in blocks(reply, naming, asking=asking):
        if block.kind == "table":
            lines.append(_table_html(reply))
            continue
        text = "".join(f"{_HTML_TAGS[p.style][0]}{_html(p.text)}{_HTML_TAGS[p.style][1]}"
                       for p in block.parts)
        if block.kind == "change":
            text = f"<code>{text.strip()}</code>"
        lines.append(text)
    return "<br/>\n".join(lines)


def _table_html(reply: Reply) -> str:
    table = reply.table
    assert table is not None
    out = ["<table>"]
    if table.title is not None:
        out.append(f"<caption>{html.escape(visible(table.title))}</caption>")
    out.append("<tr>" + "".join(f"<th>{html.escape(visible(cell(c)))}</th>"
                                for c in table.columns) + "</tr>")
    for row in table.rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(visible(cell(v)))}</td>"
                                    for v in row) + "</tr>")
    out.append("</table>")
    return "".join(out)
