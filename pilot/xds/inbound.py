"""A sidecar's inbound side, as istiod builds it (listener_inbound.go, filterchain_options.go, cluster.go).

What the workload receives is described by *chains*, one per workload port (istiod's inboundChainConfig):

* without Sidecar ``ingress`` listeners, one per port of the proxy's own service instances (found by its IP
  among the services' endpoints), to ``inbound|<targetPort>||``; the first service wins a port (a different
  protocol from another service is reported as ``pilot_conflict_inbound_listener``). With INTERCEPTION_MODE
  NONE there are none (the application binds those ports itself).
* with ``ingress`` listeners, one per listener instead, to ``inbound|<port>||``, forwarding to its
  ``defaultEndpoint`` (``127.0.0.1:PORT``, ``0.0.0.0:PORT`` = the instance IP, ``unix://`` path) or, without
  one, to the original destination. A listener whose capture mode is NONE (or DEFAULT on a proxy without
  interception) binds ``<bind>_<port>`` itself (bind default: the proxy's global unicast IP, else 0.0.0.0).

Each chain becomes filter chains chosen by the PeerAuthentication mode for its port (``pilot.push.authn``):
STRICT takes only Istio mTLS, DISABLE only plaintext, PERMISSIVE both, told apart by the TLS inspector
(transport ``tls`` / ``raw_buffer``) and the client's ALPN (``istio-peer-exchange``, ``istio``); ports of
unknown protocol get HTTP and TCP chains (HTTP inspector). mTLS chains terminate with the workload's SDS
certificate and require a client certificate from the mesh root (``pilot.xds.mtls``). A proxy without
workload certificates serves PERMISSIVE ports in plaintext only (``serving_mode``).

Captured proxies get ``virtualInbound`` on 0.0.0.0:15006 (original_dst listener filter), holding a blackhole
chain for traffic to 15006 itself, the passthrough chains (``virtualInbound`` / ``virtualInbound-catchall-http``
to InboundPassthroughCluster, also per port for PeerAuthentication port-level settings no chain covers) and
the chains of the workload's ports. Inbound clusters connect from 127.0.0.6, which the capture rules let by.

Deviations: istiod gives every captured sidecar ``virtualInbound`` (and InboundPassthroughCluster); here a
captured sidecar that is no service's instance and has no ingress listener gets neither (so config for
proxies that only send is unchanged). "Captured" is pilot's existing rule for ``virtualOutbound``: not
INTERCEPTION_MODE NONE, and some Sidecar egress or ingress listener is captured. Istio-proxy-only filters
(metadata exchange, stats) are left out; Sidecar ingress ``tls`` and connection pools are not applied.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import address_pb2, base_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from pilot.config.convert import enum_name
from pilot.model.config import Config, ConfigKey
from pilot.model.proxy import Proxy
from pilot.model.service import Port, Protocol
from pilot.push.authn import MergedPeerAuthentication, MtlsMode, has_workload_certificates
from pilot.push.context import PushContext
from pilot.xds import mtls, names
from pilot.xds.filters import TLS_INSPECTOR_FILTER, tcp_proxy

log = logging.getLogger(__name__)

Listener = listener_pb2.Listener
FilterChain = listener_components_pb2.FilterChain
Predicate = listener_components_pb2.ListenerFilterChainMatchPredicate

WILDCARD = "0.0.0.0"
LOCALHOST = "127.0.0.1"
ORIGINAL_DST_FILTER = "envoy.filters.listener.original_dst"
HTTP_INSPECTOR_FILTER = "envoy.filters.listener.http_inspector"
TLS = "tls"
RAW_BUFFER = "raw_buffer"
INBOUND_SERVER_NAME = "istio-envoy"  # istiod's inbound HCM server_name
CONFLICT_STATUS = "pilot_conflict_inbound_listener"
SIDECAR_CONFIG_PATH = "/apis/networking.istio.io/v1/namespaces/{ns}/sidecar/{name}"
# Ports of the proxy's own listeners, which a service port cannot take (istiod's conflictWithReservedListener);
# the status and Prometheus ports come from the agent's metadata.
RESERVED_PORTS = frozenset({names.VIRTUAL_OUTBOUND_PORT, names.VIRTUAL_INBOUND_PORT})
STATIC_PORT_METADATA = ("ENVOY_STATUS_PORT", "ENVOY_PROMETHEUS_PORT")

# ALPNs of the filter chain matches (istiod's listener.go).
_PLAINTEXT_HTTP_ALPNS = ("http/1.1", "h2c")
_MTLS_HTTP_ALPNS = ("istio-http/1.0", "istio-http/1.1", "istio-h2")
_ALL_ISTIO_MTLS_ALPNS = ("istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2")
_MTLS_TCP_ALPNS = ("istio-peer-exchange", "istio")


@dataclass(frozen=True)
class _Match:
    """istiod's FilterChainMatchOptions: one filter chain of a chain config."""

    alpn: tuple[str, ...]
    transport: str
    http: bool  # HTTP connection manager, else tcp_proxy
    tls: bool = False  # terminates Istio mTLS


