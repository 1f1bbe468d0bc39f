"""``pilot loadtest mesh`` (generate a mesh) and ``pilot loadtest run`` (measure a running pilot)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pilot.loadtest.fleet import FleetError
from pilot.loadtest.mesh import MeshError, MeshSpec, write_mesh


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pilot loadtest",
        description="Simulated Envoy fleets over real gRPC against a running pilot.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    mesh = sub.add_parser("mesh", help="write a generated mesh (Istio YAML) into a config dir")
    mesh.add_argument("--out", required=True, type=Path, help="config dir to write (new, empty or generated before)")
    mesh.add_argument("--services", type=int, default=1000, help="ServiceEntries (default %(default)s)")
    mesh.add_argument("--endpoints", type=int, default=10, help="endpoints per service (default %(default)s)")
    mesh.add_argument("--namespaces", type=int, default=20, help="namespaces ns0.. (default %(default)s)")
    mesh.add_argument(
        "--virtual-services", type=int, help="services with an 80/20 VirtualService (default: 100, or all if fewer)"
    )
    mesh.add_argument(
        "--destination-rules",
        choices=["all", "vs", "none"],
        default="vs",
        help="DestinationRules (subsets v1/v2) for all services, those with a VirtualService, or none (default vs)",
    )
    mesh.add_argument("--sidecar-isolation", action="store_true", help="per-namespace Sidecar: ./* and istio-system/*")
    mesh.add_argument("--tcp-port", action="store_true", help="give every service TCP port 9000 too")
    mesh.add_argument("--gateway", action="store_true", help="an ingress Gateway binding every VirtualService")
    mesh.set_defaults(func=_mesh)

    run = sub.add_parser("run", help="run the scenarios against a pilot serving a generated mesh")
    run.add_argument("--config-dir", required=True, type=Path, help="the dir pilot serves, from `loadtest mesh`")
    run.add_argument("--xds-addr", default="127.0.0.1:15010", help="pilot's xDS address (default %(default)s)")
    run.add_argument("--monitoring-addr", help="pilot's monitoring address: wait for /ready, read /metrics")
    run.add_argument("--protocol", choices=["sotw", "delta"], default="sotw", help="ADS flavour (default %(default)s)")
    run.add_argument("--proxies", type=int, default=100, help="simulated proxies (default %(default)s)")
    run.add_argument("--routers", type=int, default=0, help="of them, ingress gateways (default %(default)s)")
    run.add_argument("--label-sets", type=int, default=1, help="distinct app labels of sidecars (default %(default)s)")
    run.add_argument("--client-procs", type=int, default=1, help="client processes (default %(default)s)")
    run.add_argument(
        "--scenarios", default="storm,churn,vs,reconnect", help="comma-separated subset; the storm always runs first"
    )
    run.add_argument("--churn-changes", type=int, default=4, help="endpoint add/remove changes (default %(default)s)")
    run.add_argument("--vs-edits", type=int, default=4, help="VirtualService weight flips (default %(default)s)")
    run.add_argument("--floor", action="store_true", help="also measure the transport floor")
    run.add_argument(
        "--pilot-pid", type=int, action="append", default=[], help="pilot pid whose tree's CPU/RSS to read (repeatable)"
    )
    run.add_argument("--timeout", type=float, default=120.0, help="deadline of each phase, s (default %(default)s)")
    run.add_argument(
        "--settle", type=float, default=1.0, help="quiet time that ends a change's count, s (default %(default)s)"
    )
    run.add_argument("--seed", type=int, default=1, help="picks the services changed (default %(default)s)")
    run.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="write the JSON report to PATH, or alone: to stdout only"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    run.set_defaults(func=_run)
    return parser


def _mesh(args: argparse.Namespace) -> int:
    spec = MeshSpec(
        services=args.services,
        endpoints=args.endpoints,
        namespaces=args.namespaces,
        virtual_services=min(args.services, 100) if args.virtual_services is None else args.virtual_services,
        destination_rules=args.destination_rules,
        sidecar_isolation=args.sidecar_isolation,
        tcp_port=args.tcp_port,
        gateway=args.gateway,
    )
    files = write_mesh(spec, args.out)
    print(f"{args.out}: {files} files, {spec.services} services x {spec.endpoints} endpoints in {spec.namespaces} ns")
    return 0


def options_from_args(args: argparse.Namespace) -> Any:
    from pilot.loadtest.scenarios import RunOptions

    return RunOptions(
        config_dir=args.config_dir,
        xds_addr=args.xds_addr,
        protocol=args.protocol,
        proxies=args.proxies,
        routers=args.routers,
        label_sets=args.label_sets,
        client_procs=args.client_procs,
        scenarios=tuple(s.strip() for s in args.scenarios.split(",") if s.strip()),
        churn_changes=args.churn_changes,
        vs_edits=args.vs_edits,
        floor=args.floor,
        pilot_pids=tuple(args.pilot_pid),
        monitoring_addr=args.monitoring_addr,
        timeout=args.timeout,
        settle=args.settle,
        seed=args.seed,
    )


def _run(args: argparse.Namespace) -> int:
    from pilot.loadtest.progress import Progress
    from pilot.loadtest.report import render
    from pilot.loadtest.scenarios import dumps, run

    json_only = args.json == "-"
    progress = Progress(enabled=False if (json_only or args.no_progress) else None)
    with progress:
        report = run(options_from_args(args), progress)
    if json_only:
        sys.stdout.write(dumps(report) + "\n")
    else:
        render(report)
        if args.json:
            Path(args.json).write_text(dumps(report) + "\n")
    return 0 if complete(report) else 1


def complete(report: dict[str, Any]) -> bool:
    """Every proxy got full config and every change reached every proxy expected to see it."""
    storm = report.get("connect_storm")
    if not storm or storm["synced"] != storm["proxies"]:
        return False
    for key in ("endpoint_churn", "vs_edits"):
        section = report.get(key)
        if section and section["summary"]["converged"] != section["summary"]["expected"]:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    from pilot.loadtest.floor import FloorError
    from pilot.loadtest.procstat import ProcError
    from pilot.loadtest.scenarios import LoadtestError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (MeshError, FleetError, LoadtestError, FloorError, ProcError) as exc:
        print(f"pilot loadtest: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
