"""Pure parts of monitoring: where a query is answered from, the system snapshot parser,
which probes a server gets, and the monitor settings' checks."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from podod.config import parse_config
from podod.errors import ConfigError, ValidationError
from podod.monitor.catalog import builtin_series
from podod.monitor.collectors.dovecot import (
    METRICS_CONF,
    dump_samples,
    parse_stats_dump,
    stats_reader_conf,
)
from podod.monitor.collectors.services import probes_for, unit_name
from podod.monitor.collectors.system import parse_snapshot, samples_of
from podod.monitor.query import plan_query
from podod.monitor.settings import ServicesCollectorSettings, SystemCollectorSettings
from podod.servers.settings import ServerConfig

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DAY = 86400.0
NOW = 1_800_000_000.0


def plan(since: float, step: float | None = None) -> tuple[str, int | None]:
    p = plan_query(since, step, NOW, 7 * DAY, 90 * DAY)
    return p.source, p.step


def test_query_plan_picks_raw_or_rollups() -> None:
    assert plan(3600) == ("raw", None)
    assert plan(6 * 3600) == ("raw", None)
    assert plan(7 * 3600) == ("5m", 300)
    assert plan(2 * DAY) == ("5m", 300)
    assert plan(7 * DAY) == ("1h", 3600)
    assert plan(90 * DAY) == ("1h", 3600)
    assert plan(6 * 3600, 60) == ("raw", 60)
    assert plan(7 * DAY, 600) == ("5m", 600)
    assert plan(30 * DAY, 86400) == ("1h", 86400)


@pytest.mark.parametrize(("since", "step", "words"), [
    (91 * DAY, None, "beyond the 90d the store keeps"),
    (8 * DAY, 60, "raw samples are kept for 7d"),
    (3600, 7200, "longer than --since"),
    (DAY, 420, "multiple of 5m"),
    (30 * DAY, 5400, "multiple of 1h"),
    (DAY, 1, "more than 20000 points"),
    (3600, 0.5, "whole number of seconds"),
])
def test_query_plan_refuses_with_one_sentence(since: float, step: float | None,
                                              words: str) -> None:
    with pytest.raises(ValidationError) as err:
        plan_query(since, step, NOW, 7 * DAY, 90 * DAY)
    assert words in err.value.message and "\n" not in err.value.message


def test_system_snapshot_of_a_real_machine_parses() -> None:
    snap = parse_snapshot((FIXTURES / "system-snapshot.txt").read_text())
    assert snap.problems == []
    assert snap.load == (1.25, 0.94, 0.63)
    assert snap.cpus == 2
    assert snap.cpu_seconds["user"] == pytest.approx(489.02)
    assert snap.cpu_seconds["idle"] == pytest.approx(2078.34)
    assert snap.mem_total == 24684100 * 1024
    assert snap.mem_available == 24028384 * 1024
    assert snap.swap_total == 0
    assert snap.network["eth0"] == (682035453, 1073233)
    assert snap.filesystems["/"] == ("ext4", 270553174016, 83013206016, 25931087872)
    samples = samples_of(snap, "mx1", SystemCollectorSettings(), {}, NOW)
    names = {s.series for s in samples}
    assert names <= set(builtin_series())
    mounts = {dict(s.labels)["mountpoint"] for s in samples
              if s.series == "node_filesystem_size_bytes"}
    assert mounts == {"/"}  # tmpfs, devtmpfs and /sys are not real storage
    devices = {dict(s.labels)["device"] for s in samples
               if s.series == "node_network_receive_bytes_total"}
    assert devices == {"eth0", "ifb0", "ifb1"}  # lo is left out by default
    used = next(s.value for s in samples if s.series == "node_filesystem_used_ratio")
    assert used == pytest.approx(25931087872 / (25931087872 + 83013206016))
    assert all(s.kind == "counter" for s in samples if s.series.endswith("_total"))


def test_system_snapshot_parser_survives_damage() -> None:
    text = (FIXTURES / "system-snapshot.txt").read_text()
    head, _, _ = text.partition("@@meminfo")
    snap = parse_snapshot(head)  # cut off after /proc/stat
    assert snap.load is not None and snap.cpu_seconds
    assert set(snap.problems) == {"/proc/meminfo", "/proc/net/dev", "df"}
    assert parse_snapshot("").problems
    garbled = text.replace("1.25 0.94 0.63", "x y z").replace(
        "/dev/vda                ext4", "/dev/vda ext4 ?? ??")
    snap = parse_snapshot(garbled.replace(
        "@@end", "/dev/sdb1 ext4 100 40 60 40% /srv/mail store\n@@end"))
    assert "/proc/loadavg" in snap.problems and snap.mem_total
    assert "/" not in snap.filesystems
    assert snap.filesystems["/srv/mail store"] == ("ext4", 100, 60, 40)  # spaces in a mount


def test_busy_ratio_comes_from_the_difference_of_two_readings() -> None:
    first = parse_snapshot((FIXTURES / "system-snapshot.txt").read_text())
    state: dict[str, object] = {}
    settings = SystemCollectorSettings()
    assert not [s for s in samples_of(first, "h", settings, state, NOW)
                if s.series == "node_cpu_busy_ratio"]
    second = parse_snapshot((FIXTURES / "system-snapshot.txt").read_text().replace(
        "cpu  48902 0 19418 207834", "cpu  49002 0 19518 208034"))
    ratio = [s.value for s in samples_of(second, "h", settings, state, NOW + 2)
             if s.series == "node_cpu_busy_ratio"]
    assert ratio == [pytest.approx(200 / 400)]


def server(**kw: object) -> ServerConfig:
    return ServerConfig.model_validate({"name": "mx1", "host": "192.0.2.10", **kw})


def test_probes_follow_the_services_and_the_settings() -> None:
    settings = ServicesCollectorSettings()
    names = [p.name for p in probes_for(server(services=["postfix@-.service", "dovecot"]),
                                        settings)]
    assert names == ["imap", "imaps", "smtp", "submission"]
    assert unit_name("postfix@-.service") == "postfix"
    probes = {p.name: p for p in probes_for(server(services=["sogo", "postgresql"]), settings)}
    assert probes["sogo"].url == "https://192.0.2.10/SOGo/"
    assert probes["postgres"].type == "postgres"
    local = {p.name: p for p in probes_for(server(local=True, host=None, services=["sogo"]),
                                           settings)}
    assert local["sogo"].url == "http://127.0.0.1:20000/SOGo/"
    tuned = ServicesCollectorSettings.model_validate({
        "probes": {"submission": {"enabled": False}, "lmtp": {"type": "tcp", "port": 24}},
        "servers": {"mx1": {"host": "10.0.0.5", "probes": {"smtp": {"port": 2525}}}},
    })
    probes = {p.name: p for p in probes_for(server(services=["postfix"]), tuned)}
    assert set(probes) == {"smtp", "lmtp"}
    assert (probes["smtp"].host, probes["smtp"].port) == ("10.0.0.5", 2525)
    assert (probes["lmtp"].type, probes["lmtp"].port) == ("tcp", 24)


@pytest.mark.parametrize(("monitor", "message"), [
    ({"collectors": {"services": {"probes": {"lmtp": {"port": 24}}}}},
     "monitor.collectors: services.probes: probe 'lmtp' needs a type"),
    ({"collectors": {"services": {"probes": {"smtp": {"port": "x"}}}}},
     "monitor.collectors: services.probes.smtp.port: must be an integer"),
    ({"collectors": {"queue": {"config_dir": "etc/postfix"}}},
     "monitor.collectors: queue.config_dir: must be an absolute path"),
    ({"collectors": {"postgres": {"servers": {"db1": {"tunnel": "pg"}}}}},
     "monitor.collectors: postgres.servers.db1.dsn: is required"),
    ({"collectors": {"system": {"ignore_devices": "("}}},
     "monitor.collectors: system.ignore_devices: is not a valid regular expression"),
    ({"interval": "0s"}, "monitor.interval: must be at least 1s"),
    ({"intervals": {"queue": 0}}, "monitor.intervals: queue: must be at least 1s"),
    ({"store": {"max_backlog": 10}}, "monitor.store.max_backlog: must be greater than"),
    ({"raw_retention": "100d"}, "raw_retention must not be longer than rollup_retention"),
])
def test_bad_monitor_settings_name_the_key(monitor: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"monitor": monitor}, source="podod.yaml")
    assert message in err.value.message, err.value.message


# -- dovecot: doveadm stats dump --------------------------------------------------------------

def test_doveadm_stats_dump_of_a_real_dovecot() -> None:
    """Saved from Dovecot 2.3.19 with a group_by metric (imap_command) and one listing
    fields (imap_traffic: bytes_in, bytes_out)."""
    dump = parse_stats_dump((FIXTURES / "doveadm-stats-dump.txt").read_text())
    assert dump.unparsed == 0
    assert dump.metrics["auth_failure"] == {"duration": (1, 124)}
    assert dump.metrics["imap_command_SELECT"] == {"duration": (1, 938)}
    assert dump.metrics["imap_traffic"]["bytes_out"] == (3, 402)
    samples, dropped = dump_samples(dump, "mx1", NOW, 100)
    assert dropped == 0
    values = {(s.series, tuple(sorted(dict(s.labels).items()))): s.value for s in samples}
    assert values[("dovecot_stats_events_total", (("metric", "imap_login"),))] == 1
    assert values[("dovecot_stats_events_total", (("metric", "imap_command"),))] == 3
    assert values[("dovecot_stats_duration_seconds_total",
                   (("metric", "lmtp_delivery"),))] == pytest.approx(0.00666)
    assert values[("dovecot_stats_field_total",
                   (("field", "bytes_in"), ("metric", "imap_traffic")))] == 7
    assert ("dovecot_stats_field_total", (("field", "duration"), ("metric", "imap_traffic"))) \
        not in values
    assert all(s.kind == "counter" and s.server == "mx1" for s in samples)
    assert {s.series for s in samples} <= set(builtin_series())
    capped, dropped = dump_samples(dump, "mx1", NOW, 2)
    assert dropped == len(dump.metrics) - 2
    assert {dict(s.labels)["metric"] for s in capped} == {"auth_success", "auth_failure"}


def test_docs_show_the_dovecot_metrics_the_test_bed_runs() -> None:
    docs = (FIXTURES.parents[1] / "docs" / "monitoring.md").read_text()
    assert textwrap.indent(METRICS_CONF, "  ") in docs
    assert textwrap.indent(stats_reader_conf("podod"), "  ") in docs


def test_doveadm_stats_dump_damage() -> None:
    text = ("metric_name\tfield\tcount\tsum\n"
            "good\tduration\t4\t100\n"
            "short\tduration\n"
            "words\tduration\tmany\t1\n"
            "negative\tduration\t-1\t5\n")
    dump = parse_stats_dump(text)
    assert list(dump.metrics) == ["good"] and dump.unparsed == 3
    assert parse_stats_dump("metric_name\tfield\tcount\tsum\n").metrics == {}
    with pytest.raises(ValueError, match="no metric_name/field/count/sum header"):
        parse_stats_dump("Error: net_connect_unix(/run/dovecot/stats-reader) failed\n")
    with pytest.raises(ValueError, match="printed nothing"):
        parse_stats_dump("\n")


def test_dovecot_settings_refuse_a_socket_path_with_shell_characters() -> None:
    with pytest.raises(ConfigError, match=re.escape("monitor.collectors: dovecot.socket: "
                                                    "must be an absolute path")):
        parse_config({"monitor": {"collectors": {"dovecot": {"socket": "run/x; reboot"}}}},
                     source="test")
    with pytest.raises(ConfigError, match="doveadm"):
        parse_config({"monitor": {"collectors": {"dovecot": {"doveadm": "/tmp/evil"}}}},
                     source="test")


def test_a_postgresql_far_end_that_hangs_up_is_one_sentence_however_it_shows() -> None:
    """Through an SSH tunnel with nothing at its far end, asyncpg reports either its own
    ``connection_lost`` or a plain reset, depending on timing; the admin reads one sentence."""
    from podod.monitor.probes import POSTGRES_HUNG_UP, describe_failure, describe_postgres_failure

    lost = Exception("unexpected connection_lost() call")
    assert describe_postgres_failure(ConnectionResetError(104, "Connection reset by peer")) \
        == POSTGRES_HUNG_UP
    assert describe_postgres_failure(lost) == POSTGRES_HUNG_UP
    # any other service's reset keeps the system's words
    assert describe_failure(ConnectionResetError(104, "Connection reset by peer")) \
        == "connection reset by peer"
    assert describe_postgres_failure(ConnectionRefusedError()) == "connection refused"
