"""Figures from raw per-proxy measurements, and the report: a table for people, JSON for machines.

The JSON report (``pilot loadtest run --json``) has these top-level keys (times in seconds, sizes in bytes,
``{p50, p99, max}`` objects also carry ``min`` and ``n``; a scenario that did not run is null):

- ``schema`` ("pilot-loadtest/1"), ``started_at`` (UTC ISO 8601), ``duration_s``
- ``target``: xds_addr, protocol, monitoring_addr
- ``mesh``: the MeshSpec the config dir was generated with
- ``fleet``: proxies, sidecars, routers, label_sets, client_procs
- ``connect_storm``: proxies, synced, time_to_full_sync_s, sync_s, first_response_s, per_proxy
  (messages and bytes per type), stream_errors, gave_up, pilot (cpu_s, rss_bytes), client (cpu_s,
  max_core_fraction)
- ``endpoint_churn`` / ``vs_edits``: changes (one object per change: label, service, expected, converged,
  latency_s, per_proxy, proxies_receiving, pilot, client, metrics), summary (expected, converged,
  latency_s over all changes, messages per proxy per type, pilot cpu_s per change)
- ``reconnect_storm``: proxies, answered (got any response on the new stream), fully_resent (got every type
  again), time_to_last_response_s, last_response_s, full_resend_s, per_proxy, stream_errors, pilot, client
- ``floor``: protocol, proxies, synced, time_to_full_sync_s, cpu_s, pilot_cpu_s, pilot_to_floor_cpu
- ``pilot``: pids, processes, rss_idle_bytes, rss_peak_bytes, rss_end_bytes, pss_idle_bytes, pss_end_bytes,
  rss_per_proxy_bytes (RSS growth over the storm / proxies), cpu_s (whole run); null without ``--pilot-pid``
- ``client``: procs, cpu_s (whole run), max_core_fraction and busiest_phase (over the phases against pilot
  that lasted at least a second), saturated
- ``warnings``: list of strings
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from pilot.loadtest.wire import SHORT

SCHEMA = "pilot-loadtest/1"
SATURATED = 0.9  # a client process busier than this share of a core is what gets measured, not pilot
REPORT_KEYS = (
    "schema",
    "started_at",
    "duration_s",
    "target",
    "mesh",
    "fleet",
    "connect_storm",
    "endpoint_churn",
    "vs_edits",
    "reconnect_storm",
    "floor",
    "pilot",
    "client",
    "warnings",
)


def quantiles(values: Iterable[float]) -> dict[str, float] | None:
    """Nearest-rank p50 / p99 and min / max; None for no values."""
    s = sorted(values)
    if not s:
        return None

    def rank(q: float) -> float:
        return s[max(0, math.ceil(q * len(s)) - 1)]

    return {"n": len(s), "min": s[0], "p50": rank(0.5), "p99": rank(0.99), "max": s[-1]}


def traffic(msgs: Sequence[Sequence[int]], size: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Messages and bytes per proxy per type (mean over the proxies given), and how many proxies got any."""
    n = max(len(msgs), 1)
    return {
        "messages": {SHORT[t]: sum(row[t] for row in msgs) / n for t in range(4)},
        "bytes": {SHORT[t]: sum(row[t] for row in size) / n for t in range(4)},
        "proxies_receiving": {SHORT[t]: sum(1 for row in msgs if row[t]) for t in range(4)},
        "max_messages_one_proxy": max((sum(row) for row in msgs), default=0),
    }


