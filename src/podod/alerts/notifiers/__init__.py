"""The built-in notifiers: webhook, e-mail, Alertmanager forwarding and a Matrix room.

Each registers with ``registry.notifier(kind)`` like a plugin's would; the factory gets the
validated settings (``podod.alerts.settings``) and the runtime. The modules are imported
when a notifier of their kind is configured: matrix-nio alone costs 0.1 s of start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from podod.plugins import Registry

BUILTIN = {
    "webhook": ("podod.alerts.notifiers.webhook", "WebhookNotifier"),
    "email": ("podod.alerts.notifiers.email", "EmailNotifier"),
    "alertmanager": ("podod.alerts.notifiers.alertmanager", "AlertmanagerNotifier"),
    "matrix": ("podod.alerts.notifiers.matrix", "MatrixNotifier"),
}


def lazy(module: str, name: str) -> Callable[..., Any]:
    def factory(settings: Any, runtime: Any) -> Any:
        cls = getattr(importlib.import_module(module), name)
        return cls(settings, runtime)

    factory.__qualname__ = name
    return factory


def setup(registry: Registry) -> None:
    for kind, (module, name) in BUILTIN.items():
        registry.notifier(kind)(lazy(module, name))
