"""Fleet benchmark: one command that generates a mesh, starts pilot, runs ``pilot loadtest`` with the
transport floor, and records the figures in benchmarks/RESULTS.md.

    python benchmarks/bench_fleet.py                                 # issue 5's scale: 1000 x 10, 2000 proxies
    python benchmarks/bench_fleet.py --services 50 --proxies 100 --no-results   # a few seconds
    python benchmarks/bench_fleet.py --workers 2                     # passed on to `pilot serve`

Steps: (1) ``pilot loadtest mesh`` into a temporary dir; (2) pilot on an empty config dir, to read its idle
memory, then stopped (memory per service = the growth with the mesh / services); (3) ``python -m pilot
serve`` on free loopback ports, with ``--workers N`` and any ``--pilot-arg`` passed on, polled on /ready;
(4) the load test: connect storm, endpoint churn, VirtualService edits, reconnect storm, then the same
clients against the transport floor (pilot/loadtest/floor.py); pilot's CPU and memory are read from /proc
for its whole process tree; (5) pilot gets SIGTERM; (6) RESULTS.md gets the new run on top, earlier runs
kept below it, each with the machine, the command and the figures against the issue's targets.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pilot.loadtest.client import raise_fd_limit
from pilot.loadtest.mesh import MeshError, MeshSpec, write_mesh
from pilot.loadtest.procstat import ProcessTree
from pilot.loadtest.progress import Progress
from pilot.loadtest.report import render
from pilot.loadtest.scenarios import SCENARIOS, RunOptions, dumps, run

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS.md"
RUN_MARKER = "<!-- bench_fleet run -->"
HEADER = f"""# Fleet benchmark results

Written by `benchmarks/bench_fleet.py` (see benchmarks/README.md): newest run first, earlier runs kept below
for comparison. Targets are issue 5's, for 1,000 services x 10 endpoints and 2,000 proxies on the 2-core
project machine; a run at another scale is not comparable with them.

{RUN_MARKER}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mesh = p.add_argument_group("mesh")
    mesh.add_argument("--services", type=int, default=1000)
    mesh.add_argument("--endpoints", type=int, default=10)
    mesh.add_argument("--namespaces", type=int, default=20)
    mesh.add_argument("--virtual-services", type=int, help="default: 100, or every service if fewer")
    mesh.add_argument("--destination-rules", choices=["all", "vs", "none"], default="vs")
    mesh.add_argument("--sidecar-isolation", action="store_true")
    mesh.add_argument("--tcp-port", action="store_true")
    mesh.add_argument("--gateway", action="store_true", help="implied by --routers > 0")
    fleet = p.add_argument_group("fleet")
    fleet.add_argument("--proxies", type=int, default=2000)
    fleet.add_argument("--routers", type=int, default=0)
    fleet.add_argument("--label-sets", type=int, default=1)
    fleet.add_argument("--protocol", choices=["sotw", "delta"], default="sotw")
    fleet.add_argument("--client-procs", type=int, default=1)
    scen = p.add_argument_group("scenarios")
    scen.add_argument("--scenarios", default=",".join(SCENARIOS))
    scen.add_argument("--churn-changes", type=int, default=4)
    scen.add_argument("--vs-edits", type=int, default=4)
    scen.add_argument("--no-floor", action="store_true", help="skip the transport floor")
    scen.add_argument("--timeout", type=float, default=300.0, help="deadline of each phase, s")
    scen.add_argument("--settle", type=float, default=1.0, help="quiet time ending a change's count, s")
    pilot = p.add_argument_group("pilot")
    pilot.add_argument("--workers", type=int, help="pilot serve --workers N (not passed when omitted)")
    pilot.add_argument("--pilot-arg", action="append", default=[], help="extra `pilot serve` argument (repeatable)")
    pilot.add_argument("--debounce", help="PILOT_DEBOUNCE_AFTER for pilot (default: pilot's own)")
    pilot.add_argument("--log-level", default="warning", help="pilot --log-level (default %(default)s)")
    out = p.add_argument_group("output")
    out.add_argument("--results", type=Path, default=RESULTS, help="results file (default benchmarks/RESULTS.md)")
    out.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md alone")
    out.add_argument("--json", type=Path, help="also write the load test's JSON report here")
    out.add_argument("--note", default="", help="a line to keep with the run in RESULTS.md")
    out.add_argument("--no-baseline", action="store_true", help="skip the empty-config pilot (memory per service)")
    return p.parse_args(argv)


