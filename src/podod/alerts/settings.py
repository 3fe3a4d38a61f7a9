"""The ``alerts:`` section: rule files, grouping timings, maintenance windows and notifiers.

Rule files are read and validated together with the configuration, so ``podod
check-config`` checks them too and a reload (SIGHUP) with a broken rule file is rejected as
a whole: the running rules stay. Every notifier kind has its own model; an entry whose
``type`` is not built in is a plugin's notifier, checked against that plugin's model when
the alert engine starts.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from podod.alerts.matchers import MatcherError, from_mapping
from podod.alerts.rules import RuleSet, combine, default_rules, load_rule_files
from podod.alerts.templates import compile_template
from podod.settings_base import ConfigPath, Duration, Section

_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _check_matchers(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of label to value, e.g. {severity: critical}")
    try:
        from_mapping(value)
    except MatcherError as exc:
        raise ValueError(str(exc)) from None
    return value


def _check_template(value: str | None) -> str | None:
    if value is not None:
        compile_template(value)  # a ValueError names the line
    return value


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


# -- notifiers -----------------------------------------------------------------------------

class NotifierBase(Section):
    """What every notifier has: a name, a route filter, and its retry policy."""

    name: str | None = None  # default: the type
    send_resolved: bool = True
    match: dict[str, Any] = Field(default_factory=dict)  # only alerts matching all of these
    timeout: Duration = 10.0
    retry_initial: Duration = 1.0
    retry_max: Duration = 300.0
    give_up_after: Duration = 3600.0
    queue_size: int = Field(default=1000, ge=1)

    @field_validator("match", mode="before")
    @classmethod
    def _match(cls, value: Any) -> dict[str, Any]:
        return _check_matchers(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError("must be letters, digits, '.', '_' or '-'")
        return value

    @property
    def label(self) -> str:
        return self.name or str(getattr(self, "type", "notifier"))


class WebhookNotifierSettings(NotifierBase):
    type: Literal["webhook"]
    url: str = ""  # or url_file, for receivers whose URL is itself the secret
    url_file: ConfigPath | None = None
    token: SecretStr | None = None  # sent as "Authorization: Bearer <token>"
    token_file: ConfigPath | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    template: str | None = None  # Jinja2; default: the Alertmanager webhook JSON (v4)
    template_file: ConfigPath | None = None
    content_type: str = "application/json"
    max_alerts: int = Field(default=0, ge=0)  # 0: all

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return _check_template(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value) if value else value

    @model_validator(mode="after")
    def _url_given(self) -> WebhookNotifierSettings:
        if not self.url:
            raise ValueError("url (or url_file) is required")
        if self.url_file is not None:  # filled from the file: check what it held
            try:
                _http_url(self.url)
            except ValueError as exc:
                raise ValueError(f"url_file: {self.url_file} {exc}") from None
        return self


class EmailNotifierSettings(NotifierBase):
    model_config = ConfigDict(populate_by_name=True)

    type: Literal["email"]
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    tls: Literal["auto", "starttls", "implicit", "none"] = "auto"
    tls_verify: bool = True
    username: str | None = None
    password: SecretStr | None = None
    password_file: ConfigPath | None = None
    # SMTP AUTH without TLS sends the password readably: only when this says so (a relay on
    # loopback). Otherwise a server without STARTTLS gets no login and no message.
    allow_plaintext_auth: bool = False
    sender: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    subject: str = ("[{{ status | upper }}{% if status == 'firing' %}:{{ firing | length }}"
                    "{% endif %}] {{ title }}")
    body: str | None = None  # Jinja2; default: a plain-text listing of the alerts

    @field_validator("subject", "body")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return _check_template(value)

    @field_validator("sender", "to")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        for address in [value] if isinstance(value, str) else value:
            if "@" not in address or any(c in address for c in " \r\n<>,"):
                raise ValueError(f"'{address}' is not a mail address")
        return value

    @model_validator(mode="after")
    def _no_plaintext_login(self) -> EmailNotifierSettings:
        if self.username and self.tls == "none" and not self.allow_plaintext_auth:
            raise ValueError("tls: none with a username would send the SMTP password without "
                             "TLS; use tls: auto, starttls or implicit, or set "
                             "allow_plaintext_auth: true (for a relay on loopback only)")
        return self


def _loopback(host: str) -> bool:
    import ipaddress

    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def plaintext_auth_warning(entry: EmailNotifierSettings) -> str | None:
    """A sentence when this notifier may log in without TLS to a host not on loopback."""
    if entry.username and entry.allow_plaintext_auth and entry.tls != "implicit" \
            and not _loopback(entry.smtp_host):
        return (f"allow_plaintext_auth lets the SMTP password of {entry.username} go to "
                f"{entry.smtp_host} without TLS, and that is not a loopback address")
    return None


def plaintext_auth_warnings(settings: AlertSettings) -> list[str]:
    """``podod check-config``'s warnings for e-mail notifiers (the notifier logs them)."""
    out = []
    for i, entry in enumerate(settings.notifiers):
        if isinstance(entry, EmailNotifierSettings):
            warning = plaintext_auth_warning(entry)
            if warning:
                out.append(f"alerts.notifiers[{i}]: {warning}")
    return out


