"""Bulk CSV files of mailboxes, aliases and domains: reading (header, BOM, delimiter, one
checked record per row, every bad row with its line and one reason) and writing (exports
that the import reads back as they are).

Everything here is pure and blocking: the import runs it in a worker thread, so a file of
100 000 rows never holds the event loop. What needs the database (does the domain exist, is
the address taken, the domain's limits) is checked in :mod:`podod.mail.commands.bulk`.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from podod.errors import ValidationError
from podod.mail.addresses import normalize_address, normalize_domain, normalize_mailbox, shown
from podod.mail.passwords import HASH_FORMS
from podod.mail.schema import TEXT_COLUMNS
from podod.mail.transports import check_transport

Kind = Literal["user", "alias", "domain"]
MB = 1024 * 1024
MAX_QUOTA_MB = 1_000_000_000
MAX_COUNT = 2**31 - 1
MAX_FIELD = 65_536  # characters in one field; no column holds more than a target list
MAX_BAD_SHOWN = 1000  # bad rows listed in a reply (all are counted)

# The columns of each kind of file, in the order an export writes them; the first is the
# key. Only the key is required in every file; see docs/import.md for each column.
COLUMNS: dict[Kind, tuple[str, ...]] = {
    "user": ("address", "name", "quota", "password", "password_hash", "active", "maildir",
             "phone", "email_other", "password_expiry", "created", "modified"),
    "alias": ("address", "targets", "active", "created", "modified"),
    "domain": ("domain", "description", "mailboxes", "aliases", "maxquota", "quota",
               "transport", "backupmx", "active", "password_expiry", "created", "modified"),
}
# Other names a column is known by in files from other tools (PostfixAdmin's exports,
# spreadsheets): read as the column they stand for.
SYNONYMS = {"username": "address", "email": "address", "e_mail": "address", "mail": "address",
            "goto": "targets", "to": "targets", "full_name": "name", "fullname": "name",
            "hash": "password_hash"}
KEY = {"user": "address", "alias": "address", "domain": "domain"}

# The schemes Dovecot 2.3 accepts (``doveadm pw -l``), but not those that keep the
# password itself in the database: a clear-text password is given as ``password`` and
# podod hashes it.
DOVECOT_SCHEMES = frozenset({
    "SHA1", "SSHA512", "SCRAM-SHA-256", "BLF-CRYPT", "HMAC-MD5", "OTP", "SHA512", "SHA",
    "DES-CRYPT", "CRYPT", "SSHA", "MD5-CRYPT", "PLAIN-MD4", "PLAIN-MD5", "SCRAM-SHA-1",
    "SHA512-CRYPT", "ARGON2I", "ARGON2ID", "SSHA256", "MD5", "PBKDF2", "SHA256", "CRAM-MD5",
    "SHA256-CRYPT", "SMD5", "DIGEST-MD5", "LDAP-MD5"})
CLEARTEXT_SCHEMES = frozenset({"PLAIN", "CLEAR", "CLEARTEXT", "PLAIN-TRUNC"})
_HASH_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces
_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")
_YES = {"yes", "y", "true", "t", "1", "on"}
_NO = {"no", "n", "false", "f", "0", "off"}
_QUOTA = re.compile(r"(\d{1,19})\s*([kmgt]i?b?|b)?", re.I)
_UNIT = {"b": 1, "k": 1024, "m": MB, "g": 1024 * MB, "t": 1024 * 1024 * MB}


@dataclass
class Bad:
    """A row that is not imported: its line in the file, its key as written, why."""

    line: int
    key: str
    reason: str

    def as_list(self) -> list[Any]:
        return [self.line, self.key, self.reason]


class RowError(Exception):
    """One bad value of one row (turned into a :class:`Bad`)."""


@dataclass(slots=True)
class Record:
    """One good row, its values checked and converted (``values``: column → value, only
    the columns the file has and the row fills)."""

    line: int
    key: str
    domain: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class Parsed:
    records: list[Record]
    bad: list[Bad]
    columns: list[str]
    rows: int


def decode(data: str | bytes) -> str:
    """The text of a file: UTF-8 with or without a byte-order mark."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"the file is not UTF-8 (byte {exc.start + 1} cannot be "
                                  "read); save it as UTF-8 and try again") from None
    return data.removeprefix("\ufeff")


def delimiter(header: str) -> str:
    """',' or ';', whichever separates the header row's names (outside quotes)."""
    counts = {",": 0, ";": 0}
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    return ";" if counts[";"] > counts[","] else ","


