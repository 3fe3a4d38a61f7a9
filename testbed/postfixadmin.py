"""PostfixAdmin 3.3 from Debian's ``postfixadmin`` package, run with ``php-cli`` (no web
server) against one database of a test cluster: its own ``upgrade.php`` builds the schema,
its own ``postfixadmin-cli`` adds and reads domains, mailboxes and aliases.

Debian's PostfixAdmin reads ``/etc/postfixadmin/config.inc.php`` (which includes
``dbconfig.inc.php`` through PHP's include path, and ``config.local.php`` from its own
folder), reached through symlinks in ``/usr/share/postfixadmin``, and finds that config from
``dirname(__FILE__)`` of the script that runs. So nothing under /etc is touched: the package's
code is copied unchanged into ``root``, next to a copy of the package's default
``config.inc.php``, a ``dbconfig.inc.php`` naming the test database and a ``config.local.php``
with the few settings a mail administrator sets for podod (docs/mail.md). Self-contained:
it needs only the installed package, php-cli and php-pgsql.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path("/usr/share/postfixadmin")
DEFAULT_CONFIG = Path("/etc/postfixadmin/config.inc.php")
# The package's symlinks into /etc and /var: replaced by files of our own (or left out).
_NOT_COPIED = {"config.inc.php", "config.local.php", "dbconfig.inc.php", "templates_c"}

# What an administrator sets in config.local.php for a database podod shares (docs/mail.md):
# SHA512-CRYPT hashes with Dovecot's scheme prefix (podod's default), quotas in MiB as podod
# counts them, and no DNS lookup of new domains (the tests have no resolver).
LOCAL_SETTINGS = {
    "encrypt": "php_crypt:SHA512::{SHA512-CRYPT}",
    "quota": "YES",
    "quota_multiplier": "1048576",
    "used_quotas": "YES",
    "new_quota_table": "YES",
    "emailcheck_resolve_domain": "NO",
}


def php_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def missing() -> str | None:
    """Why PostfixAdmin cannot run here, or None."""
    for path, package in ((SOURCE / "scripts" / "postfixadmin-cli.php", "postfixadmin"),
                          (DEFAULT_CONFIG, "postfixadmin")):
        if not path.exists():
            return f"{path} is missing: install Debian's {package} package (make deps)"
    if shutil.which("php") is None:
        return "php is missing: install Debian's php-cli package (make deps)"
    modules = subprocess.run(["php", "-m"], capture_output=True, text=True, check=False).stdout
    if "pdo_pgsql" not in modules.split():
        return "PHP has no pdo_pgsql: install Debian's php-pgsql package (make deps)"
    return None


class PostfixAdmin:
    """One PostfixAdmin installation under ``root``, on database ``dbname``."""

    def __init__(self, root: Path, *, host: str, port: int, dbname: str, user: str,
                 password: str) -> None:
        self.root = Path(root)
        self.host, self.port, self.dbname = host, port, dbname
        self.user, self.password = user, password

    def install(self) -> PostfixAdmin:
        reason = missing()
        if reason is not None:
            raise RuntimeError(reason)
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in SOURCE.iterdir():
            if entry.name in _NOT_COPIED:
                continue
            target = self.root / entry.name
            if entry.is_dir():
                shutil.copytree(entry, target, dirs_exist_ok=True)
            else:
                shutil.copy2(entry, target)
        (self.root / "templates_c").mkdir(exist_ok=True)
        shutil.copy2(DEFAULT_CONFIG, self.root / "config.inc.php")
        (self.root / "dbconfig.inc.php").write_text(
            "<?php\n"
            f"$dbuser={php_string(self.user)};\n"
            f"$dbpass={php_string(self.password)};\n"
            "$basepath='';\n"
            f"$dbname={php_string(self.dbname)};\n"
            f"$dbserver={php_string(self.host)};\n"
            f"$dbport={php_string(str(self.port))};\n"
            "$dbtype='pgsql';\n")
        settings = {"database_port": str(self.port), **LOCAL_SETTINGS}
        (self.root / "config.local.php").write_text(
            "<?php\n" + "".join(f"$CONF[{php_string(k)}] = {php_string(v)};\n"
                                for k, v in settings.items()))
        return self

    def php(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """php-cli in ``root``: ``dbconfig.inc.php`` is found through the include path."""
        result = subprocess.run(["php", "-d", f"include_path={self.root}", *argv],
                                cwd=self.root, capture_output=True, text=True, check=False,
                                timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"PostfixAdmin failed ({' '.join(argv)[:200]}): "
                               f"{(result.stdout + result.stderr).strip()[-2000:]}")
        return result

    def upgrade(self) -> str:
        """PostfixAdmin's own ``upgrade.php`` (what its setup page runs): creates or upgrades
        the schema. Returns what it printed."""
        script = self.root / "public" / "upgrade.php"
        return self.php("-r", f"define('POSTFIXADMIN_CLI', 1); require {php_string(str(script))};"
                        ).stdout

    def cli(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``postfixadmin-cli MODULE TASK ...`` (Debian's /usr/bin/postfixadmin-cli runs this
        same script from /usr/share/postfixadmin/scripts)."""
        return self.php(str(self.root / "scripts" / "postfixadmin-cli.php"), *argv, check=check)

    def view(self, module: str, item: str) -> dict[str, str]:
        """``postfixadmin-cli MODULE view ITEM`` as {label: value} (its ``Label: value``
        lines); raises when PostfixAdmin does not find or cannot show the item."""
        result = self.cli(module, "view", item)
        fields: dict[str, str] = {}
        for line in result.stdout.splitlines():
            label, sep, value = line.partition(":")
            if sep and label.strip():
                fields.setdefault(label.strip(), value.strip())
        if not fields:
            raise RuntimeError(f"postfixadmin-cli {module} view {item} showed nothing: "
                               f"{(result.stdout + result.stderr).strip()[-1000:]}")
        return fields

    def login(self, username: str, password: str) -> bool:
        """PostfixAdmin's own password check (``Login::login``, what its user login page
        runs): does it accept ``password`` for the active mailbox ``username``? The password
        goes through stdin, never the command line."""
        common = self.root / "common.php"
        script = ("define('POSTFIXADMIN_CLI', 1); require " + php_string(str(common)) + "; "
                  "$user = trim(fgets(STDIN)); $password = rtrim(fgets(STDIN), \"\\n\"); "
                  "$login = new Login('mailbox'); "
                  "echo $login->login($user, $password) ? 'accepted' : 'refused';")
        result = subprocess.run(["php", "-d", f"include_path={self.root}", "-r", script],
                                input=f"{username}\n{password}\n", cwd=self.root,
                                capture_output=True, text=True, check=False, timeout=60)
        if result.stdout.strip() not in ("accepted", "refused"):
            raise RuntimeError(f"PostfixAdmin's login check failed: "
                               f"{(result.stdout + result.stderr).strip()[-1000:]}")
        return result.stdout.strip() == "accepted"
