"""The ``mail:`` section: how podod reaches the mail database and how it hashes passwords."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from podod.mail.passwords import MAX_BYTES, MAX_CHARS
from podod.settings_base import ConfigPath, Duration, Section


class DatabaseSettings(Section):
    """Where the PostfixAdmin-compatible mail database lives.

    ``dsn`` without a password plus ``password``/``password_file`` keeps the secret out of
    the YAML. ``via_server``/``tunnel`` reach a remote database through an SSH local forward
    kept open by the server manager; the DSN's host and port are then replaced by the
    tunnel's local end.
    """

    dsn: str | None = None
    password: SecretStr | None = None
    password_file: ConfigPath | None = None
    via_server: str | None = None
    tunnel: str | None = None
    min_pool: int = Field(default=1, ge=0)
    max_pool: int = Field(default=5, ge=1)
    connect_timeout: Duration = Field(default=10.0, gt=0)

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, value: str | None) -> str | None:
        """A libpq URL for PostgreSQL, without a password (ps shows pg_dump's arguments,
        and a DSN ends up in messages): check-config says so, not a traceback later."""
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - parsing the port raises for a bad one
        except ValueError as exc:
            raise ValueError(f"is not a valid URL ({exc})") from None
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a PostgreSQL URL such as "
                             "postgresql://podod@127.0.0.1:5432/mail")
        if parts.password is not None or "password=" in parts.query:
            raise ValueError("must not hold the password; give it as password_file (mode "
                             "0600)")
        return value

    @model_validator(mode="after")
    def _pool(self) -> DatabaseSettings:
        if self.min_pool > self.max_pool:
            raise ValueError("min_pool must not be larger than max_pool")
        return self


class PasswordSettings(Section):
    scheme: Literal["SHA512-CRYPT", "BLF-CRYPT", "ARGON2ID"] = "SHA512-CRYPT"
    rounds: int = Field(default=70000, ge=1000, le=999_999_999)
    min_length: int = Field(default=12, ge=1, le=MAX_CHARS)
    generated_length: int = Field(default=20, ge=12, le=MAX_CHARS)

    @model_validator(mode="after")
    def _hashable(self) -> PasswordSettings:
        most = min(MAX_CHARS, MAX_BYTES[self.scheme])  # generated ones are ASCII
        for key in ("min_length", "generated_length"):
            if getattr(self, key) > most:
                raise ValueError(f"{key} must be at most {most} for {self.scheme} (longer "
                                 "passwords cannot be hashed)")
        return self


class DatabaseRoles(Section):
    """Roles ``podod db init --roles`` creates or grants (production uses separate ones)."""

    readonly: str | None = None
    readonly_password: SecretStr | None = None
    readonly_password_file: ConfigPath | None = None
    sogo: str | None = None
    sogo_password: SecretStr | None = None
    sogo_password_file: ConfigPath | None = None
    quota: str | None = None
    quota_password: SecretStr | None = None
    quota_password_file: ConfigPath | None = None


# A folder path podod passes to remote commands: absolute, no "." or ".." segment, no segment
# starting with "-", and only characters that need no quoting in a shell, a regular
# expression or a sudoers rule (besides "." and "+", which are escaped there).
_REMOTE_PATH = re.compile(r"(/[A-Za-z0-9_.+@-]+)+")


def _remote_path(value: str) -> str:
    value = value.rstrip("/")
    if not _REMOTE_PATH.fullmatch(value):
        raise ValueError("must be an absolute folder path (not /) of letters, digits and "
                         "'._+@-', for example /var/vmail")
    for part in value.split("/")[1:]:
        if part in (".", "..") or part.startswith("-"):
            raise ValueError(f"must not contain a '{part}' segment")
    return value


class MaildirSettings(Section):
    """Where the maildirs live, for ``user delete --remove-maildir`` and the maildir trash.

    podod never deletes a maildir at once: it moves it into ``trash`` (same filesystem: a
    rename), where ``user restore-maildir`` finds it after a ``backup restore``, and purges
    it ``trash_days`` later.
    """

    server: str | None = None
    root: str = "/var/vmail"
    trash: str | None = None
    run_as: str | None = "vmail"
    trash_days: int = Field(default=30, ge=0)
    purge_interval: Duration = 21600.0
    # user create refuses an address whose old maildir is still on the server (the new
    # mailbox would get the old owner's mail) unless --reuse-maildir; false: podod does not
    # look (maildirs are not podod's to check), see docs/mail.md.
    check_on_create: bool = True
    # With several mail databases (mail.databases): the databases whose mailboxes keep their
    # maildirs on this server; null: all of them. A mailbox of another database is never
    # looked for or moved here (rename and --remove-maildir are refused for it).
    databases: list[str] | None = None

    @field_validator("root")
    @classmethod
    def _root(cls, value: str) -> str:
        return _remote_path(value)

    @field_validator("trash")
    @classmethod
    def _trash(cls, value: str | None) -> str | None:
        return None if value is None else _remote_path(value)

    @field_validator("run_as")
    @classmethod
    def _run_as(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", value):
            raise ValueError(f"'{value}' is not a user name")
        return value

    @field_validator("purge_interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if value < 0:
            raise ValueError("purge_interval must not be negative")
        return value

    @model_validator(mode="after")
    def _trash_apart(self) -> MaildirSettings:
        trash = self.trash_path
        if trash == self.root or self.root.startswith(trash + "/"):
            raise ValueError("trash must not be root or a folder above it")
        if trash.startswith(self.root + "/"):
            first = trash[len(self.root) + 1:].split("/")[0]
            if not first.startswith("."):
                raise ValueError("a trash inside root must be a hidden folder (its name "
                                 "starting with '.', e.g. /var/vmail/.podod-trash), so no "
                                 "domain's folder can be mistaken for it")
        return self

    @property
    def trash_path(self) -> str:
        return self.trash or f"{self.root}/.podod-trash"


_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
_ENV_VALUE = re.compile(r"[A-Za-z0-9_./+@-]{1,255}")


class SogoSettings(Section):
    """How podod reaches SOGo (docs/sogo.md): ``sogo-tool`` on ``server`` (none: this
    machine), run as ``run_as`` through ``sudo -n -u``, every argument pinned by a regular
    expression (``podoctl sogo sudoers`` prints the rule). Without this section podod leaves
    SOGo alone: ``user delete`` keeps SOGo's data, ``user vacation`` is refused."""

    server: str | None = None
    run_as: str | None = "sogo"
    tool: str = "/usr/sbin/sogo-tool"
    # Extra environment for sogo-tool (e.g. GNUSTEP_CONFIG_FILE for a SOGo whose defaults
    # are not in /etc/sogo), passed as ``/usr/bin/env NAME=VALUE ... sogo-tool``.
    environment: dict[str, str] = Field(default_factory=dict)
    # On the SOGo server, readable by run_as: one line "user:password" of the Dovecot
    # master user SOGo logs in to ManageSieve with (sogo-tool ... -p FILE). Needed by
    # ``user vacation set|clear``.
    sieve_credentials_file: str | None = None
    # On the SOGo server, a folder run_as may write (install -d -o sogo -m 0700 ...):
    # ``sogo-tool backup`` of a deleted user goes into <backup_dir>/<podod backup id>/.
    backup_dir: str = "/var/backups/podod-sogo"
    # SOGo keeps a user's profile in memcached this long (its SOGoCacheCleanupInterval):
    # a deleted user's preferences can be restored only after that.
    cache_seconds: Duration = 300.0
    timeout: Duration = Field(default=120.0, gt=0)
    # With several mail databases: the databases whose users this SOGo serves; null: all.
    # Users of another database are left alone (delete keeps their SOGo data, vacation is
    # refused for them).
    databases: list[str] | None = None

    @field_validator("tool", "backup_dir", "sieve_credentials_file")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return None if value is None else _remote_path(value)

    @field_validator("run_as")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", value):
            raise ValueError(f"'{value}' is not a user name")
        return value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"'{name}' is not an environment variable name (A-Z, 0-9, _)")
            if not _ENV_VALUE.fullmatch(str(text)):
                raise ValueError(f"the value of {name} may hold only letters, digits and "
                                 "'_./+@-' (a path, a word)")
        return value

    @field_validator("cache_seconds")
    @classmethod
    def _cache(cls, value: float) -> float:
        if value < 0:
            raise ValueError("cache_seconds must not be negative")
        return value


