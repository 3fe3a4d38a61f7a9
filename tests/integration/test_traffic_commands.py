"""The traffic component and commands in a running podod: report, top, status, backfill
(sandbox, real, idempotent), the published counters, and bad input."""

from __future__ import annotations

import asyncio
import gzip
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maillogs import TOTALS, append, lines_of, truth

from podod.config import parse_config
from podod.events import EventBus
from podod.monitor.model import Sample, SamplesCollected
from podod.monitor.traffic import setup as traffic_setup
from podod.monitor.traffic.component import Traffic
from podod.plugins import Registry
from podod.runtime import Runtime
from podod.state import StateDB
from testbed.daemon import DaemonProcess, base_config
from testbed.waiting import poll

Start = Callable[..., DaemonProcess]
FAST = {"flush_interval": "200ms", "publish_interval": "200ms", "rotation_check": "300ms",
        "rotation_grace": "500ms"}


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0,
             daemon: DaemonProcess | None = None) -> None:
    if poll(predicate, timeout, 0.1):
        return
    detail = ""
    if daemon is not None:
        status = daemon.request(["traffic", "status"])
        data = report(daemon)
        detail = (f"; report: {({k: data[k] for k in TOTALS})}; traffic status: "
                  f"{status.get('data')}; log: {daemon.log()[-2000:]}")
    raise AssertionError("timed out" + detail)


def report(daemon: DaemonProcess, *args: str) -> dict[str, Any]:
    reply = daemon.request(["traffic", "report", "--since", "400d", *args])
    assert reply["ok"], reply["message"]
    data: dict[str, Any] = reply["data"]
    return data


def test_report_top_and_status_from_a_followed_log(start_daemon: Start, tmp_path: Path
                                                   ) -> None:
    log = tmp_path / "mail.log"
    lines = lines_of(4000, 11)
    log.write_text("".join(lines[:2500]))
    daemon = start_daemon(servers=[{"name": "mx1", "local": True, "mail_log": str(log)}],
                          traffic={**FAST, "timezone": "UTC"})
    expected = truth(lines[:2500])
    wait_for(lambda: {k: report(daemon)[k] for k in TOTALS} == expected, daemon=daemon)
    append(log, lines[2500:])
    expected = truth(lines)
    wait_for(lambda: {k: report(daemon)[k] for k in TOTALS} == expected, daemon=daemon)
    data = report(daemon, "--server", "mx1", "--by", "hour")
    assert sum(p["received"] for p in data["periods"]) == expected["received"]
    assert data["periods"][0]["label"].endswith(":00")
    text = daemon.podoctl("traffic", "report", "--since", "400d")
    assert text.returncode == 0, text.stderr
    assert f"{expected['received']} received" in text.stdout and "total" in text.stdout
    top = daemon.request(["traffic", "top", "recipients", "--since", "400d", "--limit", "3"])
    assert top["ok"] and len(top["data"]) == 3
    assert top["data"][0]["messages"] >= top["data"][1]["messages"] >= top["data"][2]["messages"]
    domains = daemon.request(["traffic", "top", "sender-domains", "--since", "400d"])
    assert domains["ok"] and all("domain" in row for row in domains["data"])
    status = daemon.request(["traffic", "status"])
    assert status["ok"] and status["data"][0]["state"] == "following"
    assert status["data"][0]["offset"] == log.stat().st_size
    # nothing in the last hour: the generated log is from 30-31 December (see lines_of)
    empty = daemon.request(["traffic", "report", "--since", "1h"])
    assert empty["ok"] and empty["data"]["received"] == 0


def test_backfill_sandbox_real_and_idempotent(start_daemon: Start, tmp_path: Path) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    live = logs / "mail.log"
    old_lines = lines_of(3000, 12, days=2)
    (logs / "mail.log.1").write_text("".join(old_lines))
    live.write_text("")
    daemon = start_daemon(servers=[{"name": "mx1", "local": True, "mail_log": str(live)}],
                          traffic={**FAST, "timezone": "UTC"})
    old = truth(old_lines)
    sandbox = daemon.request(["traffic", "backfill", "--server", "mx1", str(logs / "mail.log.1")])
    assert sandbox["ok"] and sandbox["sandbox"], sandbox
    assert sandbox["data"][0]["received"] == old["received"]
    assert sandbox["data"][0]["counted_lines"] == len(old_lines)
    assert report(daemon)["received"] == 0  # the sandbox wrote nothing
    real = daemon.request(["traffic", "backfill", "--server", "mx1", str(logs / "mail.log.1")],
                          execute_real=True)
    assert real["ok"] and not real["sandbox"], real
    assert {k: report(daemon)[k] for k in TOTALS} == old
    # Again, and the same file compressed as logrotate would later: nothing is added.
    with open(logs / "mail.log.1", "rb") as src, gzip.open(logs / "mail.log.2.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    again = daemon.request(["traffic", "backfill", "--server", "mx1", str(logs / "mail.log.1"),
                            str(logs / "mail.log.2.gz")], execute_real=True)
    assert again["ok"], again
    assert [r["counted_lines"] for r in again["data"]] == [0, 0]
    assert [r["note"] for r in again["data"]] == ["already imported", "already imported"]
    assert {k: report(daemon)[k] for k in TOTALS} == old
    # A file that grew since its import adds only its new part.
    more = lines_of(1000, 14, days=0.2)
    with open(logs / "mail.log.1", "a") as f:
        f.writelines(more)
    grown = daemon.request(["traffic", "backfill", "--server", "mx1", str(logs / "mail.log.1")],
                           execute_real=True)
    assert grown["data"][0]["counted_lines"] == len(more), grown["data"]
    assert report(daemon)["received"] == truth(old_lines + more)["received"]
    # the backfill is audited with its plan
    audit = daemon.request(["audit", "list", "--command", "traffic backfill"])
    # (one sandbox run, three real ones, each real one also recorded as its intent first)
    assert audit["ok"] and len(audit["data"]) == 7
    # Backfilled counts fill the reports, not the live counters.
    status = daemon.request(["traffic", "status"])
    assert status["data"][0]["lines"] == 0


