"""The REST API over HTTPS: the certificate and key of api.tls are served, and a renewed
pair is served after a reload (SIGHUP) without a restart."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
from pathlib import Path

import requests
from apitest import ADMIN, api_sections

from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.waiting import poll


def make_cert(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def served_cn(port: int) -> str:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    text = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"],
                          input=der, capture_output=True, check=True).stdout.decode()
    return text.strip().rsplit("=", 1)[1].strip()


def test_https_with_a_certificate_reloaded_on_sighup(tmp_path: Path) -> None:
    first_cert, first_key = make_cert(tmp_path, "first")
    second_cert, second_key = make_cert(tmp_path, "second")
    live_cert, live_key = tmp_path / "api.crt", tmp_path / "api.key"
    live_cert.write_bytes(first_cert.read_bytes())
    live_key.write_bytes(first_key.read_bytes())
    sections = api_sections(tls={"cert_file": str(live_cert), "key_file": str(live_key)})
    port = sections["api"]["port"]
    daemon = DaemonProcess(write_config(tmp_path / "podod.yaml",
                                        base_config(tmp_path, **sections))).start()
    try:
        url = f"https://127.0.0.1:{port}/api/monitoring/status"
        headers = {"Authorization": f"Bearer {ADMIN}"}
        assert poll(lambda: _answers(url, headers, first_cert), 10, 0.1)
        assert served_cn(port) == "first"
        try:  # plain HTTP on the TLS port gets nothing useful
            plain = requests.get(f"http://127.0.0.1:{port}/api/monitoring/status", timeout=5)
            assert plain.status_code == 400 or "ok" not in plain.text
        except requests.ConnectionError:
            pass

        live_cert.write_bytes(second_cert.read_bytes())
        live_key.write_bytes(second_key.read_bytes())
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        assert poll(lambda: served_cn(port) == "second", 10, 0.1)
        assert _answers(url, headers, second_cert)

        # A broken file on reload keeps the running certificate.
        live_key.write_text("not a key")
        daemon.proc.send_signal(signal.SIGHUP)
        assert poll(lambda: "keeping the old certificate" in daemon.log(), 10, 0.1)
        assert served_cn(port) == "second"
    finally:
        daemon.stop()


def _answers(url: str, headers: dict[str, str], cert: Path) -> bool:
    try:
        return requests.get(url, headers=headers, verify=str(cert), timeout=5).json()["ok"]
    except (requests.ConnectionError, requests.exceptions.SSLError):
        return False
