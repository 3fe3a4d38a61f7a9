"""The built-in notifiers: webhook, e-mail, Alertmanager forwarding and a Matrix room.

Each registers with ``registry.notifier(kind)`` like a plugin's would; the factory gets the
validated settings (``podod.alerts.settings``) and the runtime.
"""

from __future__ import annotations

from podod.plugins import Registry


def setup(registry: Registry) -> None:
    from podod.alerts.notifiers import alertmanager, email, matrix, webhook

    registry.notifier("webhook")(webhook.WebhookNotifier)
    registry.notifier("email")(email.EmailNotifier)
    registry.notifier("alertmanager")(alertmanager.AlertmanagerNotifier)
    registry.notifier("matrix")(matrix.MatrixNotifier)
