"""CPU time and RSS of process trees, read from /proc (Linux).

A tree is a root pid and all its live descendants, so ``pilot serve --workers N`` is measured whole. CPU is
user + system of every live process plus the CPU of the children each has reaped (cutime/cstime), so a
worker that died and was reaped still counts. RSS is the sum of VmRSS (shared pages count once per process,
as ``ps`` shows them); PSS, on request, splits shared pages among their sharers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ProcError(RuntimeError):
    pass


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    return raw.rpartition(")")[2].split()


def children_map() -> dict[int, list[int]]:
    """ppid -> pids, for every process visible in /proc."""
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        out.setdefault(int(fields[1]), []).append(int(entry))
    return out


def tree(pids: Iterable[int]) -> list[int]:
    """The given pids and their live descendants (each once)."""
    kids = children_map()
    seen: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(kids.get(pid, ()))
    return seen


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of one process; 0 if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return sum(int(fields[k]) for k in (11, 12, 13, 14)) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages divided among the processes sharing them (so a sum over forked
    workers is the memory they really use together). 0 where /proc/PID/smaps_rollup is missing."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class TreeSample:
    cpu_s: float
    rss_bytes: int
    processes: int
    pss_bytes: int | None = None  # only when asked for: the kernel walks every mapping to sum it


class ProcessTree:
    """The processes measured as one (pilot and its workers, or the transport floor)."""

    def __init__(self, roots: Iterable[int]) -> None:
        self.roots = tuple(roots)
        for pid in self.roots:
            if _stat_fields(pid) is None:
                raise ProcError(f"no process with pid {pid}")
        self.peak_rss = 0

    def sample(self, with_pss: bool = False) -> TreeSample:
        pids = tree(self.roots)
        rss = sum(rss_bytes(pid) for pid in pids)
        self.peak_rss = max(self.peak_rss, rss)
        pss = sum(pss_bytes(pid) for pid in pids) if with_pss else None
        return TreeSample(sum(cpu_seconds(pid) for pid in pids), rss, len(pids), pss)

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in tree(self.roots))
