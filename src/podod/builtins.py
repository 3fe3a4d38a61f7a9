"""podod's own features, loaded through the plugin API in this order.

Components start in this order and stop in reverse: the server connections come before
anything that uses them (the mail database may be reached through an SSH tunnel), and the
live state before the collectors and frontends that feed or read it.
"""

BUILTIN_MODULES: list[str] = [
    "podod.bus.commands",
    "podod.servers.commands",
    "podod.servers.service_commands",
    "podod.monitor.live",
    "podod.monitor.store",
    "podod.monitor.scheduler",
    "podod.monitor.collectors",
    "podod.monitor.commands",
    "podod.monitor.traffic",
    "podod.backup.commands",
    "podod.mail.commands",
    "podod.alerts.commands",
    "podod.api.commands",
    "podod.frontends.metrics",
    "podod.frontends.matrix",
    "podod.frontends.api",
]
