"""Command line: ``pilot serve``, ``pilot bootstrap``, ``pilot loadtest``; the operator tools (``validate``,
``analyze``, ``proxy-status``, ``proxy-config``, ``version``) live in ``pilot.tools``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pilot import log, settings

if TYPE_CHECKING:
    from pilot.sources.kube.source import KubeOptions


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from pilot.server import ServerOptions, serve

    config_dir = Path(args.config_dir) if args.config_dir is not None else None
    if config_dir is not None and not config_dir.is_dir():
        print(f"pilot serve: --config-dir {config_dir}: not a directory", file=sys.stderr)
        return 2
    try:
        kube = _kube_options(args)
    except ValueError as exc:
        print(f"pilot serve: {exc}", file=sys.stderr)
        return 2
    if config_dir is None and kube is None:
        print(
            "pilot serve: nothing to serve: give --config-dir DIR and/or --kubeconfig PATH "
            "(in a pod, the service account is used when neither is given)",
            file=sys.stderr,
        )
        return 2
    if (args.webhook_cert is None) != (args.webhook_key is None):
        print("pilot serve: --webhook-cert and --webhook-key must be given together", file=sys.stderr)
        return 2
    if kube is not None and args.workers > 1:
        print("pilot serve: --workers > 1 is not supported with Kubernetes sources yet", file=sys.stderr)
        return 2
    from pilot.security import options as security_options

    try:
        security = security_options.from_args(args)
    except security_options.SecurityConfigError as exc:
        print(f"pilot serve: {exc}", file=sys.stderr)
        return 2
    if security.secure_monitoring and args.workers > 1:
        print("pilot serve: --workers > 1 is not supported with --secure-monitoring-addr yet", file=sys.stderr)
        return 2
    if not args.grpc_addr and args.workers > 1:
        print("pilot serve: --workers > 1 needs the plaintext xDS port (--grpc-addr)", file=sys.stderr)
        return 2
    try:
        env = settings.read_all()  # every PILOT_* value checked now: a bad one is one line, not a traceback later
        addresses = {
            "--grpc-addr": settings.split_address("--grpc-addr", args.grpc_addr, 15010),
            "--monitoring-addr": settings.split_address("--monitoring-addr", args.monitoring_addr, 15014),
        }
        if args.webhook_cert is not None:
            addresses["--webhook-addr"] = settings.split_address("--webhook-addr", args.webhook_addr, 15017)
    except settings.SettingError as exc:
        print(f"pilot serve: {exc}", file=sys.stderr)
        return 2
    options = ServerOptions(
        config_dir=config_dir,
        grpc_addr=args.grpc_addr,
        monitoring_addr=args.monitoring_addr,
        domain_suffix=args.domain_suffix,
        debounce_after=env["PILOT_DEBOUNCE_AFTER"],
        debounce_max=env["PILOT_DEBOUNCE_MAX"],
        eds_debounce=env["PILOT_ENABLE_EDS_DEBOUNCE"],
        send_timeout=env["PILOT_XDS_SEND_TIMEOUT"],
        push_throttle=env["PILOT_PUSH_THROTTLE"],
        max_connection_age=env["PILOT_KEEPALIVE_MAX_SERVER_CONNECTION_AGE"] or None,
        kube=kube,
        webhook_addr=args.webhook_addr,
        webhook_cert=Path(args.webhook_cert) if args.webhook_cert else None,
        webhook_key=Path(args.webhook_key) if args.webhook_key else None,
        security=security,
    )
    if args.worker_index is not None:
        from pilot.workers.worker import run_worker

        return run_worker(options, args.worker_index, Path(args.worker_socket))
    if args.workers < 1:
        print(f"pilot serve: --workers {args.workers}: must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        from pilot.workers.supervisor import run_supervisor

        return run_supervisor(options, args.workers, os.environ.get(log.ENV_LEVELS, "info"))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(options, stop)

    from pilot.webhook import WebhookCertificateError

    try:
        uvloop.run(main())
    except (WebhookCertificateError, security_options.SecurityConfigError) as exc:
        print(f"pilot serve: {exc}", file=sys.stderr)  # one line naming the file, no traceback
        return 1
    except OSError as exc:  # a port in use, an address not on this host, a privileged port
        print(f"pilot serve: {_listen_error(exc, addresses)}", file=sys.stderr)
        return 1
    return 0


def _listen_error(exc: OSError, addresses: dict[str, tuple[str, int]]) -> str:
    """One line for a failed listen: the flag and address it was for, and the OS's reason."""
    import re

    text = str(exc)
    reason = exc.strerror or text
    found = re.search(r"\('([^']*)', (\d+)", text)
    if found is not None:
        reason = text.rpartition("): ")[2] or reason
        port = int(found.group(2))
        for flag, (host, wanted) in addresses.items():
            if wanted == port:
                return f"{flag} {host}:{port}: {reason}"
        return f"cannot listen on {found.group(1)}:{port}: {reason}"
    return f"cannot listen: {reason}"


