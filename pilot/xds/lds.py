"""LDS: outbound listeners for sidecars and Gateway listeners for routers.

Sidecars (from their SidecarScope):

- captured egress listeners (the default, iptables): ``virtualOutbound`` on 0.0.0.0:15001 with
  ``use_original_dst`` and a catch-all tcp_proxy to PassthroughCluster, plus per-port listeners that do not
  bind (``bind_to_port: false``): ``0.0.0.0_<port>`` with an HTTP connection manager using RDS ``"<port>"``
  for HTTP service ports, and ``<VIP>_<port>`` with a tcp_proxy to ``outbound|<port>||<host>`` for TCP ports.
- egress listeners with ``captureMode: NONE`` (or proxies with ``INTERCEPTION_MODE: NONE`` metadata) bind
  their ports themselves at ``bind`` (default 127.0.0.1): ``<bind>_<port>``.
- the inbound side (``pilot.xds.inbound``): ``virtualInbound`` on 0.0.0.0:15006 with the filter chains of the
  workload's ports (mTLS or plaintext by PeerAuthentication), and Sidecar ingress listeners that bind.

Routers: Gateway servers merged per (port, bind) into ``<bind or 0.0.0.0>_<port>`` listeners. HTTP servers use
RDS ``http.<port>[.<bind>]``; TLS PASSTHROUGH servers get one SNI-matched tcp_proxy filter chain per bound
VirtualService TLS route; TCP servers a tcp_proxy from the first bound VirtualService TCP route.
Not implemented: terminating TLS servers (SIMPLE/MUTUAL/ISTIO_MUTUAL/OPTIONAL_MUTUAL need SDS) and
AUTO_PASSTHROUGH; those servers are skipped with a warning.

When two sources produce the same listener name, the first one wins (egress listeners in Sidecar order,
services in hostname order, gateways in (namespace, name) order).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from pilot.config.convert import enum_name
from pilot.model.config import Config
from pilot.model.host import matches as hosts_overlap
from pilot.model.host import resolve_short_name
from pilot.model.proxy import Proxy
from pilot.model.service import Protocol, Service
from pilot.push.context import EgressListener, PushContext, View
from pilot.push.scope import ProxyScope
from pilot.xds import inbound, names
from pilot.xds.cds import config_source
from pilot.xds.units import Unit

log = logging.getLogger(__name__)

Listener = listener_pb2.Listener
Filter = listener_components_pb2.Filter
FilterChain = listener_components_pb2.FilterChain

WILDCARD_ADDRESS = "0.0.0.0"
LOCALHOST = "127.0.0.1"
VIRTUAL_INBOUND_PORT = names.VIRTUAL_INBOUND_PORT
CATCHALL_TCP_CHAIN = "virtualOutbound-catchall-tcp"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
TLS_INSPECTOR_FILTER = "envoy.filters.listener.tls_inspector"
# Ports the sidecar itself listens on; services using them get no outbound listener (as in Istio).
RESERVED_SIDECAR_PORTS = frozenset({names.VIRTUAL_OUTBOUND_PORT, VIRTUAL_INBOUND_PORT})
PASSTHROUGH_TLS_MODES = frozenset({"PASSTHROUGH"})


# ----- filters -----


def http_connection_manager(
    stat_prefix: str,
    route_name: str,
    *,
    use_remote_address: bool = False,
    source: config_source_pb2.ConfigSource | None = None,
) -> Filter:
    """The HCM every HTTP listener uses: RDS over ADS, codec AUTO, filters fault → cors → router.

    Routes refer to the fault and cors filters by name in ``typed_per_filter_config``, so both stay in the
    chain with empty configs.
    """
    manager = hcm_pb2.HttpConnectionManager(stat_prefix=stat_prefix, codec_type=hcm_pb2.HttpConnectionManager.AUTO)
    if source is None:
        manager.rds.config_source.ads.SetInParent()
        manager.rds.config_source.resource_api_version = config_source_pb2.ApiVersion.V3
    else:
        manager.rds.config_source.CopyFrom(source)
    manager.rds.route_config_name = route_name
    for name, config in (
        (names.FAULT_FILTER, fault_pb2.HTTPFault()),
        (names.CORS_FILTER, cors_pb2.Cors()),
        (names.ROUTER_FILTER, router_pb2.Router()),
    ):
        http_filter = manager.http_filters.add(name=name)
        http_filter.typed_config.Pack(config)
    manager.use_remote_address.value = use_remote_address
    manager.normalize_path.value = True
    out = Filter(name=names.HCM_FILTER)
    out.typed_config.Pack(manager)
    return out


def tcp_proxy(stat_prefix: str, cluster: str | None = None, weighted: Iterable[tuple[str, int]] = ()) -> Filter:
    """A tcp_proxy network filter to one cluster, or to weighted clusters."""
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix)
    if cluster is not None:
        proxy.cluster = cluster
    else:
        for name, weight in weighted:
            proxy.weighted_clusters.clusters.add(name=name, weight=weight)
    out = Filter(name=TCP_PROXY_FILTER)
    out.typed_config.Pack(proxy)
    return out


def _listener(name: str, address: str, port: int, *, bind_to_port: bool = True) -> Listener:
    listener = Listener(name=name)
    listener.address.socket_address.CopyFrom(
        address_pb2.SocketAddress(address=address, port_value=port, protocol=address_pb2.SocketAddress.TCP)
    )
    if not bind_to_port:
        listener.bind_to_port.value = False
    return listener


# ----- sidecar -----


@dataclass
class _PortPlan:
    """What one sidecar listener will carry: HTTP (RDS by port) or TCP to exactly one cluster."""

    address: str
    port: int
    bind_to_port: bool
    http: bool
    egress_index: int
    clusters: set[str] = field(default_factory=set)


def _plan(
    plans: dict[str, _PortPlan], address: str, port: int, bind_to_port: bool, http: bool, index: int, cluster: str
) -> None:
    """Record that a service port wants listener ``<address>_<port>``; the first egress listener owns a name.

    Within one egress listener HTTP wins over TCP, so the result does not depend on hostname order.
    """
    name = names.listener_name(address, port)
    plan = plans.get(name)
    if plan is None or (plan.egress_index == index and http and not plan.http):
        plans[name] = _PortPlan(address, port, bind_to_port, http, index, {cluster})
    elif plan.egress_index == index and plan.http == http:
        plan.clusters.add(cluster)
    else:
        log.debug("listener %s: conflicting %s port from %s ignored", name, "HTTP" if http else "TCP", cluster)


def _plan_egress(
    plans: dict[str, _PortPlan], index: int, egress: EgressListener, services: Iterable[Service], captured: bool
) -> None:
    bind = egress.bind or (WILDCARD_ADDRESS if captured else LOCALHOST)
    if egress.port is not None:
        number = egress.port.number
        if egress.port.protocol.is_http:
            # Routes come from RDS by port, so the listener exists even before any service uses the port.
            _plan(plans, bind, number, not captured, True, index, "")
            return
        for svc in services:
            if svc.port_by_number(number) is not None:
                _plan(plans, bind, number, not captured, False, index, names.outbound_cluster(number, "", svc.hostname))
        return
    for svc in services:
        for port in sorted(svc.ports, key=lambda p: p.number):
            if port.number in RESERVED_SIDECAR_PORTS:
                continue
            cluster = names.outbound_cluster(port.number, "", svc.hostname)
            if port.protocol.is_http:
                _plan(plans, bind, port.number, not captured, True, index, cluster)
            elif not captured or egress.bind:
                _plan(plans, bind, port.number, not captured, False, index, cluster)
            else:
                # Captured TCP traffic is told apart by its destination VIP; without one, by port alone.
                vips = sorted(a for a in svc.addresses if "/" not in a and a != WILDCARD_ADDRESS)
                for vip in vips or [WILDCARD_ADDRESS]:
                    _plan(plans, vip, port.number, False, False, index, cluster)


def _virtual_outbound() -> Listener:
    listener = _listener(names.VIRTUAL_OUTBOUND_LISTENER, WILDCARD_ADDRESS, names.VIRTUAL_OUTBOUND_PORT)
    listener.use_original_dst.value = True
    listener.traffic_direction = base_pb2.OUTBOUND
    chain = listener.filter_chains.add(name=CATCHALL_TCP_CHAIN)
    chain.filters.append(tcp_proxy(names.PASSTHROUGH_CLUSTER, names.PASSTHROUGH_CLUSTER))
    return listener


def _sidecar_listeners(proxy: Proxy, push: PushContext) -> list[Listener]:
    scope = push.sidecar_scope(proxy)
    intercepted = not inbound.interception_none(proxy)
    plans: dict[str, _PortPlan] = {}
    for index, egress in enumerate(scope.egress):
        captured = intercepted and egress.capture_mode != "NONE"
        _plan_egress(plans, index, egress, push.visible_services(proxy, egress), captured)
    listeners: list[Listener] = []
    if inbound.captured(proxy, push):
        listeners.append(_virtual_outbound())
    for name in sorted(plans):
        plan = plans[name]
        listener = _listener(name, plan.address, plan.port, bind_to_port=plan.bind_to_port)
        listener.traffic_direction = base_pb2.OUTBOUND
        chain = listener.filter_chains.add()
        if plan.http:
            chain.filters.append(
                http_connection_manager(
                    f"outbound_{name}", names.sidecar_route_name(plan.port), source=config_source(proxy)
                )
            )
        else:
            clusters = sorted(plan.clusters)
            if len(clusters) != 1:
                log.debug("listener %s: TCP port matches %d services; not built", name, len(clusters))
                continue
            chain.filters.append(tcp_proxy(clusters[0], clusters[0]))
        listeners.append(listener)
    return listeners


# ----- router (Gateway) -----


@dataclass
class _ServerGroup:
    """Gateway servers sharing one (port, bind)."""

    port: int
    bind: str
    kind: str  # "http" | "tls" | "tcp"
    servers: list[tuple[Config, Any]] = field(default_factory=list)


def _server_kind(server: Any) -> str | None:
    protocol = Protocol.parse(server.port.protocol if server.port is not None else "")
    if protocol in (Protocol.HTTPS, Protocol.TLS):
        mode = enum_name(getattr(server.tls, "mode", None)) if server.tls is not None else ""
        return "tls" if mode in PASSTHROUGH_TLS_MODES else None
    if protocol.is_http:
        return "http"
    return "tcp"


def _server_hosts(server: Any) -> list[str]:
    return [h.split("/", 1)[1] if "/" in h else h for h in server.hosts or ()]


def _gateway_name(gateway: Config) -> str:
    return f"{gateway.namespace}/{gateway.name}"


def _destination(push: PushContext, namespace: str, destination: Any, default_port: int) -> str:
    host = resolve_short_name(destination.host, namespace, push.domain_suffix)
    number = destination.port.number if destination.port is not None and destination.port.number else 0
    if not number:
        service = push.service(host)
        number = service.ports[0].number if service is not None and len(service.ports) == 1 else default_port
    return names.outbound_cluster(number, destination.subset or "", host)


def _route_filter(push: PushContext, namespace: str, routes: Any, port: int) -> Filter | None:
    targets = [
        (_destination(push, namespace, r.destination, port), r.weight or 0)
        for r in routes or ()
        if r.destination is not None
    ]
    targets = [t for t in targets if len(targets) == 1 or t[1] > 0]
    if not targets:
        return None
    if len(targets) == 1:
        return tcp_proxy(targets[0][0], targets[0][0])
    return tcp_proxy(targets[0][0], weighted=targets)


def _match_applies(match: Any, gateway: Config, port: int) -> bool:
    if match.port and match.port != port:
        return False
    return not match.gateways or _gateway_name(gateway) in match.gateways


def _tls_chains(push: PushContext, group: _ServerGroup) -> list[FilterChain]:
    chains: list[FilterChain] = []
    used: set[str] = set()
    for gateway, server in group.servers:
        server_hosts = _server_hosts(server)
        for bound in push.gateway_virtual_services(gateway):
            namespace = bound.config.namespace
            for route in bound.config.spec.tls or ():
                sni: list[str] = []
                for match in route.match or ():
                    if _match_applies(match, gateway, group.port):
                        sni.extend(h for h in match.sni_hosts if any(hosts_overlap(h, s) for s in server_hosts))
                sni = sorted(set(sni) - used)
                if not sni:
                    continue
                network_filter = _route_filter(push, namespace, route.route, group.port)
                if network_filter is None:
                    continue
                used.update(sni)
                chain = FilterChain()
                if "*" not in sni:  # SNI "*" makes a catch-all chain; `used` keeps it to one
                    chain.filter_chain_match.server_names.extend(sni)
                chain.filters.append(network_filter)
                chains.append(chain)
    return chains


def _tcp_chain(push: PushContext, group: _ServerGroup) -> FilterChain | None:
    for gateway, _server in group.servers:
        for bound in push.gateway_virtual_services(gateway):
            for route in bound.config.spec.tcp or ():
                if route.match and not any(_match_applies(m, gateway, group.port) for m in route.match):
                    continue
                network_filter = _route_filter(push, bound.config.namespace, route.route, group.port)
                if network_filter is not None:
                    chain = FilterChain()
                    chain.filters.append(network_filter)
                    return chain
    return None


def _gateway_listeners(proxy: Proxy, push: PushContext) -> list[Listener]:
    groups: dict[tuple[int, str], _ServerGroup] = {}
    for gateway in push.gateways_for_proxy(proxy):
        for server in gateway.spec.servers or ():
            if server.port is None or not server.port.number:
                continue
            kind = _server_kind(server)
            if kind is None:
                log.warning(
                    "gateway %s: server on port %d terminates TLS, which is not supported; skipped",
                    _gateway_name(gateway),
                    server.port.number,
                )
                continue
            key = (server.port.number, server.bind or "")
            group = groups.setdefault(key, _ServerGroup(server.port.number, server.bind or "", kind))
            if group.kind != kind:
                log.warning(
                    "gateway %s: %s server on port %d conflicts with a %s server; skipped",
                    _gateway_name(gateway),
                    kind,
                    server.port.number,
                    group.kind,
                )
                continue
            group.servers.append((gateway, server))
    listeners: dict[str, Listener] = {}
    for port, bind in sorted(groups):
        group = groups[(port, bind)]
        address = bind or WILDCARD_ADDRESS
        name = names.listener_name(address, port)
        if name in listeners:
            continue
        listener = _listener(name, address, port)
        if group.kind == "http":
            chain = listener.filter_chains.add()
            chain.filters.append(
                http_connection_manager(
                    f"outbound_{name}",
                    names.gateway_http_route_name(port, bind),
                    use_remote_address=True,
                    source=config_source(proxy),
                )
            )
        elif group.kind == "tls":
            chains = _tls_chains(push, group)
            if not chains:
                continue
            listener.filter_chains.extend(chains)
            inspector = listener.listener_filters.add(name=TLS_INSPECTOR_FILTER)
            inspector.typed_config.Pack(tls_inspector_pb2.TlsInspector())
        else:
            tcp_chain = _tcp_chain(push, group)
            if tcp_chain is None:
                continue
            listener.filter_chains.append(tcp_chain)
        listeners[name] = listener
    return list(listeners.values())


def build_outbound_listeners(proxy: Proxy, push: PushContext) -> list[Listener]:
    """A proxy's listeners but a sidecar's inbound ones, deterministic for a given (outbound view, push)."""
    if proxy.is_router:
        return _gateway_listeners(proxy, push)
    return _sidecar_listeners(proxy, push)


def build_listeners(proxy: Proxy, push: PushContext) -> list[Listener]:
    """All listeners for a proxy, deterministic for a given (proxy, push)."""
    out = build_outbound_listeners(proxy, push)
    if not proxy.is_router:
        out.extend(inbound.build_listeners(proxy, push))
    return out


def listener_units(proxy: Proxy, push: PushContext, scope: ProxyScope) -> list[Unit]:
    """A proxy's outbound listeners as one cacheable unit: they are planned together (ports shared by
    services, gateway servers merged), so they depend on the scope as a whole and are shared by its outbound
    class. A sidecar's inbound listeners are ``inbound_listener_units``."""
    return [Unit(("lds", scope.fingerprint), scope.deps, lambda: build_outbound_listeners(proxy, push))]


def inbound_listener_units(proxy: Proxy, push: PushContext, scope: ProxyScope, view: View) -> list[Unit]:
    """A sidecar's inbound listeners as one unit, keyed by its whole view (service targets, the policy in
    effect, its IPs when a Sidecar ingress binds), depending on the PeerAuthentications in scope and the
    Sidecar; none without an inbound side."""
    if proxy.is_router or not view.inbound:
        return []
    deps = scope.peer_authentications | ({scope.sidecar} if scope.sidecar is not None else set())
    return [Unit(("lds-inbound", view), deps, lambda: inbound.build_listeners(proxy, push))]