class MailSettings(Section):
    # How many targets one alias may hold: Postfix expands an address into at most
    # virtual_alias_expansion_limit (1000) recipients, and goto is a text column, so the
    # count is what bounds an alias (and the work one request can ask for).
    max_alias_targets: int = Field(default=1000, ge=1, le=100_000)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    # Several mail databases, by name (docs/databases.md); mail.database alone is the one
    # database named "main".
    databases: dict[str, DatabaseSettings] = Field(default_factory=dict)
    passwords: PasswordSettings = Field(default_factory=PasswordSettings)
    roles: DatabaseRoles = Field(default_factory=DatabaseRoles)
    maildir: MaildirSettings = Field(default_factory=MaildirSettings)
    sogo: SogoSettings | None = None

    @field_validator("databases")
    @classmethod
    def _names(cls, value: dict[str, DatabaseSettings]) -> dict[str, DatabaseSettings]:
        for name, settings in value.items():
            if not DATABASE_NAME.fullmatch(name):
                raise ValueError(f"'{name}' is not a database name (lowercase letters, digits, "
                                 "'-' and '_', at most 32, starting with a letter)")
            if not settings.dsn:
                raise ValueError(f"{name}: dsn is required")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> MailSettings:
        if self.databases and "database" in self.model_fields_set:
            raise ValueError("give either mail.database (one mail database) or "
                             "mail.databases (several, by name), not both")
        names = self.all_databases()
        for key, listed in (("maildir", self.maildir.databases),
                            ("sogo", self.sogo.databases if self.sogo else None)):
            unknown = [name for name in listed or [] if name not in names]
            if unknown:
                raise ValueError(f"{key}.databases: there is no mail database named "
                                 f"{unknown[0]} (the configured ones: "
                                 f"{', '.join(names) or 'none'})")
        return self

    def all_databases(self) -> dict[str, DatabaseSettings]:
        """The mail databases by name: ``mail.databases``, or ``mail.database`` as the one
        database named ``main`` (:data:`DEFAULT_NAME`); empty when none is configured."""
        if self.databases:
            return dict(self.databases)
        return {DEFAULT_NAME: self.database} if self.database.dsn else {}

    def option(self, name: str) -> str:
        """The config key of database ``name``, for sentences ("mail.databases.mx2")."""
        return "mail.database" if not self.databases else f"mail.databases.{name}"


DEFAULT_NAME = "main"  # the name of the one database of mail.database
DATABASE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
