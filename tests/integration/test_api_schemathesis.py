"""schemathesis against the live /api/openapi.json of a real daemon on a real mail database,
authenticated as an admin (so every operation runs, changes included): no 5xx response, no
response that violates the document (status, content type, body schema), stateful links
followed. Examples are bounded so that the run stays within about two minutes on the
2-core test machine."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from apitest import ADMIN, DOMAIN_A, DOMAIN_B, Api, api_sections

from conftest import OWNER, make_mail_config
from testbed.daemon import DaemonProcess
from testbed.postgres import PgCluster
from testbed.waiting import poll

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")


@pytest.fixture(scope="module")
def fuzzed(pg: PgCluster, mail_template: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, DaemonProcess]]:
    root = tmp_path_factory.mktemp("api-fuzz")
    db = "api_fuzz"
    pg.psql(f'CREATE DATABASE "{db}" TEMPLATE "{mail_template}" OWNER "{OWNER}"')
    sections = api_sections()
    # Alerting on, so its routes answer (off, they say 503: alerting is switched off).
    path = make_mail_config(pg, root, db, alerts={"enabled": True}, **sections)
    daemon = DaemonProcess(path).start()
    api = Api(f"http://127.0.0.1:{sections['api']['port']}")
    poll(lambda: _up(api), 10, 0.05)
    for domain in (DOMAIN_A, DOMAIN_B):
        daemon.request(["domain", "create", domain], execute_real=True)
    yield api, daemon
    daemon.stop()
    pg.drop_database(db)


def _up(api: Api) -> bool:
    try:
        return api.call("GET", "/api/openapi.json").status_code == 200
    except requests.ConnectionError:
        return False


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
        fuzzed: tuple[Api, DaemonProcess], tmp_path: Path) -> None:
    api, daemon = fuzzed
    cli = Path(sys.executable).with_name("schemathesis")
    done = subprocess.run(
        [str(cli), "run", f"{api.base}/api/openapi.json",
         "--header", f"Authorization: Bearer {ADMIN}",
         "--checks", CHECKS, "--mode", "positive",
         "--phases", "examples,coverage,fuzzing,stateful",
         "--max-examples", os.environ.get("PODOD_FUZZ_EXAMPLES", "8"),
         "--exclude-path", "/api/events", "--exclude-path", "/api/docs",
         "--seed", "4711", "--workers", "2", "--request-timeout", "60",
         "--suppress-health-check", "all", "--max-time", "80",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-12000:]
    log = daemon.log()
    at = log.find("Traceback")
    assert at < 0, log[max(0, at - 2000):at + 3000]
