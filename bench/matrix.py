"""The Matrix admin bot against a local Synapse (issue 14): the time from sending
``!podo status`` to receiving the bot's reply, median and p95, and podod's share of it (from
the sync reading the command to the reply handed to its output queue, as ``matrix status``
reports); then 100 users sending a command at once: every one answered exactly once.

Targets: under 300 ms median on loopback, of which podod's share under 20 ms; nothing lost or
duplicated. Needs Synapse (``make synapse``); without it the bench says so and stops.
    .venv/bin/python bench/matrix.py [--rounds 40] [--users 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (the checkout's testbed/ on sys.path)
from testbed.daemon import DaemonProcess, base_config, write_config
from testbed.synapse import Synapse, available
from testbed.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
TARGET_MEDIAN_MS = 300.0
TARGET_SHARE_MS = 20.0


def _poll(answered: Any, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(answered().values()):
            return True
        time.sleep(0.1)
    return False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def make_user(synapse: Synapse, admin: str, name: str) -> str:
    """A user made with the admin API (no password hashing) and a token for it."""
    user_id = synapse.user_id(name)
    quoted = urllib.parse.quote(user_id)
    synapse.request("PUT", f"/_synapse/admin/v2/users/{quoted}", {"admin": False}, admin)
    reply = synapse.request("POST", f"/_synapse/admin/v1/users/{quoted}/login", {}, admin)
    return str(reply["access_token"])


def send(synapse: Synapse, token: str, room: str, body: str, txn: str) -> str:
    path = (f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/send/m.room.message/"
            f"{txn}")
    reply = synapse.request("PUT", path, {"msgtype": "m.text", "body": body}, token)
    return str(reply["event_id"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--users", type=int, default=100)
    args = parser.parse_args(argv)
    if not available():
        print("bench/matrix.py: Synapse is not installed (make synapse); skipped")
        return 0
    from testbed.matrixchat import ChatClient

    root = Path(tempfile.mkdtemp(prefix="podod-bench-matrix-"))
    synapse = Synapse(root / "synapse").start()
    daemon: DaemonProcess | None = None
    chat: ChatClient | None = None
    try:
        synapse.register("boss", "boss-pw-4711", admin=True)
        admin_token, admin_device = synapse.login_device("boss", "boss-pw-4711")
        synapse.register("podod", "podod-pw-4711")
        bot = synapse.user_id("podod")
        quoted_bot = urllib.parse.quote(bot)
        synapse.request("POST", f"/_synapse/admin/v1/users/{quoted_bot}/override_ratelimit",
                        {"messages_per_second": 0, "burst_count": 0}, admin_token)
        (root / "token").write_text(synapse.login("podod", "podod-pw-4711"))
        users = {f"u{i:03d}": "" for i in range(args.users)}
        for name in users:
            users[name] = make_user(synapse, admin_token, name)
        # public (joined without an invite each): 100 invites in one request take long
        room = str(synapse.request("POST", "/_matrix/client/v3/createRoom", {
            "preset": "public_chat", "name": "bench", "invite": [bot]},
            admin_token)["room_id"])
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda t: synapse.request(
                "POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room)}", {}, t),
                users.values()))
        grants = {synapse.user_id("boss"): {"role": "viewer"},
                  **{synapse.user_id(n): {"role": "viewer"} for n in users}}
        config = base_config(
            root, access={"matrix_users": grants},
            commands={"rate_limit": {"per_minute": 6000, "burst": 100}},
            plugins={"dirs": [str(REPO / "plugins")], "entry_points": False},
            matrix={"homeserver": synapse.url, "user_id": bot,
                    "access_token_file": str(root / "token"), "rooms": [room],
                    "e2ee": "off"})
        config["log"] = {"level": "warning"}
        daemon = DaemonProcess(write_config(root / "podod.yaml", config)).start()
        wait_for(lambda: daemon.request(["matrix", "status"])["data"].get("command_rooms"),
                 60, "the bot in its room")
        chat = ChatClient(synapse.url, synapse.user_id("boss"), admin_token, admin_device,
                          root / "boss")
        # 1. round trips, one at a time (after two uncounted warm-ups)
        times: list[float] = []
        for i in range(args.rounds + 2):
            started = time.perf_counter()
            event_id = chat.send(room, "!podo status")
            chat.wait_reply(room, event_id, 30)
            if i >= 2:
                times.append((time.perf_counter() - started) * 1000)
        share = daemon.request(["matrix", "status"])["data"]["handling_ms"]
        # 2. every user at once
        sent: dict[str, str] = {}
        lock = threading.Lock()
        barrier = threading.Barrier(len(users))

        def one(item: tuple[str, str]) -> None:
            name, token = item
            barrier.wait()
            event_id = send(synapse, token, room, f"!podo example hello {name}", f"b-{name}")
            with lock:
                sent[event_id] = name

        started = time.perf_counter()
        with ThreadPoolExecutor(len(users)) as pool:
            list(pool.map(one, users.items()))

        def answered() -> dict[str, int]:
            counts = dict.fromkeys(sent, 0)
            for event in chat.seen(lambda e: e["sender"] == bot and e["room"] == room):
                target = ((event["content"].get("m.relates_to") or {}).get("m.in_reply_to")
                          or {}).get("event_id")
                if target in counts:
                    counts[target] += 1
            return counts

        if not _poll(answered):
            status = daemon.request(["matrix", "status"])["data"]
            print(f"not all answered: {sum(1 for n in answered().values() if n)} of "
                  f"{len(sent)}; bot status: {status}", file=sys.stderr)
        burst_s = time.perf_counter() - started
        time.sleep(2.0)  # late duplicates would show now
        counts = answered()
        lost = sum(1 for n in counts.values() if n == 0)
        duplicated = sum(1 for n in counts.values() if n > 1)
        wrong = 0
        for event in chat.seen(lambda e: e["sender"] == bot and e["room"] == room):
            target = ((event["content"].get("m.relates_to") or {}).get("m.in_reply_to")
                      or {}).get("event_id")
            if target in sent and sent[target] not in str(event["content"].get("body", "")):
                wrong += 1
        result: dict[str, Any] = {
            "round_trip_ms": {"median": round(statistics.median(times), 1),
                              "p95": round(percentile(times, 0.95), 1),
                              "min": round(min(times), 1), "rounds": len(times)},
            "podod_share_ms": share,
            "burst": {"users": len(users), "seconds_to_all_replies": round(burst_s, 2),
                      "lost": lost, "duplicated": duplicated, "wrong_reply": wrong},
            "targets": {"median_ms": TARGET_MEDIAN_MS, "podod_share_ms": TARGET_SHARE_MS},
        }
    finally:
        if chat is not None:
            chat.close()
        if daemon is not None:
            daemon.stop()
        synapse.stop()
    print(f"!podo status round trip: median {result['round_trip_ms']['median']} ms, p95 "
          f"{result['round_trip_ms']['p95']} ms over {len(times)} (target: median under "
          f"{TARGET_MEDIAN_MS:.0f} ms)")
    print(f"podod's share: median {share['median']} ms, p95 {share['p95']} ms over "
          f"{share['count']} replies (target: under {TARGET_SHARE_MS:.0f} ms)")
    print(f"{len(users)} users at once: all answered in {burst_s:.2f} s; lost {lost}, "
          f"duplicated {duplicated}, wrong {wrong}")
    out = REPO / ".bench"
    out.mkdir(exist_ok=True)
    (out / "matrix.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if lost == duplicated == wrong == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
