"""The ``dovecot`` collector: Dovecot 2.3's statistics (``doveadm stats dump``) as counters.

Dovecot 2.3 counts *events* in the metrics an admin defines in dovecot.conf
(``metric NAME { filter = ... }``, :data:`METRICS_CONF` is what docs/monitoring.md
recommends); ``doveadm stats dump`` prints, per metric and field, how many events it counted
and their summed values since the stats process started. A reload or restart of Dovecot
starts the stats process again, so every counter drops to zero: the store treats a drop as a
reset (the increase counts from zero), never as a negative rate.

Series, per metric (the metric's name as dovecot.conf defines it, so the label values are
bounded by the configuration; ``group_by`` sub-metrics appear under their full name, e.g.
``imap_command_SELECT``, and at most ``max_metrics`` per server are kept):

- ``dovecot_stats_events_total{metric}``: events counted;
- ``dovecot_stats_duration_seconds_total{metric}``: their summed duration (Dovecot counts
  microseconds);
- ``dovecot_stats_field_total{metric,field}``: the summed value of every other field the
  metric lists in ``fields`` (``bytes_in``, ``bytes_out``, ...).

It runs on servers whose ``services`` name dovecot and on those listed under
``monitor.collectors.dovecot.servers``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, get_args

from podod.errors import PododError
from podod.monitor.collect import CollectContext
from podod.monitor.collectors.services import unit_name
from podod.monitor.model import Sample
from podod.monitor.settings import DoveadmPath, DovecotCollectorSettings
from podod.plugins import Registry
from podod.servers.allowlist import ABS_PATH

if TYPE_CHECKING:
    from podod.servers.settings import ServerConfig

log = logging.getLogger(__name__)

# What docs/monitoring.md recommends adding to dovecot.conf (the test bed's Dovecot runs it).
METRICS_CONF = """\
metric auth_success {
  filter = event=auth_request_finished AND success=yes
}
metric auth_failure {
  filter = event=auth_request_finished AND NOT success=yes
}
metric imap_login {
  filter = event=auth_request_finished AND success=yes AND service=imap
}
metric pop3_login {
  filter = event=auth_request_finished AND success=yes AND service=pop3
}
metric smtp_auth_failure {
  filter = event=auth_request_finished AND NOT success=yes AND service=smtp
}
metric mail_delivery {
  filter = event=mail_delivery_finished
}
metric mail_delivery_failure {
  filter = event=mail_delivery_finished AND error=*
}
"""


def stats_reader_conf(group: str) -> str:
    """The stats-reader socket opened to ``group`` (podod's SSH login is a member)."""
    return f"""\
service stats {{
  unix_listener stats-reader {{
    group = {group}
    mode = 0660
  }}
}}
"""


@dataclass
class StatsDump:
    # metric -> field -> (count, sum)
    metrics: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    unparsed: int = 0


def parse_stats_dump(text: str) -> StatsDump:
    """Read ``doveadm stats dump`` (tab-separated, a header naming the columns first)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("doveadm stats dump printed nothing")
    header = lines[0].split("\t")
    try:
        i_name, i_field = header.index("metric_name"), header.index("field")
        i_count, i_sum = header.index("count"), header.index("sum")
    except ValueError:
        raise ValueError("doveadm stats dump printed no metric_name/field/count/sum "
                         f"header: {lines[0][:80]!r}") from None
    dump = StatsDump()
    for line in lines[1:]:
        cols = line.split("\t")
        try:
            name, fld = cols[i_name], cols[i_field]
            count, total = float(cols[i_count]), float(cols[i_sum])
        except (IndexError, ValueError):
            dump.unparsed += 1
            continue
        if not name or not fld or count < 0 or total < 0:
            dump.unparsed += 1
            continue
        dump.metrics.setdefault(name, {})[fld] = (count, total)
    return dump


def dump_samples(dump: StatsDump, server: str, now: float, max_metrics: int
                 ) -> tuple[list[Sample], int]:
    """Counters of ``dump``; also returns how many metrics were left out (over the cap)."""
    out: list[Sample] = []

    def counter(name: str, value: float, **labels: str) -> None:
        out.append(Sample(name, server, value, Sample.labels_of(**labels), "counter", now))

    kept = list(dump.metrics.items())[:max_metrics]
    for metric, fields in kept:
        events = fields.get("duration") or next(iter(fields.values()))
        counter("dovecot_stats_events_total", events[0], metric=metric)
        if "duration" in fields:
            counter("dovecot_stats_duration_seconds_total", fields["duration"][1] / 1e6,
                    metric=metric)
        for name, (_count, total) in sorted(fields.items()):
            if name != "duration":
                counter("dovecot_stats_field_total", total, metric=metric, field=name)
    return out, len(dump.metrics) - len(kept)


def runs_dovecot(server: ServerConfig, settings: DovecotCollectorSettings) -> bool:
    return server.name in settings.servers or any(
        unit_name(s) == "dovecot" for s in server.services)


def doveadm_argv(server: ServerConfig, settings: DovecotCollectorSettings) -> list[str]:
    own = settings.servers.get(server.name)
    socket = own.socket if own is not None and own.socket else settings.socket
    argv = [settings.doveadm, "stats", "dump"]
    return [*argv, "-s", socket] if socket else argv


async def collect_dovecot(ctx: CollectContext) -> list[Sample]:
    server = ctx.server
    settings: DovecotCollectorSettings = \
        ctx.runtime.config.monitor.collector_settings("dovecot")
    if server is None or ctx.runner is None or not runs_dovecot(server, settings):
        return []
    try:
        result = await ctx.runner.run(doveadm_argv(server, settings), check=True)
    except PododError as exc:
        if "Permission denied" not in exc.message:
            raise
        raise type(exc)(exc.message + " (podod's login must be allowed to read Dovecot's "
                        "stats-reader socket: docs/monitoring.md, the dovecot collector)"
                        ) from None
    dump = parse_stats_dump(result.stdout)
    samples, dropped = dump_samples(dump, ctx.server_name, ctx.now, settings.max_metrics)
    problem = None
    if not dump.metrics:
        problem = ("dovecot on %s defines no stats metrics: add metric { filter = ... } "
                   "blocks to dovecot.conf (docs/monitoring.md)")
    elif dropped:
        problem = (f"dovecot on %s has {len(dump.metrics)} stats metrics; only the first "
                   f"{settings.max_metrics} are kept (monitor.collectors.dovecot.max_metrics)")
    if problem != ctx.state.get("problem"):  # said once, not every run
        if problem:
            log.warning(problem, ctx.server_name)
        ctx.state["problem"] = problem
    return samples


def setup(registry: Registry) -> None:
    for program in get_args(DoveadmPath):
        registry.remote_command(program, "stats", "dump", purpose="read Dovecot's statistics "
                                "(dovecot collector)")
        registry.remote_command(program, "stats", "dump", "-s", ABS_PATH,
                                purpose="read Dovecot's statistics from a given stats-reader "
                                "socket (dovecot collector)")
    registry.collector("dovecot")(collect_dovecot)
