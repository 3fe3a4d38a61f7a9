"""``usage report``: per domain, how many mailboxes and aliases it has, the quota given out
and the mail stored (what Dovecot's quota dict counts), for capacity planning and billing."""

from __future__ import annotations

from typing import Any

from podod.bus.context import CommandContext, Reply, Table
from podod.bus.shapes import INT, STR, arr, obj
from podod.bus.spec import Opt
from podod.mail.addresses import normalize_domain
from podod.mail.commands.common import each_database, on_option, several, size, visible_domains
from podod.plugins import Registry

USAGE_REPLY = arr(obj({"domain": STR, "mailboxes": INT, "aliases": INT,
                       "quota_bytes": INT, "used_bytes": INT, "messages": INT,
                       "database": STR}, optional=("database",)),
                  "one object per domain; quota_bytes: the mailboxes' quotas added up "
                  "(0: unlimited ones count 0)")

_SQL = """
SELECT d.domain,
       (SELECT count(*) FROM mailbox m WHERE m.domain = d.domain) AS mailboxes,
       (SELECT count(*) FROM alias a WHERE a.domain = d.domain AND a.address <> a.goto)
           AS aliases,
       (SELECT coalesce(sum(m.quota), 0)::bigint FROM mailbox m WHERE m.domain = d.domain)
           AS quota_bytes,
       (SELECT coalesce(sum(q.bytes), 0)::bigint FROM quota2 q JOIN mailbox m
            ON m.username = q.username WHERE m.domain = d.domain) AS used_bytes,
       (SELECT coalesce(sum(q.messages), 0)::bigint FROM quota2 q JOIN mailbox m
            ON m.username = q.username WHERE m.domain = d.domain) AS messages
FROM domain d
WHERE d.domain <> 'ALL' AND ($1::text[] IS NULL OR d.domain = ANY($1::text[]))
  AND NOT EXISTS (SELECT 1 FROM alias_domain ad WHERE ad.alias_domain = d.domain)
ORDER BY d.domain
"""


def setup(registry: Registry) -> None:
    @registry.command(
        "usage report", "Mailboxes, aliases, quota given out and mail stored, per domain",
        params=[Opt("domain", "only this domain", kind="domain"), on_option()],
        examples=["usage report", "podoctl --json usage report --domain example.com"],
        reply=USAGE_REPLY,
        description="A domain-admin sees their own domains only. Mail stored is what the "
                    "quota table (Dovecot's quota dict) counts.")
    async def usage_report(ctx: CommandContext, domain: str | None,
                           on: str | None = None) -> Reply:
        domains = visible_domains(ctx, normalize_domain(domain) if domain else None)

        async def read(db: Any) -> list[dict[str, Any]]:
            return [dict(r) for r in await db.fetch(_SQL, domains)]

        found, down = await each_database(ctx, on, read)
        marked = several(ctx)
        data: list[dict[str, Any]] = [
                {**{k: (int(v) if k != "domain" else v) for k, v in r.items()},
                 **({"database": name} if marked else {})} for name, rows in found for r in rows]
        if len(found) > 1:
            data.sort(key=lambda r: str(r["domain"]))
        total_used = sum(r["used_bytes"] for r in data)
        return Reply(
            message=f"{len(data)} domain{'s' if len(data) != 1 else ''}, "
                    f"{sum(r['mailboxes'] for r in data)} mailboxes, {size(total_used)} stored",
            data=data, notes=down, table=Table(
                ["domain", "mailboxes", "aliases", "quota given", "stored", "messages",
                 *(["database"] if marked else [])],
                [[r["domain"], r["mailboxes"], r["aliases"], size(r["quota_bytes"]),
                  size(r["used_bytes"]), r["messages"], *([r["database"]] if marked else [])]
                 for r in data],
                title="usage per domain"))
