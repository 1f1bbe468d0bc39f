"""RDS: route configurations for sidecar outbound HTTP listeners and Gateway HTTP servers.

Route names and what they produce:

- sidecars ask for ``"<port>"`` (``names.sidecar_route_name``): one virtual host per visible HTTP service
  on that port (``host:port``; domains FQDN, the short Kubernetes forms, VIPs, each with and without
  ``:port``), with the routes of the mesh-bound VirtualService that claims the service, else a ``default``
  route to ``outbound|<port>||<host>``; then the catch-all ``allow_any`` (PassthroughCluster) or, when the
  Sidecar's outboundTrafficPolicy is REGISTRY_ONLY, ``block_all`` (502). ``"<host>:<port>"`` (Istio's
  sniffed-port form) returns only the virtual hosts having that domain, without the catch-all.
- routers ask for ``http.<port>[.<bind>]`` (``names.gateway_http_route_name``), and
  ``https.<port>.<portName>.<gateway>.<ns>[.<bind>]`` for terminating HTTPS servers: one virtual host per
  host shared by a server and a VirtualService bound to its Gateway (routes of several VirtualServices for
  one host are concatenated, catch-all routes last), or ``blackhole:<port>`` answering 404 when nothing binds.
  The servers behind a name are those the merged Gateways keep (``pilot.push.gateways``: rejected servers add
  nothing).

VirtualService HTTP routes are translated as Istio's ``TranslateRoute`` does (match, destinations and
weights, timeout, retries, fault, CORS, header operations, rewrite, redirect, direct response, mirrors,
consistent-hash policies from DestinationRules). Per-route filter configs use the HCM filter names in
``pilot.xds.names`` (fault, CORS). Output is deterministic: maps are walked in sorted key order and virtual
hosts are sorted by name.

Delegate VirtualServices arrive here already merged into their roots (``PushContext.virtual_services``).
Several VirtualServices for one host come in istiod's order (``visibility_order``): on a sidecar the first
one's virtual host wins and the others are reported in push_status (``pilot_vservice_dup_domain``); on a
gateway their routes are concatenated, catch-all routes last.

Not supported: JWT-claim header matches (``@request.auth.claims.*``; such matchers are dropped), exponential
delays and HTTP/2-error aborts (as in Istio), EnvoyFilter patches.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol as TypingProtocol

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, struct_pb2, wrappers_pb2

from pilot.api.istio.networking.v1alpha3 import (
    CorsPolicy,
    Destination,
    Headers,
    HttpDirectResponse,
    HttpFaultInjection,
    HttpMatchRequest,
    HttpRedirect,
    HttpRedirectRedirectPortSelection,
    HttpRetry,
    HttpRoute,
    HttpRouteDestination,
    LoadBalancerSettingsConsistentHashLb,
    OutboundTrafficPolicyMode,
    Percent,
    StringMatch,
    TrafficPolicyPortTrafficPolicy,
)
from pilot.model.config import SERVICE_KIND, Config, ConfigKey
from pilot.model.host import MESH_GATEWAY, resolve_gateway_name, resolve_short_name, subset_of
from pilot.model.proxy import Proxy
from pilot.model.service import Service
from pilot.push.context import BoundVirtualService, EgressListener, PushContext, exported_to
from pilot.push.scope import ProxyScope
from pilot.xds import names
from pilot.xds.resource import Resource, length_field
from pilot.xds.units import Unit

log = logging.getLogger(__name__)

_ROUTE_CONFIG_VHOSTS = 2  # RouteConfiguration.virtual_hosts
_VHOST_ROUTES = 3  # VirtualHost.routes
ROUTE_CONFIGURATION_TYPE = "type.googleapis.com/" + route_pb2.RouteConfiguration.DESCRIPTOR.full_name

DEFAULT_ROUTE_NAME = "default"
DUPLICATED_DOMAINS = "pilot_vservice_dup_domain"  # istiod's push_status map of virtual hosts dropped as duplicates
BLACKHOLE_VHOST = "blackhole"
# Istio's DefaultMaxDirectResponseBodySizeBytes; Envoy's own default (4 KiB) is too small for real bodies.
MAX_DIRECT_RESPONSE_BODY_BYTES = 1024 * 1024
ISTIO_METADATA_KEY = "istio"
VIRTUAL_SERVICE_CONFIG_PATH = "/apis/networking.istio.io/v1/namespaces/{ns}/virtual-service/{name}"

PREVIOUS_HOSTS_PREDICATE = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRY_ATTEMPTS = 2
DEFAULT_RETRIABLE_STATUS_CODES = (503,)
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5

_REDIRECT_CODES: Mapping[int, int] = {
    0: rc.RedirectAction.MOVED_PERMANENTLY,
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}

# gRPC status names Istio accepts in fault.abort.grpcStatus.
_GRPC_STATUS: Mapping[str, int] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}

# HTTP status codes Go's http.StatusText knows; Istio treats other numbers in retryOn as policy names.
_HTTP_STATUS_CODES = frozenset(
    (
        *(100, 101, 102, 103),
        *(200, 201, 202, 203, 204, 205, 206, 207, 208, 226),
        *(300, 301, 302, 303, 304, 305, 307, 308),
        *range(400, 419),
        *(421, 422, 423, 424, 425, 426, 428, 429, 431, 451),
        *range(500, 509),
        *(510, 511),
    )
)

_CLAIM_HEADER_PREFIX = "@request.auth.claims."


# ---------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------


def build_routes(
    proxy: Proxy, push: PushContext, route_names: Iterable[str], parts: RouteParts | None = None
) -> list[route_pb2.RouteConfiguration]:
    """RouteConfigurations for the requested names, in name order; names that cannot be built are omitted."""
    return [
        route_pb2.RouteConfiguration.FromString(encoded) if isinstance(encoded, bytes) else encoded
        for encoded in (build_route(proxy, push, name, parts) for name in sorted(set(route_names)))
        if encoded is not None
    ]


def build_route(
    proxy: Proxy, push: PushContext, name: str, parts: RouteParts | None = None
) -> route_pb2.RouteConfiguration | bytes | None:
    """One RouteConfiguration: a message for gateways, already encoded bytes for sidecars (assembled from
    cached encoded routes, see RouteParts), or None when the name cannot be built."""
    if proxy.is_router:
        return _gateway_route_config(proxy, push, name)
    return _sidecar_route_config(proxy, push, name, parts or _BUILD_EVERY_TIME)


class RouteParts(TypingProtocol):
    """Encoded route lists shared between route configurations (an XdsCache view): a VirtualService's routes
    for one port and proxy class, a service's default route. ``build`` runs only on a miss."""

    def get_or_build(self, key: Hashable, deps: Collection[ConfigKey], build: Callable[[], bytes]) -> bytes: ...


class _BuildEveryTime:
    def get_or_build(self, key: Hashable, deps: Collection[ConfigKey], build: Callable[[], bytes]) -> bytes:
        return build()


_BUILD_EVERY_TIME = _BuildEveryTime()