_HTTP, _TCP, _AUTO = "http", "tcp", "auto"
# (listener protocol, mode) -> matches; istiod's inbound*FilterChainMatch*Options.
_MATCHES: dict[tuple[str, MtlsMode], tuple[_Match, ...]] = {
    (_HTTP, MtlsMode.STRICT): (_Match((), TLS, True, True),),
    (_HTTP, MtlsMode.PERMISSIVE): (_Match(_ALL_ISTIO_MTLS_ALPNS, TLS, True, True), _Match((), RAW_BUFFER, True)),
    (_HTTP, MtlsMode.DISABLE): (_Match((), RAW_BUFFER, True),),
    (_TCP, MtlsMode.STRICT): (_Match((), TLS, False, True),),
    (_TCP, MtlsMode.PERMISSIVE): (
        _Match(_ALL_ISTIO_MTLS_ALPNS, TLS, False, True),
        _Match((), TLS, False),
        _Match((), RAW_BUFFER, False),
    ),
    (_TCP, MtlsMode.DISABLE): (_Match((), RAW_BUFFER, False),),
    (_AUTO, MtlsMode.STRICT): (_Match(_MTLS_HTTP_ALPNS, TLS, True, True), _Match((), TLS, False, True)),
    (_AUTO, MtlsMode.PERMISSIVE): (
        _Match(_MTLS_HTTP_ALPNS, TLS, True, True),
        _Match(_PLAINTEXT_HTTP_ALPNS, RAW_BUFFER, True),
        _Match(_MTLS_TCP_ALPNS, TLS, False, True),
        _Match((), RAW_BUFFER, False),
        _Match((), TLS, False),
    ),
    (_AUTO, MtlsMode.DISABLE): (_Match(_PLAINTEXT_HTTP_ALPNS, RAW_BUFFER, True), _Match((), RAW_BUFFER, False)),
}


def listener_protocol(protocol: Protocol) -> str:
    """istiod's ModelProtocolToListenerProtocol: HTTP kinds, TCP kinds, or sniffed (unknown) ports."""
    if protocol is Protocol.UNKNOWN:
        return _AUTO
    return _HTTP if protocol.is_http else _TCP


def matches_for(mode: MtlsMode, protocol: str) -> tuple[_Match, ...]:
    return _MATCHES[(protocol, mode if mode in (MtlsMode.STRICT, MtlsMode.PERMISSIVE) else MtlsMode.DISABLE)]


def serving_mode(mode: MtlsMode, workload_certs: bool) -> MtlsMode:
    """The mode a proxy's chains are built in: without workload certificates PERMISSIVE can only take plaintext
    (its mTLS chains would wait for secrets forever); STRICT stays STRICT, failing closed."""
    if not workload_certs and mode is MtlsMode.PERMISSIVE:
        return MtlsMode.DISABLE
    return mode


# ----- the plan: chains of the workload's ports -----


@dataclass(frozen=True)
class Upstream:
    """Where an inbound cluster sends: the original destination (address ""), an address, or a unix socket."""

    address: str = ""
    port: int = 0

    @property
    def original_dst(self) -> bool:
        return not self.address

    @property
    def pipe(self) -> str:
        return self.address.removeprefix("unix://") if self.address.startswith("unix://") else ""


