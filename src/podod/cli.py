"""``podod``: run the daemon, check a config, manage the mail database, parse logs offline."""

from __future__ import annotations

import argparse
import os
import sys

from podod import __version__
from podod.errors import PododError
from podod.libwarnings import hide_library_warnings

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing: mypy knows it)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import NoReturn

# ``podod logparse`` is a command a user times against pflogsumm: this module imports only
# what parsing the command line needs (pathlib, pydantic and the rest come with a command).

DEFAULT_CONFIG = os.environ.get("PODOD_CONFIG", "/etc/podod/podod.yaml")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one sentence and exit 2, no usage dump
        self.exit(2, f"podod: {message} (see 'podod --help')\n")


class _Version(argparse.Action):
    """``--version``: the version, and whether the log parser runs compiled (computed only
    when asked: it imports the parser)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from podod import compiled

        print(f"podod {__version__} ({compiled.describe()})")
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="podod", description="podod: the mail administrator's daemon.")
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="show the version (and how the log parser runs) and exit")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                       help=f"configuration file (default: {DEFAULT_CONFIG}, or $PODOD_CONFIG)")

    with_config(sub.add_parser("run", help="run the daemon in the foreground"))
    with_config(sub.add_parser("check-config", help="validate a configuration file and exit"))
    db = sub.add_parser("db", help="create, check or upgrade the mail database schema (through "
                        "mail.database.via_server's SSH tunnel when that is set)")
    with_config(db)
    db.add_argument("action", choices=["init", "check", "upgrade"],
                    help="init: create the schema (or check an existing one); check: only "
                         "compare; upgrade: apply pending migrations")
    db.add_argument("--roles", action="store_true",
                    help="also create/grant the roles named under mail.roles: read-only "
                         "(Postfix, Dovecot), SOGo's, and the quota role (Dovecot's quota "
                         "dict)")
    db.add_argument("--sogo-view", action="store_true",
                    help="init on a PostfixAdmin database: add only the sogo_users view (SOGo's "
                         "user source), never altering PostfixAdmin's tables; a sandbox run "
                         "(created in a transaction, then rolled back) unless --execute-real")
    db.add_argument("--execute-real", action="store_true",
                    help="with --sogo-view: really create the view")
    db.add_argument("--on", metavar="NAME",
                    help="only the mail database of this name (mail.databases; default: "
                         "every one)")
    lp = sub.add_parser("logparse", help="report on mail log files without a running daemon")
    lp.add_argument("files", nargs="+", metavar="FILE", help="plain or .gz log files")
    lp.add_argument("--json", action="store_true", help="print JSON")
    lp.add_argument("--by", choices=["day", "hour"], default="day",
                    help="traffic per day (default) or per hour")
    lp.add_argument("--top", type=int, default=10, metavar="N",
                    help="how many top senders and recipients (default 10)")
    return parser


def check_config(path: Path) -> list[str]:
    """Validate the file, then what only the plugins can say (the same checks as a start):
    notifier types and their plugins' settings are errors; rules that watch a series no
    collector declares are warnings (they can never fire)."""
    from podod.alerts.component import resolve_notifiers, undeclared_series
    from podod.alerts.settings import plaintext_auth_warnings
    from podod.builtins import BUILTIN_MODULES
    from podod.config import load_config
    from podod.matrix.settings import matrix_warnings
    from podod.plugins import Registry, load_builtins, load_plugins

    config = load_config(path)
    registry = Registry(config.plugins.settings)
    load_builtins(registry, BUILTIN_MODULES)
    load_plugins(registry, config.plugins.dirs, use_entry_points=config.plugins.entry_points,
                 disabled=config.plugins.disabled)
    warnings = matrix_warnings(config.matrix)
    if not config.alerts.enabled:
        return warnings
    resolve_notifiers(config.alerts, registry, path.name)
    return [*warnings, *undeclared_series(config.alerts.ruleset.rules, registry),
            *plaintext_auth_warnings(config.alerts)]


def main(argv: list[str] | None = None) -> int:
    hide_library_warnings()
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "run":
            from pathlib import Path

            from podod.daemon import run

            return run(Path(args.config))
        if args.cmd == "check-config":
            from pathlib import Path

            for warning in check_config(Path(args.config)):
                print(f"warning: {warning}", file=sys.stderr)
            print(f"{args.config}: OK")
            return 0
        if args.cmd == "db":
            from podod.config import load_config
            from podod.mail.dbcli import main as db_main

            return db_main(load_config(args.config), args.action, roles=args.roles,
                           sogo_view=args.sogo_view, execute_real=args.execute_real,
                           on=args.on)
        if args.cmd == "logparse":
            from podod.monitor.traffic.logparse import main as logparse_main

            return logparse_main([*args.files, "--by", args.by, "--top", str(args.top),
                                  *(["--json"] if args.json else [])])
    except PododError as exc:
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    build_parser().print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