def _header(kind: Kind, names: list[str]) -> list[str]:
    known = COLUMNS[kind]
    columns: list[str] = []
    for raw in names:
        name = raw.strip().lower().replace(" ", "_").replace("-", "_")
        name = SYNONYMS.get(name, name)
        if name not in known:
            if "@" in raw or not raw.strip():
                raise ValidationError(
                    f"the first row of the file must be a header naming its columns "
                    f"({', '.join(known)}); it has '{shown(raw[:60])}'")
            raise ValidationError(f"the header names an unknown column '{shown(raw[:60])}'; "
                                  f"a {kind} file may have: {', '.join(known)}")
        if name in columns:
            raise ValidationError(f"the header names the column {name} twice")
        columns.append(name)
    if KEY[kind] not in columns:
        raise ValidationError(f"the header has no {KEY[kind]} column (a {kind} file needs "
                              f"it; its columns: {', '.join(known)})")
    if kind == "alias" and "targets" not in columns:
        raise ValidationError("the header has no targets column (an alias file needs it)")
    return columns


def rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line where the row starts, fields) for every non-empty row, header first."""
    end = text.find("\n")
    first = text if end < 0 else text[:end]
    # The lines as a generator over the text, split at '\n' only (as a file opened with
    # newline='' is): no copy of the whole text (io.StringIO keeps 4 bytes a character).
    lines = (m.group(0) for m in _LINE.finditer(text))
    reader = csv.reader(lines, delimiter=delimiter(first), strict=False)
    previous = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ValidationError(f"line {previous + 1} cannot be read as CSV ({exc})") \
                from None
        start, previous = previous + 1, reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue
        yield start, fields


def parse(kind: Kind, data: str | bytes, check: Callable[[Kind, dict[str, str]], Record],
          ) -> Parsed:
    """Every row of the file through ``check`` (which raises :class:`RowError`)."""
    text = decode(data)
    if not text.strip():
        raise ValidationError("the file is empty: it needs a header row and at least one row")
    csv.field_size_limit(MAX_FIELD)
    source = rows(text)
    try:
        _line, names = next(source)
    except StopIteration:
        raise ValidationError("the file is empty: it needs a header row and at least "
                              "one row") from None
    columns = _header(kind, names)
    records: list[Record] = []
    bad: list[Bad] = []
    count = 0
    for line, fields in source:
        count += 1
        key = fields[columns.index(KEY[kind])].strip() if len(fields) > \
            columns.index(KEY[kind]) else ""
        if len(fields) != len(columns):
            bad.append(Bad(line, shown(key[:80]), f"the row has {len(fields)} fields, the "
                           f"header {len(columns)} (check the quoting and the delimiter)"))
            continue
        try:
            record = check(kind, dict(zip(columns, fields, strict=True)))
        except (RowError, ValidationError) as exc:
            bad.append(Bad(line, shown(key[:80]), _reason(exc)))
            continue
        record.line = line
        records.append(record)
    if not count:
        raise ValidationError("the file has a header but no rows")
    return Parsed(records, bad, columns, count)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return exc.message.removesuffix("; nothing was changed")
    return str(exc)


# -- values --------------------------------------------------------------------------------

def flag(column: str, raw: str, default: bool = True) -> bool:
    text = raw.strip().lower()
    if not text:
        return default
    if text in _YES:
        return True
    if text in _NO:
        return False
    raise RowError(f"{column} must be yes or no, not '{shown(raw[:20])}'")


def quota(column: str, raw: str) -> int | None:
    """Bytes, or None when empty (the domain's default). A plain number is MB (as
    ``--quota-mb``); with a unit: B, K, M, G, T (also KB, MiB, ...); 0 or 'unlimited'."""
    text = raw.strip()
    if not text:
        return None
    if text.lower() in ("unlimited", "none"):
        return 0
    match = _QUOTA.fullmatch(text)
    if match is None:
        raise RowError(f"{column} '{shown(text[:20])}' is not a size (a number of MB, or "
                       "with a unit: 500M, 2G, 1048576B; 0 or unlimited)")
    unit = (match.group(2) or "m")[0].lower()
    value = int(match.group(1)) * _UNIT[unit]
    if value > MAX_QUOTA_MB * MB:
        raise RowError(f"{column} {text} is larger than {MAX_QUOTA_MB} MB")
    return value


def integer(column: str, raw: str, low: int, high: int) -> int | None:
    text = raw.strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise RowError(f"{column} must be a whole number, not '{shown(text[:20])}'") from None
    if not low <= value <= high:
        raise RowError(f"{column} must be between {low} and {high}, not {value}")
    return value


def timestamp(column: str, raw: str) -> datetime | None:
    """An ISO 8601 time (as an export writes it); one without a zone is taken as UTC."""
    text = raw.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise RowError(f"{column} '{shown(text[:40])}' is not a time such as "
                       "2026-01-31T12:00:00+00:00") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def text(column: str, raw: str, limit: int | None) -> str:
    if limit is not None and len(raw) > limit:
        raise RowError(f"{column} may have at most {limit} characters, not {len(raw)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise RowError(f"{column} must not contain control characters such as a line break "
                       "or a tab")
    return raw


def password_hash(raw: str) -> str:
    """A pre-hashed password as Dovecot reads it: ``{SCHEME}hash`` with a scheme Dovecot
    accepts, in the form that scheme writes."""
    value = raw.strip()
    match = re.fullmatch(r"\{([A-Za-z0-9-]+)(\.[A-Za-z0-9]+)?\}(.*)", value, re.S)
    if match is None:
        raise RowError("password_hash must start with a {SCHEME} prefix, such as "
                       "{SHA512-CRYPT}$6$...")
    scheme, encoding, digest = match.group(1).upper(), match.group(2), match.group(3)
    if scheme in CLEARTEXT_SCHEMES:
        raise RowError(f"password_hash {{{scheme}}} is the password in clear text; give it "
                       "in the password column instead, and podod hashes it")
    if scheme not in DOVECOT_SCHEMES:
        raise RowError(f"password_hash has the scheme {{{shown(scheme[:30])}}}, which "
                       "Dovecot does not accept")
    if encoding is not None and encoding.upper() not in (".B64", ".BASE64", ".HEX"):
        raise RowError(f"password_hash has an unknown encoding {shown(encoding[:10])} (Dovecot "
                       "knows .b64 and .hex)")
    form = HASH_FORMS.get(scheme)
    if not digest or not _HASH_CHARS.fullmatch(digest) or (
            form is not None and encoding is None and not form.fullmatch(digest)):
        raise RowError(f"password_hash is not a {scheme} hash (its form is wrong)")
    if len(value) > 255:
        raise RowError("password_hash is longer than the 255 characters the database holds")
    return value


def targets(raw: str, limit: int) -> list[str]:
    """An alias's targets: addresses separated by commas or spaces (each once, in order)."""
    items = [t for t in re.split(r"[,\s]+", raw) if t]
    if not items:
        raise RowError("targets is empty (an alias needs at least one)")
    unique = list(dict.fromkeys(items))
    if len(unique) > limit:
        raise RowError(f"an alias may have at most {limit} targets (mail.max_alias_targets), "
                       f"not {len(unique)}")
    domains: dict[str, str] = {}
    return list(dict.fromkeys(normalize_address(t, domains=domains) for t in unique))


