"""podod's own features, loaded through the plugin API in this order."""

BUILTIN_MODULES: list[str] = [
    "podod.bus.commands",
    "podod.backup.commands",
    "podod.mail.commands",
]
