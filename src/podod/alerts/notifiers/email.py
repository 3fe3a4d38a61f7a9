"""E-mail over SMTP: STARTTLS when the server offers it (``tls: auto``), required
(``starttls``), implicit TLS (``implicit``, port 465) or none; optional AUTH, never without
TLS unless ``allow_plaintext_auth`` says so (then neither the login nor the message is sent).

smtplib blocks, so each message is sent on a worker thread; the notifier's queue keeps that
away from the engine anyway.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from podod.alerts.notify import Notification, NotifyError
from podod.alerts.settings import EmailNotifierSettings, plaintext_auth_warning
from podod.alerts.templates import compile_template

log = logging.getLogger(__name__)


class EmailNotifier:
    grouped = True

    def __init__(self, settings: EmailNotifierSettings, runtime: Any = None) -> None:
        self.settings = settings
        self.name = settings.label
        self.subject = compile_template(settings.subject)
        self.body = compile_template(settings.body) if settings.body else None
        warning = plaintext_auth_warning(settings)
        if warning:
            log.warning("notifier %s: %s", self.name, warning)

    def message(self, notification: Notification) -> EmailMessage:
        s = self.settings
        context = notification.context()
        msg = EmailMessage()
        subject = " ".join(self.subject.render(**context).split())
        msg["Subject"] = subject[:250]
        msg["From"] = s.sender
        msg["To"] = ", ".join(s.to)
        msg["Date"] = formatdate(time.time(), localtime=False)
        msg["Message-ID"] = make_msgid(domain=s.sender.rpartition("@")[2] or None)
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Podod-Status"] = notification.status
        msg["X-Podod-Group"] = notification.group_key[:200]
        text = self.body.render(**context) if self.body is not None else notification.text()
        msg.set_content(text + "\n")
        return msg

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.settings.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _send_sync(self, msg: EmailMessage) -> None:
        s = self.settings
        host = f"{s.smtp_host}:{s.smtp_port}"
        try:
            smtp: smtplib.SMTP
            if s.tls == "implicit":
                smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.timeout,
                                        context=self._context())
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout)
            with smtp:
                smtp.ehlo()
                encrypted = s.tls == "implicit"
                if s.tls in ("auto", "starttls"):
                    if smtp.has_extn("starttls"):
                        smtp.starttls(context=self._context())
                        smtp.ehlo()
                        encrypted = True
                    elif s.tls == "starttls":
                        raise NotifyError(f"the SMTP server {host} does not offer STARTTLS")
                if s.username and not encrypted and not s.allow_plaintext_auth:
                    raise NotifyError(
                        f"the SMTP server {host} does not offer STARTTLS, and the login of "
                        f"{s.username} is not sent without TLS (allow_plaintext_auth: true "
                        "allows it, for a relay on loopback only); nothing was sent")
                if s.username:
                    password = s.password.get_secret_value() if s.password else ""
                    smtp.login(s.username, password)
                smtp.send_message(msg)
        except smtplib.SMTPAuthenticationError as exc:
            raise NotifyError(f"the SMTP server {host} refused the login of {s.username} "
                              f"({exc.smtp_code})") from None
        except smtplib.SMTPRecipientsRefused as exc:
            refused = ", ".join(sorted(exc.recipients))
            raise NotifyError(f"the SMTP server {host} refused {refused}") from None
        except smtplib.SMTPResponseException as exc:
            reason = exc.smtp_error.decode(errors="replace") if isinstance(
                exc.smtp_error, bytes) else str(exc.smtp_error)
            raise NotifyError(f"the SMTP server {host} answered {exc.smtp_code} "
                              f"{reason[:200]}") from None
        except (smtplib.SMTPException, ssl.SSLError) as exc:
            raise NotifyError(f"sending through {host} failed: {exc}") from None
        except OSError as exc:
            raise NotifyError(f"cannot reach the SMTP server {host} "
                              f"({exc.strerror or exc})") from None

    async def send(self, notification: Notification) -> None:
        await self.deliver(self.message(notification))

    async def deliver(self, msg: EmailMessage) -> None:
        """Send a message of someone else's making (the quota notices to mailbox owners)
        through this notifier's SMTP settings; NotifyError when it fails."""
        await asyncio.to_thread(self._send_sync, msg)

    async def close(self) -> None:
        return None
