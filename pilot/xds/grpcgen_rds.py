"""RDS for proxyless gRPC: ``outbound|<port>||<fqdn>``, the listener's route configuration (istiod's grpcgen
BuildHTTPRoutes).

As istiod does, the sidecar virtual hosts of the port are built exactly as for Envoy (``rds``: the
VirtualService that claims the service, its matches, weights, faults, hash policies, or the default route)
and only the virtual host of the requested service is kept. What gRPC reads differently is then adapted:

- the route timeout also goes to ``max_stream_duration`` (gRPC's only route timeout, gRFC A31) instead of
  the deprecated ``max_grpc_timeout`` Envoy is given (istiod's setTimeout for proxyless gRPC);
- per-route filter configs other than fault are dropped: gRPC NACKs the whole route configuration for a
  config of a filter it does not implement (CORS), and its listener has no such filter anyway.

Fields gRPC ignores (retry predicates, mirrors, rewrites, header operations) are left as Envoy gets them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf.message import Message

from pilot.model.config import ConfigKey
from pilot.model.host import matches
from pilot.model.proxy import Proxy
from pilot.push.context import PushContext
from pilot.push.scope import ProxyScope
from pilot.xds import names, rds
from pilot.xds.grpcgen_lds import join_host_port, split_host_port
from pilot.xds.units import Unit


class _BuildEveryTime:
    def get_or_build(self, key: Hashable, deps: Collection[ConfigKey], build: Callable[[], bytes]) -> bytes:
        return build()


def route_unit(proxy: Proxy, push: PushContext, scope: ProxyScope, name: str, parts: rds.RouteParts) -> Unit | None:
    """The unit of one route configuration; None for a name that is no outbound cluster name. Like the
    sidecar's routes, it is built from the whole scope and keyed by its fingerprint."""
    if _target(name) is None:
        return None
    return Unit(("grpc-rds", name, scope.fingerprint), scope.deps, lambda: (build_route(proxy, push, name, parts),))


def _target(name: str) -> tuple[str, int] | None:
    parsed = names.parse_cluster_name(name)
    if parsed is None or parsed.direction != "outbound" or not parsed.host or parsed.port <= 0:
        return None
    return parsed.host, parsed.port


def build_route(
    proxy: Proxy, push: PushContext, name: str, parts: rds.RouteParts | None = None
) -> route_pb2.RouteConfiguration | None:
    """The route configuration ``outbound|<port>||<host>``: the host's virtual host on that port, or none
    (gRPC then fails calls with UNAVAILABLE rather than waiting for a resource that never comes)."""
    target = _target(name)
    if target is None:
        return None
    host, port = target
    vhosts = rds.sidecar_virtual_hosts(proxy, push, port, parts or _BuildEveryTime())
    kept = [vhost for vhost in vhosts if serves_host(vhost, host, port)]
    for vhost in kept:
        _adapt_vhost(vhost)
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=kept)


def serves_host(vhost: rc.VirtualHost, host: str, port: int) -> bool:
    """istiod's filterVirtualHostsForHostname: a domain equal to the host (with or without the port), or a
    wildcard domain covering it on that port or any port."""
    host = host.lower()
    exact = (f"[{host}]" if ":" in host else host, join_host_port(host, port))
    for raw in vhost.domains:
        domain = raw.lower()
        if domain in exact:
            return True
        split = split_host_port(domain)
        domain_host, domain_port = split if split is not None else (domain, "")
        if domain_host.startswith("*"):
            if domain_port and domain_port != str(port):
                continue
            if matches(domain_host, host):
                return True
        if domain_host == host and domain_port in ("", str(port)):
            return True
    return False


def _adapt_vhost(vhost: rc.VirtualHost) -> None:
    _keep_fault_only(vhost)
    for route in vhost.routes:
        _keep_fault_only(route)
        if route.WhichOneof("action") != "route":
            continue
        action = route.route
        for weighted in action.weighted_clusters.clusters:
            _keep_fault_only(weighted)
        action.ClearField("max_grpc_timeout")
        action.max_stream_duration.max_stream_duration.CopyFrom(action.timeout)


def _keep_fault_only(message: Message) -> None:
    configs = message.typed_per_filter_config  # type: ignore[attr-defined]
    for key in [k for k in configs if k != names.FAULT_FILTER]:
        del configs[key]
