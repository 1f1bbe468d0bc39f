"""``pilot proxy-config clusters|listeners|routes|endpoints|secrets PROXY``: istioctl's tables of one proxy's
config, as pilot would send it (its /debug/config_dump), or from an Envoy config dump (``--file``).

Columns, filters (``--fqdn``, ``--port``, ``--subset``, ``--direction``, ``--address``, ``--type``, ``--name``,
``--cluster``, ``--status``) and sort orders are istioctl's (istioctl/pkg/writer/envoy/configdump);
``-o json|yaml`` prints the (filtered) resources themselves. ``secrets`` from pilot lists the SDS secrets the
proxy's config refers to (certificates come from the node agent, never from pilot); from an Envoy dump it lists
the secrets Envoy holds with their certificate details.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from google.protobuf.message import Message

from pilot.tools import common, render
from pilot.tools.configdump import Dump, parse, to_dict, warn_problems

HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
BLACKHOLE = b"BlackHoleCluster"
PASSTHROUGH = "PassthroughCluster"
OUTPUT_FORMATS = ("short", "json", "yaml")

PLAINTEXT_HTTP_ALPNS = ["http/1.0", "http/1.1", "h2c"]
PROTOCOL_DESCRIPTIONS = {
    "App: HTTP TLS": ["http/1.0", "http/1.1", "h2c", "istio-http/1.0", "istio-http/1.1", "istio-h2"],
    "App: Istio HTTP Plain": ["istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"],
    "App: TCP TLS": ["istio-peer-exchange", "istio"],
    "App: HTTP": PLAINTEXT_HTTP_ALPNS,
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "proxy-config",
        aliases=["pc"],
        help="one proxy's clusters, listeners, routes, endpoints or secrets, as pilot would send them",
    )
    kinds = parser.add_subparsers(dest="resource", required=True)
    for name, aliases, what, filters in (
        ("clusters", ["cluster", "c"], "clusters", _cluster_flags),
        ("listeners", ["listener", "l"], "listeners", _listener_flags),
        ("routes", ["route", "r"], "route configurations", _route_flags),
        ("endpoints", ["endpoint", "ep"], "endpoints", _endpoint_flags),
        ("secrets", ["secret", "s"], "SDS secrets", lambda p: None),
    ):
        command = kinds.add_parser(name, aliases=aliases, help=f"the proxy's {what}")
        command.add_argument("proxy", metavar="PROXY", nargs="?", help="pod.namespace (or node id) of the proxy")
        command.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="short", help="default %(default)s")
        command.add_argument(
            "-f", "--file", help="read an Envoy config dump JSON file (admin /config_dump) instead of asking pilot"
        )
        filters(command)
        common.add_pilot_flags(command)
        command.set_defaults(func=common.guarded("proxy-config", run), kind=name)


def _cluster_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fqdn", default="", help="filter clusters by substring of Service FQDN field")
    parser.add_argument("--direction", default="", help="filter clusters by Direction field")
    parser.add_argument("--subset", default="", help="filter clusters by substring of Subset field")
    parser.add_argument("--port", type=int, default=0, help="filter clusters by Port field")


def _listener_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default="", help="filter listeners by address field")
    parser.add_argument("--type", default="", help="filter listeners by type field (HTTP, TCP, HTTP+TCP)")
    parser.add_argument("--port", type=int, default=0, help="filter listeners by Port field")
    parser.add_argument(
        "--verbose", action=argparse.BooleanOptionalAction, default=True, help="one row per filter chain"
    )


def _route_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="", help="filter routes by route name field")
    parser.add_argument(
        "--verbose", action=argparse.BooleanOptionalAction, default=True, help="one row per route (virtual host match)"
    )


def _endpoint_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default="", help="filter endpoints by address field")
    parser.add_argument("--port", type=int, default=0, help="filter endpoints by Port field")
    parser.add_argument("--cluster", default="", help="filter endpoints by cluster name field")
    parser.add_argument("--status", default="", help="filter endpoints by status field")


def load_dump(args: argparse.Namespace) -> Dump:
    if args.file:
        raw = common.read_json_file(args.file)
    else:
        if not args.proxy:
            raise common.ToolError("give the proxy (pod.namespace), or --file with an Envoy config dump")
        raw = common.get_json(
            args.pilot_addr, "/debug/config_dump", {"proxyID": args.proxy, "include_eds": "true"}, timeout=args.timeout
        )
    dump = parse(raw, include_static=bool(args.file))
    warn_problems(dump)
    return dump


def run(args: argparse.Namespace) -> int:
    dump = load_dump(args)
    writer = WRITERS[args.kind]
    resources, headers, rows, padding = writer(dump, args)
    if args.output == "short":
        render.table(headers, rows, padding=padding)
    else:
        print(common.dump_structured([_as_dict(r) for r in resources], args.output))
    return 0


def _as_dict(resource: Any) -> Any:
    return to_dict(resource) if isinstance(resource, Message) else resource


# ----- clusters -----


def parse_subset_key(name: str) -> tuple[str, int, str, str] | None:
    """``outbound|9080|v1|reviews.default.svc.cluster.local`` -> (direction, port, subset, fqdn)."""
    parts = name.split("|")
    if len(parts) < 4:
        return None
    try:
        port = int(parts[1])
    except ValueError:
        port = 0
    return parts[0], port, parts[2], parts[3]


def _cluster_matches(name: str, args: argparse.Namespace) -> bool:
    if args.fqdn and args.fqdn not in name:
        return False
    if args.direction and args.direction not in name:
        return False
    if args.subset and args.subset not in name:
        return False
    return not args.port or f"|{args.port}|" in name


def clusters(dump: Dump, args: argparse.Namespace) -> tuple[list[Any], list[str], list[list[str]], int]:
    from envoy.config.cluster.v3 import cluster_pb2

    def sort_key(cluster: Any) -> tuple[str, str, int, str]:
        parsed = parse_subset_key(cluster.name)
        if parsed is None:
            return cluster.name, "", 0, ""
        direction, port, subset, fqdn = parsed
        return fqdn, subset, port, direction

    chosen = sorted((c for c in dump.clusters if _cluster_matches(c.name, args)), key=sort_key)
    rows = []
    for cluster in chosen:
        kind = cluster_pb2.Cluster.DiscoveryType.Name(cluster.type)
        rule = describe_management(cluster.metadata)
        parsed = parse_subset_key(cluster.name)
        if parsed is None:
            rows.append([cluster.name, "-", "-", "-", kind, rule])
        else:
            direction, port, subset, fqdn = parsed
            rows.append([fqdn, str(port), subset or "-", direction, kind, rule])
    headers = ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"]
    return chosen, headers, rows, 5


def describe_management(metadata: Any) -> str:
    """istioctl's describeManagement: ``name.namespace`` of the Istio config behind a resource."""
    if metadata is None or "istio" not in metadata.filter_metadata:
        return ""
    config = metadata.filter_metadata["istio"].fields.get("config")
    if config is None:
        return ""
    path = config.string_value
    if path.startswith("/apis/networking.istio.io/"):
        pieces = path.split("/")
        return f"{pieces[7]}.{pieces[5]}" if len(pieces) == 8 else ""
    return "<unknown>"