def _kube_options(args: argparse.Namespace) -> KubeOptions | None:
    """KubeOptions when Kubernetes sources are on (--kubeconfig, or in a pod with no --config-dir), else None.
    Raises ValueError with a one-line message for a bad flag or PILOT_* value."""
    from pilot.sources.kube.client import in_cluster
    from pilot.sources.kube.leader import LeaseTiming
    from pilot.sources.kube.selectors import SelectorError, load_selectors
    from pilot.sources.kube.source import KubeOptions

    kubeconfig = Path(args.kubeconfig) if args.kubeconfig is not None else None
    if kubeconfig is not None and not kubeconfig.is_file():
        raise ValueError(f"--kubeconfig {kubeconfig}: not a file")
    if kubeconfig is None and (args.config_dir is not None or not in_cluster()):
        if args.discovery_selectors is not None:
            raise ValueError("--discovery-selectors needs Kubernetes sources (--kubeconfig, or in-cluster)")
        return None
    options = KubeOptions(
        kubeconfig=kubeconfig,
        enable_status=settings.BY_NAME["PILOT_ENABLE_STATUS"].read(os.environ),
    )
    if args.discovery_selectors is not None:
        try:
            options = dataclasses.replace(options, selectors=load_selectors(Path(args.discovery_selectors)))
        except SelectorError as exc:
            raise ValueError(f"--discovery-selectors {exc}") from exc
    if os.environ.get("PILOT_LEADER_LEASE_DURATION", "").strip():
        lease = settings.BY_NAME["PILOT_LEADER_LEASE_DURATION"].read(os.environ)
        options = dataclasses.replace(options, lease=LeaseTiming.scaled(lease))
    return options


