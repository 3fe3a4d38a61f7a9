"""The mail commands: domain, domain-alias, user, alias — all through the unit of work."""

from __future__ import annotations

from podod.mail.commands import (
    alias,
    bulk,
    domain,
    maildir,
    move,
    rename,
    report,
    sogo,
    user,
    vacation,
)
from podod.mail.database import MailUnitOfWork
from podod.mail.databases import MailDatabases
from podod.mail.passwords import default_pool
from podod.plugins import Registry


def setup(registry: Registry) -> None:
    def database(runtime: object) -> MailDatabases | None:
        config = getattr(runtime, "config")  # noqa: B009 - runtime is a Runtime
        return MailDatabases(runtime) if config.mail.all_databases() else None  # type: ignore[arg-type]

    registry.component("maildb", database)
    # The password-hashing workers: started on first use, shut down with the daemon.
    registry.component("hashing", lambda runtime: default_pool())

    def unit(ctx: object) -> MailUnitOfWork:
        """Bound at once to the only database; with several, the handler binds it to its
        domain's (common.unit_for)."""
        from podod.mail.commands.common import databases

        return MailUnitOfWork(ctx, databases(ctx).only())  # type: ignore[arg-type]

    registry.unit_of_work("maildb", unit)
    domain.setup(registry)
    user.setup(registry)
    rename.setup(registry)
    alias.setup(registry)
    maildir.setup(registry)
    report.setup(registry)
    bulk.setup(registry)
    move.setup(registry)
    sogo.setup(registry)
    vacation.setup(registry)
