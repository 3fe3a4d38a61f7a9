"""``podod db init|check|upgrade [--roles]``: create the schema in an empty database, check an
existing one (saying exactly what is missing), apply pending migrations, grant roles."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import asyncpg

from podod.config import Config
from podod.errors import ConfigError, PododError, Unavailable, UsageError
from podod.mail.database import connect_kwargs
from podod.mail.databases import MAP_SQL
from podod.mail.schema import MIGRATIONS, REQUIRED, SOGO_VIEW, VIEWS, family
from podod.mail.settings import DEFAULT_NAME
from podod.servers.settings import ServerConfig

VERSION_TABLE = """CREATE TABLE IF NOT EXISTS podod_schema (
    version integer NOT NULL, applied timestamp with time zone NOT NULL DEFAULT now())"""


async def current_version(conn: asyncpg.Connection) -> int | None:
    exists = await conn.fetchval("SELECT to_regclass('podod_schema') IS NOT NULL")
    if not exists:
        return None
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM podod_schema"))


async def check_schema(conn: asyncpg.Connection) -> tuple[list[str], list[str]]:
    """What an existing database lacks: (problems, warnings), one sentence each.

    Problems are the tables and columns podod reads and writes (``REQUIRED``): without them
    podod cannot manage the database. A missing ``sogo_users`` view is a warning: mailboxes
    are managed without it, only SOGo needs it, and ``db init --sogo-view`` adds it."""
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema()")
    have: dict[str, dict[str, str]] = {}
    for row in rows:
        have.setdefault(row["table_name"], {})[row["column_name"]] = row["data_type"]
    problems, warnings = [], []
    for table, columns in REQUIRED.items():
        if table not in have:
            problems.append(f"table {table} is missing")
            continue
        for column, wanted in columns.items():
            actual = have[table].get(column)
            if actual is None:
                problems.append(f"column {table}.{column} is missing")
            elif family(actual) != wanted:
                problems.append(f"column {table}.{column} is {actual}, expected a {wanted} type")
    for view, view_columns in VIEWS.items():
        if view not in have:
            warnings.append(f"view {view} is missing: SOGo's SQL user source reads it (podod "
                            f"manages mailboxes without it); add only that view with: podod "
                            f"db init --sogo-view -c FILE")
            continue
        for column in view_columns:
            if column not in have[view]:
                problems.append(f"column {view}.{column} is missing")
    return problems, warnings


async def add_sogo_view(conn: asyncpg.Connection, execute_real: bool) -> list[str]:
    """``db init --sogo-view`` on a database podod did not create: add the ``sogo_users``
    view and nothing else, in one transaction. A sandbox run (no ``--execute-real``) creates
    it the same way and rolls back, so it proves the statement works here. An existing
    ``sogo_users`` is never replaced. Nothing is backed up because no row and no table
    changes: the only change is a new view, undone with ``DROP VIEW sogo_users``."""
    lines = []
    async with conn.transaction():
        if await conn.fetchval("SELECT to_regclass('sogo_users') IS NOT NULL"):
            return ["sogo_users exists already; nothing was changed."]
        await conn.execute(SOGO_VIEW)
        rows = await conn.fetchval("SELECT count(*) FROM sogo_users")
        if not execute_real:
            lines.append("SANDBOX: nothing was changed. The view was created in a "
                         "transaction and rolled back:")
        else:
            lines.append("Created the view sogo_users (SOGo's user source); PostfixAdmin's "
                         "tables were not changed:")
        lines.append(SOGO_VIEW + ";")
        lines.append(f"It {'would show' if not execute_real else 'shows'} {rows} active "
                     f"mailbox{'' if rows == 1 else 'es'}. Undo with: DROP VIEW sogo_users;")
        if not execute_real:
            lines.append("To create it, repeat the command with --execute-real.")
            raise _Rollback(lines)
    return lines


class _Rollback(Exception):
    """Leaves a sandbox transaction (rolled back) carrying what to print."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("sandbox")
        self.lines = lines


async def apply_migrations(conn: asyncpg.Connection) -> tuple[int, int]:
    async with conn.transaction():
        await conn.execute(VERSION_TABLE)
        await conn.execute("LOCK TABLE podod_schema IN EXCLUSIVE MODE")
        before = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM podod_schema"))
        for number, script in enumerate(MIGRATIONS[before:], start=before + 1):
            await conn.execute(script)
            await conn.execute("INSERT INTO podod_schema(version) VALUES ($1)", number)
    return before, len(MIGRATIONS)