def _route_configuration(name: str, vhosts: Sequence[rc.VirtualHost]) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=vhosts,
        validate_clusters=wrappers_pb2.BoolValue(value=False),
        max_direct_response_body_size_bytes=wrappers_pb2.UInt32Value(value=MAX_DIRECT_RESPONSE_BODY_BYTES),
    )


# ---------------------------------------------------------------------------------------------------------
# Sidecars
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _VhostWrapper:
    """Istio's VirtualHostWrapper: routes shared by some services and VirtualService-only hosts on a port."""

    port: int
    services: list[Service]
    vs_hosts: list[str]
    routes: bytes  # encoded VirtualHost.routes fields


@dataclass
class _DomainDedupe:
    """Domains already used in one RouteConfiguration (Envoy rejects a domain in two virtual hosts)."""

    used: set[str] = field(default_factory=set)
    vhost_names: set[str] = field(default_factory=set)
    known_fqdns: set[str] = field(default_factory=set)


def _sidecar_route_config(proxy: Proxy, push: PushContext, name: str, parts: RouteParts) -> bytes | None:
    sniffed_host = ""
    port_text = name
    if ":" in name:
        sniffed_host, _, port_text = name.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        return None
    if port <= 0 or port > 65535:
        return None
    scope = push.sidecar_scope(proxy)
    egress = _egress_for_port(scope.egress, port)
    if egress is None:
        return None
    vhosts = _sidecar_virtual_hosts(proxy, push, egress, port, parts)
    if sniffed_host:
        matching = [vh for vh in vhosts if name in vh.domains]
        vhosts = matching or vhosts
    vhosts.sort(key=lambda vh: vh.name)
    encoded = [vh.encoded for vh in vhosts]
    if not sniffed_host:
        encoded.append(_catch_all_vhost(scope.sidecar).SerializeToString())
    # Protobuf messages are concatenations of fields: the configuration's own fields, then each vhost.
    head = _route_configuration(name, ()).SerializeToString()
    return head + b"".join(length_field(_ROUTE_CONFIG_VHOSTS, vhost) for vhost in encoded)


def sidecar_virtual_hosts(proxy: Proxy, push: PushContext, port: int, parts: RouteParts) -> list[rc.VirtualHost]:
    """The service virtual hosts of a sidecar's route configuration ``"<port>"`` (no catch-all), by name;
    for generators that serve some of them on their own (pilot.xds.grpcgen_rds)."""
    egress = _egress_for_port(push.sidecar_scope(proxy).egress, port)
    if egress is None:
        return []
    vhosts = sorted(_sidecar_virtual_hosts(proxy, push, egress, port, parts), key=lambda vh: vh.name)
    return [rc.VirtualHost.FromString(vh.encoded) for vh in vhosts]


def _egress_for_port(listeners: Sequence[EgressListener], port: int) -> EgressListener | None:
    """Istio's GetEgressListenerForRDS: the first listener on this port, or the first catch-all one."""
    for egress in listeners:
        if egress.port is None or egress.port.number == port:
            return egress
    return None


def allow_any(sidecar: Config | None) -> bool:
    policy = getattr(sidecar.spec, "outbound_traffic_policy", None) if sidecar is not None else None
    if policy is None:
        return True  # mesh default: ALLOW_ANY
    return policy.mode == OutboundTrafficPolicyMode.ALLOW_ANY


def unknown_destination_cluster(sidecar: Config | None) -> str:
    """Where a sidecar sends traffic to destinations it does not know: PassthroughCluster (ALLOW_ANY), the
    Sidecar's egressProxy (``outbound|<port>|<subset>|<host>``, its host as written, as istiod), or
    BlackHoleCluster (REGISTRY_ONLY)."""
    if not allow_any(sidecar):
        return names.BLACKHOLE_CLUSTER
    policy = getattr(sidecar.spec, "outbound_traffic_policy", None) if sidecar is not None else None
    proxy_to = getattr(policy, "egress_proxy", None) if policy is not None else None
    if proxy_to is None or not proxy_to.host:
        return names.PASSTHROUGH_CLUSTER
    port = proxy_to.port.number if proxy_to.port is not None else 0
    return names.outbound_cluster(port, proxy_to.subset or "", proxy_to.host)


def _catch_all_vhost(sidecar: Config | None) -> rc.VirtualHost:
    match = rc.RouteMatch(prefix="/")
    if allow_any(sidecar):
        action = rc.RouteAction(
            cluster=unknown_destination_cluster(sidecar),
            timeout=_duration(datetime.timedelta(0)),
            max_grpc_timeout=_duration(datetime.timedelta(0)),
        )
        route = rc.Route(name=names.ALLOW_ANY_VHOST, match=match, route=action)
        vhost_name = names.ALLOW_ANY_VHOST
    else:
        route = rc.Route(name=names.BLOCK_ALL_VHOST, match=match, direct_response=rc.DirectResponseAction(status=502))
        vhost_name = names.BLOCK_ALL_VHOST
    return rc.VirtualHost(name=vhost_name, domains=["*"], routes=[route], include_request_attempt_count=True)


@dataclass(frozen=True)
class _EncodedVhost:
    name: str
    domains: tuple[str, ...]
    encoded: bytes  # the serialised VirtualHost


def _encode_routes(routes: Iterable[rc.Route]) -> bytes:
    """Routes as the ``routes`` fields of a VirtualHost."""
    return b"".join(length_field(_VHOST_ROUTES, route.SerializeToString()) for route in routes)


def _vs_parts_key(proxy: Proxy, push: PushContext, bound: BoundVirtualService, port: int) -> tuple[object, ...]:
    # What translation reads of the proxy: its namespace (DestinationRules for consistent hashing,
    # sourceNamespace) and, when some VirtualService routes by them, its labels.
    labels = tuple(sorted(proxy.labels.items())) if push.uses_source_labels else ()
    return ("rds-vs", bound.config.key, port, proxy.namespace, labels)


def _vs_parts_deps(push: PushContext, bound: BoundVirtualService) -> tuple[ConfigKey, ...]:
    """The VirtualService (and its delegates), and the services and DestinationRules of every host it routes or
    mirrors to."""
    spec = bound.config.spec
    hosts: set[str] = set()
    for http in spec.http or ():
        destinations = [rd.destination for rd in http.route or ()]
        destinations.append(http.mirror)
        destinations.extend(m.destination for m in http.mirrors or ())
        for dest in destinations:
            if dest is not None and dest.host:
                hosts.add(resolve_short_name(dest.host, bound.config.namespace, push.domain_suffix))
    deps: list[ConfigKey] = list(bound.keys)  # a root's merged routes change with its delegates
    for host in sorted(hosts):
        svc = push.service(host)
        if svc is not None:
            deps.append(ConfigKey(SERVICE_KIND, svc.namespace, host))
        for rule in push.destination_rules_for(host):
            deps.extend(rule.keys)
    return tuple(deps)


