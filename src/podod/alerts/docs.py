"""docs/alerts.md's table of the default rules, generated from the pack so it cannot drift.

    python -m podod.alerts.docs --write docs/alerts.md
    python -m podod.alerts.docs --check docs/alerts.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from podod.alerts.rules import default_rules
from podod.durations import format_duration

BEGIN = "<!-- BEGIN GENERATED: python -m podod.alerts.docs --write docs/alerts.md -->"
END = "<!-- END GENERATED -->"


def render() -> str:
    ruleset = default_rules()
    lines = [BEGIN, "", "| Rule | Severity | Condition | for | Summary |",
             "| --- | --- | --- | --- | --- |"]
    for rule in ruleset.rules:
        wait = format_duration(rule.for_) if rule.for_ else "at once"
        if rule.keep_firing_for:
            wait += f", keep firing {format_duration(rule.keep_firing_for)}"
        condition = rule.condition.replace("|", "\\|")
        summary = " ".join(rule.summary.source.split()).replace("|", "\\|")
        lines.append(f"| {rule.name} | {rule.severity} | `{condition}` | {wait} | "
                     f"{summary} |")
    lines += ["", "Inhibit rules:", ""]
    for inhibit in ruleset.inhibit:
        source = ",".join(str(m) for m in inhibit.source)
        target = ",".join(str(m) for m in inhibit.target) or "every other alert"
        lines.append(f"- `{source}` mutes {f'`{target}`' if inhibit.target else target} with "
                     f"the same {', '.join(f'`{e}`' for e in inhibit.equal)}")
    lines += ["", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m podod.alerts.docs")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="FILE", type=Path)
    group.add_argument("--check", metavar="FILE", type=Path)
    args = parser.parse_args(argv)
    path: Path = args.write or args.check
    text = path.read_text()
    if BEGIN not in text or END not in text:
        print(f"{path}: has no generated block (BEGIN/END markers)", file=sys.stderr)
        return 2
    block = render()
    current = text[text.index(BEGIN): text.index(END) + len(END)]
    if args.write:
        path.write_text(text.replace(current, block))
        return 0
    if current != block:
        print(f"{path}: the default rules differ from the pack; run python -m "
              f"podod.alerts.docs --write {path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
