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

Routers: the Gateways selecting them, merged as istiod merges them, as listeners (``pilot.xds.lds_gateway``:
HTTP, TLS termination with SDS credentials, TCP, PASSTHROUGH and AUTO_PASSTHROUGH servers).

When two sources produce the same listener name, the first one wins (egress listeners in Sidecar order,
services in hostname order).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2

from pilot.model.proxy import Proxy
from pilot.model.service import Service
from pilot.push.context import EgressListener, PushContext, View
from pilot.push.scope import ProxyScope
from pilot.xds import inbound, lds_gateway, lds_l4, names, rds
from pilot.xds.cds import config_source
from pilot.xds.filters import add_tls_inspector, http_connection_manager, tcp_proxy  # also lds's public API
from pilot.xds.units import Unit

log = logging.getLogger(__name__)

Listener = listener_pb2.Listener
Filter = listener_components_pb2.Filter
FilterChain = listener_components_pb2.FilterChain

WILDCARD_ADDRESS = "0.0.0.0"
LOCALHOST = "127.0.0.1"
VIRTUAL_INBOUND_PORT = names.VIRTUAL_INBOUND_PORT
CATCHALL_TCP_CHAIN = "virtualOutbound-catchall-tcp"
# Ports the sidecar itself listens on; services using them get no outbound listener (as in Istio).
RESERVED_SIDECAR_PORTS = frozenset({names.VIRTUAL_OUTBOUND_PORT, VIRTUAL_INBOUND_PORT})


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
    """What one sidecar listener will carry: HTTP (RDS by port), or the TCP/TLS service ports on it
    (pilot.xds.lds_l4 turns them into filter chains, with their VirtualServices' tcp and tls routes)."""

    address: str
    port: int
    bind_to_port: bool
    http: bool
    egress_index: int
    targets: dict[str, lds_l4.Target] = field(default_factory=dict)  # by hostname
    shared_address: bool = False  # not a service's own VIP: TLS services are told apart by SNI


def _plan(
    plans: dict[str, _PortPlan],
    address: str,
    port: int,
    bind_to_port: bool,
    http: bool,
    index: int,
    target: lds_l4.Target | None,
    *,
    shared_address: bool = True,
) -> None:
    """Record that a service port wants listener ``<address>_<port>``; the first egress listener owns a name.

    Within one egress listener HTTP wins over TCP, so the result does not depend on hostname order.
    """
    name = names.listener_name(address, port)
    plan = plans.get(name)
    if plan is None or (plan.egress_index == index and http and not plan.http):
        plan = plans[name] = _PortPlan(address, port, bind_to_port, http, index, shared_address=shared_address)
    elif not (plan.egress_index == index and plan.http == http):
        log.debug("listener %s: conflicting %s port from %s ignored", name, "HTTP" if http else "TCP", target)
        return
    if target is not None and not http:
        plan.targets.setdefault(target.service.hostname, target)


def _plan_egress(
    plans: dict[str, _PortPlan], index: int, egress: EgressListener, services: Iterable[Service], captured: bool
) -> None:
    bind = egress.bind or (WILDCARD_ADDRESS if captured else LOCALHOST)
    if egress.port is not None:
        number = egress.port.number
        if egress.port.protocol.is_http:
            # Routes come from RDS by port, so the listener exists even before any service uses the port.
            _plan(plans, bind, number, not captured, True, index, None)
            return
        for svc in services:
            found = svc.port_by_number(number)
            if found is not None:
                # The Sidecar's port decides the protocol (TLS chains or TCP), as istiod's listenPort.
                port = dataclasses.replace(found, protocol=egress.port.protocol)
                _plan(plans, bind, number, not captured, False, index, lds_l4.Target(svc, port))
        return
    for svc in services:
        for port in sorted(svc.ports, key=lambda p: p.number):
            if port.number in RESERVED_SIDECAR_PORTS:
                continue
            target = lds_l4.Target(svc, port)
            if port.protocol.is_http:
                _plan(plans, bind, port.number, not captured, True, index, target)
            elif not captured or egress.bind:
                _plan(plans, bind, port.number, not captured, False, index, target)
            else:
                # Captured TCP traffic is told apart by its destination VIP, or by the destination range of a
                # CIDR address on 0.0.0.0 (istiod); without either, by port alone.
                vips = sorted(a for a in svc.addresses if "/" not in a and a != WILDCARD_ADDRESS)
                cidrs = tuple(sorted(a for a in svc.addresses if "/" in a))
                for vip in vips:
                    _plan(plans, vip, port.number, False, False, index, target, shared_address=False)
                if cidrs or not vips:
                    ranged = dataclasses.replace(target, cidrs=cidrs)
                    _plan(plans, WILDCARD_ADDRESS, port.number, False, False, index, ranged, shared_address=True)


def _virtual_outbound(cluster: str) -> Listener:
    """Traffic to no known listener: passed through (ALLOW_ANY, the mesh default), sent to the Sidecar's
    egressProxy, or dropped (REGISTRY_ONLY): ``rds.unknown_destination_cluster``."""
    listener = _listener(names.VIRTUAL_OUTBOUND_LISTENER, WILDCARD_ADDRESS, names.VIRTUAL_OUTBOUND_PORT)
    listener.use_original_dst.value = True
    listener.traffic_direction = base_pb2.OUTBOUND
    chain = listener.filter_chains.add(name=CATCHALL_TCP_CHAIN)
    chain.filters.append(tcp_proxy(cluster, cluster))
    return listener


def _sidecar_listeners(proxy: Proxy, push: PushContext) -> list[Listener]:
    scope = push.sidecar_scope(proxy)
    intercepted = not inbound.interception_none(proxy)
    plans: dict[str, _PortPlan] = {}
    egresses = scope.egress
    for index, egress in enumerate(egresses):
        captured = intercepted and egress.capture_mode != "NONE"
        _plan_egress(plans, index, egress, push.visible_services(proxy, egress), captured)
    listeners: list[Listener] = []
    if inbound.captured(proxy, push):
        listeners.append(_virtual_outbound(rds.unknown_destination_cluster(push.sidecar_for(proxy))))
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
            listener.ClearField("filter_chains")
            chains = lds_l4.listener_chains(
                push,
                proxy,
                egresses[plan.egress_index],
                plan.targets.values(),
                plan.port,
                shared_address=plan.shared_address,
                listener=name,
            )
            if not chains:
                continue
            listener.filter_chains.extend(chains)
            add_tls_inspector(listener, chains)
        listeners.append(listener)
    return listeners


def build_outbound_listeners(proxy: Proxy, push: PushContext) -> list[Listener]:
    """A proxy's listeners but a sidecar's inbound ones, deterministic for a given (outbound view, push)."""
    if proxy.is_router:
        return lds_gateway.build_listeners(proxy, push)
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
