"""Session fixtures for integration tests: one real PostgreSQL cluster, a fresh mail database
(schema created by ``podod db init``) and a podod daemon on it per test that asks for one;
and, once per session, the real mail stack on one shared database: Dovecot and Postfix on the
SELECT-only role (Dovecot's quota dict on the quota role), SOGo on its own role, all created
by ``podod db init --roles``."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml

from podod.mail.serverconfig import SqlLogin
from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.dovecot import Dovecot
from testbed.ports import free_port
from testbed.postfix import Postfix
from testbed.postfixadmin import PostfixAdmin
from testbed.postgres import PgCluster
from testbed.schemas import ENV as CHECK_REPLY_SCHEMAS
from testbed.sogo import SOGo
from testbed.sshd import Sshd

OWNER, OWNER_PW = "podod", "podod-owner-pw"
# Every reply a test receives from a daemon is checked against its command's declared reply
# schema (testbed.schemas): the whole suite exercises the declarations.
os.environ.setdefault(CHECK_REPLY_SCHEMAS, "1")
_counter = itertools.count()


@pytest.fixture(scope="session")
def daemons_tmp() -> Iterator[Path]:
    """A folder for daemons that run as other users (postgres, vmail, postfix, sogo).

    Not under pytest's basetemp: every pytest session that starts on this machine resets
    /tmp/pytest-of-<user> to mode 0700, which would lock those users out of a running
    session's sockets and maildirs."""
    root = Path(tempfile.mkdtemp(prefix="podod-test-"))
    os.chmod(root, 0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg(daemons_tmp: Path) -> Iterator[PgCluster]:
    cluster = PgCluster(daemons_tmp / "pg", free_port())
    cluster.start()
    cluster.create_role(OWNER, OWNER_PW, superuser=False)
    cluster.psql(f'ALTER ROLE "{OWNER}" CREATEROLE')
    yield cluster
    cluster.stop()


class DaemonRequests:
    """``ok`` and ``fail``: a request to the test's daemon that must succeed (its reply) or
    be refused (its sentence). ``REAL`` is whether ``ok`` changes for real by default."""

    daemon: DaemonProcess
    REAL = False

    def ok(self, *argv: str, stdin: str | None = None, real: bool | None = None
           ) -> dict[str, Any]:
        reply = self.daemon.request(list(argv), execute_real=self.REAL if real is None else real,
                                    stdin=stdin)
        assert reply["ok"], reply["message"]
        return reply

    def fail(self, *argv: str, stdin: str | None = None, real: bool = True) -> str:
        reply = self.daemon.request(list(argv), execute_real=real, stdin=stdin)
        assert not reply["ok"], reply
        return str(reply["message"])


@dataclass
class MailStack(DaemonRequests):
    pg: PgCluster
    db: str
    root: Path
    config_path: Path
    daemon: DaemonProcess

    @property
    def dsn(self) -> str:
        return self.pg.dsn(OWNER, OWNER_PW, self.db)

    def dump(self) -> str:
        return self.pg.dump(self.db)

    def sql(self, query: str) -> str:
        return self.pg.psql(query, self.db).strip()



def make_mail_config(pg: PgCluster, root: Path, db: str, *,
                     passwords: dict[str, object] | None = None,
                     roles: dict[str, object] | None = None,
                     backup: dict[str, object] | None = None, **extra: object) -> Path:
    secret = root / "pg-password"
    secret.write_text(OWNER_PW)
    mail: dict[str, object] = {
        "database": {"dsn": f"postgresql://{OWNER}@127.0.0.1:{pg.port}/{db}",
                     "password_file": str(secret)},
        "passwords": passwords or {"rounds": 5000},
        # No mail server holds these tests' maildirs (test_maildirs.py and
        # test_maildir_reuse.py configure one and check).
        "maildir": {"check_on_create": False}}
    if roles:
        mail["roles"] = roles
    config = base_config(root, mail=mail,
                         backup={"dir": str(root / "backups"), **(backup or {})}, **extra)
    return write_config(root / "podod.yaml", config)


def db_init(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podod.cli", "db", "init", *extra, "-c",
                           str(path)], capture_output=True, text=True)


