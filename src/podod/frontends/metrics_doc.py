"""docs/metrics.md's list of metrics, generated from the series catalogue so it cannot drift.

    python -m podod.frontends.metrics_doc --write docs/metrics.md   # rewrite the list
    python -m podod.frontends.metrics_doc --check docs/metrics.md   # exit 1 if it differs

The list covers podod's own catalogue and the bundled plugins in the repository's
``plugins/`` folder; a test runs ``--check``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from podod.builtins import BUILTIN_MODULES
from podod.frontends.metrics import metric_name
from podod.monitor.catalog import SeriesInfo
from podod.plugins import Registry, load_builtins, load_plugins

BEGIN = "<!-- BEGIN GENERATED: python -m podod.frontends.metrics_doc --write docs/metrics.md -->"
END = "<!-- END GENERATED -->"
REPO = Path(__file__).resolve().parents[3]

#: podod's own metrics that are about podod, not about one server: ``server="podod"``.
ABOUT_PODOD = {"build_info", "commands_total", "backup_last_success_timestamp_seconds",
               "backup_last_success_age_seconds", "notifications_total",
               "collector_cycle_seconds", "collector_interval_seconds", "collector_cycle_jobs",
               "collector_cycle_runs", "matrix_up", "matrix_sync_age_seconds",
               "matrix_sync_lag_seconds", "matrix_messages_sent_total",
               "matrix_send_failures_total", "api_requests_total",
               "api_request_duration_seconds_total", "api_request_duration_p99_seconds",
               "mail_quota_mailboxes", "mail_quota_mailboxes_over",
               "mail_quota_owner_notices_total"}


def all_series(plugin_dir: Path = REPO / "plugins") -> dict[str, SeriesInfo]:
    registry = Registry()
    load_builtins(registry, BUILTIN_MODULES)
    load_plugins(registry, [plugin_dir], use_entry_points=False)
    return registry.series


def render(series: dict[str, SeriesInfo]) -> str:
    lines = [BEGIN, "",
             "| Metric | Type | Labels | `server` is | Description | From |",
             "| --- | --- | --- | --- | --- | --- |"]
    for info in series.values():
        labels = ", ".join(f"`{label}`" for label in ("server", *info.labels))
        whose = "`podod`" if info.name in ABOUT_PODOD or info.about_podod else "the mail server"
        source = "podod" if info.plugin == "core" else f"plugin `{info.plugin}`"
        help_text = info.help.replace("|", "\\|")
        lines.append(f"| `{metric_name(info.name)}` | {info.kind} | {labels} | {whose} | "
                     f"{help_text} | {source} |")
    lines += ["", END]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    if BEGIN not in text or END not in text:
        raise ValueError("the page has no generated block (BEGIN/END markers)")
    head = text[: text.index(BEGIN)]
    tail = text[text.index(END) + len(END):]
    return head + block + tail


def current_block(text: str) -> str:
    return text[text.index(BEGIN): text.index(END) + len(END)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m podod.frontends.metrics_doc")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="FILE", type=Path)
    group.add_argument("--check", metavar="FILE", type=Path)
    args = parser.parse_args(argv)
    block = render(all_series())
    path: Path = args.write or args.check
    text = path.read_text()
    if args.write:
        path.write_text(replace_block(text, block))
        return 0
    if current_block(text) != block:
        print(f"{path}: the list of metrics differs from the catalogue; run "
              f"python -m podod.frontends.metrics_doc --write {path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