# ----- listeners -----


def _filter_chains(listener: Any) -> list[Any]:
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    return chains


def listener_type(listener: Any) -> str:
    http = tcp = 0
    for chain in _filter_chains(listener):
        for network_filter in chain.filters:
            if network_filter.name == HCM:
                http += 1
            elif network_filter.name == TCP_PROXY and BLACKHOLE not in network_filter.typed_config.value:
                tcp += 1
    if http:
        return "HTTP" if not tcp else "HTTP+TCP"
    return "TCP" if tcp else "UNKNOWN"


def listener_address(listener: Any) -> str:
    address = listener.address
    if address.HasField("socket_address"):
        return address.socket_address.address
    if address.HasField("pipe"):
        return address.pipe.path
    return ""


def listener_port(listener: Any) -> int:
    return listener.address.socket_address.port_value if listener.address.HasField("socket_address") else 0


def _additional_addresses(listener: Any) -> list[str]:
    return [a.address.socket_address.address for a in listener.additional_addresses]


def describe_chain_match(match: Any) -> str:
    """istioctl's getMatches: SNI, transport, application protocols, destination addresses and port."""
    descriptions = []
    if match is None:
        return "ALL"
    if match.server_names:
        descriptions.append("SNI: " + ",".join(match.server_names))
    if match.transport_protocol:
        descriptions.append(f"Trans: {match.transport_protocol}")
    if match.application_protocols:
        protocols = list(match.application_protocols)
        named = next((name for name, alpns in PROTOCOL_DESCRIPTIONS.items() if alpns == protocols), None)
        descriptions.append(named or "App: " + ",".join(protocols))
    port = f":{match.destination_port.value}" if match.HasField("destination_port") else ""
    if match.prefix_ranges:
        ranges = ",".join(f"{r.address_prefix}/{r.prefix_len.value}" for r in match.prefix_ranges)
        descriptions.append(f"Addr: {ranges}{port}")
    elif port:
        descriptions.append(f"Addr: *{port}")
    return "; ".join(descriptions) or "ALL"


