"""Servers added at run time (``server add``), kept in the state database (area "servers").

A row holds the server's settings as JSON, validated by the same model as podod.yaml when it
is read back, so an added server obeys exactly the rules of a configured one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import pydantic

from podod.servers.settings import ServerConfig
from podod.state import StateDB

MIGRATIONS = [
    """CREATE TABLE servers (
        name TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        added_by TEXT NOT NULL,
        added_at REAL NOT NULL
    )""",
]


@dataclass(frozen=True)
class AddedServer:
    config: ServerConfig
    added_by: str
    added_at: float


def to_json(config: ServerConfig) -> str:
    return json.dumps(config.model_dump(mode="json", exclude_defaults=True,
                                        exclude={"key_passphrase"}), sort_keys=True)


class AddedServers:
    def __init__(self, state: StateDB) -> None:
        self.state = state

    async def setup(self) -> None:
        await self.state.migrate("servers", MIGRATIONS)

    async def load(self) -> tuple[list[AddedServer], list[str]]:
        """Every stored server, and a sentence for each row that no longer validates."""
        rows = await self.state.run(
            lambda c: c.execute("SELECT name, config, added_by, added_at FROM servers "
                                "ORDER BY name").fetchall())
        out, problems = [], []
        for row in rows:
            try:
                data: Any = json.loads(row["config"])
                config = ServerConfig.model_validate(data)
            except (ValueError, pydantic.ValidationError) as exc:
                problems.append(f"server {row['name']} in the state database is not valid "
                                f"any more and is skipped ({str(exc).splitlines()[0]})")
                continue
            out.append(AddedServer(config, row["added_by"], row["added_at"]))
        return out, problems

    async def insert(self, config: ServerConfig, actor: str) -> AddedServer:
        now = time.time()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO servers(name, config, added_by, added_at) "
                         "VALUES (?, ?, ?, ?)", (config.name, to_json(config), actor, now))

        await self.state.run(write)
        return AddedServer(config, actor, now)

    async def delete(self, name: str) -> bool:
        def remove(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM servers WHERE name=?", (name,)).rowcount

        return bool(await self.state.run(remove))