# ----- pilot -----


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


class Pilot:
    """``python -m pilot serve`` on free loopback ports; its output goes to a log file."""

    def __init__(self, config_dir: Path, log: Path, args: argparse.Namespace) -> None:
        self.grpc_port, self.mon_port = free_port(), free_port()
        self.argv = [
            sys.executable, "-m", "pilot", "--log-level", args.log_level, "serve",
            "--config-dir", str(config_dir),
            "--grpc-addr", f"127.0.0.1:{self.grpc_port}",
            "--monitoring-addr", f"127.0.0.1:{self.mon_port}",
        ]  # fmt: skip
        if args.workers is not None:
            self.argv += ["--workers", str(args.workers)]
        for extra in args.pilot_arg:
            self.argv += shlex.split(extra)
        self.env = dict(os.environ)
        if args.debounce:
            self.env["PILOT_DEBOUNCE_AFTER"] = args.debounce
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float) -> float:
        """Start and wait for /ready; returns the seconds it took."""
        started = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = started + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pilot exited with {self.proc.returncode} before /ready:\n{self.tail()}")
            with contextlib.suppress(OSError):
                if http_status(f"http://127.0.0.1:{self.mon_port}/ready") == 200:
                    return time.monotonic() - started
            if time.monotonic() > deadline:
                raise TimeoutError(f"pilot not ready within {timeout:g} s:\n{self.tail()}")
            time.sleep(0.05)

    def stop(self) -> dict[str, Any]:
        if self.proc is None:
            return {}
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        self.proc = None
        return {"exit_code": code, "seconds": time.monotonic() - started}

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def idle_memory(workdir: Path, args: argparse.Namespace) -> int | None:
    """RSS of pilot serving an empty config dir, ready and idle."""
    empty = workdir / "empty"
    empty.mkdir()
    pilot = Pilot(empty, workdir / "pilot-empty.log", args)
    try:
        pilot.start(60)
        assert pilot.proc is not None
        return ProcessTree([pilot.proc.pid]).sample().rss_bytes
    finally:
        pilot.stop()


# ----- the machine -----


def machine() -> dict[str, Any]:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


# ----- RESULTS.md -----


def _ms(q: dict[str, float] | None, key: str = "p99") -> str:
    return "-" if not q else f"{q[key] * 1e3:.0f} ms"


def _trio(q: dict[str, float] | None) -> str:
    return "-" if not q else " / ".join(f"{q[k] * 1e3:.0f}" for k in ("p50", "p99", "max")) + " ms"


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v / 1e6:.0f} MB"


def _types(d: dict[str, float], scale: float = 1.0, digits: int = 2) -> str:
    return " / ".join(f"{d[t] / scale:.{digits}f}".rstrip("0").rstrip(".") for t in ("cds", "eds", "lds", "rds"))