def _sidecar_virtual_hosts(
    proxy: Proxy, push: PushContext, egress: EgressListener, port: int, parts: RouteParts
) -> list[_EncodedVhost]:
    services = {svc.hostname: svc for svc in push.visible_services(proxy, egress) if svc.port_by_number(port)}
    virtual_services = visibility_order(push.sidecar_virtual_services(proxy, egress), proxy.namespace)
    owners = _service_owners(services, virtual_services)

    wrappers: list[_VhostWrapper] = []
    claimed: set[str] = set()
    for index, bound in enumerate(virtual_services):
        routes = parts.get_or_build(
            _vs_parts_key(proxy, push, bound, port),
            _vs_parts_deps(push, bound),
            lambda bound=bound: _encode_routes(  # type: ignore[misc]
                _virtual_service_routes(proxy, push, bound, port, frozenset({MESH_GATEWAY}), is_tls=False)
            ),
        )
        if not routes:
            continue
        in_vs, vs_hosts = _split_vs_hosts(bound, index, services, owners)
        http_services = [svc for svc in in_vs if _is_http_port(svc, port)]
        if not http_services and port != 80:
            # Istio only routes VirtualService hosts outside the registry on port 80.
            continue
        wrappers.append(_VhostWrapper(port, http_services, vs_hosts, routes))
        claimed.update(svc.hostname for svc in http_services)

    for hostname in sorted(services):
        svc = services[hostname]
        if hostname in claimed or not _is_http_port(svc, port):
            continue
        wrappers.append(_VhostWrapper(port, [svc], [], _default_route_encoded(proxy, push, svc, port, parts)))

    dedupe = _DomainDedupe()
    for wrapper in wrappers:
        for svc in wrapper.services:
            dedupe.known_fqdns.update((svc.hostname, names.vhost_name(svc.hostname, wrapper.port)))

    vhosts: list[_EncodedVhost] = []
    for wrapper in wrappers:
        for hostname in wrapper.vs_hosts:
            vhost = _sidecar_vhost(proxy, push, hostname, wrapper, None, dedupe)
            if vhost is not None:
                vhosts.append(vhost)
        for svc in wrapper.services:
            vhost = _sidecar_vhost(proxy, push, svc.hostname, wrapper, svc, dedupe)
            if vhost is not None:
                vhosts.append(vhost)
    return vhosts


def visibility_order(virtual_services: Sequence[BoundVirtualService], namespace: str) -> list[BoundVirtualService]:
    """The order in which istiod hands a proxy of ``namespace`` its VirtualServices (SelectVirtualServices for
    sidecars, VirtualServicesForGateway for routers): those of its own namespace exported only to namespaces
    by name, then those of other namespaces exported to it by name, then the public ones (exportTo unset or
    ``*``); key order (standing for creation time) within each. Which VirtualService wins a host on a sidecar,
    and the order of merged gateway routes, follow from it."""
    ranks = [_visibility_rank(vs.config, namespace) for vs in virtual_services]
    if len(set(ranks)) <= 1:
        return list(virtual_services)
    return [vs for _, _, vs in sorted(zip(ranks, range(len(ranks)), virtual_services, strict=True))]


def _visibility_rank(vs: Config, namespace: str) -> int:
    export_to = {vs.namespace if target == "." else target for target in vs.spec.export_to or ()}
    if not export_to or "*" in export_to:
        return 2
    return 0 if vs.namespace == namespace else 1


def _is_http_port(svc: Service, port: int) -> bool:
    svc_port = svc.port_by_number(port)
    return svc_port is not None and svc_port.protocol.is_http


def _service_owners(services: Mapping[str, Service], virtual_services: Sequence[BoundVirtualService]) -> dict[str, int]:
    """Which VirtualService (by index) claims each service: the first one naming the host exactly, else the
    one with the most specific matching wildcard host (Istio's mostSpecificWildcardVsIndex)."""
    exact: dict[str, int] = {}
    wildcard: dict[str, int] = {}
    for index, bound in enumerate(virtual_services):
        for h in bound.hosts:
            target = wildcard if h.startswith("*") else exact
            target.setdefault(h, index)
    owners: dict[str, int] = {}
    for hostname in sorted(services):
        if hostname in exact:
            owners[hostname] = exact[hostname]
            continue
        matching = [p for p in wildcard if subset_of(hostname, p)]
        if matching:
            best = max(matching, key=lambda p: (len(p), p))
            owners[hostname] = wildcard[best]
    return owners


def _split_vs_hosts(
    bound: BoundVirtualService, index: int, services: Mapping[str, Service], owners: Mapping[str, int]
) -> tuple[list[Service], list[str]]:
    """Istio's separateVSHostsAndServices: registry services this VirtualService routes, and its other hosts."""
    in_vs: list[Service] = []
    vs_hosts: list[str] = []
    seen: set[str] = set()
    for h in bound.hosts:
        if h.startswith("*"):
            continue
        if h in services:
            if h not in seen:
                in_vs.append(services[h])
                seen.add(h)
        else:
            vs_hosts.append(h)
    for h in bound.hosts:
        if not h.startswith("*"):
            continue
        found = False
        for hostname in sorted(services):
            if subset_of(hostname, h):
                found = True
                if owners.get(hostname) == index and hostname not in seen:
                    in_vs.append(services[hostname])
                    seen.add(hostname)
        if not found:
            vs_hosts.append(h)
    return in_vs, vs_hosts


def _sidecar_vhost(
    proxy: Proxy,
    push: PushContext,
    hostname: str,
    wrapper: _VhostWrapper,
    svc: Service | None,
    dedupe: _DomainDedupe,
) -> _EncodedVhost | None:
    vhost_name = names.vhost_name(hostname, wrapper.port)
    # istiod's BuildSidecarOutboundVirtualHosts: the first virtual host for a name wins; the others are counted.
    duplicate = f"duplicate domain from {'virtual service' if svc is None else 'service'}: {vhost_name}"
    if vhost_name in dedupe.vhost_names:
        log.debug("proxy %s: %s (dropped)", proxy.id, duplicate)
        push.add_status(DUPLICATED_DOMAINS, vhost_name, proxy.short_id, duplicate)
        return None
    dedupe.vhost_names.add(vhost_name)
    if svc is None:
        domains = _with_port(hostname, wrapper.port)
        alt_hosts: list[str] = []
    else:
        domains, alt_hosts = _service_domains(proxy, push, svc, wrapper.port)
    kept: list[str] = []
    for domain in domains:
        if domain in dedupe.used:
            continue
        # An expanded short name that is also some other service's real name stays with that service.
        if domain in alt_hosts and domain in dedupe.known_fqdns:
            continue
        kept.append(domain)
        dedupe.used.add(domain)
    if len(kept) != len(domains):
        push.add_status(DUPLICATED_DOMAINS, vhost_name, proxy.short_id, duplicate)
    if not kept:
        return None
    head = rc.VirtualHost(name=vhost_name, domains=kept, include_request_attempt_count=True).SerializeToString()
    return _EncodedVhost(vhost_name, tuple(kept), head + wrapper.routes)