def test_backfill_skips_what_was_counted_live(start_daemon: Start, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    lines = lines_of(2000, 15)
    log.write_text("".join(lines[:1200]))
    daemon = start_daemon(servers=[{"name": "mx1", "local": True, "mail_log": str(log)}],
                          traffic={**FAST, "timezone": "UTC"})
    expected = truth(lines[:1200])
    wait_for(lambda: {k: report(daemon)[k] for k in TOTALS} == expected)
    again = daemon.request(["traffic", "backfill", "--server", "mx1", str(log)],
                           execute_real=True)
    assert again["ok"] and again["data"][0]["counted_lines"] == 0
    assert again["data"][0]["note"] == "counted live already"
    assert {k: report(daemon)[k] for k in TOTALS} == expected


def test_bad_input_is_refused_with_one_sentence(start_daemon: Start, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    notlog = tmp_path / "notes.txt"
    notlog.write_text("hello\nworld\n")
    daemon = start_daemon(servers=[{"name": "mx1", "local": True, "mail_log": str(log)}],
                          traffic={**FAST, "backfill_dirs": [str(tmp_path)]})
    cases = [
        (["traffic", "report", "--server", "nope"], "there is no server named 'nope'"),
        (["traffic", "top", "people"], "must be one of"),
        (["traffic", "report", "--since", "0s"], "--since must be a positive duration"),
        (["traffic", "top", "senders", "--limit", "0"], "--limit must be between 1 and 1000"),
        (["traffic", "backfill", "--server", "nope", str(log)],
         "there is no server named 'nope'"),
        (["traffic", "backfill", "--server", "mx1", "mail.log"],
         "'mail.log' is not an absolute path on the server"),
        (["traffic", "backfill", "--server", "mx1", "/etc/passwd"],
         "'/etc/passwd' is not inside the server's log folders"),
        (["traffic", "backfill", "--server", "mx1", f"{tmp_path}/../etc/x"],
         "must be a plain absolute path"),
        (["traffic", "backfill", "--server", "mx1", str(tmp_path / "gone.log")],
         f"{tmp_path / 'gone.log'}: no such file on mx1"),
        (["traffic", "backfill", "--server", "mx1", str(notlog)],
         "does not look like a mail log"),
        (["traffic", "backfill", str(log)], "--server is required"),
    ]
    for argv, message in cases:
        reply = daemon.request(argv, execute_real=True)
        assert not reply["ok"], argv
        assert message in reply["message"], (argv, reply["message"])
        assert "\n" not in reply["message"] and "Traceback" not in reply["message"]
    assert report(daemon)["received"] == 0


def test_traffic_disabled(start_daemon: Start) -> None:
    daemon = start_daemon(traffic={"enabled": False})
    reply = daemon.request(["traffic", "report"])
    assert not reply["ok"] and "not being counted" in reply["message"]


async def test_counters_are_published_and_survive_a_restart(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    lines = lines_of(1500, 16)
    log.write_text("".join(lines))
    config = parse_config(base_config(
        tmp_path, servers=[{"name": "mx1", "local": True, "mail_log": str(log)}],
        traffic={**FAST, "timezone": "UTC"}), source="test")
    expected = truth(lines)

    async def run_once(more: list[str] | None = None) -> dict[tuple[str, tuple[Any, ...]], float]:
        registry = Registry()
        registry.load("monitor-traffic", "built-in", traffic_setup)
        runtime = Runtime(config=config, config_path=None, events=EventBus(),
                          registry=registry, state=StateDB(tmp_path / "state" / "state.db"))
        seen: dict[tuple[str, tuple[Any, ...]], float] = {}

        def on_samples(event: SamplesCollected) -> None:
            assert event.collector == "traffic" and event.server == "mx1"
            for s in event.samples:
                assert s.kind == "counter" and s.server == "mx1"
                seen[(s.series, s.labels)] = s.value

        runtime.events.subscribe(SamplesCollected, on_samples)
        await runtime.events.start()
        traffic = Traffic(runtime)
        await traffic.start()
        try:
            if more:
                append(log, more)
            want = truth(lines + (more or []))["received"]
            for _ in range(300):
                if seen.get(("postfix_messages_received_total", ())) == want:
                    break
                await asyncio.sleep(0.1)
            return dict(seen)
        finally:
            await traffic.stop()
            await runtime.events.stop()

    first = await run_once()
    assert first[("postfix_messages_received_total", ())] == expected["received"]
    lines_total = sum(v for (series, _), v in first.items() if series == "log_lines_total")
    assert lines_total == sum(1 for ln in lines if " CRON[" not in ln and " kernel:" not in ln)
    rejects = sum(v for (series, _), v in first.items()
                  if series == "postfix_smtpd_rejects_total")
    assert rejects == expected["rejected"]
    assert ("dovecot_logins_total", Sample.labels_of(protocol="imap")) in first
    sent = first[("postfix_deliveries_total", Sample.labels_of(transport="lmtp",
                                                                 status="sent"))]
    assert sent > 0
    # After a restart the counters go on from where they were: monotonic for Prometheus.
    more = lines_of(500, 17)
    second = await run_once(more)
    assert second[("postfix_messages_received_total", ())] == truth(lines + more)["received"]
    for key, value in first.items():
        assert second.get(key, 0) >= value, key
