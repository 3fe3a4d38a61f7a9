"""A reply of thousands of changes lists the first ones and counts them all; a refusal
shows the table of what it refused (an import's bad rows)."""

from __future__ import annotations

from podod.bus.context import CHAT, Change, Reply, Table
from podod.bus.core import LISTED_CHANGES, _summarize
from podod.bus.render import blocks, render_html, render_text


def test_thousands_of_changes_are_summarized() -> None:
    changes = [Change("insert", table, f"u{i}@example.com", {})
               for i in range(1000) for table in ("mailbox", "alias", "quota2")]
    reply = Reply(message="user import: 1000 mailboxes would be imported", sandbox=True,
                  changes=changes)
    _summarize(reply)
    assert len(reply.changes) == LISTED_CHANGES and reply.changes_total == 3000
    assert reply.notes[0] == ("3000 changes in all (insert 1000 mailbox, 1000 alias, "
                              "1000 quota2); the first 20 are listed.")
    text = render_text(reply)
    assert text.count("Would insert") == LISTED_CHANGES
    assert "… and 2980 more changes" in text
    assert reply.to_dict()["changes_total"] == 3000
    assert Reply.from_dict(reply.to_dict()).changes_total == 3000


def test_a_few_changes_are_listed_as_they_are() -> None:
    reply = Reply(sandbox=True, changes=[Change("insert", "domain", "a.example", {})])
    _summarize(reply)
    assert reply.changes_total is None and "changes_total" not in reply.to_dict()
    assert "more changes" not in render_text(reply)


def test_a_refusal_shows_its_table() -> None:
    reply = Reply(ok=False, message="2 of 3 rows cannot be imported", code="invalid",
                  table=Table(["line", "address", "reason"],
                              [[2, "<b>x</b>", "not an e-mail address"]], title="bad rows"))
    assert [b.kind for b in blocks(reply)] == ["error", "table"]
    assert "not an e-mail address" in render_text(reply)
    assert "&lt;b&gt;x&lt;/b&gt;" in render_html(reply, CHAT)