@dataclass(frozen=True)
class Chain:
    """One workload port (istiod's inboundChainConfig)."""

    cluster: str
    port: Port  # the service (or ingress listener) port
    target_port: int  # the workload port: filter chains match it, the cluster is named after it
    bind: str
    bind_to_port: bool
    hostname: str  # the instance's service (or the Sidecar, for ingress listeners)
    upstream: Upstream = Upstream()
    sidecar: ConfigKey | None = None  # the Sidecar of an ingress listener
    passthrough: bool = False

    def name(self, http: bool) -> str:
        if self.passthrough:
            return names.VIRTUAL_INBOUND_CATCHALL_HTTP_CHAIN if http else names.VIRTUAL_INBOUND_LISTENER
        return names.listener_name(self.bind, self.target_port)


@dataclass(frozen=True)
class Plan:
    chains: tuple[Chain, ...]  # by target port
    virtual: bool  # whether virtualInbound (and InboundPassthroughCluster) exist


def interception_none(proxy: Proxy) -> bool:
    return str(proxy.metadata.get("INTERCEPTION_MODE", "")).upper() == "NONE"


def _capture_mode(listener: object) -> str:
    return enum_name(getattr(listener, "capture_mode", None)) or "DEFAULT"


def captured(proxy: Proxy, push: PushContext) -> bool:
    """Whether the proxy's traffic is redirected to it (virtualOutbound, virtualInbound): interception is not
    NONE and some Sidecar egress or ingress listener is captured (an implicit egress listener always is)."""
    if proxy.is_router or interception_none(proxy):
        return False
    scope = push.sidecar_scope(proxy)
    if any(egress.capture_mode != "NONE" for egress in scope.egress):
        return True
    sidecar = scope.sidecar
    return sidecar is not None and any(_capture_mode(i) != "NONE" for i in sidecar.spec.ingress)


def _bind_to_port(capture_mode: str, proxy: Proxy) -> bool:
    """istiod's getBindToPort."""
    if capture_mode == "DEFAULT":
        return interception_none(proxy)
    return capture_mode == "NONE"


def _global_unicast_ip(proxy: Proxy) -> str:
    """The proxy's first global unicast address (Go's IsGlobalUnicast: private ranges included)."""
    for raw in proxy.ip_addresses:
        try:
            ip = ipaddress.ip_address(raw)
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified or raw == "255.255.255.255"):
            return raw
    return ""


def _reserved(proxy: Proxy, port: int, bind: str) -> bool:
    """A port taken by the proxy's own listeners on the wildcard address."""
    if bind and bind != WILDCARD:
        return False
    static = {str(proxy.metadata.get(key, "")) for key in STATIC_PORT_METADATA}
    return port in RESERVED_PORTS or str(port) in static


def _default_endpoint(proxy: Proxy, raw: str) -> Upstream:
    """istiod's reading of Sidecar ingress defaultEndpoint."""
    if not raw:
        return Upstream()
    if raw.startswith("unix://"):
        return Upstream(raw)
    host, _, port_text = raw.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        return Upstream()
    if host == WILDCARD:
        ipv4 = [ip for ip in proxy.ip_addresses if ":" not in ip]
        return Upstream(ipv4[0] if ipv4 else LOCALHOST, port)
    if host == "::":
        ipv6 = [ip for ip in proxy.ip_addresses if ":" in ip]
        return Upstream(ipv6[0] if ipv6 else "::1", port)
    return Upstream(host, port)  # 127.0.0.1 or ::1 (validation allows nothing else)


def _service_chains(proxy: Proxy, push: PushContext) -> dict[int, Chain]:
    chains: dict[int, Chain] = {}
    for target in push.service_targets(proxy):
        if _reserved(proxy, target.target_port, WILDCARD):
            log.warning("proxy %s: inbound port %d is one of the proxy's own; skipped", proxy.id, target.target_port)
            continue
        chain = Chain(
            cluster=names.inbound_cluster(target.target_port),
            port=target.port,
            target_port=target.target_port,
            bind=WILDCARD,
            bind_to_port=interception_none(proxy),
            hostname=target.service.hostname,
        )
        _add(push, proxy, chains, chain)
    return chains


