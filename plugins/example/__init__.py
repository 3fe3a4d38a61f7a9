"""The example plugin: a template to copy (see docs/plugins.md).

A plugin is a module or package with ``setup(registry)``. This one adds:
- ``example hello [NAME]``: a read-only command (any role),
- ``example note TEXT``: a changing command that honours the sandbox,
- ``example count``: reads data (e.g. a CSV file) from standard input and reports progress,
- a collector ``example_uptime`` measuring how long the daemon has been up, and the
  declaration of the series it emits (its HELP and type on /metrics, its docs/metrics.md row).
"""

from __future__ import annotations

import time

from podod.bus.context import CommandContext, Reply
from podod.bus.shapes import INT, STR, arr, nullable, obj
from podod.bus.spec import Arg, Opt
from podod.monitor.model import Sample
from podod.plugins import Registry


def setup(registry: Registry) -> None:
    settings = registry.settings()  # plugins.settings.example in podod.yaml
    greeting = str(settings.get("greeting", "hello"))

    @registry.command(
        "example hello", "Greet someone (the example plugin's read-only command)",
        params=[Arg("name", "who to greet", required=False, default="world"),
                Opt("shout", "upper-case the greeting", kind="flag")],
        examples=["example hello", "example hello Alice --shout"],
        reply=obj({"greeting": STR}),  # the JSON Schema of the reply's data (help --json)
    )
    async def hello(ctx: CommandContext, name: str, shout: bool) -> Reply:
        text = f"{greeting}, {name}!"
        return Reply(message=text.upper() if shout else text, data={"greeting": text})

    notes: list[str] = []

    @registry.command(
        "example note", "Keep a note in memory (the example plugin's changing command)",
        params=[Arg("text", "the note")], permission="admin", mutating=True,
        reply=nullable(obj({"notes": arr(STR)})),  # the sandbox run has no data
    )
    async def note(ctx: CommandContext, text: str) -> Reply:
        await ctx.progress(f"checking {len(notes)} earlier notes")  # streamed to podoctl
        ctx.record("insert", "note", str(len(notes) + 1), text=text)
        if ctx.sandbox:  # the sandbox stops here: nothing is kept
            return Reply(message=f"would keep note {len(notes) + 1}")
        notes.append(text)
        return Reply(message=f"kept note {len(notes)}", data={"notes": list(notes)})

    @registry.command(
        "example count", "Count the lines and fields of CSV data read from standard input",
        stdin="data", examples=["example count < people.csv"],
        reply=obj({"lines": INT, "fields": INT}),
    )
    async def count(ctx: CommandContext) -> Reply:
        lines = (ctx.request.stdin or "").splitlines()
        fields = 0
        for done, line in enumerate(lines, 1):
            fields += len(line.split(","))
            if done % 10_000 == 0 or done == len(lines):
                await ctx.progress("counting", done, len(lines))  # podoctl: a progress bar
        return Reply(message=f"{len(lines)} lines, {fields} fields",
                     data={"lines": len(lines), "fields": fields})

    # Every series a plugin emits is declared once: /metrics takes its HELP and TYPE from
    # here, and docs/metrics.md lists it (python -m podod.frontends.metrics_doc --write).
    registry.declare_series("example_daemon_uptime_seconds", "gauge",
                            "How long the daemon has been running (the example plugin)",
                            about_podod=True)

    @registry.collector("example_uptime", interval=60, per_server=False)
    async def uptime(ctx: object) -> list[Sample]:
        runtime = getattr(ctx, "runtime", None)
        started = getattr(runtime, "started_at", time.time())
        return [Sample("example_daemon_uptime_seconds", "podod", time.time() - started)]