async def grant_roles(conn: asyncpg.Connection, config: Config) -> list[str]:
    roles = config.mail.roles
    done = []
    for name, password, grants in (
        (roles.readonly, roles.readonly_password,
         ["GRANT SELECT ON domain, mailbox, alias, alias_domain, quota2 TO {r}"]),
        (roles.sogo, roles.sogo_password,
         ["GRANT SELECT, UPDATE ON sogo_users TO {r}"]),
        # Dovecot's quota dict: the usage rows and nothing else (SELECT, and the upsert).
        (roles.quota, roles.quota_password,
         ["GRANT SELECT, INSERT, UPDATE, DELETE ON quota2 TO {r}"]),
    ):
        if not name:
            continue
        if name == roles.sogo and not await conn.fetchval(
                "SELECT to_regclass('sogo_users') IS NOT NULL"):
            done.append(f"skipped role {name}: the view sogo_users is missing (add it with "
                        "podod db init --sogo-view -c FILE)")
            continue
        ident = '"' + name.replace('"', '""') + '"'
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
        if not exists:
            if password is None:
                raise ConfigError(f"mail.roles: role {name} does not exist; give its password "
                                  "(or password_file) so podod can create it")
            secret = password.get_secret_value().replace("'", "''")
            await conn.execute(f"CREATE ROLE {ident} LOGIN PASSWORD '{secret}'")
            done.append(f"created role {name}")
        db = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'GRANT CONNECT ON DATABASE "{db}" TO {ident}')
        await conn.execute(f"GRANT USAGE ON SCHEMA {await conn.fetchval('SELECT current_schema()')}"
                           f" TO {ident}")
        for grant in grants:
            await conn.execute(grant.format(r=ident))
        done.append(f"granted {name}")
    return done


async def run(config: Config, action: str, roles: bool, sogo_view: bool = False,
              execute_real: bool = False, name: str = DEFAULT_NAME) -> int:
    settings = config.mail.all_databases()[name]
    if not settings.via_server:
        return await _run_on(config, action, roles, None, sogo_view, execute_real, name)
    from podod.servers.connection import tunnel_once  # asyncssh only for a tunnel

    async with tunnel_once(via_server(config, name), settings.tunnel or "postgres") as address:
        return await _run_on(config, action, roles, address, sogo_view, execute_real, name)


def via_server(config: Config, db_name: str = DEFAULT_NAME) -> ServerConfig:
    """The server of ``mail.database.via_server`` from podod.yaml (``podod db`` runs without
    the daemon, so it knows only the servers listed there)."""
    settings = config.mail.all_databases()[db_name]
    option = config.mail.option(db_name)
    name = settings.via_server
    tunnel = settings.tunnel or "postgres"
    for server in config.servers:
        if server.name == name:
            if server.tunnel(tunnel) is None:
                names = ", ".join(t.name for t in server.tunnels) or "none"
                raise ConfigError(f"{option}.tunnel: server {name} has no tunnel named "
                                  f"'{tunnel}' (its tunnels: {names})")
            return server
    known = ", ".join(s.name for s in config.servers) or "none"
    raise ConfigError(f"{option}.via_server: podod.yaml lists no server named '{name}' "
                      f"(servers: {known}; 'podod db' does not know servers added with "
                      "'server add')")