# -- one row of each kind ----------------------------------------------------------------

_USER_TEXT = {"name": 255, "maildir": TEXT_COLUMNS["mailbox"]["maildir"],
              "phone": TEXT_COLUMNS["mailbox"]["phone"],
              "email_other": TEXT_COLUMNS["mailbox"]["email_other"]}
_DOMAIN_TEXT = {"description": 255, "transport": TEXT_COLUMNS["domain"]["transport"]}


@dataclass(frozen=True)
class Options:
    """What the command line says about every row."""

    domain: str | None = None  # --domain: rows must be in it (a bare local part is allowed)
    generate: bool = False  # --generate-passwords: rows without a password get one
    max_targets: int = 1000
    min_length: int = 12
    scheme: str = "SHA512-CRYPT"
    policy: Callable[[str, int, str], None] | None = None  # the password policy


def _in_domain(raw: str, options: Options) -> str:
    value = raw.strip()
    if options.domain and "@" not in value and value:
        value = f"{value}@{options.domain}"
    return value


def _check_domain(address: str, domain: str, options: Options) -> None:
    if options.domain and domain != options.domain:
        raise RowError(f"{address} is not in the domain {options.domain} (--domain)")


def check_user(row: dict[str, str], options: Options) -> Record:
    address = normalize_mailbox(_in_domain(row["address"], options))
    domain = sys.intern(address.rpartition("@")[2])  # one string per domain, not per row
    _check_domain(address, domain, options)
    values: dict[str, Any] = {}
    for column, limit in _USER_TEXT.items():
        if row.get(column):
            values[column] = text(column, row[column], limit)
    if "maildir" in values and (values["maildir"].startswith("/") or
                                ".." in values["maildir"].split("/")):
        raise RowError("maildir must be a relative path inside the mail storage "
                       "(no leading / and no ..)")
    if "quota" in row:
        values["quota"] = quota("quota", row["quota"])
    if row.get("active", "").strip():  # compared with a row already there only when given
        values["active"] = flag("active", row["active"])
    plain = row.get("password", "")
    hashed = row.get("password_hash", "").strip()
    if plain and hashed:
        raise RowError("the row gives both password and password_hash; give one")
    if hashed:
        values["password_hash"] = password_hash(hashed)
    elif plain:
        if options.policy is not None:
            options.policy(plain, options.min_length, options.scheme)
        values["password"] = plain
    elif not options.generate:
        raise RowError("the row has no password (give password or password_hash, or "
                       "--generate-passwords)")
    for column in ("password_expiry", "created", "modified"):
        if row.get(column, "").strip():
            values[column] = timestamp(column, row[column])
    return Record(0, address, domain, values)