class AlertmanagerNotifierSettings(NotifierBase):
    type: Literal["alertmanager"]
    url: str  # the Alertmanager's base URL, e.g. http://127.0.0.1:9093
    token: SecretStr | None = None
    token_file: ConfigPath | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    resend_interval: Duration = 60.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class MatrixNotifierSettings(NotifierBase):
    """A Matrix room. Without ``homeserver`` the notifier posts through podod's own Matrix
    account (the ``matrix:`` section, shared with the admin bot), by default to
    ``matrix.alert_room``; with ``homeserver``, ``user_id`` and a token it uses that account
    on its own (as before the bot existed), unless it is the ``matrix:`` account itself."""

    type: Literal["matrix"]
    homeserver: str | None = None
    user_id: str | None = None
    access_token: SecretStr | None = None
    access_token_file: ConfigPath | None = None
    room_id: str | None = None  # default: matrix.alert_room
    msgtype: Literal["m.notice", "m.text"] = "m.notice"
    template: str | None = None  # Jinja2 for the plain-text body; default: a short listing

    @field_validator("homeserver")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _http_url(value) if value is not None else None

    @field_validator("user_id")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^@[^:\s]+:\S+$", value):
            raise ValueError("must be a Matrix user id such as @podod:example.org")
        return value

    @field_validator("room_id")
    @classmethod
    def _room(cls, value: str | None) -> str | None:
        # room ids of room version 12 have no server part (!hash); aliases always do
        if value is not None and not re.match(r"^(![^\s]+|#[^:\s]+:\S+)$", value):
            raise ValueError("must be a room id (!abc:example.org) or alias (#ops:example.org)")
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return _check_template(value)

    @model_validator(mode="after")
    def _token(self) -> MatrixNotifierSettings:
        if self.homeserver is None:
            if self.user_id is not None or self.access_token is not None:
                raise ValueError("homeserver is required with user_id or an access token "
                                 "(or leave all three out to post through podod's own "
                                 "matrix: account)")
            return self
        if self.user_id is None:
            raise ValueError("user_id is required with homeserver")
        if self.access_token is None:
            raise ValueError("access_token_file (or access_token) is required")
        if self.room_id is None:
            raise ValueError("room_id is required with homeserver")
        return self

    @property
    def shared(self) -> bool:
        """Posts through podod's own account (the matrix: section)."""
        return self.homeserver is None


class PluginNotifierSettings(NotifierBase):
    """A notifier a plugin registers: its own keys are checked when the engine starts."""

    model_config = ConfigDict(extra="allow")

    type: str


BUILTIN_NOTIFIERS = ("webhook", "email", "alertmanager", "matrix")


def _notifier_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    # Tags contain "[" so the config error formatter leaves them out of the key path.
    return f"notifier[{kind}]" if kind in BUILTIN_NOTIFIERS else "notifier[plugin]"


NotifierSettings = Annotated[
    Annotated[WebhookNotifierSettings, Tag("notifier[webhook]")]
    | Annotated[EmailNotifierSettings, Tag("notifier[email]")]
    | Annotated[AlertmanagerNotifierSettings, Tag("notifier[alertmanager]")]
    | Annotated[MatrixNotifierSettings, Tag("notifier[matrix]")]
    | Annotated[PluginNotifierSettings, Tag("notifier[plugin]")],
    Discriminator(_notifier_kind),
]


# -- maintenance windows ---------------------------------------------------------------------

class MaintenanceWindowSettings(Section):
    """A recurring window: from every time ``schedule`` fires, for ``duration``."""

    name: str
    schedule: str  # crontab: minute hour day-of-month month day-of-week
    duration: Duration
    timezone: str = "UTC"
    servers: list[str] = Field(default_factory=list)  # empty: every server
    match: dict[str, Any] = Field(default_factory=dict)
    reason: str = ""

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{value}' is not a time zone such as UTC or Europe/Berlin") \
                from None
        return value

    @field_validator("match", mode="before")
    @classmethod
    def _match(cls, value: Any) -> dict[str, Any]:
        return _check_matchers(value)

    @field_validator("duration")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than 0s, e.g. 2h")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        from podod.alerts.cron import cron_trigger  # late: APScheduler only when a window is set

        cron_trigger(value, "UTC")  # a ValueError names the problem
        return value


# -- quota warnings --------------------------------------------------------------------------

DEFAULT_NOTICE_SUBJECT = "Your mailbox {{ address }} is {{ percent }} full"
DEFAULT_NOTICE_BODY = """Hello{% if name %} {{ name }}{% endif %},

your mailbox {{ address }} uses {{ used | bytes }} of its {{ quota | bytes }} quota \
({{ percent }}), more than {{ threshold }} %.
When it is full, new mail to it is refused. Please delete or archive old messages
(empty the trash and the sent folder too), or ask your mail administrator for more space.

This notice is sent once; you get another only if the mailbox fills up again after
having been emptied below the mark.
"""


