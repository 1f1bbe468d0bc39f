"""The process and build series every pilot process exports, read when collected.

``process_*`` as the Prometheus client's process collector reads them on Linux (/proc), which is what istiod
serves beside its own metrics; ``istio_build{component,tag}``, ``pilot_info{version}`` and
``istiod_uptime_seconds`` as istiod records them at start.
"""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import time
from functools import cache
from importlib import metadata
from pathlib import Path

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@cache
def pilot_version() -> str:
    try:
        return metadata.version("pilot")
    except metadata.PackageNotFoundError:
        return "unknown"


@cache
def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


@cache
def process_start_time() -> float:
    """Seconds since the epoch when this process started (from /proc, else when first asked)."""
    boot = _boot_time()
    try:
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        if boot is not None:
            return boot + int(fields[19]) / _TICKS  # field 22 of stat: starttime, in clock ticks since boot
    except (OSError, IndexError, ValueError):
        pass
    return time.time()


def process_values() -> dict[str, dict[tuple[str, ...], float]]:
    times = os.times()
    out: dict[str, dict[tuple[str, ...], float]] = {
        "process_cpu_seconds_total": {(): times.user + times.system},
        "process_start_time_seconds": {(): process_start_time()},
        "process_max_fds": {(): float(resource.getrlimit(resource.RLIMIT_NOFILE)[0])},
    }
    try:
        size, rss = Path("/proc/self/statm").read_text().split()[:2]
        out["process_virtual_memory_bytes"] = {(): float(int(size) * _PAGE_SIZE)}
        out["process_resident_memory_bytes"] = {(): float(int(rss) * _PAGE_SIZE)}
    except (OSError, ValueError):
        out["process_resident_memory_bytes"] = {(): resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0}
    try:
        out["process_open_fds"] = {(): float(len(os.listdir("/proc/self/fd")))}
    except OSError:
        pass
    try:
        out["pilot_asyncio_tasks"] = {(): float(len(asyncio.all_tasks()))}
    except RuntimeError:  # collected outside the event loop
        pass
    return out


def build_values() -> dict[str, dict[tuple[str, ...], float]]:
    version = pilot_version()
    return {
        "istio_build": {("pilot", version): 1.0},
        "pilot_info": {(f"pilot-{version} (Python {platform.python_version()})",): 1.0},
        "istiod_uptime_seconds": {(): time.time() - process_start_time()},
    }
