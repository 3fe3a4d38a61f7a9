"""The schema podod creates and the one it checks a PostfixAdmin database against agree."""

from __future__ import annotations

import re

from podod.mail.schema import _CREATE, MIGRATIONS, REQUIRED, SOGO_VIEW


def test_sogo_view_is_the_newest_definition_of_the_view() -> None:
    """'podod db init --sogo-view' adds the view a podod-made database has after its last
    migration, not an older one."""
    defining = [m.strip() for m in MIGRATIONS if "VIEW sogo_users" in m]
    assert defining[-1] == SOGO_VIEW
    assert SOGO_VIEW.startswith("CREATE OR REPLACE VIEW sogo_users AS")


def test_every_required_column_is_one_podod_creates() -> None:
    """What 'db check' requires of a PostfixAdmin database, podod's own schema has (so a
    column podod starts to write, like mailbox.password_expiry, is both created and
    checked)."""
    created: dict[str, set[str]] = {}
    for script in MIGRATIONS:
        for table, body in _CREATE.findall(script):
            created[table] = set(re.findall(r"^\s*(\w+) ", body, re.M))
    for table, columns in REQUIRED.items():
        assert set(columns) <= created[table], (table, set(columns) - created[table])
