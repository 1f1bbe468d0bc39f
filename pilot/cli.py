"""Command line: ``pilot serve``, ``pilot bootstrap``, ``pilot validate``, ``pilot loadtest``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from pilot.push.debounce import durations_from_env, eds_debounce_from_env
from pilot.xds.cache import max_entries_from_env


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from pilot.server import ServerOptions, serve

    config_dir = Path(args.config_dir)
    if not config_dir.is_dir():
        print(f"pilot serve: --config-dir {config_dir}: not a directory", file=sys.stderr)
        return 2
    try:
        after, max_delay = durations_from_env()
    except ValueError as exc:
        print(f"pilot serve: PILOT_DEBOUNCE_AFTER/PILOT_DEBOUNCE_MAX: {exc}", file=sys.stderr)
        return 2
    try:
        eds_debounce = eds_debounce_from_env()
        max_entries_from_env()  # checked here so a bad value is one clear line, not a traceback later
    except ValueError as exc:
        print(f"pilot serve: {exc}", file=sys.stderr)
        return 2
    options = ServerOptions(
        config_dir=config_dir,
        grpc_addr=args.grpc_addr,
        monitoring_addr=args.monitoring_addr,
        domain_suffix=args.domain_suffix,
        debounce_after=after,
        debounce_max=max_delay,
        eds_debounce=eds_debounce,
    )
    if args.worker_index is not None:
        from pilot.workers.worker import run_worker

        return run_worker(options, args.worker_index, Path(args.worker_socket))
    if args.workers < 1:
        print(f"pilot serve: --workers {args.workers}: must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        from pilot.workers.supervisor import run_supervisor

        return run_supervisor(options, args.workers, args.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(options, stop)

    uvloop.run(main())
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    from pilot.bootstrap import build_bootstrap, render_bootstrap
    from pilot.model.proxy import ProxyIdError
    from pilot.server import split_addr

    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"pilot bootstrap: --label {item!r}: expected key=value", file=sys.stderr)
            return 2
        labels[key] = value
    if args.xds_addr is None and args.xds_api != "rest":
        print(f"pilot bootstrap: --xds-addr is required with --xds-api {args.xds_api}", file=sys.stderr)
        return 2
    host, port = split_addr(args.xds_addr or "127.0.0.1:15010", 15010)
    rest_host, rest_port = split_addr(args.rest_addr, 15014)
    try:
        config = build_bootstrap(
            args.node_id,
            host,
            port,
            labels=labels,
            namespace=args.namespace,
            admin_port=args.admin_port,
            xds_api=args.xds_api,
            rest_host=rest_host,
            rest_port=rest_port,
        )
    except ProxyIdError as exc:
        print(f"pilot bootstrap: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render_bootstrap(config))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from pilot.config.loader import load_text

    errors = 0
    objects = 0
    for name in args.files:
        path = Path(name)
        try:
            text = path.read_text()
        except OSError as exc:
            print(f"{path}: {exc.strerror}", file=sys.stderr)
            errors += 1
            continue
        result = load_text(str(path), text)
        objects += len(result.configs)
        for error in result.errors:
            print(str(error), file=sys.stderr)
        errors += len(result.errors)
        for kind in result.skipped_kinds:
            print(f"{path}: skipping unsupported kind {kind}", file=sys.stderr)
    if errors:
        print(f"{errors} error(s) in {len(args.files)} file(s)", file=sys.stderr)
        return 1
    print(f"{objects} object(s) in {len(args.files)} file(s) valid")
    return 0


def _loadtest(args: argparse.Namespace) -> int:
    from pilot.loadtest.cli import main as loadtest_main

    return loadtest_main(args.loadtest_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pilot", description="Istio-compatible xDS control plane")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve xDS for a directory of Istio and Kubernetes YAML")
    serve.add_argument("--config-dir", required=True, help="directory watched recursively for *.yaml / *.yml")
    serve.add_argument("--grpc-addr", default="0.0.0.0:15010", help="xDS gRPC listen address (default %(default)s)")
    serve.add_argument(
        "--monitoring-addr", default="0.0.0.0:15014", help="/ready, /metrics and /debug address (default %(default)s)"
    )
    serve.add_argument("--domain-suffix", default="cluster.local", help="DNS domain suffix (default %(default)s)")
    serve.add_argument(
        "--workers", type=int, default=1, help="processes sharing the xDS port (SO_REUSEPORT); default 1: one process"
    )
    # Set by the --workers supervisor on the processes it starts (pilot/workers/), not by users.
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-socket", help=argparse.SUPPRESS)
    serve.set_defaults(func=_serve)

    from pilot.bootstrap import XDS_APIS

    boot = sub.add_parser("bootstrap", help="print an Envoy bootstrap (YAML) for a proxy")
    boot.add_argument("--node-id", required=True, help="TYPE~IP~POD.NS~NS.svc.cluster.local")
    boot.add_argument("--xds-addr", help="pilot's xDS gRPC address HOST:PORT (required unless --xds-api rest)")
    boot.add_argument(
        "--xds-api",
        choices=XDS_APIS,
        default="ads",
        help="ads: aggregated SotW gRPC (default); delta: aggregated Delta gRPC; grpc / delta-grpc: per-type "
        "SotW / Delta gRPC services without ADS; rest: JSON polling of pilot's HTTP port",
    )
    boot.add_argument(
        "--rest-addr",
        default="127.0.0.1:15014",
        help="pilot's HTTP (monitoring) address for --xds-api rest (default %(default)s)",
    )
    boot.add_argument("--label", action="append", default=[], help="workload label k=v (repeatable)")
    boot.add_argument("--namespace", help="proxy namespace (default: from the node id)")
    boot.add_argument("--admin-port", type=int, default=15000, help="Envoy admin port (default %(default)s)")
    boot.set_defaults(func=_bootstrap)

    validate = sub.add_parser("validate", help="validate YAML files offline; exits 1 on errors")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(func=_validate)

    # Everything after `loadtest` goes to pilot.loadtest.cli, which has its own subcommands and --help ("+" as
    # the prefix keeps this parser from taking "--help" or any other option for itself).
    loadtest = sub.add_parser(
        "loadtest",
        help="simulated Envoy fleets against a running pilot; see `pilot loadtest --help`",
        add_help=False,
        prefix_chars="+",
    )
    loadtest.add_argument("loadtest_args", nargs=argparse.REMAINDER)
    loadtest.set_defaults(func=_loadtest)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