def _with_port(host: str, port: int) -> list[str]:
    if host == "*":
        return ["*"]
    return [host, f"{host}:{port}"]


def _service_domains(proxy: Proxy, push: PushContext, svc: Service, port: int) -> tuple[list[str], list[str]]:
    """Domains for a service vhost: FQDN, Kubernetes short forms, VIPs, each with and without ``:port``."""
    domains = _with_port(svc.hostname, port)
    proxy_domain = proxy.dns_domain or f"{proxy.namespace}.svc.{push.domain_suffix}"
    alt_hosts = _alt_hosts(svc.hostname, port, proxy_domain)
    domains.extend(alt_hosts)
    for address in svc.addresses:
        vip = _vip_domain(address)
        if vip:
            domains.extend((vip, f"{vip}:{port}"))
    return domains, alt_hosts


def _vip_domain(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""  # CIDR ranges and names are no Host header values
    if ip.is_unspecified:
        return ""
    return f"[{ip}]" if ip.version == 6 else str(ip)


def _alt_hosts(hostname: str, port: int, proxy_domain: str) -> list[str]:
    """Istio's GenerateAltVirtualHosts for Kubernetes-style names.

    ``reviews.default.svc.cluster.local`` seen from namespace ``default`` also answers to ``reviews``,
    ``reviews.default`` and ``reviews.default.svc``; from another namespace only to the last two.
    """
    proxy_svc = proxy_domain.find(".svc.")
    if proxy_svc < 0 or not hostname.endswith(proxy_domain[proxy_svc:]):
        return []
    host_svc = hostname.find(".svc.")
    if host_svc <= 0:
        return []
    first_dot = hostname.find(".")
    if first_dot + 1 > host_svc:
        return []
    name = hostname[:first_dot]
    name_ns = hostname[:host_svc]
    if hostname[first_dot + 1 : host_svc] == proxy_domain[:proxy_svc]:
        forms = [name, f"{name_ns}.svc", name_ns]
    else:
        forms = [name_ns, f"{name_ns}.svc"]
    out: list[str] = []
    for form in forms:
        out.extend((form, f"{form}:{port}"))
    return out


def _default_route_encoded(proxy: Proxy, push: PushContext, svc: Service, port: int, parts: RouteParts) -> bytes:
    """A service's default route, encoded once for every proxy class that picks the same DestinationRule."""
    rule = push.destination_rule(proxy, svc.hostname)
    deps: tuple[ConfigKey, ...] = (ConfigKey(SERVICE_KIND, svc.namespace, svc.hostname),)
    if rule is not None:
        deps += rule.keys
    cluster = names.outbound_cluster(port, "", svc.hostname)
    return parts.get_or_build(
        ("rds-default", svc.hostname, port, rule.keys if rule is not None else ()),
        deps,
        lambda: _encode_routes((_default_route(proxy, push, svc, port, cluster),)),
    )


def _default_route(proxy: Proxy, push: PushContext, svc: Service, port: int, cluster: str) -> rc.Route:
    """Istio's BuildDefaultHTTPOutboundRoute: prefix ``/`` to the service cluster with the default retries."""
    hash_policy = _hash_policy(_consistent_hash_for(push, proxy, svc.hostname, "", port))
    action = rc.RouteAction(cluster=cluster)
    retry = _retry_policy(None, consistent_hash=hash_policy is not None)
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    _set_timeout(action, None)
    if hash_policy is not None:
        action.hash_policy.append(hash_policy)
    return rc.Route(
        name=DEFAULT_ROUTE_NAME,
        match=rc.RouteMatch(prefix="/"),
        route=action,
        decorator=rc.Decorator(operation=f"{svc.hostname}:{port}/*"),
    )


# ---------------------------------------------------------------------------------------------------------
# Gateways
# ---------------------------------------------------------------------------------------------------------


def _gateway_route_config(proxy: Proxy, push: PushContext, name: str) -> route_pb2.RouteConfiguration | None:
    # The servers merged under this name (pilot.push.gateways): rejected servers contribute nothing.
    servers = [(s.gateway, s.server) for s in push.merged_gateway(proxy).servers_by_route_name.get(name, ())]
    if not servers:
        return None
    port = servers[0][1].port.number
    vhosts: dict[str, rc.VirtualHost] = {}
    vhost_routes: dict[str, list[rc.Route]] = {}
    routes_cache: dict[tuple[str, str, str, bool], list[rc.Route]] = {}
    merged: set[tuple[str, tuple[str, str, str, bool]]] = set()
    for gateway, server in servers:
        gateway_name = f"{gateway.namespace}/{gateway.name}"
        is_tls = server.tls is not None and name.startswith("https.")
        https_redirect = server.tls is not None and bool(server.tls.https_redirect)
        server_hosts = [_sanitize_server_host(h, gateway.namespace) for h in server.hosts or ()]
        visible = [vs for vs in push.gateway_virtual_services(gateway) if exported_to(vs.config, proxy.namespace)]
        for bound in visibility_order(visible, proxy.namespace):
            hosts = _intersect_hosts(_hosts_for_namespace(server_hosts, bound.config.namespace), bound.hosts)
            if not hosts:
                continue
            key = (gateway_name, bound.config.namespace, bound.config.name, is_tls)
            if key not in routes_cache:
                routes_cache[key] = _virtual_service_routes(
                    proxy, push, bound, port, frozenset({gateway_name}), is_tls=is_tls
                )
            routes = routes_cache[key]
            if not routes:
                continue
            for hostname in hosts:
                if hostname not in vhosts:
                    vhosts[hostname] = rc.VirtualHost(
                        name=names.vhost_name(hostname, port),
                        domains=_with_port(hostname, port),
                        include_request_attempt_count=True,
                    )
                    vhost_routes[hostname] = []
                # A VirtualService reaching this host through several servers contributes its routes once.
                if (hostname, key) not in merged:
                    merged.add((hostname, key))
                    vhost_routes[hostname].extend(routes)
                if https_redirect:
                    vhosts[hostname].require_tls = rc.VirtualHost.ALL
        if https_redirect:
            # Hosts without any VirtualService still redirect plain-text requests to HTTPS.
            for raw in server_hosts:
                hostname = raw.split("/", 1)[1] if "/" in raw else raw
                if hostname not in vhosts:
                    vhosts[hostname] = rc.VirtualHost(
                        name=names.vhost_name(hostname, port),
                        domains=_with_port(hostname, port),
                        include_request_attempt_count=True,
                    )
                    vhost_routes[hostname] = []
                vhosts[hostname].require_tls = rc.VirtualHost.ALL
    if not vhosts:
        blackhole = rc.VirtualHost(
            name=names.vhost_name(BLACKHOLE_VHOST, port),
            domains=["*"],
            routes=[
                rc.Route(
                    name=BLACKHOLE_VHOST,
                    match=rc.RouteMatch(prefix="/"),
                    direct_response=rc.DirectResponseAction(status=404),
                )
            ],
            include_request_attempt_count=True,
        )
        return _route_configuration(name, [blackhole])
    out: list[rc.VirtualHost] = []
    for hostname, vhost in vhosts.items():
        routes = vhost_routes[hostname]
        # Istio's SortVHostRoutes: catch-all routes go last, the others keep their order.
        ordered = [r for r in routes if not _is_catch_all(r)] + [r for r in routes if _is_catch_all(r)]
        vhost.routes.extend(ordered)
        out.append(vhost)
    out.sort(key=lambda vh: vh.name)
    return _route_configuration(name, out)


def _sanitize_server_host(raw: str, gateway_namespace: str) -> str:
    ns, sep, host = raw.partition("/")
    if sep and ns == ".":
        return f"{gateway_namespace}/{host}"
    return raw


def _hosts_for_namespace(server_hosts: Sequence[str], namespace: str) -> list[str]:
    """Istio's NamesForNamespace: ``ns/host`` entries apply to VirtualServices in ``ns`` (or ``*``)."""
    out: list[str] = []
    for raw in server_hosts:
        ns, sep, host = raw.partition("/")
        if sep:
            if ns not in (namespace, "*"):
                continue
            out.append(host)
        else:
            out.append(raw)
    return out


def _intersect_hosts(server_hosts: Sequence[str], vs_hosts: Sequence[str]) -> list[str]:
    """The more specific host of every overlapping (server host, VirtualService host) pair."""
    out: list[str] = []
    for s in server_hosts:
        for v in vs_hosts:
            if subset_of(s, v):
                chosen = s
            elif subset_of(v, s):
                chosen = v
            else:
                continue
            if chosen not in out:
                out.append(chosen)
    return out


# ---------------------------------------------------------------------------------------------------------
# VirtualService HTTP routes
# ---------------------------------------------------------------------------------------------------------


def _virtual_service_routes(
    proxy: Proxy,
    push: PushContext,
    bound: BoundVirtualService,
    port: int,
    gateway_names: frozenset[str],
    *,
    is_tls: bool,
) -> list[rc.Route]:
    """Istio's BuildHTTPRoutesForVirtualService: one route per (http, match), stopping after a catch-all."""
    out: list[rc.Route] = []
    for http in bound.config.spec.http or ():
        if http.delegate is not None:  # PushContext merges delegates into their roots; none is left here
            continue
        catch_all = False
        if not http.match:
            route = _translate_route(proxy, push, bound.config, http, None, port, gateway_names, is_tls)
            if route is not None:
                out.append(route)
            catch_all = True
        else:
            for match in http.match:
                route = _translate_route(proxy, push, bound.config, http, match, port, gateway_names, is_tls)
                if route is None:
                    continue
                out.append(route)
                if _is_catch_all(route):
                    catch_all = True
                    break
        if catch_all:
            break
    return out


def _is_catch_all(route: rc.Route) -> bool:
    match = route.match
    spec = match.WhichOneof("path_specifier")
    if spec == "prefix":
        catch_all = match.prefix == "/"
    elif spec == "path_separated_prefix":
        catch_all = match.path_separated_prefix == "/"
    elif spec == "safe_regex":
        catch_all = match.safe_regex.regex == ".*"
    else:
        catch_all = False
    return catch_all and not match.headers and not match.query_parameters and not match.dynamic_metadata


def _source_matches(match: HttpMatchRequest | None, proxy: Proxy, gateway_names: frozenset[str], vs_ns: str) -> bool:
    """Istio's sourceMatchHTTP: match.gateways, else sourceLabels and sourceNamespace."""
    if match is None:
        return True
    if match.gateways:
        return any(resolve_gateway_name(g, vs_ns) in gateway_names for g in match.gateways)
    if all(proxy.labels.get(k) == v for k, v in (match.source_labels or {}).items()):
        return not match.source_namespace or match.source_namespace == proxy.namespace
    return False


def _translate_route(
    proxy: Proxy,
    push: PushContext,
    vs: Config,
    http: HttpRoute,
    match: HttpMatchRequest | None,
    port: int,
    gateway_names: frozenset[str],
    is_tls: bool,
) -> rc.Route | None:
    if match is not None and match.port and match.port != port:
        return None
    if not _source_matches(match, proxy, gateway_names, vs.namespace):
        return None
    route_name = http.name or ""
    if match is not None and match.name:
        route_name = f"{route_name}.{match.name}"
    out = rc.Route(name=route_name, match=_translate_match(match), metadata=_config_metadata(vs))
    if match is not None and match.stat_prefix:
        out.stat_prefix = match.stat_prefix

    authority = ""
    if http.headers is not None:
        ops = _HeaderOps.of(http.headers)
        ops.apply_to(out)
        authority = ops.authority

    if http.redirect is not None:
        redirect = _translate_redirect(http.redirect, port, is_tls)
        if redirect is not None:
            out.redirect.CopyFrom(redirect)
    elif http.direct_response is not None:
        out.direct_response.CopyFrom(_translate_direct_response(http.direct_response))
    else:
        out.route.CopyFrom(_translate_action(proxy, push, vs, http, out, authority, port))

    out.decorator.operation = _route_operation(out, vs.name, port)
    if http.fault is not None:
        fault = _translate_fault(http.fault)
        if fault is not None:
            out.typed_per_filter_config[names.FAULT_FILTER].Pack(fault)
    if http.cors_policy is not None:
        out.typed_per_filter_config[names.CORS_FILTER].Pack(_translate_cors(http.cors_policy))
    return out


def _config_metadata(vs: Config) -> base_pb2.Metadata:
    path = VIRTUAL_SERVICE_CONFIG_PATH.format(ns=vs.namespace, name=vs.name)
    metadata = base_pb2.Metadata()
    metadata.filter_metadata[ISTIO_METADATA_KEY].CopyFrom(
        struct_pb2.Struct(fields={"config": struct_pb2.Value(string_value=path)})
    )
    return metadata


def _route_operation(route: rc.Route, vs_name: str, port: int) -> str:
    """Istio's GetRouteOperation: ``host:port/path`` for a single cluster, else ``vsName:port/path``."""
    match = route.match
    spec = match.WhichOneof("path_specifier")
    path = "/*"
    if spec == "prefix":
        path = match.prefix + "*"
    elif spec == "path":
        path = match.path
    elif spec == "safe_regex":
        path = match.safe_regex.regex
    if route.WhichOneof("action") == "route" and route.route.WhichOneof("cluster_specifier") == "cluster":
        parsed = names.parse_cluster_name(route.route.cluster)
        if parsed is not None:
            return f"{parsed.host}:{parsed.port}{path}"
    return f"{vs_name}:{port}{path}"


# ----- matches -----


def _string_matcher(match: StringMatch | None) -> string_pb2.StringMatcher | None:
    if match is None:
        return None
    if match.exact is not None:
        return string_pb2.StringMatcher(exact=match.exact)
    if match.prefix is not None:
        return string_pb2.StringMatcher(prefix=match.prefix)
    if match.regex is not None:
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.regex))
    return None


