"""The traffic report: the same numbers for ``podod logparse`` (files) and
``traffic report`` (the store), as data (JSON) and as text like pflogsumm's.

Grand totals keep pflogsumm's names and meanings (``received``, ``delivered``,
``forwarded``, ``deferred`` = messages deferred at least once, ``deferrals`` = deferral
events, ``bounced``, ``rejected``, ``reject_warnings``, ``held``, ``discarded``, bytes);
then what pflogsumm does not have: ``expired``, SASL failures, Dovecot logins and failures
by protocol, rejects by reason and code, deliveries by transport and status, lines and
unparsed lines by service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, tzinfo

from podod.monitor.traffic import tally as t

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing: mypy knows it)
if TYPE_CHECKING:
    from typing import Any

    from podod.monitor.traffic.tally import Tally

TOTAL_KEYS = ("received", "delivered", "forwarded", "deferred", "deferrals", "bounced",
              "rejected", "reject_warnings", "held", "discarded", "expired",
              "bytes_received", "bytes_delivered", "sasl_auth_failures")
PERIOD_KEYS = ("received", "delivered", "deferrals", "bounced", "rejected")


def _labelled(totals: Mapping[str, int], metric: str) -> list[tuple[tuple[str, ...], int]]:
    return sorted(t.labelled(dict(totals), metric), key=lambda item: (-item[1], item[0]))


def period_start(hour: int, by: str, zone: tzinfo) -> int:
    """The start of the hour's period: the hour itself, or its local day."""
    if by == "hour":
        return hour
    local = datetime.fromtimestamp(hour, zone)
    return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())


