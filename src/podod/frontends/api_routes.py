"""The REST API's routes: which HTTP method and path runs which bus command, and how the
path's variables and the query's names map to the command's JSON parameters.

This table is the only thing the REST API adds to the commands: the parameters, their
checks, the reply's shape and the OpenAPI document all come from the commands' declarations
(:mod:`podod.bus.binding`), so a route cannot disagree with podoctl.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # aiohttp's spelling: /api/users/{email}
    command: str
    tag: str
    # path variable -> the command's JSON key (its name without a trailing _)
    path_params: dict[str, str] = field(default_factory=dict)
    # a query name -> the command's JSON key (?q= is the listings' --search)
    renamed: dict[str, str] = field(default_factory=dict)
    # only these JSON keys are taken (PUT /api/users/{email}/quota takes quota_mb only)
    only: tuple[str, ...] | None = None
    summary: str | None = None

    @property
    def reads_body(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")

    @property
    def operation_id(self) -> str:
        words = [self.method.lower()] + [
            part.strip("{}").replace("-", "_") for part in self.path.split("/")[2:]]
        return "_".join(w for w in words if w)


def _r(method: str, path: str, command: str, tag: str, **kw: object) -> Route:
    return Route(method, path, command, tag, **kw)  # type: ignore[arg-type]


_Q = {"q": "search"}
_EMAIL = {"email": "address"}

ROUTES: list[Route] = [
    # -- domains ---------------------------------------------------------------------------
    _r("GET", "/api/domains", "domain list", "domains", renamed=_Q),
    _r("POST", "/api/domains", "domain create", "domains"),
    _r("GET", "/api/domains/{domain}", "domain show", "domains", path_params={"domain": "domain"}),
    _r("PUT", "/api/domains/{domain}", "domain update", "domains",
       path_params={"domain": "domain"}),
    _r("DELETE", "/api/domains/{domain}", "domain delete", "domains",
       path_params={"domain": "domain"}),
    _r("GET", "/api/domains/{domain}/users", "user list", "domains",
       path_params={"domain": "domain"}, renamed=_Q, summary="List the mailboxes of a domain"),
    _r("GET", "/api/domains/{domain}/aliases", "domain-alias list", "domains",
       path_params={"domain": "to"}, summary="List the alias domains of a domain"),
    _r("POST", "/api/domains/{domain}/aliases", "domain-alias create", "domains",
       path_params={"domain": "to"}, summary="Make an alias domain of this domain"),
    _r("DELETE", "/api/domain-aliases/{alias_domain}", "domain-alias delete", "domains",
       path_params={"alias_domain": "alias_domain"}, summary="Delete an alias domain"),
    # -- mailboxes -------------------------------------------------------------------------
    _r("GET", "/api/users", "user list", "users", renamed=_Q),
    _r("POST", "/api/users", "user create", "users"),
    _r("GET", "/api/users/{email}", "user show", "users", path_params=_EMAIL),
    _r("PUT", "/api/users/{email}", "user update", "users", path_params=_EMAIL),
    _r("DELETE", "/api/users/{email}", "user delete", "users", path_params=_EMAIL),
    _r("POST", "/api/users/{email}/password", "user reset-password", "users",
       path_params=_EMAIL),
    _r("GET", "/api/users/{email}/quota", "user show", "users", path_params=_EMAIL,
       summary="Show a mailbox's quota and usage (the mailbox)"),
    _r("PUT", "/api/users/{email}/quota", "user update", "users", path_params=_EMAIL,
       only=("quota_mb",), summary="Change a mailbox's quota"),
    _r("GET", "/api/users/{email}/aliases", "user aliases", "users", path_params=_EMAIL),
    _r("POST", "/api/users/{email}/restore-maildir", "user restore-maildir", "users",
       path_params=_EMAIL),
    _r("POST", "/api/users/{email}/rename", "user rename", "users", path_params=_EMAIL),
    # -- aliases ---------------------------------------------------------------------------
    _r("GET", "/api/aliases", "alias list", "aliases", renamed=_Q),
    _r("POST", "/api/aliases", "alias create", "aliases"),
    _r("GET", "/api/aliases/{alias}", "alias show", "aliases", path_params={"alias": "address"}),
    _r("PUT", "/api/aliases/{alias}", "alias update", "aliases",
       path_params={"alias": "address"}),
    _r("DELETE", "/api/aliases/{alias}", "alias delete", "aliases",
       path_params={"alias": "address"}),
    # -- servers ---------------------------------------------------------------------------
    _r("GET", "/api/servers", "server list", "servers"),
    _r("POST", "/api/servers", "server add", "servers"),
    _r("GET", "/api/servers/{name}", "server show", "servers", path_params={"name": "name"}),
    _r("PUT", "/api/servers/{name}", "server update", "servers", path_params={"name": "name"}),
    _r("DELETE", "/api/servers/{name}", "server remove", "servers",
       path_params={"name": "name"}),
    _r("POST", "/api/servers/{name}/reconnect", "server reconnect", "servers",
       path_params={"name": "name"}),
    _r("GET", "/api/servers/{name}/tunnel/status", "server tunnel status", "servers",
       path_params={"name": "server"}),
    _r("POST", "/api/servers/{name}/tunnel/start", "server tunnel start", "servers",
       path_params={"name": "server"}),
    _r("POST", "/api/servers/{name}/tunnel/stop", "server tunnel stop", "servers",
       path_params={"name": "server"}),
    # -- monitoring ------------------------------------------------------------------------
    _r("GET", "/api/monitoring/status", "status", "monitoring"),
    _r("GET", "/api/monitoring/metrics", "metrics query", "monitoring"),
    _r("GET", "/api/monitoring/series", "metrics series", "monitoring"),
    _r("GET", "/api/monitoring/collectors", "collector list", "monitoring"),
    _r("GET", "/api/monitoring/queues", "queue summary", "monitoring"),
    _r("GET", "/api/monitoring/traffic", "traffic report", "monitoring"),
    _r("GET", "/api/monitoring/traffic/top", "traffic top", "monitoring"),
    _r("GET", "/api/monitoring/errors", "monitoring errors", "monitoring"),
    _r("GET", "/api/monitoring/security", "monitoring security", "monitoring"),
    # -- alerts ----------------------------------------------------------------------------
    _r("GET", "/api/alerts", "alerts list", "alerts"),
    _r("GET", "/api/alerts/history", "alerts history", "alerts"),
    _r("GET", "/api/alerts/rules", "alerts rules", "alerts"),
    _r("GET", "/api/alerts/silences", "alerts silences", "alerts"),
    _r("POST", "/api/alerts/silences", "alerts silence", "alerts"),
    _r("DELETE", "/api/alerts/silences/{id}", "alerts unsilence", "alerts",
       path_params={"id": "id"}),
    _r("POST", "/api/alerts/maintenance", "alerts maintenance", "alerts"),
    # -- backups ---------------------------------------------------------------------------
    _r("GET", "/api/backups", "backup list", "backups"),
    _r("GET", "/api/backups/{id}", "backup show", "backups", path_params={"id": "id"}),
    _r("POST", "/api/backups/{id}/verify", "backup verify", "backups",
       path_params={"id": "id"}),
    _r("POST", "/api/backups/{id}/restore", "backup restore", "backups",
       path_params={"id": "id"}),
    # -- reports ---------------------------------------------------------------------------
    _r("GET", "/api/reports/audit", "audit list", "reports"),
    _r("GET", "/api/reports/audit/verify", "audit verify", "reports"),
    _r("GET", "/api/reports/usage", "usage report", "reports"),
]