def run_section(r: dict[str, Any], m: dict[str, Any], extra: dict[str, Any], argv: list[str], note: str) -> str:
    """The markdown of one run."""
    fleet, mesh, target = r["fleet"], r["mesh"], r["target"]
    storm, churn, vs = r["connect_storm"], r["endpoint_churn"], r["vs_edits"]
    rc, floor = r["reconnect_storm"], r["floor"]
    pilot, client = r["pilot"] or {}, r["client"]
    workers = extra["workers"] or 1
    title = (
        f"## {r['started_at'][:16].replace('T', ' ')} UTC: "
        f"{mesh['services']} services x {mesh['endpoints']} endpoints, "
        f"{fleet['proxies']} proxies, {target['protocol']}, {workers} worker{'s' if workers > 1 else ''}"
    )
    lines = [
        RUN_MARKER,
        title,
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']}, Python {m['python']}; "
        f"pilot at {m['commit'] or 'unknown commit'}{' with uncommitted changes' if m['dirty'] else ''}.",
        "",
        f"Command: `python benchmarks/bench_fleet.py {shlex.join(argv)}`",
        "",
        f"Mesh: {mesh['services']} ServiceEntries x {mesh['endpoints']} endpoints in {mesh['namespaces']} namespaces, "
        f"{mesh['virtual_services']} VirtualServices, DestinationRules: {mesh['destination_rules']}, "
        f"Sidecar isolation {'on' if mesh['sidecar_isolation'] else 'off'}"
        f"{', TCP port' if mesh['tcp_port'] else ''}{', gateway' if mesh['gateway'] else ''}. Fleet: "
        f"{fleet['sidecars']} sidecars + {fleet['routers']} routers, {fleet['label_sets']} label set(s), "
        f"{fleet['client_procs']} client process(es). pilot ready after {extra['ready_s']:.2f} s.",
    ]
    if note:
        lines += ["", note]
    lines += ["", "| measure | result | target (issue 5) |", "|---|---|---|"]

    def row(what: str, result: str, target: str = "") -> None:
        lines.append(f"| {what} | {result} | {target} |")

    if storm:
        row(
            f"connect storm: all {storm['proxies']} proxies have full config",
            f"{_s(storm['time_to_full_sync_s'])} ({storm['synced']}/{storm['proxies']} synced; per proxy p50 "
            f"{_ms(storm['sync_s'], 'p50')})",
            "≤ 10 s with --workers 2",
        )
        ratio = floor["pilot_to_floor_cpu"] if floor else None
        row(
            "pilot CPU for the full sync / transport floor's, same clients and bytes",
            f"{_s((storm['pilot'] or {}).get('cpu_s'))} / {_s(floor['cpu_s'] if floor else None)}"
            + (f" = **{ratio:.2f}x**" if ratio else ""),
            "≤ 1.5x",
        )
        if floor:
            row("transport floor: all proxies have full config", _s(floor["time_to_full_sync_s"]))
        per = storm["per_proxy"]
        row(
            "full config per proxy: messages, kB (cds / eds / lds / rds)",
            f"{_types(per['messages'])}; {_types(per['bytes'], 1e3, 1)}",
        )
    if churn:
        s = churn["summary"]
        row(
            f"endpoint change → every watching proxy, p50 / p99 / max ({s['changes']} changes)",
            f"{_trio(s['latency_s'])} ({s['converged']}/{s['expected']} proxies)",
            "p99 ≤ 350 ms",
        )
        row("pilot CPU per endpoint change", _s(s["pilot_cpu_s_per_change"]), "≤ 0.2 s")
        got = s["proxies_receiving_per_change"]
        row(
            "proxies sent CDS / EDS / LDS / RDS per endpoint change",
            _types(got, digits=1),
            "EDS only, to the watchers",
        )
    if vs:
        s = vs["summary"]
        row(
            f"VirtualService change → every affected proxy, p50 / p99 / max ({s['changes']} changes)",
            f"{_trio(s['latency_s'])} ({s['converged']}/{s['expected']} proxies)",
            "p99 ≤ 1 s",
        )
        row("pilot CPU per VirtualService change", _s(s["pilot_cpu_s_per_change"]))
    if rc:
        row(
            "reconnect storm: last response / proxies answered / got every type again",
            f"{_s(rc['time_to_last_response_s'])} / {rc['answered']} / {rc['fully_resent']}; "
            f"resent per proxy (msgs) {_types(rc['per_proxy']['messages'])}",
        )
        row("pilot CPU for the reconnect storm", _s((rc["pilot"] or {}).get("cpu_s")))
    if pilot:
        row(
            "pilot memory: peak RSS (PSS at the end)",
            f"{_mb(pilot['rss_peak_bytes'])} ({_mb(pilot.get('pss_end_bytes'))}), {pilot['processes']} process(es)",
            "≤ 1 GB in total",
        )
        per_proxy = pilot["rss_per_proxy_bytes"]
        per_service = extra.get("rss_per_service_bytes")
        row(
            "memory per additional proxy / per additional service",
            f"{'-' if per_proxy is None else f'{per_proxy / 1e3:.0f} kB'} / "
            f"{'-' if per_service is None else f'{per_service / 1e3:.0f} kB'}",
            "reported",
        )
    row(
        "client CPU (busiest process's share of a core, phase)",
        f"{_s(client['cpu_s'])} ({client['max_core_fraction']:.0%}, {client['busiest_phase'] or '-'})"
        + (" SATURATED" if client["saturated"] else ""),
    )
    shutdown = extra.get("shutdown") or {}
    if shutdown:
        row("SIGTERM with the proxies gone → exit", f"code {shutdown['exit_code']} in {shutdown['seconds']:.2f} s")
    if r["warnings"]:
        lines += ["", "Warnings: " + "; ".join(r["warnings"][:8])]
    return "\n".join(lines) + "\n"