class OwnerNoticeSettings(Section):
    """``alerts.quota_warnings.owner_notice``: an e-mail to the owner of a mailbox that
    crosses a threshold, sent through an e-mail notifier's SMTP settings."""

    model_config = ConfigDict(populate_by_name=True)

    enabled: bool = False
    notifier: str = "email"  # the name of an e-mail notifier in alerts.notifiers
    sender: str | None = Field(default=None, alias="from")  # default: that notifier's from
    subject: str = DEFAULT_NOTICE_SUBJECT
    body: str | None = None  # default: DEFAULT_NOTICE_BODY
    max_per_run: int = Field(default=100, ge=1, le=100_000)

    @field_validator("subject", "body")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value == DEFAULT_NOTICE_SUBJECT:
            return value  # known good (a unit test renders it): no Jinja2 import at start
        return _check_template(value)

    @field_validator("sender")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and ("@" not in value or any(c in value for c in " \r\n<>,")):
            raise ValueError(f"'{value}' is not a mail address")
        return value


class QuotaWarningSettings(Section):
    """``alerts.quota_warnings``: mailboxes over a share of their quota (collector
    ``mail_quota``, series ``mail_quota_mailboxes_over``; docs/alerts.md)."""

    enabled: bool = True
    thresholds: list[int] = Field(default_factory=lambda: [80, 95])
    rearm_margin: int = Field(default=5, ge=0, le=50)  # percentage points under a threshold
    list_addresses: int = Field(default=10, ge=0, le=100)
    owner_notice: OwnerNoticeSettings = Field(default_factory=OwnerNoticeSettings)

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("needs at least one threshold, e.g. [80, 95]")
        if len(value) > 5:
            raise ValueError("at most 5 thresholds (each is a series per domain)")
        for t in value:
            if not 1 <= t <= 100:
                raise ValueError(f"{t} is not a percentage from 1 to 100")
        if len(set(value)) != len(value):
            raise ValueError("a threshold is listed twice")
        return sorted(value)


# -- the section ------------------------------------------------------------------------------

class AlertSettings(Section):
    enabled: bool = True
    default_rules: bool = True
    rule_files: list[ConfigPath] = Field(default_factory=list)
    evaluation_interval: Duration = 10.0
    group_by: list[str] = Field(default_factory=lambda: ["server"])
    group_wait: Duration = 30.0
    group_interval: Duration = 300.0
    repeat_interval: Duration = 4 * 3600.0
    resolve_wait: Duration = 10.0
    silence_reminder: Duration = 900.0
    history_retention: Duration = 90 * 86400.0
    external_url: str = ""
    notifiers: list[NotifierSettings] = Field(default_factory=list)
    maintenance: list[MaintenanceWindowSettings] = Field(default_factory=list)
    quota_warnings: QuotaWarningSettings = Field(default_factory=QuotaWarningSettings)

    _ruleset: RuleSet = PrivateAttr(default_factory=RuleSet)

    @field_validator("group_by")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        for label in value:
            if not _LABEL.match(label):
                raise ValueError(f"'{label}' is not a label name (letters, digits and _)")
        return value

    @field_validator("evaluation_interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if value < 0.05:
            raise ValueError("must be at least 50ms")
        return value

    @field_validator("notifiers")
    @classmethod
    def _unique(cls, value: list[NotifierBase]) -> list[NotifierBase]:
        seen: set[str] = set()
        for notifier in value:
            if notifier.label in seen:
                raise ValueError(f"two notifiers are called '{notifier.label}'; give each "
                                 "a distinct name")
            seen.add(notifier.label)
        return value

    @field_validator("maintenance")
    @classmethod
    def _unique_windows(cls, value: list[MaintenanceWindowSettings]
                        ) -> list[MaintenanceWindowSettings]:
        names = [w.name for w in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two maintenance windows are called '{name}'")
        return value

    @model_validator(mode="after")
    def _notice_notifier(self) -> AlertSettings:
        notice = self.quota_warnings.owner_notice
        if notice.enabled:
            names = [n.label for n in self.notifiers if isinstance(n, EmailNotifierSettings)]
            if notice.notifier not in names:
                known = ", ".join(names) if names else "none is configured"
                raise ValueError(f"quota_warnings.owner_notice.notifier: '{notice.notifier}' "
                                 f"is not an e-mail notifier in alerts.notifiers ({known})")
        return self

    def email_notifier(self, name: str) -> EmailNotifierSettings | None:
        for entry in self.notifiers:
            if isinstance(entry, EmailNotifierSettings) and entry.label == name:
                return entry
        return None

    @model_validator(mode="after")
    def _load_rules(self) -> AlertSettings:
        # A broken rule file raises ConfigError (not a ValueError), which pydantic passes
        # through: its message names the rule file, not podod.yaml.
        files = load_rule_files(list(self.rule_files))
        self._ruleset = combine(default_rules(), files) if self.default_rules else files
        return self

    @property
    def ruleset(self) -> RuleSet:
        return self._ruleset