def _ingress_chains(proxy: Proxy, push: PushContext, sidecar: Config) -> dict[int, Chain]:
    chains: dict[int, Chain] = {}
    for ingress in sidecar.spec.ingress:
        if ingress.port is None or not ingress.port.number:
            continue
        number = ingress.port.number
        bind_to_port = _bind_to_port(_capture_mode(ingress), proxy)
        bind = ingress.bind or _global_unicast_ip(proxy) or WILDCARD
        if _reserved(proxy, number, ingress.bind or WILDCARD):
            log.warning("proxy %s: Sidecar ingress port %d is one of the proxy's own; skipped", proxy.id, number)
            continue
        port = Port(ingress.port.name, number, Protocol.parse(ingress.port.protocol))
        chain = Chain(
            cluster=names.inbound_cluster(number),
            port=port,
            target_port=number,
            bind=bind,
            bind_to_port=bind_to_port,
            hostname=f"{sidecar.name}.{sidecar.namespace}",
            upstream=_default_endpoint(proxy, ingress.default_endpoint),
            sidecar=sidecar.key,
        )
        _add(push, proxy, chains, chain)
    return chains


def _add(push: PushContext, proxy: Proxy, chains: dict[int, Chain], chain: Chain) -> None:
    """First come, first served per workload port (istiod uses the oldest service)."""
    old = chains.get(chain.target_port)
    if old is None:
        chains[chain.target_port] = chain
        return
    if old.port.protocol != chain.port.protocol and old.hostname != chain.hostname:
        push.add_status(
            CONFLICT_STATUS,
            proxy.id,
            proxy.id,
            f"Conflicting inbound listener:{chain.target_port}. existing: {old.hostname}, incoming: {chain.hostname}",
        )


def plan(proxy: Proxy, push: PushContext) -> Plan:
    """The inbound chains of a sidecar, and whether it gets virtualInbound."""
    if proxy.is_router:
        return Plan((), False)
    sidecar = push.sidecar_for(proxy)
    if sidecar is not None and sidecar.spec.ingress:
        chains = _ingress_chains(proxy, push, sidecar)
    elif interception_none(proxy):
        chains = {}
    else:
        chains = _service_chains(proxy, push)
    ordered = tuple(chains[port] for port in sorted(chains))
    return Plan(ordered, bool(ordered) and captured(proxy, push))


# ----- listeners -----


def _inbound_route(chain: Chain, cluster: str) -> route_pb2.RouteConfiguration:
    """istiod's buildSidecarInboundHTTPRouteConfig: everything to the inbound cluster, no timeout, inbound
    retries (reset-before-request, twice) except for gRPC."""
    config = route_pb2.RouteConfiguration(name=cluster)
    config.validate_clusters.value = False
    vhost = config.virtual_hosts.add(name=names.inbound_vhost_name(chain.port.number), domains=["*"])
    route = vhost.routes.add(name="default")
    route.match.prefix = "/"
    route.decorator.operation = f"{chain.hostname}:{chain.port.number}/*"
    action = route.route
    action.cluster = cluster
    action.timeout.SetInParent()
    action.max_stream_duration.max_stream_duration.SetInParent()
    action.max_stream_duration.grpc_timeout_header_max.SetInParent()
    if chain.port.protocol is not Protocol.GRPC:
        action.retry_policy.retry_on = "reset-before-request"
        action.retry_policy.num_retries.value = 2
    return config


