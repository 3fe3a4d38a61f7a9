"""Plain-text rendering of a reply, shared by podoctl's non-table output and the chat bot."""

from __future__ import annotations

from podod.bus.context import Reply

SANDBOX_BANNER = "SANDBOX: nothing was changed."


def plan_lines(reply: Reply) -> list[str]:
    if not reply.changes:
        return ["(no changes)"] if reply.sandbox else []
    verb = "Would" if reply.sandbox else "Did"
    return [f"{verb} {c.describe()}" for c in reply.changes]


def render_text(reply: Reply) -> str:
    """A reply as lines of text: the sandbox banner first, the plan, then the message."""
    lines: list[str] = []
    if not reply.ok:
        return f"Error: {reply.message}"
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
    return "\n".join(lines)
