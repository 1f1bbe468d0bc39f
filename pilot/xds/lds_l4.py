"""A sidecar's TCP and TLS outbound listeners with the VirtualService ``tcp`` and ``tls`` routes of their
services (istiod's buildSidecarOutboundTCPFilterChainOpts and buildSidecarOutboundTLSFilterChainOpts).

For each service on the listener, the mesh-bound VirtualServices visible to the proxy whose hosts match the
service (in istiod's visibility order) are read:

* TCP ports: the first ``tcp`` route without matches, or with a match that applies to this proxy (port,
  sourceLabels, sourceNamespace, gateways ``mesh``) and no ``destinationSubnets``, ends the list as the
  listener's catch-all chain; matches with destinationSubnets only become chains matched on those prefixes.
  Without such a route the catch-all chain goes to the service's own cluster.
* TLS and HTTPS ports: each ``tls`` route match that applies gives a chain matched on its ``sniHosts`` (and
  ``destinationSubnets``), once per distinct (sniHosts, subnets); without any, the service's own cluster,
  matched on the service's hostname when the listener is not the service's own (a wildcard or shared
  address, as for ServiceEntries of external HTTPS hosts on 0.0.0.0_443), else unmatched.

Routes go to one cluster or to weighted clusters (tcp_proxy), with the tcp settings of the destination's
DestinationRule (idle timeout, connection duration, source-IP hash, tunnel: pilot.xds.cluster_policy). A
service with CIDR addresses gets chains matching its ranges on 0.0.0.0_<port>, so it can share that listener.
Chains whose match repeats an earlier one are dropped (Envoy rejects the listener otherwise), and a listener
with SNI matches gets the TLS inspector (pilot.xds.filters).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.listener.v3 import listener_components_pb2

from pilot.model.host import MESH_GATEWAY, matches
from pilot.model.proxy import Proxy
from pilot.model.service import Port, Protocol, Service, labels_match
from pilot.push.context import BoundVirtualService, EgressListener, PushContext
from pilot.xds import names
from pilot.xds.cluster_policy import tcp_settings
from pilot.xds.filters import tcp_proxy, unique_chains
from pilot.xds.lds_gateway import route_filter
from pilot.xds.rds import visibility_order

log = logging.getLogger(__name__)

FilterChain = listener_components_pb2.FilterChain
TLS_PROTOCOLS = (Protocol.TLS, Protocol.HTTPS)


@dataclass(frozen=True)
class Target:
    """A service port a sidecar TCP/TLS listener carries."""

    service: Service
    port: Port
    cidrs: tuple[str, ...] = ()  # CIDR addresses: its chains on 0.0.0.0 match these destinations


def _applies(match: Any, proxy: Proxy, port: int) -> bool:
    """istiod's matchTCP / matchTLS for a sidecar: gateways include ``mesh`` (or none), the port is the
    listener's (or unset), sourceLabels a subset of the proxy's, sourceNamespace the proxy's (or unset)."""
    if match is None:
        return True
    if match.gateways and MESH_GATEWAY not in match.gateways:
        return False
    if match.port and match.port != port:
        return False
    if match.source_labels and not labels_match(match.source_labels, proxy.labels):
        return False
    return not (match.source_namespace and match.source_namespace != proxy.namespace)


def virtual_services_for(
    push: PushContext, proxy: Proxy, egress: EgressListener, hostname: str
) -> list[BoundVirtualService]:
    """The mesh-bound VirtualServices the proxy sees whose hosts match ``hostname``, in visibility order."""
    bound = [vs for vs in push.sidecar_virtual_services(proxy, egress) if any(matches(h, hostname) for h in vs.hosts)]
    return visibility_order(bound, proxy.namespace)


def _prefix(cidr: str) -> tuple[str, int] | None:
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None
    return str(network.network_address), network.prefixlen


def _chain(network_filter: Any, *, sni: Sequence[str] = (), subnets: Sequence[str] = ()) -> FilterChain:
    chain = FilterChain()
    hosts = sorted(set(sni))
    if hosts and "*" not in hosts:
        chain.filter_chain_match.server_names.extend(hosts)
    for cidr in subnets:
        prefix = _prefix(cidr)
        if prefix is not None:
            chain.filter_chain_match.prefix_ranges.add(address_prefix=prefix[0]).prefix_len.value = prefix[1]
    chain.filters.append(network_filter)
    return chain


