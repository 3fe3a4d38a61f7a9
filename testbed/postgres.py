"""A throwaway PostgreSQL cluster on 127.0.0.1 (initdb/pg_ctl), for tests, benches and
``make demo``. initdb refuses root, so as root the cluster runs as the ``postgres`` user."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any


def find_pg_bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    found = shutil.which(name)
    for path in [*candidates, found, f"/usr/local/bin/{name}"]:
        if path and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(f"{name} not found: install Debian's postgresql package")


def let_others_traverse(folder: Path) -> None:
    """The postgres user must reach a root-owned temp folder (0700 under pytest)."""
    for parent in [folder, *folder.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, (mode & 0o7777) | 0o011)


class PgCluster:
    def __init__(self, root: Path, port: int, *, superuser_password: str = "postgres") -> None:
        self.root = Path(root)
        self.port = port
        self.data = self.root / "data"
        self.sockdir = self.root / "run"
        self.logfile = self.root / "log" / "postgres.log"
        self.as_postgres = os.geteuid() == 0
        self.os_user = "postgres" if self.as_postgres else pwd.getpwuid(os.geteuid()).pw_name
        self.superuser = self.os_user
        self.superuser_password = superuser_password

    def _run(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, check=False, **kw)

    def start(self) -> PgCluster:
        for folder in (self.root, self.sockdir, self.logfile.parent):
            folder.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            os.chmod(self.root, 0o755)
            let_others_traverse(self.root.parent)
            for folder in (self.root, self.sockdir, self.logfile.parent):
                shutil.chown(folder, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            result = self._run([find_pg_bin("initdb"), "-D", str(self.data), "-U",
                                self.superuser, "--auth-local=trust",
                                "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync",
                                "--locale=C"])
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed: {result.stderr.strip()}")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockdir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        result = self._run([find_pg_bin("pg_ctl"), "-D", str(self.data), "-l",
                            str(self.logfile), "-w", "-t", "30", "-o", options, "start"])
        if result.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr.strip()}\n{log[-2000:]}")
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run([find_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                       "stop"])

    def psql(self, sql: str, db: str = "postgres") -> str:
        result = self._run([find_pg_bin("psql"), "-h", str(self.sockdir), "-p",
                            str(self.port), "-U", self.superuser, "-d", db, "-v",
                            "ON_ERROR_STOP=1", "-qAt", "-c", sql])
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def create_role(self, name: str, password: str, *, login: bool = True,
                    superuser: bool = False) -> None:
        quoted = password.replace("'", "''")
        attrs = ("LOGIN" if login else "NOLOGIN") + (" SUPERUSER" if superuser else "")
        self.psql(f"CREATE ROLE \"{name}\" {attrs} PASSWORD '{quoted}'")

    def create_database(self, name: str, owner: str) -> None:
        self.psql(f'CREATE DATABASE "{name}" OWNER "{owner}"')

    def mail_database(self, folder: Path, *, db: str = "mail", owner: str = "podod"
                      ) -> dict[str, str]:
        """A database ``db`` owned by a new role ``owner`` whose random password is kept in
        ``folder/pg-password``: the ``mail.database`` settings of a podod that uses it."""
        password = secrets.token_urlsafe(12)
        self.create_role(owner, password)
        self.create_database(db, owner)
        (folder / "pg-password").write_text(password)
        return {"dsn": f"postgresql://{owner}@127.0.0.1:{self.port}/{db}",
                "password_file": str(folder / "pg-password")}

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def dsn(self, user: str, password: str | None = None, db: str = "postgres") -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}"

    def dump(self, db: str, *, schema_only: bool = False) -> str:
        """A deterministic text dump (schema and data, or the schema only), for before/after
        comparisons."""
        result = self._run([find_pg_bin("pg_dump"), "-h", str(self.sockdir), "-p",
                            str(self.port), "-U", self.superuser, "--no-owner",
                            "--no-privileges", "--inserts", "--rows-per-insert=1",
                            *(["--schema-only"] if schema_only else []), db])
        if result.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {result.stderr.strip()}")
        lines = [line for line in result.stdout.splitlines()
                 if not line.startswith("-- Dumped") and "restrict" not in line.lower()]
        return "\n".join(sorted(lines))

    def restore(self, dump: bytes, db: str) -> None:
        """Load a ``pg_dump -Fc`` archive into the (empty) database ``db``."""
        argv = [find_pg_bin("pg_restore"), "-h", str(self.sockdir), "-p", str(self.port),
                "-U", self.superuser, "--no-owner", "--exit-on-error", "-d", db]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, input=dump, capture_output=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pg_restore failed: {result.stderr.decode().strip()}")

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