async def _run_on(config: Config, action: str, roles: bool,
                  address: tuple[str, int] | None, sogo_view: bool = False,
                  execute_real: bool = False, name: str = DEFAULT_NAME) -> int:
    settings = config.mail.all_databases()[name]
    label = f"the mail database {name}" if config.mail.databases else "the mail database"
    try:
        conn = await asyncpg.connect(**connect_kwargs(settings, None, address))
    except PododError:
        raise
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        where = (f" through the tunnel of server {settings.via_server}"
                 if address is not None else "")
        raise Unavailable(f"cannot connect to {label}{where}: {exc}") from None
    try:
        version = await current_version(conn)
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = "
            "current_schema() AND table_name = ANY($1::text[])", list(REQUIRED))
        if sogo_view and version is not None:
            print(f"This database has podod's schema (version {version}), which includes "
                  "the view sogo_users ('podod db upgrade' keeps it current); nothing was "
                  "changed.")
            return 0
        if sogo_view and not tables:
            raise UsageError("--sogo-view is for a database PostfixAdmin made; this one is "
                             "empty: 'podod db init' creates the whole schema, the view "
                             "included; nothing was changed")
        if action == "check" or (action == "init" and version is None and tables):
            problems, warnings = await check_schema(conn)
            if problems:
                print("The database is not PostfixAdmin-compatible:", file=sys.stderr)
                for problem in problems:
                    print(f"  - {problem}", file=sys.stderr)
            if sogo_view and not problems:
                try:
                    lines = await add_sogo_view(conn, execute_real)
                except _Rollback as sandbox:
                    lines = sandbox.lines
                print("\n".join(lines))
                warnings = (await check_schema(conn))[1]  # gone once the view is there
            for warning in warnings:
                print(f"warning: {warning}", file=sys.stderr)
            if problems:
                return 1
            where = "podod schema version " + str(version) if version is not None else \
                "an existing PostfixAdmin schema (podod will not alter it)"
            print(f"{label[0].upper()}{label[1:]} is compatible ({where}).")
        elif action == "upgrade" and version is None and tables:
            print("This database has a schema podod did not create; 'podod db check' "
                  "compares it, and podod does not migrate it.", file=sys.stderr)
            return 1
        else:
            before, after = await apply_migrations(conn)
            if before == after:
                print(f"The mail schema is up to date (version {after}).")
            else:
                print(f"The mail schema is at version {after} (was {before}).")
        if roles:
            for line in await grant_roles(conn, config):
                print(line)
        return 0
    finally:
        await conn.close()


def main(config: Config, action: str, *, roles: bool = False, sogo_view: bool = False,
         execute_real: bool = False, on: str | None = None) -> int:
    if sogo_view and action != "init":
        raise UsageError(f"--sogo-view goes with 'podod db init', not 'podod db {action}'")
    if execute_real and not sogo_view:
        raise UsageError("--execute-real goes with --sogo-view (init, check and upgrade "
                         "change only what they say)")
    every = config.mail.all_databases()
    if not every:
        raise ConfigError("mail.database.dsn: is required for 'podod db'")
    if on is not None and on not in every:
        raise UsageError(f"--on: there is no mail database named {on} (the configured ones: "
                         f"{', '.join(every)})")
    names = [on] if on is not None else list(every)
    worst = 0
    for name in names:
        if config.mail.databases:
            print(f"mail database {name}:")
        try:
            worst = max(worst, asyncio.run(run(config, action, roles, sogo_view,
                                               execute_real, name)))
        except asyncpg.PostgresError as exc:
            print(f"the mail database {name} refused: {exc}" if config.mail.databases
                  else f"the mail database refused: {exc}", file=sys.stderr)
            worst = 1
        except PododError as exc:
            if len(names) == 1:
                raise
            print(exc.message, file=sys.stderr)  # the others are still checked
            worst = 1
    if action == "check" and len(every) > 1 and on is None:
        try:
            found = asyncio.run(duplicate_domains(config))
        except PododError as exc:
            print(f"domains in two databases: not checked ({exc.message})", file=sys.stderr)
            return 1
        for domain, holders in sorted(found.items()):
            print(f"the domain {domain} is in {len(holders)} mail databases "
                  f"({' and '.join(holders)}): podod refuses every change on it until one "
                  "copy is removed or 'domain move' finishes it", file=sys.stderr)
        if found:
            worst = 1
        else:
            print("No domain is in two mail databases.")
    return worst


async def duplicate_domains(config: Config) -> dict[str, list[str]]:
    """Every domain (or alias domain) held by two mail databases or more."""
    from contextlib import AsyncExitStack

    held: dict[str, list[str]] = {}
    async with AsyncExitStack() as stack:
        for name, settings in config.mail.all_databases().items():
            address = None
            if settings.via_server:
                from podod.servers.connection import tunnel_once

                address = await stack.enter_async_context(
                    tunnel_once(via_server(config, name), settings.tunnel or "postgres"))
            try:
                conn = await asyncpg.connect(**connect_kwargs(settings, None, address))
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                raise Unavailable(f"cannot connect to the mail database {name}: {exc}"
                                  ) from None
            try:
                for row in await conn.fetch(MAP_SQL):
                    held.setdefault(str(row[0]), []).append(name)
            finally:
                await conn.close()
    return {d: n for d, n in held.items() if len(n) > 1}


__all__: list[Any] = ["add_sogo_view", "apply_migrations", "check_schema", "main"]
