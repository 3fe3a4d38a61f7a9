"""Server settings, backoff, tunnel specs and host-key explanations, without a network."""

from __future__ import annotations

import random
import re
from pathlib import Path

import asyncssh
import pytest

from podod.config import parse_config
from podod.errors import ConfigError, ValidationError
from podod.servers.backoff import Backoff
from podod.servers.commands import parse_tunnel
from podod.servers.hostkeys import explain_refused_key, key_status
from podod.servers.settings import ServerConfig
from podod.servers.store import to_json


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(1.0, 30.0, rng=random.Random(7))
    ceilings = []
    for _ in range(8):
        wait = backoff.failed()
        ceiling = backoff.ceiling()
        assert ceiling / 2 <= wait <= ceiling
        ceilings.append(ceiling)
    assert ceilings == [1, 2, 4, 8, 16, 30, 30, 30]
    backoff.reset()
    assert backoff.failures == 0 and backoff.failed() <= 1.0
    waits = {round(Backoff(1, 60, rng=random.Random(seed)).failed(), 6) for seed in range(20)}
    assert len(waits) > 10  # a fleet does not retry in lock-step


def test_tunnel_specs() -> None:
    assert parse_tunnel("postgres:127.0.0.1:5432") == {
        "name": "postgres", "remote_host": "127.0.0.1", "remote_port": 5432}
    assert parse_tunnel("pg:[::1]:5432:15432") == {
        "name": "pg", "remote_host": "[::1]", "remote_port": 5432, "local_port": 15432}
    for bad, message in [
        ("postgres", "is not NAME:REMOTE_HOST:REMOTE_PORT[:LOCAL_PORT]"),
        ("pg:host:port", "remote port 'port' is not a port number"),
        ("pg:h:1:2:3", "is not NAME:REMOTE_HOST"),
    ]:
        with pytest.raises(ValidationError, match=re.escape(message)):
            parse_tunnel(bad)
    config = ServerConfig.model_validate({"name": "a", "host": "h", "tunnels": [
        parse_tunnel("pg:[::1]:5432")]})
    assert config.tunnels[0].remote_host == "::1" and config.tunnels[0].local_port == 0


@pytest.mark.parametrize(("server", "message"), [
    ({"name": "a", "host": "h", "mail_log": "mail.log"},
     "servers[0].mail_log: must be an absolute file path, or 'journal'"),
    ({"name": "a", "host": "h", "services": ["postfix", "bad unit"]},
     "servers[0].services: 'bad unit' is not a systemd unit name"),
    ({"name": "a", "host": "h", "tunnels": [{"name": "pg", "remote_port": 1},
                                           {"name": "pg", "remote_port": 2}]},
     "servers[0].tunnels: tunnel name 'pg' is used twice"),
    ({"name": "a", "host": "h", "tunnels": [{"name": "p", "remote_port": 1, "local_port": 9},
                                           {"name": "q", "remote_port": 2, "local_port": 9}]},
     "servers[0].tunnels: local port 9 is used by two tunnels"),
    ({"name": "a", "host": "h", "tunnels": [{"name": "Bad Name", "remote_port": 1}]},
     "servers[0].tunnels[0].name: a tunnel name must be lower-case"),
    ({"name": "a", "host": "h", "reconnect_min": "10s", "reconnect_max": "5s"},
     "servers[0]: reconnect_max must not be shorter than reconnect_min"),
    ({"name": "a", "host": "two words"}, "servers[0].host: 'two words' is not a host name"),
    ({"name": "a", "host": "h", "user": "-oProxyCommand=x"},
     "servers[0].user: '-oProxyCommand=x' is not a valid user name"),
    ({"name": "a", "host": "h", "max_commands": 0},
     "servers[0].max_commands: must be greater than or equal to 1"),
    ({"name": "a", "host": "h", "keepalive": "soon"},
     "servers[0].keepalive: 'soon' is not a duration"),
])
def test_server_settings_errors_name_the_key(server: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"servers": [server]}, source="podod.yaml")
    assert caught.value.message.startswith(f"podod.yaml: {message}"), caught.value.message


def test_stored_form_round_trips_without_secrets() -> None:
    config = ServerConfig.model_validate({
        "name": "mx2", "host": "mx2.example.org", "key_file": "/etc/podod/ssh/id_ed25519",
        "key_passphrase": "secret", "services": ["postfix"],
        "tunnels": [{"name": "pg", "remote_port": 5432}]})
    stored = to_json(config)
    assert "secret" not in stored
    back = ServerConfig.model_validate_json(stored)
    assert back.tunnels == config.tunnels and back.key_file == config.key_file
    assert back.key_passphrase is None and back.address == "mx2.example.org:22"


def test_refused_host_keys_are_explained(tmp_path: Path) -> None:
    trusted = asyncssh.generate_private_key("ssh-ed25519")
    presented = asyncssh.generate_private_key("ssh-ed25519")
    known = tmp_path / "known_hosts"
    known.write_text(f"[mx.example.org]:2222 {trusted.export_public_key().decode()}")
    config = ServerConfig.model_validate({"name": "mx", "host": "mx.example.org",
                                          "port": 2222, "known_hosts": str(known)})
    assert key_status(config) == "trusted"
    changed = explain_refused_key(config, presented)
    fingerprint = presented.get_fingerprint("sha256")
    assert changed.startswith(f"the host key of mx (mx.example.org:2222) has CHANGED (it "
                              f"presents {fingerprint}): {known} holds a different key")
    assert f"ssh-keygen -R '[mx.example.org]:2222' -f {known}" in changed
    other = config.model_copy(update={"host": "other.example.org"})
    assert key_status(other) == "unknown"
    unknown = explain_refused_key(other, presented)
    assert unknown.startswith(f"the host key of mx (other.example.org:2222) is unknown: "
                              f"{known} has no entry for it (it presents {fingerprint})")
    assert f"ssh-keyscan -p 2222 other.example.org >> {known}" in unknown
    missing = config.model_copy(update={"known_hosts": tmp_path / "none"})
    assert key_status(missing) == "no-file"
    assert f"the known_hosts file {tmp_path / 'none'} does not exist" in \
        explain_refused_key(missing, None)
