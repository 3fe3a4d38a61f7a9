"""Plain-text rendering of a reply, shared by podoctl's non-table output and the chat bot.

Data in a reply (names, addresses, audit argv, senders from a mail log) is shown as it is:
:func:`visible` turns the characters a terminal acts on into escapes such as ``\\x1b``, and
podoctl hands data to rich only as plain text, never as markup.
"""

from __future__ import annotations

from podod.bus.context import Reply

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


def visible(text: str, *, newlines: bool = False) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\r``
    becomes ``\\x0d``), so data can neither move the cursor, clear the screen, set a title
    nor reorder what is shown. With ``newlines`` a line break stays a line break (messages);
    in a table cell it is shown as ``\\x0a`` too. Linear in the length of ``text``."""
    return text.translate(_SHOWN_KEEP_NEWLINES if newlines else _SHOWN)


def plan_lines(reply: Reply) -> list[str]:
    if not reply.changes:
        return ["(no changes)"] if reply.sandbox else []
    verb = "Would" if reply.sandbox else "Did"
    return [f"{verb} {c.describe()}" for c in reply.changes]


def render_text(reply: Reply) -> str:
    """A reply as lines of text: the sandbox banner first, the plan, then the message."""
    lines: list[str] = []
    if not reply.ok:
        return visible(f"Error: {reply.message}", newlines=True)
    if reply.sandbox:
        lines.append(SANDBOX_BANNER)
    if reply.message:
        lines.append(reply.message)
    lines += plan_lines(reply)
    if reply.backup_id:
        lines.append(f"Backup {reply.backup_id} was taken before the change; undo with: "
                     f"podoctl backup restore {reply.backup_id} --execute-real")
    lines += reply.notes
    if reply.sandbox and reply.plan_id:
        lines.append(f"To apply it, repeat with --execute-real, or run: confirm {reply.plan_id}")
    return visible("\n".join(lines), newlines=True)