def describe_destination(filters: Iterable[Any]) -> str:
    """istioctl's getFilterType: where a filter chain sends traffic."""
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
    from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

    for network_filter in filters:
        if network_filter.name == HCM:
            manager = hcm_pb2.HttpConnectionManager()
            network_filter.typed_config.Unpack(manager)
            if manager.HasField("route_config"):
                return describe_route_config(manager.route_config)
            if manager.rds.route_config_name:
                return f"Route: {manager.rds.route_config_name}"
            return "HTTP"
        if network_filter.name == TCP_PROXY and BLACKHOLE not in network_filter.typed_config.value:
            proxy = tcp_proxy_pb2.TcpProxy()
            network_filter.typed_config.Unpack(proxy)
            cluster = proxy.cluster
            return cluster if "Cluster" in cluster else f"Cluster: {cluster}"
    return "Non-HTTP/Non-TCP"


def describe_route_config(route_config: Any) -> str:
    cluster = _match_all_cluster(route_config)
    if cluster:
        return cluster
    hosts = []
    for vhost in route_config.virtual_hosts:
        domains = "" if list(vhost.domains) == ["*"] else "/".join(vhost.domains)
        routes = ", ".join(describe_match(r.match) for r in vhost.routes)
        hosts.append(routes if not domains else f"{domains} {routes}")
    return "Inline Route: " + "; ".join(hosts)


def _match_all_cluster(route_config: Any) -> str:
    if len(route_config.virtual_hosts) != 1:
        return ""
    vhost = route_config.virtual_hosts[0]
    if list(vhost.domains) != ["*"] or len(vhost.routes) != 1:
        return ""
    route = vhost.routes[0]
    if route.match.prefix != "/" or not route.HasField("route") or not route.route.cluster:
        return ""
    cluster = route.route.cluster
    return cluster if "Cluster" in cluster else f"Cluster: {cluster}"


def _listener_matches(listener: Any, args: argparse.Namespace) -> bool:
    if args.address:
        addresses = [listener_address(listener), *_additional_addresses(listener)]
        if not any(a.lower() == args.address.lower() for a in addresses):
            return False
    if args.port and listener_port(listener) != args.port:
        return False
    return not args.type or listener_type(listener).lower() == args.type.lower()


def listeners(dump: Dump, args: argparse.Namespace) -> tuple[list[Any], list[str], list[list[str]], int]:
    chosen = [listener for listener in dump.listeners if _listener_matches(listener, args)]
    chosen.sort(key=lambda item: (listener_port(item), listener_address(item), listener_type(item)))
    rows = []
    for listener in chosen:
        addresses = ",".join([listener_address(listener), *_additional_addresses(listener)])
        port = str(listener_port(listener))
        if args.verbose:
            chains = [
                (
                    describe_chain_match(c.filter_chain_match if c.HasField("filter_chain_match") else None),
                    describe_destination(c.filters),
                )
                for c in _filter_chains(listener)
            ]
            chains.sort(key=lambda pair: pair[1], reverse=True)
            rows += [[addresses, port, match, destination] for match, destination in chains]
        else:
            rows.append([addresses, port, listener_type(listener)])
    headers = ["ADDRESSES", "PORT", "MATCH", "DESTINATION"] if args.verbose else ["ADDRESSES", "PORT", "TYPE"]
    return chosen, headers, rows, 1


# ----- routes -----


