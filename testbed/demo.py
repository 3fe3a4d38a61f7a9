"""``make demo``: a throwaway PostgreSQL cluster, the mail schema in it, and the daemon in the
foreground on config/demo.yaml. Ctrl-C stops the daemon and the cluster, cleanly."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from podod.libwarnings import hide_library_warnings

DEMO_PORT = 55432


class _Stop(Exception):
    """A stop signal arrived (Ctrl-C, SIGTERM or SIGHUP)."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def main() -> int:
    hide_library_warnings()
    repo = Path.cwd()
    config = repo / "config" / "demo.yaml"
    root = repo / ".demo"
    if not config.is_file():
        print("make demo must run from the repository's top folder", file=sys.stderr)
        return 2
    from testbed.ports import port_is_free
    from testbed.postgres import PgCluster

    if not port_is_free(DEMO_PORT):
        print(f"port {DEMO_PORT} on 127.0.0.1 is taken (another demo running?); stop it first",
              file=sys.stderr)
        return 2
    for sub in ("pg", "state", "backups", "podod.sock"):
        path = root / sub
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    root.mkdir(exist_ok=True)
    os.chmod(root, 0o755)
    password = secrets.token_urlsafe(18)
    secret = root / "pg-password"
    secret.write_text(password + "\n")
    os.chmod(secret, 0o600)
    # Explicit handlers: a backgrounded demo inherits an ignored SIGINT, and SIGTERM would
    # otherwise kill this runner and leave the cluster and the daemon behind.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_stop)
    cluster = PgCluster(root / "pg", DEMO_PORT)
    print(f"demo: starting a throwaway PostgreSQL cluster on 127.0.0.1:{DEMO_PORT} ...",
          flush=True)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        cluster.start()
        cluster.create_role("podod", password)
        cluster.create_database("mail", "podod")
        podod = [sys.executable, "-m", "podod.cli"]
        init = subprocess.run([*podod, "db", "init", "-c", str(config)], check=False)
        if init.returncode != 0:
            print("demo: the mail schema could not be created (see above)", file=sys.stderr)
            return 1
        sock = root / "podod.sock"
        print(f"""
demo: podod is starting in the foreground. In another terminal:

    {repo}/.venv/bin/podoctl --socket {sock} status
    {repo}/.venv/bin/podoctl --socket {sock} help
    curl -s http://127.0.0.1:9571/metrics | head

Changes are sandbox dry runs unless you add --execute-real. Ctrl-C stops everything.
""", flush=True)
        daemon = subprocess.Popen([*podod, "run", "-c", str(config)])
        return daemon.wait()
    except _Stop:
        return 0
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup
        if daemon is not None and daemon.poll() is None:
            daemon.terminate()
            daemon.wait(30)
        print("demo: stopping PostgreSQL ...", flush=True)
        cluster.stop()
        print("demo: stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
