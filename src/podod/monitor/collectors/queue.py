"""The ``queue`` collector and ``queue summary``: the Postfix queue, from ``postqueue -j``.

``postqueue -j`` prints one JSON object per queued message (``queue_name``, ``queue_id``,
``arrival_time``, ``message_size``, ``sender``, ``recipients[]`` with ``address`` and, once a
delivery was tried, ``delay_reason``). Members podod does not know are ignored; a line that
is not such an object is counted (``postfix_queue_unparsed_lines``) and skipped.

Series per queue (active, deferred, hold, incoming, maildrop; zero-filled):
``postfix_queue_messages``, ``postfix_queue_size_bytes``,
``postfix_queue_oldest_message_age_seconds``. Recipient domains and deferral reasons are
unbounded, so they are never labels: ``queue summary`` shows them on request.

The collector measures servers whose ``services`` name postfix, and those listed under
``monitor.collectors.queue.servers`` (with their own ``config_dir``, for a second instance
such as ``/etc/postfix-out``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args

from podod.bus.context import CommandContext, Reply, Table
from podod.bus.scope import OTHER_DOMAINS, domain_scope, scope_note, visible
from podod.bus.shapes import INT, STR, arr, obj, one_of
from podod.bus.spec import Opt
from podod.errors import NotFound, PododError, Unavailable, ValidationError
from podod.monitor.collect import CollectContext
from podod.monitor.collectors.services import unit_name
from podod.monitor.model import Sample
from podod.monitor.runners import monitored_servers, runner_for
from podod.monitor.settings import PostqueuePath, QueueCollectorSettings
from podod.plugins import Registry
from podod.servers.allowlist import ABS_PATH
from podod.servers.runner import Runner

if TYPE_CHECKING:
    from podod.bus.context import BusRuntime
    from podod.servers.settings import ServerConfig

QUEUES = ("active", "deferred", "hold", "incoming", "maildrop")
_ADDRESS = re.compile(r"<[^<>\s]*@[^<>\s]*>")
_IP = re.compile(r"\[(?:\d{1,3}\.){3}\d{1,3}\]|\[[0-9a-fA-F:]{2,}\]")


def normalize_reason(reason: str) -> str:
    """A delay reason with addresses and IPs blanked, so equal causes group together."""
    text = _IP.sub("[ip]", _ADDRESS.sub("<address>", " ".join(reason.split())))
    return text if len(text) <= 160 else text[:157] + "..."


def domain_of(address: str) -> str:
    _local, at, domain = address.rpartition("@")
    return domain.lower().rstrip(".") if at and domain else "(no domain)"


@dataclass
class QueueReport:
    messages: dict[str, int] = field(default_factory=lambda: dict.fromkeys(QUEUES, 0))
    size: dict[str, int] = field(default_factory=lambda: dict.fromkeys(QUEUES, 0))
    oldest: dict[str, float] = field(default_factory=dict)  # queue → oldest arrival time
    unparsed: int = 0
    other_queues: int = 0
    # (domain, normalized reason) → deferred recipients; domain → distinct messages
    deferrals: Counter[tuple[str, str]] = field(default_factory=Counter)
    deferred_messages: Counter[str] = field(default_factory=Counter)


def parse_postqueue(text: str) -> QueueReport:
    report = QueueReport()
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            queue = item["queue_name"]
            if not isinstance(queue, str):
                raise TypeError
            size = int(item.get("message_size") or 0)
            arrival = item.get("arrival_time")
            arrival = float(arrival) if arrival is not None else None
            recipients = item.get("recipients") or []
            if not isinstance(recipients, list):
                raise TypeError
        except (ValueError, TypeError, KeyError, AttributeError):
            report.unparsed += 1
            continue
        if queue not in report.messages:
            report.other_queues += 1
            continue
        report.messages[queue] += 1
        report.size[queue] += size
        if arrival is not None and (queue not in report.oldest or
                                    arrival < report.oldest[queue]):
            report.oldest[queue] = arrival
        domains: set[str] = set()
        for recipient in recipients:
            if not isinstance(recipient, dict):
                continue
            reason = recipient.get("delay_reason")
            if not isinstance(reason, str) or not reason:
                continue
            domain = domain_of(str(recipient.get("address") or ""))
            report.deferrals[(domain, normalize_reason(reason))] += 1
            domains.add(domain)
        for domain in domains:
            report.deferred_messages[domain] += 1
    return report


def queue_samples(report: QueueReport, server: str, now: float) -> list[Sample]:
    out = []
    for queue in QUEUES:
        labels = Sample.labels_of(queue=queue)
        out.append(Sample("postfix_queue_messages", server, float(report.messages[queue]),
                          labels, "gauge", now))
        out.append(Sample("postfix_queue_size_bytes", server, float(report.size[queue]),
                          labels, "gauge", now))
        oldest = report.oldest.get(queue)
        age = max(0.0, now - oldest) if oldest is not None else 0.0
        out.append(Sample("postfix_queue_oldest_message_age_seconds", server, age, labels,
                          "gauge", now))
    out.append(Sample("postfix_queue_unparsed_lines", server, float(report.unparsed), (),
                      "gauge", now))
    return out


def runs_postfix(server: ServerConfig, settings: QueueCollectorSettings) -> bool:
    return server.name in settings.servers or any(
        unit_name(s) == "postfix" for s in server.services)


def postqueue_argv(server: ServerConfig, settings: QueueCollectorSettings) -> list[str]:
    own = settings.servers.get(server.name)
    config_dir = (own.config_dir if own is not None and own.config_dir else
                  settings.config_dir)
    program = settings.postqueue
    return [program, "-c", config_dir, "-j"] if config_dir else [program, "-j"]


async def read_queue(runner: Runner, argv: list[str]) -> QueueReport:
    result = await runner.run(argv, check=True)
    return parse_postqueue(result.stdout)


async def collect_queue(ctx: CollectContext) -> list[Sample]:
    server = ctx.server
    settings: QueueCollectorSettings = ctx.runtime.config.monitor.collector_settings("queue")
    if server is None or ctx.runner is None or not runs_postfix(server, settings):
        return []
    report = await read_queue(ctx.runner, postqueue_argv(server, settings))
    return queue_samples(report, ctx.server_name, ctx.now)


def _servers_for(runtime: BusRuntime, name: str | None) -> list[ServerConfig]:
    settings: QueueCollectorSettings = runtime.config.monitor.collector_settings("queue")
    servers = monitored_servers(runtime)
    if name is not None:
        for server in servers:
            if server.name == name:
                return [server]
        known = ", ".join(s.name for s in servers) or "none are configured"
        raise NotFound(f"no server named '{name}' (servers: {known})")
    chosen = [s for s in servers if runs_postfix(s, settings)]
    if not chosen:
        raise NotFound("no server runs postfix: list it in a server's services, or name the "
                       "server with --server")
    return chosen


def setup(registry: Registry) -> None:
    for program in get_args(PostqueuePath):
        registry.remote_command(program, "-j", purpose="read the Postfix queue (queue "
                                "collector, queue summary)")
        registry.remote_command(program, "-c", ABS_PATH, "-j", purpose="read the queue of "
                                "a Postfix instance with its own configuration folder")
    registry.collector("queue")(collect_queue)

    @registry.command(
        "queue summary", "Show the Postfix queue and the top deferral reasons by domain",
        params=[Opt("server", "only this server (default: every server running postfix)"),
                Opt("limit", "how many domains per server", kind="int", default=10)],
        description="Reads the queue now with 'postqueue -j'. Deferred recipients are "
                    "grouped by recipient domain and by reason (addresses and IP addresses "
                    "blanked, so equal causes count together).",
        examples=["queue summary", "queue summary --server mx1 --limit 20"],
        reply=arr(one_of(obj({
            "server": STR, "messages": {"type": "object", "additionalProperties": INT},
            "size_bytes": {"type": "object", "additionalProperties": INT},
            "oldest_age_seconds": {"type": "object", "additionalProperties": INT},
            "unparsed_lines": INT,
            "deferred_domains": arr(obj({
                "domain": STR, "recipients": INT, "messages": INT,
                "reasons": arr(obj({"reason": STR, "recipients": INT}))})),
            "more_domains": INT}), obj({"server": STR, "error": STR})),
            "one object per server: its queue, or why it could not be read"),
    )
    async def queue_summary(ctx: CommandContext, server: str | None, limit: int) -> Reply:
        if limit < 1 or limit > 1000:
            raise ValidationError("queue summary: --limit must be between 1 and 1000")
        runtime = ctx.runtime
        settings: QueueCollectorSettings = \
            runtime.config.monitor.collector_settings("queue")
        servers = _servers_for(runtime, server)
        scope = domain_scope(ctx.actor)

        async def one(s: ServerConfig) -> QueueReport | str:
            try:
                return await read_queue(runner_for(runtime, s), postqueue_argv(s, settings))
            except PododError as exc:
                return exc.message

        reports = await asyncio.gather(*(one(s) for s in servers))
        rows: list[list[Any]] = []
        data: list[dict[str, Any]] = []
        failed: list[str] = []
        lines: list[str] = []
        now = time.time()
        for s, report in zip(servers, reports, strict=True):
            if isinstance(report, str):
                failed.append(f"{s.name}: {report}")
                data.append({"server": s.name, "error": report})
                continue
            by_domain: dict[str, list[tuple[str, int]]] = {}
            others = [0, 0]  # a domain-admin's view: other domains' recipients, messages
            for (domain, reason), n in report.deferrals.items():
                if visible(scope, domain, address=False):
                    by_domain.setdefault(domain, []).append((reason, n))
                else:
                    others[0] += n
            if scope is not None:
                others[1] = sum(n for d, n in report.deferred_messages.items()
                                if not visible(scope, d, address=False))
            domains = sorted(by_domain, key=lambda d: (-sum(n for _, n in by_domain[d]), d))
            top = []
            for domain in domains[:limit]:
                reasons = sorted(by_domain[domain], key=lambda r: (-r[1], r[0]))
                recipients = sum(n for _, n in reasons)
                top.append({"domain": domain, "recipients": recipients,
                            "messages": report.deferred_messages[domain],
                            "reasons": [{"reason": r, "recipients": n} for r, n in reasons]})
                rows.append([s.name, domain, recipients, report.deferred_messages[domain],
                             reasons[0][0]])
            if others[0]:  # counted together, neither named nor with their reasons
                top.append({"domain": OTHER_DOMAINS, "recipients": others[0],
                            "messages": others[1], "reasons": []})
                rows.append([s.name, OTHER_DOMAINS, others[0], others[1], ""])
            oldest = {q: round(now - t) for q, t in report.oldest.items()}
            data.append({"server": s.name, "messages": report.messages,
                         "size_bytes": report.size, "oldest_age_seconds": oldest,
                         "unparsed_lines": report.unparsed, "deferred_domains": top,
                         "more_domains": max(0, len(domains) - limit)})
            counts = ", ".join(f"{report.messages[q]} {q}" for q in QUEUES
                               if report.messages[q]) or "empty"
            lines.append(f"{s.name}: {counts}")
        message = "; ".join(lines) if lines else "no queue could be read"
        reply = Reply(message=message, data=data,
                      table=Table(["server", "domain", "deferred rcpts", "messages",
                                   "top reason"], rows,
                                  title=f"deferred mail by domain ({message})"))
        if failed and not lines:
            raise Unavailable("could not read the queue of " + "; ".join(failed))
        reply.notes = [f"could not read the queue of {f}" for f in failed] + scope_note(scope)
        return reply