def describe_match(match: Any) -> str:
    conditions = []
    if match.prefix:
        conditions.append(f"{match.prefix}*")
    if match.path_separated_prefix:
        conditions.append(f"PathPrefix:{match.path_separated_prefix}")
    if match.path:
        conditions.append(match.path)
    if match.HasField("safe_regex"):
        conditions.append(f"regex {match.safe_regex.regex}")
    return " ".join(conditions)


def describe_route_domains(domains: Sequence[str]) -> str:
    """istioctl: one domain as is, else the shortest non-port forms, at most two and a count of the rest."""
    if not domains:
        return ""
    if len(domains) == 1:
        return domains[0]
    without_port = [d for d in domains if ":" not in d or (d.count(":") > 2 and d.endswith("]"))]
    unique = set(without_port)
    dropped = set()
    for domain in without_port:
        for suffix in (".svc.cluster.local", ".svc"):
            stripped = domain.removesuffix(suffix)
            if stripped != domain and stripped in unique:
                dropped.add(domain)
    kept = [d for d in without_port if d not in dropped]
    if len(kept) > 2:
        return f"{', '.join(kept[:2])} + {len(kept) - 2} more..."
    return ", ".join(kept)


def _is_passthrough(route: Any) -> bool:
    return route.HasField("route") and route.route.cluster == PASSTHROUGH


def routes(dump: Dump, args: argparse.Namespace) -> tuple[list[Any], list[str], list[list[str]], int]:
    chosen = [r for r in dump.routes if not args.name or r.name == args.name]
    numeric = sorted((r for r in chosen if r.name.isdigit()), key=lambda r: int(r.name))
    chosen = numeric + [r for r in chosen if not r.name.isdigit()]
    rows = []
    for route_config in chosen:
        if not args.verbose:
            rows.append([route_config.name, str(len(route_config.virtual_hosts))])
            continue
        for vhost in route_config.virtual_hosts:
            domains = describe_route_domains(list(vhost.domains))
            for route in vhost.routes:
                if not _is_passthrough(route):
                    rows.append(
                        [
                            route_config.name,
                            vhost.name,
                            domains,
                            describe_match(route.match),
                            describe_management(route.metadata),
                        ]
                    )
            if not vhost.routes:
                rows.append([route_config.name, vhost.name, domains, "/*", "404"])
    headers = (
        ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"] if args.verbose else ["NAME", "VIRTUAL HOSTS"]
    )
    return chosen, headers, rows, 5


# ----- endpoints -----


def _endpoint_addresses(lb_endpoint: Any) -> list[str]:
    endpoint = lb_endpoint.endpoint
    out = []
    for address in [endpoint.address, *(a.address for a in endpoint.additional_addresses)]:
        if address.HasField("socket_address"):
            out.append(f"{address.socket_address.address}:{address.socket_address.port_value}")
        elif address.HasField("pipe"):
            out.append(address.pipe.path)
        else:
            out.append("unknown")
    return out


def _health_name(lb_endpoint: Any) -> str:
    from envoy.config.core.v3 import health_check_pb2

    return health_check_pb2.HealthStatus.Name(lb_endpoint.health_status)


def locality_text(locality: Any) -> str:
    parts = [locality.region, locality.zone, locality.sub_zone]
    while parts and not parts[-1]:
        parts.pop()
    return "/".join(parts)


def endpoints(dump: Dump, args: argparse.Namespace) -> tuple[list[Any], list[str], list[list[str]], int]:
    def wanted(lb_endpoint: Any, cluster: str) -> bool:
        if args.address and not any(a.lower() == args.address.lower() for a in _endpoint_addresses(lb_endpoint)):
            return False
        port = lb_endpoint.endpoint.address.socket_address.port_value
        if args.port and port != args.port:
            return False
        if args.cluster and cluster.lower() != args.cluster.lower():
            return False
        return not args.status or _health_name(lb_endpoint).lower() == args.status.lower()

    def sort_key(assignment: Any) -> tuple[str, str, int, str]:
        parsed = parse_subset_key(assignment.cluster_name)
        if parsed is None:
            return assignment.cluster_name, "", 0, ""
        direction, port, subset, fqdn = parsed
        return fqdn, subset, port, direction

    chosen = []
    rows = []
    for assignment in sorted(dump.endpoints, key=sort_key):
        found = False
        for group in assignment.endpoints:
            for lb_endpoint in group.lb_endpoints:
                if wanted(lb_endpoint, assignment.cluster_name):
                    found = True
                    rows.append(
                        [
                            ",".join(_endpoint_addresses(lb_endpoint)),
                            _health_name(lb_endpoint),
                            locality_text(group.locality),
                            assignment.cluster_name,
                        ]
                    )
        if found:
            chosen.append(assignment)
    return chosen, ["NAME", "STATUS", "LOCALITY", "CLUSTER"], rows, 5