def build(tally: Tally, *, zone: tzinfo, by: str = "day", since: int | None = None,
          until: int | None = None, top: int = 10,
          lines: Mapping[str, int] | None = None,
          unparsed: Mapping[str, int] | None = None,
          extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The report of the hours in ``[since, until)`` of ``tally``."""
    totals = tally.totals(since, until)
    report: dict[str, Any] = {k: totals.get(k, 0) for k in TOTAL_KEYS}
    hours = sorted(h for h in tally.hours
                   if (since is None or h >= since) and (until is None or h < until))
    report["first"] = _iso(hours[0], zone) if hours else None
    report["last"] = _iso(hours[-1] + 3599, zone) if hours else None
    periods: dict[int, dict[str, int]] = {}
    for hour in hours:
        row = periods.setdefault(period_start(hour, by, zone), dict.fromkeys(PERIOD_KEYS, 0))
        bucket = tally.hours[hour]
        for k in PERIOD_KEYS:
            row[k] += bucket.get(k, 0)
    report["by"] = by
    label = "%Y-%m-%d" if by == "day" else "%Y-%m-%d %H:00"
    report["periods"] = [{"start": _iso(start, zone),
                          "label": datetime.fromtimestamp(start, zone).strftime(label), **row}
                         for start, row in sorted(periods.items())]
    report["rejects"] = [{"reason": labels[0], "code": labels[1], "count": n}
                         for labels, n in _labelled(totals, t.REJECT)]
    report["deliveries"] = [{"transport": labels[0], "status": labels[1], "count": n}
                            for labels, n in _labelled(totals, t.DELIVERY)]
    report["dovecot"] = {
        "logins": {labels[0]: n for labels, n in _labelled(totals, t.LOGIN)},
        "auth_failures": {labels[0]: n for labels, n in _labelled(totals, t.AUTH_FAILURE)},
        "auth_rejects": {labels[0]: n for labels, n in _labelled(totals, t.AUTH_REJECT)},
    }
    for kind, name in (("sender", "top_senders"), ("recipient", "top_recipients"),
                       ("sender_domain", "top_sender_domains"),
                       ("recipient_domain", "top_recipient_domains")):
        report[name] = [{"address" if "domain" not in kind else "domain": k, "count": n}
                        for k, n in tally.top(kind, top, since, until)]
    if lines is not None:
        report["lines"] = dict(sorted(lines.items()))
    if unparsed is not None:
        report["unparsed"] = dict(sorted(unparsed.items()))
    if extra:
        report.update(extra)
    return report


def _iso(ts: int, zone: tzinfo) -> str:
    return datetime.fromtimestamp(ts, zone).isoformat(timespec="seconds")


def summary(report: Mapping[str, Any]) -> str:
    """One sentence with the grand totals."""
    return (f"{report['received']} received, {report['delivered']} delivered, "
            f"{report['deferred']} deferred ({report['deferrals']} deferrals), "
            f"{report['bounced']} bounced, {report['rejected']} rejected")


def _size(n: int) -> str:
    for unit in ("", "k", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def text(report: Mapping[str, Any]) -> str:
    """The report as plain text with pflogsumm's section titles."""
    out: list[str] = []

    def title(name: str) -> None:
        out.extend(["", name, "-" * len(name)])

    def rows(items: Iterable[tuple[str, Any]], width: int = 8) -> None:
        for label, value in items:
            out.append(f" {value!s:>{width}}  {label}")

    if report.get("first"):
        out.append(f"From {report['first']} to {report['last']}")
    title("Grand Totals")
    out.append("messages")
    out.append("")
    rows([("received", report["received"]), ("delivered", report["delivered"]),
          ("forwarded", report["forwarded"]),
          ("deferred", f"{report['deferred']}  ({report['deferrals']} deferrals)"),
          ("bounced", report["bounced"]), ("rejected", report["rejected"]),
          ("reject warnings", report["reject_warnings"]), ("held", report["held"]),
          ("discarded", report["discarded"]), ("expired", report["expired"])])
    out.append("")
    rows([("bytes received", _size(report["bytes_received"])),
          ("bytes delivered", _size(report["bytes_delivered"])),
          ("SASL authentication failures", report["sasl_auth_failures"])])
    periods = report.get("periods") or []
    if periods:
        title("Per-Day Traffic Summary" if report.get("by") == "day"
              else "Per-Hour Traffic Summary")
        out.append(f"    {'start':<26}{'received':>10}{'delivered':>10}{'deferred':>10}"
                   f"{'bounced':>10}{'rejected':>10}")
        for p in periods:
            out.append(f"    {p['label']:<26}{p['received']:>10}{p['delivered']:>10}"
                       f"{p['deferrals']:>10}{p['bounced']:>10}{p['rejected']:>10}")
    if report.get("rejects"):
        title("Rejects by reason")
        rows([(f"{r['reason']} ({r['code']})", r["count"]) for r in report["rejects"]])
    if report.get("deliveries"):
        title("Deliveries by transport")
        rows([(f"{d['transport']} {d['status']}", d["count"]) for d in report["deliveries"]])
    dovecot = report.get("dovecot") or {}
    if any(dovecot.values()):
        title("Dovecot")
        rows([(f"{proto} logins", n) for proto, n in dovecot.get("logins", {}).items()])
        rows([(f"{proto} failed logins (attempts)", n)
              for proto, n in dovecot.get("auth_failures", {}).items()])
        rows([(f"auth: {reason}", n) for reason, n in dovecot.get("auth_rejects", {}).items()])
    for key, name in (("top_senders", "Senders by message count"),
                      ("top_recipients", "Recipients by message count"),
                      ("top_sender_domains", "Sending domains by message count"),
                      ("top_recipient_domains", "Recipient domains by message count")):
        items = report.get(key) or []
        if items:
            title(name)
            rows([(i.get("address", i.get("domain")), i["count"]) for i in items])
    unparsed = {k: v for k, v in (report.get("unparsed") or {}).items() if v}
    if report.get("lines"):
        title("Lines by service")
        rows([(f"{svc}{f'  ({unparsed[svc]} not recognised)' if svc in unparsed else ''}",
               n) for svc, n in report["lines"].items()])
    return "\n".join(out).lstrip("\n") + "\n"


def rich_tables(report: Mapping[str, Any]) -> list[Any]:
    """The report as rich tables (``podod logparse`` on a terminal). Values from the log
    (senders, reasons) are plain text with control characters shown, never markup."""
    from rich.table import Table
    from rich.text import Text

    from podod.bus.render import visible

    tables: list[Any] = []
    grand = Table(title="Grand totals", show_header=False)
    grand.add_column("what")
    grand.add_column("count", justify="right")
    for label, value in (
        ("received", report["received"]), ("delivered", report["delivered"]),
        ("forwarded", report["forwarded"]), ("deferred", report["deferred"]),
        ("deferrals", report["deferrals"]), ("bounced", report["bounced"]),
        ("rejected", report["rejected"]), ("reject warnings", report["reject_warnings"]),
        ("held", report["held"]), ("discarded", report["discarded"]),
        ("expired", report["expired"]), ("bytes received", _size(report["bytes_received"])),
        ("bytes delivered", _size(report["bytes_delivered"])),
        ("SASL authentication failures", report["sasl_auth_failures"]),
    ):
        grand.add_row(label, str(value))
    tables.append(grand)
    if report.get("periods"):
        per = Table(title="Per-day traffic" if report.get("by") == "day" else "Per-hour traffic")
        for column in ("start", "received", "delivered", "deferred", "bounced", "rejected"):
            per.add_column(column, justify="left" if column == "start" else "right")
        for p in report["periods"]:
            per.add_row(p["label"], *(str(p[k]) for k in PERIOD_KEYS))
        tables.append(per)

    def simple(title: str, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> None:
        rows = list(rows)
        if not rows:
            return
        table = Table(title=title)
        for i, column in enumerate(columns):
            table.add_column(column, justify="right" if i == len(columns) - 1 else "left")
        for row in rows:
            table.add_row(*(Text(visible(str(v))) for v in row))
        tables.append(table)

    simple("Rejects", ("reason", "code", "count"),
           ((r["reason"], r["code"], r["count"]) for r in report.get("rejects", [])))
    simple("Deliveries", ("transport", "status", "count"),
           ((d["transport"], d["status"], d["count"]) for d in report.get("deliveries", [])))
    dovecot = report.get("dovecot") or {}
    protos = sorted(set(dovecot.get("logins", {})) | set(dovecot.get("auth_failures", {})))
    simple("Dovecot logins", ("protocol", "logins", "failed attempts"),
           ((p, dovecot["logins"].get(p, 0), dovecot["auth_failures"].get(p, 0))
            for p in protos))
    for key, title in (("top_senders", "Top senders"), ("top_recipients", "Top recipients"),
                       ("top_sender_domains", "Top sending domains"),
                       ("top_recipient_domains", "Top recipient domains")):
        simple(title, ("address" if "domains" not in key else "domain", "messages"),
               ((i.get("address", i.get("domain")), i["count"]) for i in report.get(key, [])))
    unparsed = report.get("unparsed") or {}
    simple("Lines by service", ("service", "not recognised", "lines"),
           ((svc, unparsed.get(svc, 0), n) for svc, n in (report.get("lines") or {}).items()))
    return tables