def _own_cluster(target: Target, listen_port: int) -> str:
    """The service's cluster for the listener's port (its only port when it has one, as istiod)."""
    port = target.service.ports[0].number if len(target.service.ports) == 1 else listen_port
    return names.outbound_cluster(port, "", target.service.hostname)


def _own_tcp_proxy(push: PushContext, proxy: Proxy, target: Target, listen_port: int) -> listener_components_pb2.Filter:
    cluster = _own_cluster(target, listen_port)
    settings = tcp_settings(push.destination_rule(proxy, target.service.hostname))
    return tcp_proxy(cluster, cluster, settings=settings)


def tcp_chains(
    push: PushContext, proxy: Proxy, egress: EgressListener, target: Target, listen_port: int
) -> list[FilterChain]:
    out: list[FilterChain] = []
    ranges = target.cidrs  # a CIDR service's chains match its range, unless a route names its own subnets
    for bound in virtual_services_for(push, proxy, egress, target.service.hostname):
        namespace = bound.config.namespace
        for route in bound.config.spec.tcp or ():
            if not route.route:
                continue
            network_filter = route_filter(push, proxy, namespace, route.route, listen_port)
            if network_filter is None:
                continue
            if not route.match:
                out.append(_chain(network_filter, subnets=ranges))
                return out
            subnets: list[str] = []
            for match in route.match:
                if not _applies(match, proxy, listen_port):
                    continue
                if not match.destination_subnets:
                    out.append(_chain(network_filter, subnets=ranges))
                    return out
                subnets.extend(match.destination_subnets)
            if subnets:
                out.append(_chain(network_filter, subnets=subnets))
    out.append(_chain(_own_tcp_proxy(push, proxy, target, listen_port), subnets=ranges))
    return out


def tls_chains(
    push: PushContext, proxy: Proxy, egress: EgressListener, target: Target, listen_port: int, *, shared: bool
) -> list[FilterChain]:
    """``shared``: the listener is not the service's own (wildcard or shared address): match its hostname."""
    out: list[FilterChain] = []
    handled: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
    for bound in virtual_services_for(push, proxy, egress, target.service.hostname):
        namespace = bound.config.namespace
        for route in bound.config.spec.tls or ():
            if not route.route:
                continue
            for match in route.match or ():
                if not _applies(match, proxy, listen_port):
                    continue
                runtime = (tuple(match.sni_hosts), tuple(match.destination_subnets))
                if runtime in handled:
                    continue  # an earlier match with the same runtime predicates takes this traffic
                handled.add(runtime)
                network_filter = route_filter(push, proxy, namespace, route.route, listen_port)
                if network_filter is not None:
                    out.append(_chain(network_filter, sni=match.sni_hosts, subnets=match.destination_subnets))
    if not out:
        own = _own_tcp_proxy(push, proxy, target, listen_port)
        out.append(_chain(own, sni=[target.service.hostname] if shared else (), subnets=target.cidrs))
    return out


def listener_chains(
    push: PushContext,
    proxy: Proxy,
    egress: EgressListener,
    targets: Iterable[Target],
    listen_port: int,
    *,
    shared_address: bool,
    listener: str,
) -> list[FilterChain]:
    """The filter chains of one sidecar TCP/TLS listener: every target's, duplicates of an earlier match
    dropped. TCP services cannot share a listener without a way to tell them apart: only the first is built."""
    ordered = sorted(targets, key=lambda t: t.service.hostname)
    tls = [t for t in ordered if t.port.protocol in TLS_PROTOCOLS]
    tcp = [t for t in ordered if t.port.protocol not in TLS_PROTOCOLS]
    chains: list[FilterChain] = []
    shared = shared_address or len(tls) > 1
    for target in tls:
        chains.extend(tls_chains(push, proxy, egress, target, listen_port, shared=shared))
    # Services with CIDR addresses are told apart by destination; of the others, only the first is built.
    ranged = [t for t in tcp if t.cidrs]
    unranged = [t for t in tcp if not t.cidrs]
    for target in ranged:
        chains.extend(tcp_chains(push, proxy, egress, target, listen_port))
    if unranged:
        if len(unranged) > 1:
            log.debug("listener %s: %d TCP services share it; only %s is built", listener, len(unranged), unranged[0])
        chains.extend(tcp_chains(push, proxy, egress, unranged[0], listen_port))
    out, dropped = unique_chains(chains)
    if dropped:
        log.debug("listener %s: %d filter chains repeating an earlier match dropped", listener, dropped)
    return out
