"""The mail commands: domain, domain-alias, user, alias — all through the unit of work."""

from __future__ import annotations

from podod.mail.commands import alias, bulk, domain, maildir, report, sogo, user, vacation
from podod.mail.database import MailDatabase, MailUnitOfWork
from podod.mail.passwords import default_pool
from podod.plugins import Registry


def setup(registry: Registry) -> None:
    def database(runtime: object) -> MailDatabase | None:
        config = getattr(runtime, "config")  # noqa: B009 - runtime is a Runtime
        return MailDatabase(runtime) if config.mail.database.dsn else None  # type: ignore[arg-type]

    registry.component("maildb", database)
    # The password-hashing workers: started on first use, shut down with the daemon.
    registry.component("hashing", lambda runtime: default_pool())

    def unit(ctx: object) -> MailUnitOfWork:
        from podod.mail.commands.common import maildb

        return MailUnitOfWork(ctx, maildb(ctx))  # type: ignore[arg-type]

    registry.unit_of_work("maildb", unit)
    domain.setup(registry)
    user.setup(registry)
    alias.setup(registry)
    maildir.setup(registry)
    report.setup(registry)
    bulk.setup(registry)
    sogo.setup(registry)
    vacation.setup(registry)
