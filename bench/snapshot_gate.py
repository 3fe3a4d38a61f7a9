"""What the EC2 snapshot gate adds to a real change, against moto's EC2 server on loopback.

A real one-mailbox ``user update --quota-mb`` is timed by the daemon's own log line ("ok in
N ms"), first with the aws plugin loaded but no gate (``before_changes: false``), then with
the gate waiting for ``pending`` on one volume, alternating. moto answers in about a
millisecond, so the difference is podod's own cost (the worker-thread hops, boto3's
request signing, one CreateSnapshot and one DescribeSnapshots, and the retention's listing
after the commit: the log line comes after the after-actions, as the reply does); against
AWS add the API's
round trips (typically 100-300 ms for the two calls in-region). No target: the figure says
what the gate costs a change, not whether AWS is fast.

    .venv/bin/python bench/snapshot_gate.py [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from _repo import save_result, write_config  # puts the checkout's testbed/ on sys.path
from testbed.daemon import DaemonProcess, base_config
from testbed.ports import free_port
from testbed.postgres import PgCluster

REPO = Path(__file__).resolve().parent.parent
REGION = "eu-central-1"
UPDATE_LOG = re.compile(r"command user update by \S+ via socket: (\w+) in ([\d.]+) ms")


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start")


def set_gate(path: Path, on: bool) -> None:
    config = yaml.safe_load(path.read_text())
    config["plugins"]["settings"]["aws"]["servers"]["mx1"]["before_changes"] = on
    path.write_text(yaml.safe_dump(config))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if moto is None:
        print("moto_server is missing (make venv installs moto[server])", file=sys.stderr)
        return 1
    result: dict[str, Any] = {"runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="podod-bench-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        port = free_port()
        server = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cluster = PgCluster(root / "pg", free_port())
        cluster.start()
        daemon = None
        try:
            wait_port(port)
            env = {"AWS_ENDPOINT_URL_EC2": f"http://127.0.0.1:{port}",
                   "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                   "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
            import boto3

            ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=env[
                "AWS_ENDPOINT_URL_EC2"], aws_access_key_id="bench",
                aws_secret_access_key="bench")
            volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=8)["VolumeId"]
            config = base_config(
                root, log={"level": "info"},
                mail={"database": cluster.mail_database(root),
                      "passwords": {"rounds": 1000}, "maildir": {"check_on_create": False}},
                backup={"dir": str(root / "backups")},
                plugins={"dirs": [str(REPO / "plugins")], "entry_points": False,
                         "disabled": ["example", "tls"],
                         "settings": {"aws": {"servers": {"mx1": {
                             "region": REGION, "volumes": [volume], "before_changes": False,
                             "poll_interval": "0.1s", "keep": 3, "keep_days": 0}}}}})
            path = write_config(root, config)
            daemon = DaemonProcess(path, env=env).start()
            assert daemon.request(["domain", "create", "bench.example"], execute_real=True)["ok"]
            assert daemon.request(["user", "create", "u@bench.example", "--password-stdin"],
                                  stdin="Bench-Password-7-Long", execute_real=True)["ok"]
            times: dict[bool, list[float]] = {False: [], True: []}
            for i in range(2 * args.runs + 2):
                gate = bool(i % 2)
                set_gate(path, gate)
                reloads = daemon.log().count("configuration reloaded from")
                daemon.signal(signal.SIGHUP)
                while daemon.log().count("configuration reloaded from") == reloads:
                    time.sleep(0.02)
                mark = len(daemon.log())
                reply = daemon.request(["user", "update", "u@bench.example", "--quota-mb",
                                        str(100 + i)], execute_real=True)
                assert reply["ok"], reply
                assert any(n.startswith("gate ec2-snapshot") for n in reply["notes"]) == gate
                found = UPDATE_LOG.findall(daemon.log()[mark:])
                if i >= 2:  # the first of each is a warm-up (boto3's import, the client)
                    times[gate].append(float(found[-1][1]))
            for gate, values in times.items():
                result["with_gate" if gate else "without_gate"] = {
                    "median_ms": round(statistics.median(values), 2),
                    "min_ms": round(min(values), 2), "max_ms": round(max(values), 2)}
            result["gate_cost_ms_median"] = round(
                result["with_gate"]["median_ms"] - result["without_gate"]["median_ms"], 2)
        finally:
            if daemon is not None:
                daemon.stop()
            cluster.stop()
            server.terminate()
            server.wait(10)
    print(f"real user update, daemon time, median of {args.runs}: without the gate "
          f"{result['without_gate']['median_ms']} ms, with the gate (1 volume, pending) "
          f"{result['with_gate']['median_ms']} ms: the gate costs "
          f"{result['gate_cost_ms_median']} ms against moto on loopback")
    print(json.dumps(result))
    save_result("snapshot_gate", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
