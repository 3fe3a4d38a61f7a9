"""Config errors name the file and the key path, exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from podod.config import load_config
from podod.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "podod.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    ("servers:\n  - {name: a, host: h}\n  - {name: b, host: h, port: abc}\n",
     "podod.yaml: servers[1].port: must be an integer"),
    ("sokcet: {path: /x}\n", "podod.yaml: sokcet: unknown key"),
    ("log: {level: loud}\n",
     "podod.yaml: log.level: must be one of 'debug', 'info', 'warning' or 'error'"),
    ("servers:\n  - {host: h}\n", "podod.yaml: servers[0].name: is required"),
    ("servers:\n  - {name: a}\n",
     "podod.yaml: servers[0]: a server needs a host (or local: true for this machine)"),
    ("servers:\n  - {name: a, local: true}\n  - {name: a, local: true}\n",
     "podod.yaml: servers: server name 'a' is used twice"),
    ("socket: {mode: rw}\n", "podod.yaml: socket.mode: must be an octal file mode such as 0660"),
    ("commands: {timeout: soon}\n",
     "podod.yaml: commands.timeout: 'soon' is not a duration such as 30s, 5m, 2h or 7d"),
    ("- just\n- a list\n", "podod.yaml: the file must hold a mapping of keys to values"),
    ("log: {level: [\n", "podod.yaml: YAML syntax error at line 2, column 1"),
    ("access:\n  unix_users:\n    bob: {role: root}\n",
     "podod.yaml: access.unix_users.bob.role: must be one of 'admin', 'domain-admin' or "
     "'viewer'"),
    ("access:\n  unix_users:\n    bob: {role: domain-admin, domains: [exa mple.org]}\n",
     "podod.yaml: access.unix_users.bob.domains: 'exa mple.org' is not a valid domain name"),
    ("socket: {mode: 660}\n",
     'podod.yaml: socket.mode: must be an octal file mode such as 0660 (write it in quotes: '
     '"0660")'),
    ("commands: {timeout: 0}\n", "podod.yaml: commands.timeout: must be greater than 0"),
    ("mail: {database: {dsn: 'mysql://u@h/mail'}}\n",
     "podod.yaml: mail.database.dsn: must be a PostgreSQL URL such as "
     "postgresql://podod@127.0.0.1:5432/mail"),
    ("mail: {database: {dsn: 'not a dsn'}}\n",
     "podod.yaml: mail.database.dsn: must be a PostgreSQL URL such as"),
    ("mail: {database: {dsn: 'postgresql://u@h:port/mail'}}\n",
     "podod.yaml: mail.database.dsn: is not a valid URL (Port could not be cast"),
    ("mail: {database: {dsn: 'postgresql://u:secret@h/mail'}}\n",
     "podod.yaml: mail.database.dsn: must not hold the password; give it as password_file"),
    ("mail: {database: {min_pool: 9, max_pool: 2}}\n",
     "podod.yaml: mail.database: min_pool must not be larger than max_pool"),
    ("metrics: {listen: 999.1.1.1}\n",
     "podod.yaml: metrics.listen: '999.1.1.1' is not an IP address or host name"),
    ("metrics: {listen: ''}\n",
     "podod.yaml: metrics.listen: '' is not an IP address or host name"),
    ("monitor:\n  collectors:\n    postgres:\n      servers:\n        mx1: {dsn: "
     "'postgresql://monitor:pw@127.0.0.1/postgres'}\n",
     "podod.yaml: monitor.collectors: postgres.servers.mx1.dsn: must not hold the password"),
    ("monitor:\n  collectors:\n    postgres:\n      servers:\n        mx1: {dsn: "
     "'postgresql://monitor@127.0.0.1:abc/postgres'}\n",
     "podod.yaml: monitor.collectors: postgres.servers.mx1.dsn: is not a valid URL"),
])
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert str(info.value).startswith(message), str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.yaml")


def test_secret_from_file_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    config = load_config(write(tmp_path, (
        "state_dir: state\nmail:\n  database:\n    dsn: postgresql://u@127.0.0.1/mail\n"
        "    password_file: pw\n")))
    assert config.state_dir == tmp_path / "state"
    assert config.mail.database.password is not None
    assert config.mail.database.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)


def test_unreadable_secret_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "mail:\n  database:\n    password_file: missing\n"))
    assert str(info.value) == (
        f"podod.yaml: mail.database.password_file: cannot read {tmp_path / 'missing'} "
        "(No such file or directory)")


def test_what_yaml_does_to_values(tmp_path: Path) -> None:
    """An unquoted 0660 is the octal number YAML 1.1 makes of it; an IDN grant matches the
    punycode the mail database stores."""
    config = load_config(write(tmp_path, (
        "socket: {mode: 0640}\naccess:\n  unix_users:\n    bob: {role: domain-admin, "
        "domains: [Bücher.Example.]}\n")))
    assert config.socket.mode_bits == 0o640
    assert config.access.unix_users["bob"].domains == ["xn--bcher-kva.example"]


def test_example_and_demo_configs_are_valid(tmp_path: Path) -> None:
    load_config(REPO / "config" / "podod.example.yaml")
    # demo.yaml reads the password make demo generates: give it one in a copy of the layout.
    (tmp_path / "config").mkdir()
    (tmp_path / ".demo").mkdir()
    (tmp_path / ".demo" / "pg-password").write_text("pw\n")
    demo = tmp_path / "config" / "demo.yaml"
    demo.write_text((REPO / "config" / "demo.yaml").read_text())
    config = load_config(demo)
    assert config.socket.path == tmp_path / ".demo" / "podod.sock"
    assert config.metrics.listen == "127.0.0.1"


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    good = write(tmp_path, "log: {level: debug}\n", "good.yaml")
    bad = write(tmp_path, "servers:\n  - {name: a, host: h}\n  - {name: b, host: h, port: x}\n",
                "bad.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    run = [sys.executable, "-m", "podod.cli", "check-config", "-c"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "OK" in ok.stdout
    fail = subprocess.run([*run, str(bad)], capture_output=True, text=True, env=env)
    assert fail.returncode == 2
    assert fail.stderr.strip() == "bad.yaml: servers[1].port: must be an integer"
    assert "Traceback" not in fail.stderr
    missing = subprocess.run([*run, str(tmp_path / "x.yaml")], capture_output=True, text=True,
                             env=env)
    assert missing.returncode == 2 and "no such configuration file" in missing.stderr