def _header_matcher(name: str, match: StringMatch | None) -> rc.HeaderMatcher:
    out = rc.HeaderMatcher(name=name)
    matcher = None if match is None or match.regex == "*" else _string_matcher(match)
    if matcher is None:
        out.present_match = True
    else:
        out.string_match.CopyFrom(matcher)
    return out


def _translate_match(match: HttpMatchRequest | None) -> rc.RouteMatch:
    out = rc.RouteMatch(prefix="/")
    if match is None:
        return out
    headers: list[rc.HeaderMatcher] = []
    for name in sorted(match.headers or {}):
        if name.startswith(_CLAIM_HEADER_PREFIX):
            continue  # JWT-claim routing needs dynamic metadata matchers (gateway-only in Istio)
        headers.append(_header_matcher(name, match.headers[name]))
    for name in sorted(match.without_headers or {}):
        if name.startswith(_CLAIM_HEADER_PREFIX):
            continue
        matcher = _header_matcher(name, match.without_headers[name])
        matcher.invert_match = True
        headers.append(matcher)
    headers.sort(key=lambda h: h.name)

    uri = match.uri
    if uri is not None:
        if uri.exact is not None:
            out.path = uri.exact
        elif uri.prefix is not None:
            out.prefix = uri.prefix
        elif uri.regex is not None:
            out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=uri.regex))
    if match.ignore_uri_case:
        out.case_sensitive.CopyFrom(wrappers_pb2.BoolValue(value=False))

    for pseudo, value in ((":method", match.method), (":authority", match.authority), (":scheme", match.scheme)):
        if value is not None:
            headers.append(_header_matcher(pseudo, value))
    out.headers.extend(headers)

    for name in sorted(match.query_params or {}):
        param = rc.QueryParameterMatcher(name=name)
        matcher = _string_matcher(match.query_params[name])
        if matcher is None:
            param.present_match = True
        else:
            param.string_match.CopyFrom(matcher)
        out.query_parameters.append(param)
    return out