@pytest.fixture(scope="session")
def mail_template(pg: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database made by ``podod db init`` once; each test's database is a copy of it."""
    db = "mail_template"
    pg.create_database(db, OWNER)
    init = db_init(make_mail_config(pg, tmp_path_factory.mktemp("template"), db))
    assert init.returncode == 0, init.stderr
    return db


@pytest.fixture
def mail(pg: PgCluster, mail_template: str, tmp_path: Path) -> Iterator[MailStack]:
    db = f"mail{next(_counter)}"
    pg.psql(f'CREATE DATABASE "{db}" TEMPLATE "{mail_template}" OWNER "{OWNER}"')
    path = make_mail_config(pg, tmp_path, db)
    daemon = DaemonProcess(path).start()
    yield MailStack(pg, db, tmp_path, path, daemon)
    daemon.stop()
    pg.drop_database(db)


def reload_config(stack: MailStack, change: dict[str, object]) -> None:
    config = yaml.safe_load(stack.config_path.read_text())
    config.update(change)
    stack.config_path.write_text(yaml.safe_dump(config))


# -- SSH (servers) ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """One real OpenSSH sshd on 127.0.0.1 for the whole session: log in as ``sshd.user`` with
    ``sshd.client_key``, trusting ``sshd.known_hosts``; ``sshd.server_entry(name, **keys)`` is a
    ready ``servers:`` item for podod.yaml; ``sshd.public_file(name, data)`` makes a file the
    login user can read (a mail log). Never stop it or change its host key: use
    ``private_sshd`` for that."""
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.close()


@pytest.fixture
def private_sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A started sshd of this test's own, free to be stopped, killed, restarted (same port)
    or given a new host key; stopped after the test."""
    server = Sshd(tmp_path / "private-sshd").start()
    yield server
    server.close()


# --- the real mail stack, once per session -------------------------------------------------

READER, READER_PW = "mailreader", "reader-Pw-4711"
SOGO_ROLE, SOGO_PW = "sogo", "sogo-Pw-4711"
QUOTA_ROLE, QUOTA_PW = "mailquota", "quota-Pw-4711"
STACK_DB = "stack"
ROLES = {"readonly": READER, "readonly_password": READER_PW,
         "sogo": SOGO_ROLE, "sogo_password": SOGO_PW,
         "quota": QUOTA_ROLE, "quota_password": QUOTA_PW}
_domains = itertools.count()


@pytest.fixture(scope="session")
def stack(pg: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailStack]:
    """One database for the mail-server tests, its roles made by ``podod db init --roles``,
    and a daemon on it. Tests keep apart by using their own domains (:func:`new_domain`)."""
    root = tmp_path_factory.mktemp("stack")
    pg.create_database(STACK_DB, OWNER)
    path = make_mail_config(pg, root, STACK_DB, roles=ROLES)
    init = db_init(path, "--roles")
    assert init.returncode == 0, init.stderr
    daemon = DaemonProcess(path).start()
    yield MailStack(pg, STACK_DB, root, path, daemon)
    daemon.stop()


def new_domain(stack: MailStack, **options: str) -> str:
    """A domain of its own for one test, created for real."""
    name = f"t{next(_domains)}.example"
    argv = ["domain", "create", name]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", value]
    stack.ok(*argv, real=True)
    return name


def login(pg: PgCluster, user: str, password: str, db: str = STACK_DB) -> SqlLogin:
    return SqlLogin(host="127.0.0.1", port=pg.port, dbname=db, user=user, password=password)


class Stoppable(Protocol):
    def stop_begin(self) -> None: ...

    def stop_wait(self) -> None: ...


@pytest.fixture(scope="session")
def stopping() -> Iterator[list[Stoppable]]:
    """The servers stop side by side: each one's teardown sends TERM, this one waits."""
    servers: list[Stoppable] = []
    yield servers
    for server in servers:
        server.stop_wait()


@pytest.fixture(scope="session")
def dovecot(stack: MailStack, daemons_tmp: Path,
            stopping: list[Stoppable]) -> Iterator[Dovecot]:
    server = Dovecot(daemons_tmp / "dovecot", login(stack.pg, READER, READER_PW),
                     quota_login=login(stack.pg, QUOTA_ROLE, QUOTA_PW))
    server.start()
    yield server
    server.stop_begin()
    stopping.append(server)


@pytest.fixture(scope="session")
def postfix(stack: MailStack, dovecot: Dovecot, daemons_tmp: Path,
            stopping: list[Stoppable]) -> Iterator[Postfix]:
    server = Postfix(daemons_tmp / "postfix", login(stack.pg, READER, READER_PW),
                     lmtp_port=dovecot.lmtp_port)
    server.start()
    yield server
    server.stop_begin()
    stopping.append(server)


@pytest.fixture(scope="session")
def sogo(stack: MailStack, dovecot: Dovecot, daemons_tmp: Path,
         stopping: list[Stoppable]) -> Iterator[SOGo]:
    stack.pg.create_database("sogo", SOGO_ROLE)  # SOGo's own tables (profiles, sessions)
    server = SOGo(daemons_tmp / "sogo",
                  user_source=login(stack.pg, SOGO_ROLE, SOGO_PW),
                  profile_db=login(stack.pg, SOGO_ROLE, SOGO_PW, db="sogo"),
                  imap_port=dovecot.imap_port, smtp_port=free_port())
    server.start()
    yield server
    server.stop_begin()
    stopping.append(server)


# --- a database PostfixAdmin made, once per session ------------------------------------------

PFA_TEMPLATE = "postfixadmin_template"
PFA_PASSWORDS = {"alice@example.com": "Pfa-Alice-pw-12", "bob@example.com": "Pfa-Bob-pw-22"}


@dataclass
class PostfixAdminDb:
    """A copy of the PostfixAdmin-made database, PostfixAdmin's code on it (``admin``), and a
    podod configuration for it (no daemon: a test starts one when it wants)."""

    pg: PgCluster
    db: str
    root: Path
    config_path: Path
    admin: PostfixAdmin

    def sql(self, query: str) -> str:
        return self.pg.psql(query, self.db).strip()


def postfixadmin_on(pg: PgCluster, root: Path, db: str) -> PostfixAdmin:
    return PostfixAdmin(root, host="127.0.0.1", port=pg.port, dbname=db, user=OWNER,
                        password=OWNER_PW).install()


@pytest.fixture(scope="session")
def postfixadmin_template(pg: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database built by PostfixAdmin 3.3's own code from Debian's package: its
    ``upgrade.php`` made the schema (triggers on quota and quota2 included), its
    ``postfixadmin-cli`` added the domain example.com (with PostfixAdmin's default aliases),
    the mailboxes alice@ and bob@, and the alias info@ -> alice@."""
    pg.create_database(PFA_TEMPLATE, OWNER)
    admin = postfixadmin_on(pg, tmp_path_factory.mktemp("postfixadmin"), PFA_TEMPLATE)
    admin.upgrade()
    admin.cli("domain", "add", "example.com", "--description", "made by PostfixAdmin",
              "--mailboxes", "10", "--aliases", "20", "--maxquota", "100", "--quota", "1000",
              "--active", "1", "--default-aliases", "1")
    for (address, password), (name, quota) in zip(
            PFA_PASSWORDS.items(), [("Alice Pfa", "50"), ("Bob Pfa", "40")], strict=True):
        admin.cli("mailbox", "add", address, "--password", password, "--password2", password,
                  "--name", name, "--quota", quota, "--active", "1", "--welcome-mail", "0")
    admin.cli("alias", "add", "info@example.com", "--goto", "alice@example.com",
              "--active", "1")
    return PFA_TEMPLATE


@pytest.fixture
def postfixadmin_db(pg: PgCluster, postfixadmin_template: str,
                    tmp_path: Path) -> Iterator[PostfixAdminDb]:
    db = f"pfa{next(_counter)}"
    pg.psql(f'CREATE DATABASE "{db}" TEMPLATE "{postfixadmin_template}" OWNER "{OWNER}"')
    admin = postfixadmin_on(pg, tmp_path / "postfixadmin", db)
    yield PostfixAdminDb(pg, db, tmp_path, make_mail_config(pg, tmp_path, db), admin)
    pg.drop_database(db)