def _inbound_hcm(chain: Chain) -> listener_components_pb2.Filter:
    cluster = names.INBOUND_PASSTHROUGH_CLUSTER if chain.passthrough else chain.cluster
    stat_prefix = cluster if chain.passthrough else f"inbound_{chain.name(True)}"
    manager = hcm_pb2.HttpConnectionManager(stat_prefix=stat_prefix, codec_type=hcm_pb2.HttpConnectionManager.AUTO)
    manager.route_config.CopyFrom(_inbound_route(chain, cluster))
    for name, config in (
        (names.FAULT_FILTER, fault_pb2.HTTPFault()),
        (names.CORS_FILTER, cors_pb2.Cors()),
        (names.ROUTER_FILTER, router_pb2.Router()),
    ):
        manager.http_filters.add(name=name).typed_config.Pack(config)
    manager.use_remote_address.value = False
    manager.normalize_path.value = True
    manager.path_with_escaped_slashes_action = hcm_pb2.HttpConnectionManager.KEEP_UNCHANGED
    manager.upgrade_configs.add(upgrade_type="websocket")
    manager.stream_idle_timeout.SetInParent()
    # The peer's identity travels to the application (istiod's default proxy headers).
    manager.forward_client_cert_details = hcm_pb2.HttpConnectionManager.APPEND_FORWARD
    details = manager.set_current_client_cert_details
    details.subject.value = True
    details.uri = True
    details.dns = True
    manager.server_name = INBOUND_SERVER_NAME
    if chain.port.protocol.is_http2:
        manager.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    out = listener_components_pb2.Filter(name=names.HCM_FILTER)
    out.typed_config.Pack(manager)
    return out


def _config_metadata(sidecar: ConfigKey) -> base_pb2.Metadata:
    metadata = base_pb2.Metadata()
    path = SIDECAR_CONFIG_PATH.format(ns=sidecar.namespace, name=sidecar.name)
    metadata.filter_metadata["istio"].fields["config"].string_value = path
    return metadata


def filter_chains(chain: Chain, mode: MtlsMode, protocol: str) -> list[FilterChain]:
    """istiod's inboundChainForOpts: one filter chain per match option of the port's mode and protocol."""
    out = []
    for match in matches_for(mode, protocol):
        fc = FilterChain(name=chain.name(match.http))
        fcm = fc.filter_chain_match
        fcm.SetInParent()
        fcm.application_protocols.extend(match.alpn)
        fcm.transport_protocol = match.transport
        if chain.target_port > 0:
            fcm.destination_port.value = chain.target_port
        if match.http:
            fc.filters.append(_inbound_hcm(chain))
        else:
            cluster = names.INBOUND_PASSTHROUGH_CLUSTER if chain.passthrough else chain.cluster
            fc.filters.append(tcp_proxy(cluster, cluster))
        if match.tls:
            fc.transport_socket.CopyFrom(mtls.transport_socket(mtls.inbound_downstream(http=match.http)))
        if chain.sidecar is not None:
            fc.metadata.CopyFrom(_config_metadata(chain.sidecar))
        out.append(fc)
    return out


def _blackhole_chain() -> FilterChain:
    """Traffic addressed to 15006 itself would loop back forever: drop it."""
    chain = FilterChain(name=names.VIRTUAL_INBOUND_BLACKHOLE_CHAIN)
    chain.filter_chain_match.destination_port.value = names.VIRTUAL_INBOUND_PORT
    chain.filters.append(tcp_proxy(names.BLACKHOLE_CLUSTER, names.BLACKHOLE_CLUSTER))
    return chain


def _passthrough_chains(peer: MergedPeerAuthentication, covered: set[int], certs: bool) -> list[FilterChain]:
    """Chains for traffic no port chain takes, in the mode of the workload (istiod's ForPassthrough), and per
    port for PeerAuthentication port-level settings that no chain covers."""
    out = [_blackhole_chain()]
    ports = [0, *(port for port, _ in peer.per_port if port not in covered)]
    for port in ports:
        passthrough = Chain(
            cluster=names.INBOUND_PASSTHROUGH_CLUSTER,
            port=Port(names.VIRTUAL_INBOUND_LISTENER, 0, Protocol.UNKNOWN),
            target_port=port,
            bind=WILDCARD,
            bind_to_port=False,
            hostname="",
            passthrough=True,
        )
        out.extend(filter_chains(passthrough, serving_mode(peer.mode_for_port(port), certs), _AUTO))
    return out


def _port_range(port: int) -> Predicate:
    predicate = Predicate()
    predicate.destination_port_range.start = port
    predicate.destination_port_range.end = port + 1
    return predicate


def _any_port(ports: Sequence[int]) -> Predicate:
    if len(ports) == 1:
        return _port_range(ports[0])
    predicate = Predicate()
    predicate.or_match.rules.extend(_port_range(p) for p in ports)
    return predicate