# ----- header operations -----


@dataclass
class _HeaderOps:
    request_add: list[base_pb2.HeaderValueOption]
    request_remove: list[str]
    response_add: list[base_pb2.HeaderValueOption]
    response_remove: list[str]
    authority: str

    @classmethod
    def of(cls, headers: Headers) -> _HeaderOps:
        request = headers.request
        response = headers.response
        req_set, set_authority = _header_values(request.set if request else {}, append=False)
        req_add, add_authority = _header_values(request.add if request else {}, append=True)
        resp_set, _ = _header_values(response.set if response else {}, append=False)
        resp_add, _ = _header_values(response.add if response else {}, append=True)
        return cls(
            request_add=req_set + req_add,
            request_remove=_drop_internal(request.remove if request else ()),
            response_add=resp_set + resp_add,
            response_remove=_drop_internal(response.remove if response else ()),
            authority=add_authority or set_authority,
        )

    def apply_to(self, target: rc.Route | rc.WeightedCluster.ClusterWeight) -> None:
        """Add the header operations to a route or a weighted cluster (both have the same four fields)."""
        target.request_headers_to_add.extend(self.request_add)
        target.request_headers_to_remove.extend(self.request_remove)
        target.response_headers_to_add.extend(self.response_add)
        target.response_headers_to_remove.extend(self.response_remove)


def _is_internal_header(name: str) -> bool:
    return name.startswith(":") or name.lower() == "host"


def _drop_internal(names_: Iterable[str]) -> list[str]:
    return [n for n in names_ if not _is_internal_header(n)]


def _header_values(values: Mapping[str, str], *, append: bool) -> tuple[list[base_pb2.HeaderValueOption], str]:
    action = (
        base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
        if append
        else base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    )
    authority = ""
    out: list[base_pb2.HeaderValueOption] = []
    for key in sorted(values or {}):
        if key.lower() in ("host", ":authority"):
            authority = values[key]
        if _is_internal_header(key):
            continue
        out.append(
            base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=values[key]), append_action=action)
        )
    return out, authority


# ----- actions -----


def _translate_action(
    proxy: Proxy,
    push: PushContext,
    vs: Config,
    http: HttpRoute,
    out: rc.Route,
    authority: str,
    port: int,
) -> rc.RouteAction:
    """Istio's applyHTTPRouteDestination."""
    destinations = list(http.route or ())
    hashes = [_consistent_hash_for_destination(push, proxy, vs.namespace, d) for d in destinations]
    action = rc.RouteAction()
    retry = _retry_policy(http.retries, consistent_hash=any(h is not None for h in hashes))
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    _set_timeout(action, http.timeout)

    if http.mirror is not None:
        fraction = _mirror_fraction(http.mirror_percentage, http.mirror_percent)
        if fraction is not None:
            action.request_mirror_policies.append(_mirror_policy(push, vs, http.mirror, port, fraction))
    for mirror in http.mirrors or ():
        if mirror.destination is None:
            continue
        fraction = _mirror_fraction(mirror.percentage, None)
        if fraction is not None:
            action.request_mirror_policies.append(_mirror_policy(push, vs, mirror.destination, port, fraction))

    if len(destinations) == 1:
        dest = destinations[0]
        action.cluster = _destination_cluster(push, vs, dest.destination, port)
        if dest.headers is not None:
            ops = _HeaderOps.of(dest.headers)
            ops.apply_to(out)
            if ops.authority:
                action.host_rewrite_literal = ops.authority
        policy = _hash_policy(hashes[0])
        if policy is not None:
            action.hash_policy.append(policy)
    elif destinations:
        weighted = [(d, h) for d, h in zip(destinations, hashes, strict=True) if d.weight != 0]
        if not weighted:
            # Validation rejects this; Envoy needs a positive total weight, so split evenly rather than NACK.
            weighted = [(_with_weight(d, 1), h) for d, h in zip(destinations, hashes, strict=True)]
        clusters = action.weighted_clusters
        for dest, hash_lb in weighted:
            clusters.clusters.append(_cluster_weight(push, vs, dest, port))
            policy = _hash_policy(hash_lb)
            if policy is not None:
                action.hash_policy.append(policy)

    if http.rewrite is not None:
        if http.rewrite.uri_regex_rewrite is not None:
            action.regex_rewrite.CopyFrom(
                regex_pb2.RegexMatchAndSubstitute(
                    pattern=regex_pb2.RegexMatcher(regex=http.rewrite.uri_regex_rewrite.match),
                    substitution=http.rewrite.uri_regex_rewrite.rewrite,
                )
            )
        elif http.rewrite.uri:
            action.prefix_rewrite = http.rewrite.uri
        if http.rewrite.authority:
            authority = http.rewrite.authority
    if authority:
        action.host_rewrite_literal = authority
    return action


def _with_weight(dest: HttpRouteDestination, weight: int) -> HttpRouteDestination:
    return HttpRouteDestination(destination=dest.destination, weight=weight, headers=dest.headers)


