"""The ``postgres`` collector: connections by state, max_connections and the used share,
database sizes, the longest open transaction, and the replay lag on a replica.

Which PostgreSQL belongs to which server (``monitor.collectors.postgres``):

- ``servers.<name>``: a DSN of its own (``dsn``, ``password``/``password_file``), optionally
  through one of the server's SSH tunnels (``tunnel``: the DSN's host and port are replaced
  by the tunnel's local end);
- otherwise, with ``mail_database: true`` (the default), the mail database (``mail.database``)
  is measured on the server that hosts it: ``mail.database.via_server`` when it goes through
  a tunnel, else the ``local: true`` server when the DSN points at this machine.

A server with neither has no PostgreSQL series. A database that cannot be reached gives
``postgres_up 0`` (the reason is logged when it changes), not a collector failure.
A role without ``pg_read_all_stats`` sees other roles' sessions as state ``unknown`` and
cannot see their transaction start; grant it (or use a monitoring role) for full figures.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from podod.errors import Unavailable
from podod.monitor.collect import CollectContext
from podod.monitor.model import Sample
from podod.monitor.settings import PostgresCollectorSettings
from podod.plugins import Registry

if TYPE_CHECKING:
    from podod.runtime import Runtime
    from podod.servers.settings import ServerConfig

log = logging.getLogger(__name__)

STATES = ("active", "idle", "idle in transaction", "idle in transaction (aborted)",
          "fastpath function call", "disabled")
_LOOPBACK = {"", "127.0.0.1", "localhost", "::1", "[::1]"}


def _with_address(dsn: str, host: str, port: int) -> str:
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _is_local(dsn: str) -> bool:
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    return host in _LOOPBACK or host.startswith("/") or "host=/" in parts.query


def target_for(runtime: Runtime, server: ServerConfig) -> dict[str, Any] | None:
    """asyncpg connection arguments for the PostgreSQL measured on ``server``, or None."""
    settings: PostgresCollectorSettings = runtime.config.monitor.collector_settings("postgres")
    explicit = settings.servers.get(server.name)
    if explicit is not None:
        dsn = explicit.dsn
        if explicit.tunnel:
            manager: Any = runtime.component("servers")
            if manager is None or not hasattr(manager, "tunnel_address"):
                raise Unavailable(f"the tunnel {explicit.tunnel} of server {server.name} is "
                                  "not open (podod's SSH connections are not running)")
            host, port = manager.tunnel_address(server.name, explicit.tunnel)
            dsn = _with_address(dsn, host, port)
        out: dict[str, Any] = {"dsn": dsn, "timeout": settings.timeout}
        if explicit.password is not None:
            out["password"] = explicit.password.get_secret_value()
        return out
    if not settings.mail_database:
        return None
    # Every mail database (mail.databases) is measured on the server hosting it; the
    # series are the PostgreSQL server's, so the first database found on it stands for it.
    for database in runtime.config.mail.all_databases().values():
        hosted_here = (database.via_server == server.name) if database.via_server else \
            (server.local and _is_local(database.dsn or ""))
        if hosted_here:
            from podod.mail.database import connect_kwargs

            return connect_kwargs(database, runtime)
    return None


async def collect_postgres(ctx: CollectContext) -> list[Sample]:
    import asyncpg

    server = ctx.server
    if server is None:
        return []
    settings: PostgresCollectorSettings = \
        ctx.runtime.config.monitor.collector_settings("postgres")
    name, now = ctx.server_name, ctx.now

    def gauge(series: str, value: float, **labels: str) -> Sample:
        return Sample(series, name, float(value), Sample.labels_of(**labels), "gauge", now)

    try:
        target = target_for(ctx.runtime, server)
        if target is None:
            return []
        conn = await asyncpg.connect(**target, command_timeout=settings.timeout)
    except (OSError, asyncpg.PostgresError, TimeoutError, Unavailable) as exc:
        from podod.monitor.probes import describe_postgres_failure

        reason = getattr(exc, "message", None) or describe_postgres_failure(exc)
        if ctx.state.get("down") != reason:
            log.warning("postgres on %s cannot be reached: %s", name, reason)
        ctx.state["down"] = reason
        return [gauge("postgres_up", 0)]
    if ctx.state.pop("down", None) is not None:
        log.info("postgres on %s answers again", name)
    try:
        out = [gauge("postgres_up", 1 if await conn.fetchval("SELECT 1") == 1 else 0)]
        rows = await conn.fetch(
            "SELECT coalesce(state, 'unknown') AS state, count(*) AS n FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' GROUP BY 1")
        counts = dict.fromkeys(STATES, 0)
        for row in rows:
            counts[row["state"]] = int(row["n"])
        for state, n in counts.items():
            out.append(gauge("postgres_connections", n, state=state))
        max_connections = int(await conn.fetchval("SELECT current_setting('max_connections')"))
        out.append(gauge("postgres_max_connections", max_connections))
        if max_connections:
            out.append(gauge("postgres_connections_used_ratio",
                             sum(counts.values()) / max_connections))
        for row in await conn.fetch(
                "SELECT datname, pg_database_size(datname) AS size FROM pg_database "
                "WHERE datallowconn AND NOT datistemplate "
                "AND has_database_privilege(datname, 'CONNECT')"):
            out.append(gauge("postgres_database_size_bytes", row["size"],
                             database=row["datname"]))
        longest = await conn.fetchval(
            "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0) "
            "FROM pg_stat_activity WHERE xact_start IS NOT NULL "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
        out.append(gauge("postgres_longest_transaction_seconds", float(longest)))
        if await conn.fetchval("SELECT pg_is_in_recovery()"):
            lag = await conn.fetchval(
                "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() "
                "THEN 0 ELSE coalesce(extract(epoch FROM now() - "
                "pg_last_xact_replay_timestamp()), 0) END")
            out.append(gauge("postgres_replication_lag_seconds", max(0.0, float(lag))))
        return out
    finally:
        await conn.close()


def setup(registry: Registry) -> None:
    registry.collector("postgres")(collect_postgres)
