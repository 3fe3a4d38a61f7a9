"""A test plugin that publishes samples the way a collector run does, so /metrics and the
alert engine can be driven through the real daemon before (and besides) real collectors.

    feed samples [--collector NAME]      JSON list on stdin: {series, server, value, labels, kind}
    feed fleet --servers N               every catalogued series for N servers
    feed connection SERVER up|down       a ServerConnected / ServerDisconnected event
    feed failure COLLECTOR SERVER        a CollectorFailed event
"""

from __future__ import annotations

import json
import time
from typing import Any

from podod.bus.context import CommandContext, Reply
from podod.bus.spec import Arg, Opt
from podod.monitor.model import CollectorFailed, Sample, SamplesCollected
from podod.plugins import Registry
from podod.servers.events import ServerConnected, ServerDisconnected
from testbed.fleet import fleet_names, fleet_samples


def publish(ctx: CommandContext, collector: str, samples: list[Sample]) -> int:
    by_server: dict[str, list[Sample]] = {}
    for sample in samples:
        by_server.setdefault(sample.server, []).append(sample)
    for server, items in by_server.items():
        ctx.runtime.events.publish(SamplesCollected(collector=collector, server=server,
                                                    samples=tuple(items)))
    return len(samples)


def setup(registry: Registry) -> None:
    @registry.command("feed samples", "Publish samples (JSON on stdin) as one collector run",
                      params=[Opt("collector", "the collector name", default="feeder")],
                      reads_stdin=True)
    async def feed_samples(ctx: CommandContext, collector: str) -> Reply:
        data: list[dict[str, Any]] = json.loads(ctx.request.stdin or "[]")
        now = time.time()
        samples = [Sample(d["series"], d["server"], float(d["value"]),
                          Sample.labels_of(**d.get("labels", {})), d.get("kind", "gauge"),
                          float(d.get("ts", now))) for d in data]
        return Reply(message=f"published {publish(ctx, collector, samples)} samples")

    @registry.command("feed fleet", "Publish every catalogued series for N servers",
                      params=[Opt("servers", "how many", kind="int", default=3),
                              Opt("seed", "vary the values", kind="int", default=1)])
    async def feed_fleet(ctx: CommandContext, servers: int, seed: int) -> Reply:
        samples = fleet_samples(fleet_names(servers), seed=seed)
        return Reply(message=f"published {publish(ctx, 'feeder', samples)} samples")

    @registry.command("feed connection", "Publish a server (dis)connection event",
                      params=[Arg("server", "the server"),
                              Arg("state", "up or down", kind="choice",
                                  choices=("up", "down"))])
    async def feed_connection(ctx: CommandContext, server: str, state: str) -> Reply:
        event = ServerConnected(server=server) if state == "up" else \
            ServerDisconnected(server=server, reason="test")
        ctx.runtime.events.publish(event)
        return Reply(message=f"{server} {state}")

    @registry.command("feed failure", "Publish a collector failure",
                      params=[Arg("collector", "the collector"), Arg("server", "the server")])
    async def feed_failure(ctx: CommandContext, collector: str, server: str) -> Reply:
        ctx.runtime.events.publish(CollectorFailed(collector=collector, server=server,
                                                   reason="test"))
        return Reply(message=f"{collector} failed on {server}")