def _cluster_weight(
    push: PushContext, vs: Config, dest: HttpRouteDestination, port: int
) -> rc.WeightedCluster.ClusterWeight:
    out = rc.WeightedCluster.ClusterWeight(
        name=_destination_cluster(push, vs, dest.destination, port),
        weight=wrappers_pb2.UInt32Value(value=dest.weight),
    )
    if dest.headers is not None:
        ops = _HeaderOps.of(dest.headers)
        ops.apply_to(out)
        if ops.authority:
            out.host_rewrite_literal = ops.authority
    return out


def _destination_cluster(push: PushContext, vs: Config, dest: Destination | None, port: int) -> str:
    """``outbound|<port>|<subset>|<fqdn>``. Without a destination port: the route's port when the service has
    it, else the service's only port, else the route's port."""
    if dest is None or not dest.host:
        return "UnknownService"
    host = resolve_short_name(dest.host, vs.namespace, push.domain_suffix)
    number = dest.port.number if dest.port is not None and dest.port.number else 0
    if not number:
        number = port
        service = push.service(host)
        if service is not None and service.port_by_number(port) is None and len(service.ports) == 1:
            number = service.ports[0].number
    return names.outbound_cluster(number, dest.subset or "", host)


def _duration(value: datetime.timedelta) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromTimedelta(value)
    return out


def _set_timeout(action: rc.RouteAction, timeout: datetime.timedelta | None) -> None:
    """Istio's setTimeout: the VirtualService timeout or 0 (disabled), also used as the gRPC timeout cap."""
    value = _duration(timeout if timeout is not None else datetime.timedelta(0))
    action.timeout.CopyFrom(value)
    # As Istio does: the deprecated max_grpc_timeout, because setting max_stream_duration switches Envoy to
    # its "new timeouts" mode, where the route timeout no longer bounds the request (seen in the e2e test).
    action.max_grpc_timeout.CopyFrom(value)


def _previous_hosts_predicate() -> rc.RetryPolicy.RetryHostPredicate:
    predicate = rc.RetryPolicy.RetryHostPredicate(name=PREVIOUS_HOSTS_PREDICATE)
    predicate.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate())
    return predicate


def _default_retry_policy(consistent_hash: bool) -> rc.RetryPolicy:
    policy = rc.RetryPolicy(
        retry_on=DEFAULT_RETRY_ON,
        num_retries=wrappers_pb2.UInt32Value(value=DEFAULT_RETRY_ATTEMPTS),
        retriable_status_codes=DEFAULT_RETRIABLE_STATUS_CODES,
        host_selection_retry_max_attempts=HOST_SELECTION_RETRY_MAX_ATTEMPTS,
    )
    if not consistent_hash:
        # Retrying on another host would defeat consistent hashing.
        policy.retry_host_predicate.append(_previous_hosts_predicate())
    return policy


def _retry_policy(retries: HttpRetry | None, *, consistent_hash: bool) -> rc.RetryPolicy | None:
    """Istio's retry.ConvertPolicy."""
    if retries is None:
        return _default_retry_policy(consistent_hash)
    if retries.attempts <= 0:
        return None
    out = _default_retry_policy(consistent_hash)
    out.num_retries.value = retries.attempts
    if retries.retry_on:
        policies: list[str] = []
        codes: list[int] = []
        for part in retries.retry_on.split(","):
            part = part.strip()
            if not part:
                continue
            if part.isdigit() and int(part) in _HTTP_STATUS_CODES:
                codes.append(int(part))
            else:
                policies.append(part)
        retry_on = ",".join(policies)
        if codes and "retriable-status-codes" not in retry_on:
            retry_on = f"{retry_on},retriable-status-codes" if retry_on else "retriable-status-codes"
        out.retry_on = retry_on
        del out.retriable_status_codes[:]
        out.retriable_status_codes.extend(codes)
    if retries.per_try_timeout is not None:
        out.per_try_timeout.CopyFrom(_duration(retries.per_try_timeout))
    if retries.retry_remote_localities:
        out.retry_priority.name = PREVIOUS_PRIORITIES
        out.retry_priority.typed_config.Pack(
            previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=2)
        )
    if retries.retry_ignore_previous_hosts is not None:
        del out.retry_host_predicate[:]
        if retries.retry_ignore_previous_hosts:
            out.retry_host_predicate.append(_previous_hosts_predicate())
    if retries.backoff is not None:
        out.retry_back_off.base_interval.CopyFrom(_duration(retries.backoff))
    return out


def _percent_fraction(percent: Percent) -> percent_pb2.FractionalPercent:
    # Go's uint32(p.Value * 10000): truncation, kept for byte-for-byte agreement with Istio.
    return percent_pb2.FractionalPercent(
        numerator=int(percent.value * 10000), denominator=percent_pb2.FractionalPercent.MILLION
    )


def _integer_fraction(value: int) -> percent_pb2.FractionalPercent:
    return percent_pb2.FractionalPercent(numerator=value, denominator=percent_pb2.FractionalPercent.HUNDRED)


def _mirror_fraction(
    percentage: Percent | None, legacy_percent: int | None
) -> base_pb2.RuntimeFractionalPercent | None:
    """Istio's MirrorPercent: explicit 0 disables mirroring; unset means 100%."""
    if percentage is not None:
        if percentage.value > 0:
            return base_pb2.RuntimeFractionalPercent(default_value=_percent_fraction(percentage))
        return None
    if legacy_percent is not None:
        if legacy_percent > 0:
            return base_pb2.RuntimeFractionalPercent(default_value=_integer_fraction(legacy_percent))
        return None
    return base_pb2.RuntimeFractionalPercent(default_value=_integer_fraction(100))


def _mirror_policy(
    push: PushContext, vs: Config, dest: Destination, port: int, fraction: base_pb2.RuntimeFractionalPercent
) -> rc.RouteAction.RequestMirrorPolicy:
    return rc.RouteAction.RequestMirrorPolicy(
        cluster=_destination_cluster(push, vs, dest, port),
        runtime_fraction=fraction,
        trace_sampled=wrappers_pb2.BoolValue(value=False),
    )


def _translate_redirect(redirect: HttpRedirect, port: int, is_tls: bool) -> rc.RedirectAction | None:
    """Istio's ApplyRedirect; an unsupported redirect code leaves the route without an action."""
    code = _REDIRECT_CODES.get(redirect.redirect_code)
    if code is None:
        log.warning("redirect code %d is not supported", redirect.redirect_code)
        return None
    out = rc.RedirectAction(response_code=code)
    if redirect.authority:
        out.host_redirect = redirect.authority
    if redirect.uri:
        out.path_redirect = redirect.uri
    if redirect.scheme:
        out.scheme_redirect = redirect.scheme
    if redirect.port is not None or redirect.derive_port is not None:
        if redirect.port is not None:
            out.port_redirect = redirect.port
        elif redirect.derive_port == HttpRedirectRedirectPortSelection.FROM_REQUEST_PORT:
            # Envoy cannot derive the port; routes are built per listener port, so that is the request port.
            out.port_redirect = port
        scheme = redirect.scheme or ("https" if is_tls else "http")
        if (out.port_redirect, scheme) in ((80, "http"), (443, "https")):
            out.port_redirect = 0
    return out


