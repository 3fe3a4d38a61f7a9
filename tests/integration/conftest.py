"""Session fixtures for integration tests: one real PostgreSQL cluster, a fresh mail database
(schema created by ``podod db init``) and a podod daemon on it per test that asks for one."""

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

import pytest
import yaml

from podod.testbed.daemon import DaemonProcess, base_config, write_config
from podod.testbed.ports import free_port
from podod.testbed.postgres import PgCluster
from podod.testbed.sshd import Sshd

OWNER, OWNER_PW = "podod", "podod-owner-pw"
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


@dataclass
class MailStack:
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

    def ok(self, *argv: str, stdin: str | None = None, real: bool = False) -> dict[str, object]:
        reply = self.daemon.request(list(argv), execute_real=real, stdin=stdin)
        assert reply["ok"], reply["message"]
        return reply

    def fail(self, *argv: str, stdin: str | None = None, real: bool = True) -> str:
        reply = self.daemon.request(list(argv), execute_real=real, stdin=stdin)
        assert not reply["ok"], reply
        return str(reply["message"])


def make_mail_config(pg: PgCluster, root: Path, db: str, **extra: object) -> Path:
    secret = root / "pg-password"
    secret.write_text(OWNER_PW)
    config = base_config(
        root, mail={"database": {"dsn": f"postgresql://{OWNER}@127.0.0.1:{pg.port}/{db}",
                                 "password_file": str(secret)},
                    "passwords": {"rounds": 5000}},
        backup={"dir": str(root / "backups")}, **extra)
    return write_config(root / "podod.yaml", config)


@pytest.fixture
def mail(pg: PgCluster, tmp_path: Path) -> Iterator[MailStack]:
    db = f"mail{next(_counter)}"
    pg.create_database(db, OWNER)
    path = make_mail_config(pg, tmp_path, db)
    init = subprocess.run([sys.executable, "-m", "podod.cli", "db", "init", "-c", str(path)],
                          capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
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
