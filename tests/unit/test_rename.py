"""``user rename``'s edit of an alias's comma-separated targets: the exact element, in its
place, never a substring, never twice."""

from __future__ import annotations

import pytest

from podod.mail.commands.rename import replace_target

OLD, NEW = "alice@example.com", "alice.doe@example.com"


@pytest.mark.parametrize(("goto", "expected"), [
    (OLD, NEW),
    (f"bob@example.org,{OLD},carol@example.net", f"bob@example.org,{NEW},carol@example.net"),
    (f"x{OLD},{OLD}.org,{OLD}x", f"x{OLD},{OLD}.org,{OLD}x"),           # substrings stay
    (f"{OLD},{NEW}", NEW),                                             # no second copy
    (f"{NEW},bob@example.org,{OLD}", f"{NEW},bob@example.org"),
    (f"bob@example.org, {OLD.upper()} ,carol@example.net",                # another tool's
     f"bob@example.org,{NEW},carol@example.net"),
    (f"{OLD},{OLD}", NEW),                                             # a repeat, once
    ("bob@example.org, carol@example.net", "bob@example.org, carol@example.net"),  # untouched
])
def test_the_old_element_is_replaced_in_place(goto: str, expected: str) -> None:
    assert replace_target(goto, OLD, NEW) == expected
