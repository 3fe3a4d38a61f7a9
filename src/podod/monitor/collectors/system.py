"""The ``system`` collector: load, CPU, memory, swap, disk usage per real mount, network bytes.

On the machine podod runs on (a local runner) it asks psutil. On a remote server it costs ONE
round trip: the allow-listed script ``system-snapshot`` prints /proc/loadavg, the cpu lines
of /proc/stat, /proc/meminfo, /proc/net/dev and ``df -P -B1 -T``, each after a marker line,
and :func:`parse_snapshot` reads that text. Both paths produce the same series; file systems
and network devices are filtered the same way (``monitor.collectors.system``).

CPU seconds are counters (summed over all CPUs, by mode); ``node_cpu_busy_ratio`` is the
share of non-idle time between this reading and the previous one (so it appears from the
second run on).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from podod.monitor.collect import CollectContext
from podod.monitor.model import Sample
from podod.monitor.settings import SystemCollectorSettings
from podod.plugins import Registry

SCRIPT_NAME = "system-snapshot"
SCRIPT = """\
LC_ALL=C; export LC_ALL
echo '@@clk'; getconf CLK_TCK 2>/dev/null || echo 100
echo '@@loadavg'; cat /proc/loadavg
echo '@@stat'; grep '^cpu' /proc/stat
echo '@@meminfo'; cat /proc/meminfo
echo '@@netdev'; cat /proc/net/dev
echo '@@df'; timeout 10 df -P -B1 -T 2>/dev/null
echo '@@end'
"""

# /proc/stat's cpu line, in order; guest time is already counted in user and nice.
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_DF_LINE = re.compile(r"^(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+%|-)\s+(.+)$")


@dataclass
class Snapshot:
    """One reading of a host, whichever way it was taken."""

    load: tuple[float, float, float] | None = None
    cpus: int | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    mem_total: float | None = None
    mem_available: float | None = None
    swap_total: float | None = None
    swap_free: float | None = None
    # mountpoint → (fs type, size, available, used)
    filesystems: dict[str, tuple[str, float, float, float]] = field(default_factory=dict)
    # device → (received bytes, transmitted bytes)
    network: dict[str, tuple[float, float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = sections.setdefault(line[2:].strip(), [])
            continue
        if current is not None:
            current.append(line)
    return sections


def parse_snapshot(text: str) -> Snapshot:
    """Read the output of the ``system-snapshot`` script. Sections that are missing or do
    not parse are skipped and named in ``problems``; the rest is still used."""
    snap = Snapshot()
    sections = _sections(text)
    clk = 100.0
    try:
        clk = float((sections.get("clk") or ["100"])[0]) or 100.0
    except (ValueError, IndexError):
        snap.problems.append("CLK_TCK")
    try:
        parts = sections["loadavg"][0].split()
        snap.load = (float(parts[0]), float(parts[1]), float(parts[2]))
    except (KeyError, IndexError, ValueError):
        snap.problems.append("/proc/loadavg")
    try:
        cpus = 0
        for line in sections["stat"]:
            fields = line.split()
            if not fields:
                continue
            if fields[0] == "cpu":
                values = [float(v) for v in fields[1:1 + len(CPU_MODES)]]
                snap.cpu_seconds = {m: v / clk for m, v in zip(CPU_MODES, values, strict=False)}
            elif re.fullmatch(r"cpu\d+", fields[0]):
                cpus += 1
        snap.cpus = cpus or None
        if not snap.cpu_seconds:
            raise ValueError
    except (KeyError, ValueError):
        snap.problems.append("/proc/stat")
    try:
        mem: dict[str, float] = {}
        for line in sections["meminfo"]:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if not parts:
                continue
            value = float(parts[0])
            if len(parts) > 1 and parts[1].lower() == "kb":
                value *= 1024
            mem[key.strip()] = value
        snap.mem_total = mem["MemTotal"]
        snap.mem_available = mem.get("MemAvailable")
        if snap.mem_available is None:  # kernels before 3.14
            snap.mem_available = mem.get("MemFree", 0) + mem.get("Buffers", 0) + \
                mem.get("Cached", 0)
        snap.swap_total = mem.get("SwapTotal")
        snap.swap_free = mem.get("SwapFree")
    except (KeyError, ValueError):
        snap.problems.append("/proc/meminfo")
    try:
        for line in sections["netdev"]:
            if ":" not in line:
                continue  # the two header lines
            name, _, rest = line.partition(":")
            fields = rest.split()
            if len(fields) < 9:
                continue
            snap.network[name.strip()] = (float(fields[0]), float(fields[8]))
    except (KeyError, ValueError):
        snap.problems.append("/proc/net/dev")
    df_lines = sections.get("df")
    if not df_lines:
        snap.problems.append("df")
    else:
        for line in df_lines[1:]:
            match = _DF_LINE.match(line)
            if not match:
                continue
            _device, fstype, size, used, avail, _pct, mount = match.groups()
            snap.filesystems[mount] = (fstype, float(size), float(avail), float(used))
    return snap


def local_snapshot() -> Snapshot:
    """The same reading of this machine, through psutil."""
    import psutil

    snap = Snapshot()
    snap.load = os.getloadavg()
    snap.cpus = psutil.cpu_count() or None
    times = psutil.cpu_times()
    snap.cpu_seconds = {m: float(getattr(times, m, 0.0)) for m in CPU_MODES}
    mem = psutil.virtual_memory()
    snap.mem_total, snap.mem_available = float(mem.total), float(mem.available)
    swap = psutil.swap_memory()
    snap.swap_total, snap.swap_free = float(swap.total), float(swap.free)
    for part in psutil.disk_partitions(all=True):
        if part.mountpoint in snap.filesystems:
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        snap.filesystems[part.mountpoint] = (part.fstype, float(usage.total),
                                             float(usage.free), float(usage.used))
    for name, counters in psutil.net_io_counters(pernic=True).items():
        snap.network[name] = (float(counters.bytes_recv), float(counters.bytes_sent))
    return snap


def samples_of(snap: Snapshot, server: str, settings: SystemCollectorSettings,
               state: dict[str, Any], now: float) -> list[Sample]:
    out: list[Sample] = []

    def gauge(name: str, value: float, **labels: str) -> None:
        out.append(Sample(name, server, value, Sample.labels_of(**labels), "gauge", now))

    def counter(name: str, value: float, **labels: str) -> None:
        out.append(Sample(name, server, value, Sample.labels_of(**labels), "counter", now))

    if snap.load is not None:
        gauge("node_load1", snap.load[0])
        gauge("node_load5", snap.load[1])
        gauge("node_load15", snap.load[2])
        if snap.cpus:
            gauge("node_load1_per_cpu", snap.load[0] / snap.cpus)
    if snap.cpus:
        gauge("node_cpus", float(snap.cpus))
    if snap.cpu_seconds:
        for mode, seconds in snap.cpu_seconds.items():
            counter("node_cpu_seconds_total", seconds, mode=mode)
        previous = state.get("cpu")
        total = sum(snap.cpu_seconds.values())
        idle = snap.cpu_seconds.get("idle", 0.0) + snap.cpu_seconds.get("iowait", 0.0)
        if previous is not None:
            d_total, d_idle = total - previous[0], idle - previous[1]
            if d_total > 0 and d_idle >= 0:  # a reboot in between makes the deltas negative
                gauge("node_cpu_busy_ratio", min(1.0, max(0.0, 1 - d_idle / d_total)))
        state["cpu"] = (total, idle)
    if snap.mem_total:
        gauge("node_memory_mem_total_bytes", snap.mem_total)
        if snap.mem_available is not None:
            gauge("node_memory_mem_available_bytes", snap.mem_available)
            gauge("node_memory_used_ratio", 1 - snap.mem_available / snap.mem_total)
    if snap.swap_total is not None:
        gauge("node_memory_swap_total_bytes", snap.swap_total)
    if snap.swap_free is not None:
        gauge("node_memory_swap_free_bytes", snap.swap_free)
    ignore_types = set(settings.ignore_fs_types)
    ignore_mounts = re.compile(settings.ignore_mountpoints)
    for mount, (fstype, size, avail, used) in sorted(snap.filesystems.items()):
        if fstype in ignore_types or ignore_mounts.search(mount) or size <= 0:
            continue
        gauge("node_filesystem_size_bytes", size, mountpoint=mount)
        gauge("node_filesystem_avail_bytes", avail, mountpoint=mount)
        if used + avail > 0:
            gauge("node_filesystem_used_ratio", used / (used + avail), mountpoint=mount)
    ignore_devices = re.compile(settings.ignore_devices)
    for device, (rx, tx) in sorted(snap.network.items()):
        if ignore_devices.search(device):
            continue
        counter("node_network_receive_bytes_total", rx, device=device)
        counter("node_network_transmit_bytes_total", tx, device=device)
    return out


async def collect_system(ctx: CollectContext) -> list[Sample]:
    settings: SystemCollectorSettings = ctx.runtime.config.monitor.collector_settings("system")
    runner = ctx.runner
    if runner is None or runner.local:
        import asyncio

        snap = await asyncio.get_running_loop().run_in_executor(None, local_snapshot)
    else:
        result = await runner.run_script(SCRIPT_NAME, check=True)
        snap = parse_snapshot(result.stdout)
        if snap.load is None and not snap.cpu_seconds and snap.mem_total is None:
            raise ValueError("the system-snapshot output could not be read "
                             f"({', '.join(snap.problems)})")
        if snap.problems:
            ctx.state["problems"] = snap.problems
    return samples_of(snap, ctx.server_name, settings, ctx.state, ctx.now)


def setup(registry: Registry) -> None:
    registry.remote_script(SCRIPT_NAME, SCRIPT, purpose="system metrics in one round trip: "
                           "/proc/loadavg, /proc/stat, /proc/meminfo, /proc/net/dev, df")
    registry.collector("system")(collect_system)