def _translate_direct_response(response: HttpDirectResponse) -> rc.DirectResponseAction:
    out = rc.DirectResponseAction(status=response.status)
    body = response.body
    if body is not None:
        if body.string is not None:
            out.body.inline_string = body.string
        elif body.bytes is not None:
            out.body.inline_bytes = body.bytes
    return out


def _translate_fault(fault: HttpFaultInjection) -> fault_pb2.HTTPFault | None:
    """Istio's TranslateFault: fixed delays and HTTP/gRPC aborts; percentages become per-million fractions."""
    out = fault_pb2.HTTPFault()
    has_delay = has_abort = False
    delay = fault.delay
    if delay is not None and delay.fixed_delay is not None:
        out.delay.fixed_delay.CopyFrom(_duration(delay.fixed_delay))
        if delay.percentage is not None:
            out.delay.percentage.CopyFrom(_percent_fraction(delay.percentage))
        else:
            out.delay.percentage.CopyFrom(_integer_fraction(delay.percent))
        has_delay = True
    abort = fault.abort
    if abort is not None:
        if abort.http_status is not None:
            out.abort.http_status = abort.http_status
            has_abort = True
        elif abort.grpc_status is not None:
            code = _grpc_status(abort.grpc_status)
            if code is not None:
                out.abort.grpc_status = code
                has_abort = True
        if has_abort and abort.percentage is not None:
            out.abort.percentage.CopyFrom(_percent_fraction(abort.percentage))
        if not has_abort:
            out.ClearField("abort")
    if not (has_delay or has_abort):
        return None
    return out


def _grpc_status(value: str) -> int | None:
    if value.isdigit():
        return int(value)
    return _GRPC_STATUS.get(value.upper())


def _translate_cors(policy: CorsPolicy) -> cors_pb2.CorsPolicy:
    """Istio's TranslateCORSPolicy."""
    out = cors_pb2.CorsPolicy(
        forward_not_matching_preflights=wrappers_pb2.BoolValue(
            value=getattr(policy.unmatched_preflights, "name", "") != "IGNORE"
        ),
        filter_enabled=base_pb2.RuntimeFractionalPercent(default_value=_integer_fraction(100)),
        allow_methods=",".join(policy.allow_methods or ()),
        allow_headers=",".join(policy.allow_headers or ()),
        expose_headers=",".join(policy.expose_headers or ()),
    )
    if policy.allow_origins:
        for origin in policy.allow_origins:
            matcher = _string_matcher(origin)
            if matcher is not None:
                out.allow_origin_string_match.append(matcher)
    else:
        for origin in policy.allow_origin or ():
            out.allow_origin_string_match.append(string_pb2.StringMatcher(exact=origin))
    if policy.allow_credentials is not None:
        out.allow_credentials.value = policy.allow_credentials
    if policy.max_age is not None:
        out.max_age = str(int(policy.max_age.total_seconds()))
    return out


# ----- consistent hashing (from DestinationRules) -----


def _port_level_hash(
    settings: Sequence[TrafficPolicyPortTrafficPolicy], port: int
) -> LoadBalancerSettingsConsistentHashLb | None:
    if not port:
        return None
    for setting in settings:
        if setting.port is not None and setting.port.number == port:
            lb = setting.load_balancer
            return lb.consistent_hash if lb is not None else None
    return None


def _consistent_hash_for(
    push: PushContext, proxy: Proxy, host: str, subset: str, port: int
) -> LoadBalancerSettingsConsistentHashLb | None:
    """Istio's hashForHTTPDestination: subset port-level, subset, port-level, then top-level policy."""
    rule = push.destination_rule(proxy, host)
    if rule is None:
        return None
    policy = rule.spec.traffic_policy
    chosen = policy.load_balancer.consistent_hash if policy and policy.load_balancer else None
    pls_hash = _port_level_hash(policy.port_level_settings if policy else (), port)
    subset_hash = subset_pls_hash = None
    for candidate in rule.spec.subsets or ():
        if candidate.name == subset:
            sub_policy = candidate.traffic_policy
            if sub_policy is not None:
                if sub_policy.load_balancer is not None:
                    subset_hash = sub_policy.load_balancer.consistent_hash
                subset_pls_hash = _port_level_hash(sub_policy.port_level_settings, port)
            break
    for override in (subset_pls_hash, subset_hash, pls_hash):
        if override is not None:
            return override
    return chosen


def _consistent_hash_for_destination(
    push: PushContext, proxy: Proxy, namespace: str, dest: HttpRouteDestination
) -> LoadBalancerSettingsConsistentHashLb | None:
    if dest.destination is None or not dest.destination.host:
        return None
    host = resolve_short_name(dest.destination.host, namespace, push.domain_suffix)
    port = dest.destination.port.number if dest.destination.port is not None else 0
    return _consistent_hash_for(push, proxy, host, dest.destination.subset or "", port)


def _hash_policy(hash_lb: LoadBalancerSettingsConsistentHashLb | None) -> rc.RouteAction.HashPolicy | None:
    """Istio's consistentHashToHashPolicy."""
    if hash_lb is None:
        return None
    policy = rc.RouteAction.HashPolicy()
    if hash_lb.http_header_name is not None:
        policy.header.header_name = hash_lb.http_header_name
    elif hash_lb.http_cookie is not None:
        cookie = hash_lb.http_cookie
        policy.cookie.name = cookie.name
        if cookie.path:
            policy.cookie.path = cookie.path
        if cookie.ttl is not None:
            policy.cookie.ttl.CopyFrom(_duration(cookie.ttl))
        for attribute in cookie.attributes or ():
            policy.cookie.attributes.add(name=attribute.name, value=attribute.value)
    elif hash_lb.use_source_ip is not None:
        policy.connection_properties.source_ip = hash_lb.use_source_ip
    elif hash_lb.http_query_parameter_name is not None:
        policy.query_parameter.name = hash_lb.http_query_parameter_name
    else:
        return None
    return policy


def route_unit(proxy: Proxy, push: PushContext, scope: ProxyScope, name: str, parts: RouteParts | None = None) -> Unit:
    """One RouteConfiguration as a cacheable unit: built from the whole scope (its services, VirtualServices
    and DestinationRules), keyed by the route name and the scope's fingerprint; sidecar routes are assembled
    from ``parts``, encoded routes shared with other proxy classes."""

    def build() -> tuple[route_pb2.RouteConfiguration | Resource, ...]:
        built = build_route(proxy, push, name, parts)
        if built is None:
            return ()
        if isinstance(built, bytes):
            return (Resource(name, ROUTE_CONFIGURATION_TYPE, built),)
        return (built,)

    return Unit(("rds", name, scope.fingerprint), scope.deps, build)