def client_cpu(*commands: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Client CPU of one phase made of one or more commands (each a list of answers in client order): the sum
    over processes, the busiest process's share of a core over the whole phase, and the phase's wall time."""
    cpu = [sum(answers[k]["cpu_s"] for answers in commands) for k in range(len(commands[0]))]
    wall = [sum(answers[k]["wall_s"] for answers in commands) for k in range(len(commands[0]))]
    busiest = max((c / w for c, w in zip(cpu, wall, strict=True) if w > 0), default=0.0)
    return {"cpu_s": sum(cpu), "max_core_fraction": busiest, "wall_s": max(wall, default=0.0)}


def change_summary(changes: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [v for c in changes for v in c.pop("_latencies")]
    n = max(len(changes), 1)
    return {
        "changes": len(changes),
        "expected": sum(c["expected"] for c in changes),
        "converged": sum(c["converged"] for c in changes),
        "latency_s": quantiles(latencies),
        "messages_per_proxy": {t: sum(c["per_proxy"]["messages"][t] for c in changes) / n for t in SHORT},
        "bytes_per_proxy": {t: sum(c["per_proxy"]["bytes"][t] for c in changes) / n for t in SHORT},
        "pilot_cpu_s_per_change": (
            sum(c["pilot"]["cpu_s"] for c in changes) / n if all(c["pilot"] for c in changes) else None
        ),
    }


# ----- rendering -----


def _ms(q: dict[str, float] | None, key: str) -> str:
    return "-" if q is None else f"{q[key] * 1e3:.0f} ms"


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f} s"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:.0f} MB"


def _per_type(d: dict[str, float], unit: str = "") -> str:
    if unit == "kB":
        return " / ".join(f"{d[t] / 1e3:.1f}" for t in SHORT)
    return " / ".join(f"{d[t]:.2f}".rstrip("0").rstrip(".") for t in SHORT)


def rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, figure, detail) rows of the summary table."""
    out: list[tuple[str, str, str]] = []
    storm = report.get("connect_storm")
    if storm:
        pilot = storm.get("pilot") or {}
        out.append(
            (
                f"connect storm ({storm['proxies']} proxies)",
                _s(storm["time_to_full_sync_s"]),
                f"{storm['synced']}/{storm['proxies']} synced; per proxy p50 {_ms(storm['sync_s'], 'p50')}, "
                f"p99 {_ms(storm['sync_s'], 'p99')}; pilot CPU {_s(pilot.get('cpu_s'))}, "
                f"client CPU {_s(storm['client']['cpu_s'])}",
            )
        )
        per = storm["per_proxy"]
        out.append(
            (
                "  per proxy msgs cds/eds/lds/rds",
                _per_type(per["messages"]),
                f"kB {_per_type(per['bytes'], 'kB')}",
            )
        )
    for key, title in (("endpoint_churn", "endpoint churn"), ("vs_edits", "VirtualService edits")):
        section = report.get(key)
        if not section:
            continue
        s = section["summary"]
        cpu = s["pilot_cpu_s_per_change"]
        out.append(
            (
                f"{title} ({s['changes']} changes)",
                f"p99 {_ms(s['latency_s'], 'p99')}",
                f"converged {s['converged']}/{s['expected']}; p50 {_ms(s['latency_s'], 'p50')}, "
                f"max {_ms(s['latency_s'], 'max')}; pilot CPU/change {_s(cpu)}",
            )
        )
        out.append(
            (
                "  per proxy per change c/e/l/r",
                _per_type(s["messages_per_proxy"]),
                f"kB {_per_type(s['bytes_per_proxy'], 'kB')}",
            )
        )
    rc = report.get("reconnect_storm")
    if rc:
        rc_cpu = (rc.get("pilot") or {}).get("cpu_s")
        out.append(
            (
                f"reconnect storm ({rc['proxies']} proxies)",
                _s(rc["time_to_last_response_s"]),
                f"{rc['answered']} answered, {rc['fully_resent']} got every type again; last response p50 "
                f"{_ms(rc['last_response_s'], 'p50')}; pilot CPU {_s(rc_cpu)}",
            )
        )
        out.append(
            (
                "  resent per proxy c/e/l/r",
                _per_type(rc["per_proxy"]["messages"]),
                f"kB {_per_type(rc['per_proxy']['bytes'], 'kB')}",
            )
        )
    floor = report.get("floor")
    if floor:
        ratio = floor.get("pilot_to_floor_cpu")
        out.append(
            (
                "transport floor (same clients, bytes)",
                _s(floor["time_to_full_sync_s"]),
                f"floor CPU {_s(floor['cpu_s'])}; pilot/floor CPU {'-' if ratio is None else f'{ratio:.2f}x'}",
            )
        )
    pilot = report.get("pilot")
    if pilot:
        per_proxy = pilot.get("rss_per_proxy_bytes")
        out.append(
            (
                "pilot RSS",
                _mb(pilot["rss_peak_bytes"]),
                f"idle {_mb(pilot['rss_idle_bytes'])}, end {_mb(pilot['rss_end_bytes'])}"
                + (f", {per_proxy / 1e3:.0f} kB per proxy" if per_proxy is not None else ""),
            )
        )
    client = report["client"]
    out.append(
        (
            f"client ({client['procs']} processes)",
            _s(client["cpu_s"]),
            (
                f"busiest process {client['max_core_fraction']:.0%} of a core ({client['busiest_phase']})"
                if client["busiest_phase"]
                else "no phase against pilot lasted a second: too short to judge the client's load"
            )
            + (" (SATURATED: pilot is not what was measured)" if client["saturated"] else ""),
        )
    )
    return out


def render(report: dict[str, Any], console: Any = None) -> None:
    """Print the summary table (rich) and the warnings."""
    from rich.console import Console
    from rich.table import Table

    # Off a terminal rich would wrap at 80 columns; the rows are meant to be read whole.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    target = report["target"]
    mesh = report["mesh"]
    table = Table(
        title=(
            f"pilot loadtest: {target['protocol']} ADS at {target['xds_addr']}, {mesh['services']} services x "
            f"{mesh['endpoints']} endpoints, {report['fleet']['proxies']} proxies"
        ),
        title_justify="left",
    )
    table.add_column("measure")
    table.add_column("figure", justify="right")
    table.add_column("detail")
    for what, figure, detail in rows(report):
        table.add_row(what, figure, detail)
    console.print(table)
    for warning in report["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")