def update_results(path: Path, section: str) -> None:
    """New run first, earlier runs below it."""
    text = path.read_text() if path.exists() else HEADER
    head, marker, rest = text.partition(RUN_MARKER)
    if not marker:  # a hand-edited file without the marker: keep it all below the new run
        head, rest = HEADER.partition(RUN_MARKER)[0], "\n" + text
    path.write_text(head + section + "\n" + (RUN_MARKER + rest if rest.strip() else ""))


# ----- main -----


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    raise_fd_limit(4 * args.proxies + 1024)  # inherited by pilot (one socket per proxy, more per worker)
    scenarios = tuple(s for s in args.scenarios.split(",") if s)
    spec = MeshSpec(
        services=args.services,
        endpoints=args.endpoints,
        namespaces=args.namespaces,
        virtual_services=min(args.services, 100) if args.virtual_services is None else args.virtual_services,
        destination_rules=args.destination_rules,
        sidecar_isolation=args.sidecar_isolation,
        tcp_port=args.tcp_port,
        gateway=args.gateway or args.routers > 0,
    )
    try:
        spec.check()
    except MeshError as exc:
        print(f"bench_fleet: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        workdir = Path(tmp)
        config_dir = workdir / "mesh"
        write_mesh(spec, config_dir)
        baseline = None if args.no_baseline else idle_memory(workdir, args)
        pilot = Pilot(config_dir, workdir / "pilot.log", args)
        extra: dict[str, Any] = {"workers": args.workers}
        try:
            extra["ready_s"] = pilot.start(args.timeout)
            assert pilot.proc is not None
            options = RunOptions(
                config_dir=config_dir,
                xds_addr=f"127.0.0.1:{pilot.grpc_port}",
                protocol=args.protocol,
                proxies=args.proxies,
                routers=args.routers,
                label_sets=args.label_sets,
                client_procs=args.client_procs,
                scenarios=scenarios,
                churn_changes=args.churn_changes,
                vs_edits=args.vs_edits,
                floor=not args.no_floor,
                pilot_pids=(pilot.proc.pid,),
                monitoring_addr=f"127.0.0.1:{pilot.mon_port}",
                timeout=args.timeout,
                settle=args.settle,
            )
            with Progress() as progress:
                report = run(options, progress)
        finally:
            extra["shutdown"] = pilot.stop()
            warnings = [line for line in pilot.tail(100000).splitlines() if " ERROR " in line or "Traceback" in line]
        if warnings:
            report["warnings"].append(f"pilot logged {len(warnings)} error line(s), e.g. {warnings[0][:200]}")
        pilot_section = report["pilot"] or {}
        if baseline is not None and pilot_section.get("rss_idle_bytes"):
            extra["rss_per_service_bytes"] = (pilot_section["rss_idle_bytes"] - baseline) / spec.services
    report["bench"] = {**extra, "rss_empty_config_bytes": baseline, "argv": raw}
    render(report)
    if args.json:
        args.json.write_text(dumps(report) + "\n")
    if not args.no_results:
        update_results(args.results, run_section(report, machine(), extra, raw, args.note))
        print(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