# ----- secrets -----


def referenced_secrets(dump: Dump) -> list[tuple[str, str]]:
    """(name, TYPE) of the SDS secrets the dump's clusters and listeners refer to, in first-seen order."""
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    found: dict[str, str] = {}

    def note_context(common_context: Any) -> None:
        for config in common_context.tls_certificate_sds_secret_configs:
            found.setdefault(config.name, "Cert Chain")
        if common_context.HasField("validation_context_sds_secret_config"):
            found.setdefault(common_context.validation_context_sds_secret_config.name, "CA")
        if common_context.HasField("combined_validation_context"):
            combined = common_context.combined_validation_context
            if combined.HasField("validation_context_sds_secret_config"):
                found.setdefault(combined.validation_context_sds_secret_config.name, "CA")

    def note_socket(socket: Any) -> None:
        if not socket.HasField("typed_config"):
            return
        type_url = socket.typed_config.type_url
        if type_url.endswith("UpstreamTlsContext"):
            context: Any = tls_pb2.UpstreamTlsContext()
        elif type_url.endswith("DownstreamTlsContext"):
            context = tls_pb2.DownstreamTlsContext()
        else:
            return
        socket.typed_config.Unpack(context)
        note_context(context.common_tls_context)

    for cluster in dump.clusters:
        if cluster.HasField("transport_socket"):
            note_socket(cluster.transport_socket)
        for match in cluster.transport_socket_matches:
            note_socket(match.transport_socket)
    for listener in dump.listeners:
        for chain in _filter_chains(listener):
            if chain.HasField("transport_socket"):
                note_socket(chain.transport_socket)
    return list(found.items())


def secrets(dump: Dump, args: argparse.Namespace) -> tuple[list[Any], list[str], list[list[str]], int]:
    headers = ["RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"]
    rows = []
    items: list[Any] = []
    if dump.secrets:  # an Envoy dump: what it holds
        for secret in dump.secrets:
            kind, valid, serial, not_after, not_before = _certificate_details(secret.message)
            rows.append([secret.name, kind, secret.state, valid, serial, not_after, not_before])
            items.append(secret.message if secret.message is not None else {"name": secret.name})
    else:  # pilot's view: what the config refers to; the node agent serves them over SDS
        for name, kind in referenced_secrets(dump):
            rows.append([name, kind, "SDS (node agent)", "", "", "", ""])
            items.append({"name": name, "type": kind, "source": "SDS (node agent)"})
    return items, headers, rows, 5


def _certificate_details(secret: Any) -> tuple[str, str, str, str, str]:
    """(TYPE, VALID CERT, SERIAL NUMBER, NOT AFTER, NOT BEFORE) of an inline certificate, when readable."""
    if secret is None:
        return "", "false", "", "", ""
    if secret.HasField("tls_certificate"):
        kind, data = "Cert Chain", secret.tls_certificate.certificate_chain.inline_bytes
    elif secret.HasField("validation_context"):
        kind, data = "CA", secret.validation_context.trusted_ca.inline_bytes
    else:
        return "", "false", "", "", ""
    try:
        from cryptography import x509  # optional: certificate details only when cryptography is installed
    except ImportError:
        return kind, "", "", "", ""
    try:
        certificate = x509.load_pem_x509_certificates(data)[0]
    except (ValueError, IndexError):
        return kind, "false", "", "", ""
    after, before = certificate.not_valid_after_utc, certificate.not_valid_before_utc
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    valid = "true" if before <= now <= after else "false"
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return kind, valid, format(certificate.serial_number, "x"), after.strftime(fmt), before.strftime(fmt)


WRITERS: dict[str, Callable[[Dump, argparse.Namespace], tuple[list[Any], list[str], list[list[str]], int]]] = {
    "clusters": clusters,
    "listeners": listeners,
    "routes": routes,
    "endpoints": endpoints,
    "secrets": secrets,
}