def _listener_filters(
    chains: Iterable[FilterChain], original_dst: bool
) -> list[listener_components_pb2.ListenerFilter]:
    """istiod's populateListenerFilters: original_dst for redirected traffic, then the TLS and HTTP inspectors
    on the destination ports whose chains match on transport protocol or plaintext HTTP ALPN."""
    out = []
    if original_dst:
        out.append(listener_components_pb2.ListenerFilter(name=ORIGINAL_DST_FILTER))
        out[-1].typed_config.Pack(original_dst_pb2.OriginalDst())
    needs: dict[int, tuple[bool, bool]] = {}  # port -> (tls, http)
    for chain in chains:
        fcm = chain.filter_chain_match
        port = fcm.destination_port.value if fcm.HasField("destination_port") else 0
        tls, http = needs.get(port, (False, False))
        needs[port] = (
            tls or fcm.transport_protocol == TLS,
            http or any(a in ("http/1.1", "h2c") for a in fcm.application_protocols),
        )
    if any(tls for tls, _ in needs.values()):
        inspector = listener_components_pb2.ListenerFilter(name=TLS_INSPECTOR_FILTER)
        inspector.typed_config.Pack(tls_inspector_pb2.TlsInspector())
        if needs.get(0, (False, False))[0]:
            disabled = sorted(p for p, (tls, _) in needs.items() if p and not tls)
            if disabled:
                inspector.filter_disabled.CopyFrom(_any_port(disabled))
        else:
            enabled = sorted(p for p, (tls, _) in needs.items() if p and tls)
            if enabled:
                inspector.filter_disabled.not_match.CopyFrom(_any_port(enabled))
        out.append(inspector)
    if any(http for _, http in needs.values()):
        inspector = listener_components_pb2.ListenerFilter(name=HTTP_INSPECTOR_FILTER)
        inspector.typed_config.Pack(http_inspector_pb2.HttpInspector())
        disabled = sorted(p for p, (_, http) in needs.items() if not http)
        if disabled:
            inspector.filter_disabled.CopyFrom(_any_port(disabled))
        out.append(inspector)
    return out


def _inbound_listener(name: str, address: str, port: int, chains: list[FilterChain], *, bound: bool) -> Listener:
    listener = Listener(name=name, traffic_direction=base_pb2.INBOUND)
    listener.address.socket_address.CopyFrom(
        address_pb2.SocketAddress(address=address, port_value=port, protocol=address_pb2.SocketAddress.TCP)
    )
    listener.continue_on_listener_filters_timeout = True
    listener.filter_chains.extend(chains)
    listener.listener_filters.extend(_listener_filters(chains, original_dst=not bound))
    listener.listener_filters_timeout.SetInParent()  # mesh protocolDetectionTimeout: 0s, no timeout
    return listener


def build_listeners(proxy: Proxy, push: PushContext) -> list[Listener]:
    """virtualInbound (captured proxies with inbound chains) first, then the listeners that bind their port."""
    inbound = plan(proxy, push)
    if not inbound.chains:
        return []
    peer = push.authn_policies.effective(proxy.namespace, proxy.labels)
    certs = has_workload_certificates(proxy)
    virtual_chains: list[FilterChain] = []
    bound: list[Listener] = []
    for chain in inbound.chains:
        mode = serving_mode(peer.mode_for_port(chain.target_port), certs)
        chains = filter_chains(chain, mode, listener_protocol(chain.port.protocol))
        if chain.bind_to_port:
            bound.append(_inbound_listener(chain.name(False), chain.bind, chain.target_port, chains, bound=True))
        else:
            virtual_chains.extend(chains)
    out: list[Listener] = []
    if inbound.virtual:
        covered = {c.target_port for c in inbound.chains}
        chains = [*_passthrough_chains(peer, covered, certs), *virtual_chains]
        virtual = _inbound_listener(
            names.VIRTUAL_INBOUND_LISTENER, WILDCARD, names.VIRTUAL_INBOUND_PORT, chains, bound=False
        )
        out.append(virtual)
    return out + bound