def _bootstrap(args: argparse.Namespace) -> int:
    from pilot.bootstrap import build_bootstrap, build_grpc_bootstrap, render_bootstrap, render_grpc_bootstrap
    from pilot.model.proxy import ProxyIdError
    from pilot.server import split_addr

    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"pilot bootstrap: --label {item!r}: expected key=value", file=sys.stderr)
            return 2
        labels[key] = value
    if args.grpc and args.sds_socket is not None:
        print("pilot bootstrap: --sds-socket is for Envoy; gRPC clients take no SDS cluster", file=sys.stderr)
        return 2
    if args.grpc and args.xds_api != "ads":
        print(f"pilot bootstrap: --grpc clients speak ADS only, not --xds-api {args.xds_api}", file=sys.stderr)
        return 2
    if args.xds_addr is None and args.xds_api != "rest":
        print(f"pilot bootstrap: --xds-addr is required with --xds-api {args.xds_api}", file=sys.stderr)
        return 2
    if args.grpc and args.xds_tls:
        print("pilot bootstrap: --xds-tls is for Envoy; gRPC clients reach pilot in plaintext", file=sys.stderr)
        return 2
    certificates = None
    if args.grpc and (args.cert or args.key or args.ca):
        if not (args.cert and args.key and args.ca):
            print(
                "pilot bootstrap: --grpc takes --cert FILE --key FILE --ca FILE together (the workload certificate "
                "for mesh mTLS; the xDS channel stays plaintext)",
                file=sys.stderr,
            )
            return 2
        certificates = (Path(args.cert), Path(args.key), Path(args.ca))
    xds_tls = None
    if not args.grpc and (args.xds_tls or args.cert or args.key or args.ca):
        from pilot.security.envoytls import XdsClientTls

        if not (args.xds_tls and args.cert and args.key and args.ca) or args.grpc or args.xds_api == "rest":
            print(
                "pilot bootstrap: TLS xDS (Envoy over gRPC) takes --xds-tls --cert FILE --key FILE --ca FILE together",
                file=sys.stderr,
            )
            return 2
        xds_tls = XdsClientTls(Path(args.cert), Path(args.key), Path(args.ca), args.xds_sni or "").resolved()
    host, port = split_addr(args.xds_addr or "127.0.0.1:15010", 15010)
    rest_host, rest_port = split_addr(args.rest_addr, 15014)
    try:
        if args.grpc:
            text = render_grpc_bootstrap(
                build_grpc_bootstrap(
                    args.node_id, host, port, labels=labels, namespace=args.namespace, certificates=certificates
                )
            )
        else:
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
                sds_socket=args.sds_socket,
                xds_tls=xds_tls,
            )
            text = render_bootstrap(config)
    except ProxyIdError as exc:
        print(f"pilot bootstrap: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
        return 0
    output = Path(args.output)
    staging = output.with_name(f".{output.name}.tmp")
    try:
        staging.write_text(text)
        staging.replace(output)  # readers (gRPC reads GRPC_XDS_BOOTSTRAP at start) never see half a file
    except OSError as exc:
        print(f"pilot bootstrap: --output {output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def _loadtest(args: argparse.Namespace) -> int:
    from pilot.loadtest.cli import main as loadtest_main

    return loadtest_main(args.loadtest_args)


def build_parser() -> argparse.ArgumentParser:
    from pilot.version import version

    parser = argparse.ArgumentParser(prog="pilot", description="Istio-compatible xDS control plane")
    parser.add_argument("--version", action="version", version=f"pilot {version()}")
    _add_log_flags(parser, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="serve xDS for Istio and Kubernetes config from a directory and/or a cluster",
        epilog=settings.help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_log_flags(serve, argparse.SUPPRESS)
    serve.add_argument("--config-dir", help="directory watched recursively for *.yaml / *.yml")
    serve.add_argument(
        "--kubeconfig",
        help="watch this cluster (Services, Pods, EndpointSlices, Istio config); in a pod with no --config-dir "
        "the service account is used without this flag",
    )
    serve.add_argument(
        "--discovery-selectors",
        metavar="FILE",
        help="YAML list of namespace label selectors (or a mesh config with discoverySelectors:); objects of "
        "namespaces none matches are ignored",
    )
    serve.add_argument(
        "--grpc-addr",
        default="0.0.0.0:15010",
        help="plaintext xDS gRPC listen address (default %(default)s); '' turns it off (then --tls-cert is needed)",
    )
    serve.add_argument(
        "--monitoring-addr", default="0.0.0.0:15014", help="/ready, /metrics and /debug address (default %(default)s)"
    )
    serve.add_argument("--domain-suffix", default="cluster.local", help="DNS domain suffix (default %(default)s)")
    serve.add_argument(
        "--webhook-addr", default="0.0.0.0:15017", help="validation webhook HTTPS address (default %(default)s)"
    )
    serve.add_argument(
        "--webhook-cert", help="PEM certificate (chain) of the validation webhook; without it the webhook is off"
    )
    serve.add_argument("--webhook-key", help="PEM private key of --webhook-cert")
    from pilot.security import options as security_options

    security_options.add_flags(serve)  # --secure-grpc-addr, --tls-cert/--tls-key/--ca-cert, --jwt-*, ...
    serve.add_argument(
        "--workers", type=int, default=1, help="processes sharing the xDS port (SO_REUSEPORT); default 1: one process"
    )
    # Set by the --workers supervisor on the processes it starts (pilot/workers/), not by users.
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-socket", help=argparse.SUPPRESS)
    serve.set_defaults(func=_serve)

    from pilot.bootstrap import XDS_APIS

    boot = sub.add_parser(
        "bootstrap", help="print an Envoy bootstrap (YAML) for a proxy, or with --grpc a gRPC xDS bootstrap (JSON)"
    )
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
    boot.add_argument(
        "--sds-socket",
        metavar="PATH",
        help="add Istio's sds-grpc cluster on this unix socket (the node agent's SDS server, e.g. "
        "/var/run/secrets/workload-spiffe-uds/socket): mesh mTLS takes the workload certificates from it",
    )
    boot.add_argument(
        "--grpc",
        action="store_true",
        help="a GRPC_XDS_BOOTSTRAP file for a proxyless gRPC client (node metadata GENERATOR: grpc) instead",
    )
    boot.add_argument(
        "--xds-tls",
        action="store_true",
        help="reach pilot's TLS xDS port (15012) with the client certificate --cert/--key, trusting --ca",
    )
    boot.add_argument(
        "--cert",
        metavar="FILE",
        help="the proxy's certificate (PEM, SPIFFE URI SAN): for --xds-tls, or with --grpc for mesh mTLS",
    )
    boot.add_argument("--key", metavar="FILE", help="private key of --cert")
    boot.add_argument(
        "--ca",
        metavar="FILE",
        help="root (PEM) of pilot's serving certificate for --xds-tls; with --grpc, the mesh root",
    )
    boot.add_argument("--xds-sni", metavar="NAME", help="TLS server name to send with --xds-tls (optional)")
    boot.add_argument("--output", "-o", help="write to this file (atomically) instead of standard output")
    boot.set_defaults(func=_bootstrap)

    from pilot.tools.commands import add_commands

    add_commands(sub)  # validate, analyze, proxy-status, proxy-config, version, demo

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


def _add_log_flags(parser: argparse.ArgumentParser, default: object) -> None:
    """The logging flags, accepted before the command and after ``serve`` (as istiod takes them)."""
    parser.add_argument(
        "--log-level",
        default=default,
        metavar="LEVEL",
        help="level of the default scope (debug, info, warn, error, none), or scope:level,... as --log_output_level",
    )
    parser.add_argument(
        "--log_output_level",
        default=default,
        metavar="SCOPE:LEVEL,...",
        help=f"istiod's per-scope levels, e.g. ads:debug,model:info; all:LEVEL sets every scope (default "
        f"{log.DEFAULT_LEVELS}; scopes: {', '.join(sorted(log.SCOPES))})",
    )
    parser.add_argument(
        "--log_as_json", action="store_true", default=default, help="JSON log lines (time, level, scope, msg)"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = log.options_from(
            getattr(args, "log_level", None),
            getattr(args, "log_output_level", None),
            getattr(args, "log_as_json", None),
        )
    except log.LogConfigError as exc:
        print(f"pilot: {exc}", file=sys.stderr)
        return 2
    log.configure(options)
    if args.command == "serve":
        log.export(options)  # processes it starts (--workers) log the same way
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