def check_alias(row: dict[str, str], options: Options) -> Record:
    address = normalize_address(_in_domain(row["address"], options), allow_catchall=True)
    domain = sys.intern(address.split("@")[1])
    _check_domain(address, domain, options)
    goto = targets(row["targets"], options.max_targets)
    if address in goto:
        raise RowError(f"the alias {address} cannot forward to itself")
    values: dict[str, Any] = {"targets": goto}
    if row.get("active", "").strip():
        values["active"] = flag("active", row["active"])
    for column in ("created", "modified"):
        if row.get(column, "").strip():
            values[column] = timestamp(column, row[column])
    return Record(0, address, domain, values)


def check_domain(row: dict[str, str], options: Options) -> Record:
    name = normalize_domain(row["domain"].strip())
    if options.domain and name != options.domain:
        raise RowError(f"{name} is not the domain {options.domain} (--domain)")
    values: dict[str, Any] = {}
    for column, limit in _DOMAIN_TEXT.items():
        if row.get(column):
            values[column] = text(column, row[column], limit)
    for column in ("mailboxes", "aliases"):
        number = integer(column, row.get(column, ""), -1, MAX_COUNT)
        if number is not None:
            values[column] = number
    for column in ("maxquota", "quota"):
        number = integer(column, row.get(column, ""), -1, MAX_QUOTA_MB)
        if number is not None:
            values[column] = number
    total, largest = values.get("quota", 0), values.get("maxquota", 0)
    if total > 0 and largest > total:
        raise RowError(f"maxquota ({largest} MB) cannot be larger than quota, the domain's "
                       f"total ({total} MB)")
    if total > 0 and largest < 0:
        raise RowError("a domain with a total quota needs mailbox quotas (maxquota -1 and a "
                       "quota cannot go together)")
    if values.get("transport"):  # as domain create --transport checks it
        try:
            values["transport"] = check_transport(values["transport"])
        except ValidationError as exc:
            raise RowError(exc.message.replace("--transport", "transport", 1)) from None
    for column in ("backupmx", "active"):
        if row.get(column, "").strip():
            values[column] = flag(column, row[column])
    expiry = integer("password_expiry", row.get("password_expiry", ""), 0, 36500)
    if expiry is not None:
        values["password_expiry"] = expiry
    for column in ("created", "modified"):
        if row.get(column, "").strip():
            values[column] = timestamp(column, row[column])
    return Record(0, name, name, values)


CHECKS: dict[Kind, Callable[[dict[str, str], Options], Record]] = {
    "user": check_user, "alias": check_alias, "domain": check_domain}


def read(kind: Kind, data: str | bytes, options: Options) -> Parsed:
    """The file's rows, checked one by one (no database): good records and bad rows.
    Duplicates inside the file are bad rows too (the first one stays)."""
    check = CHECKS[kind]
    parsed = parse(kind, data, lambda _k, row: check(row, options))
    seen: dict[str, int] = {}
    kept: list[Record] = []
    for record in parsed.records:
        first = seen.setdefault(record.key, record.line)
        if first != record.line:
            parsed.bad.append(Bad(record.line, record.key,
                                  f"{record.key} is in the file twice (also on line {first})"))
            continue
        kept.append(record)
    parsed.records = kept
    parsed.bad.sort(key=lambda b: b.line)
    return parsed


# -- writing -------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def quota_text(value_bytes: int) -> str:
    """A quota as the import reads it back exactly: MB when whole, else bytes."""
    if value_bytes % MB == 0:
        return str(value_bytes // MB)
    return f"{value_bytes}B"


def write(columns: Iterable[str], records: Iterable[Iterable[Any]]) -> str:
    """CSV text (',' delimited, a header row, '\\r\\n' lines as RFC 4180 has them)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(list(columns))
    for record in records:
        writer.writerow([_cell(v) for v in record])
    return out.getvalue()
