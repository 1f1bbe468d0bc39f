"""CDS: the outbound clusters a proxy sees, with DestinationRule traffic policies applied.

One cluster ``outbound|<port>||<host>`` per visible service port, plus one ``outbound|<port>|<subset>|<host>``
per DestinationRule subset, plus ``BlackHoleCluster`` and ``PassthroughCluster``. The cluster type follows
the service resolution (Istio's ``convertResolution``): STATIC → EDS, DNS → STRICT_DNS with inline endpoints
(DNS_ROUND_ROBIN → LOGICAL_DNS), NONE → ORIGINAL_DST (gateways fall back to EDS, as in Istio). Sidecars also
get their inbound clusters (``pilot.xds.inbound``), with the connection pool of their Sidecar or service.

Traffic policies: ``pilot.xds.cluster_policy``; TLS, auto-mTLS and the PROXY protocol:
``pilot.xds.cluster_tls``. Locality load balancing (``pilot.xds.locality``):
``common_lb_config.locality_weighted_lb_config`` where istiod sets it; the inline endpoints of DNS clusters get
the proxy's priorities and weights as EDS does.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from pilot.model.config import SERVICE_KIND, Config, ConfigKey
from pilot.model.proxy import Proxy
from pilot.model.service import Endpoint, Port, Protocol, Resolution, Service, labels_match
from pilot.push.authn import has_workload_certificates
from pilot.push.context import PushContext, rule_selector
from pilot.push.locality import locality_lb
from pilot.push.scope import ProxyScope, scope_for
from pilot.xds import inbound, locality, names
from pilot.xds.cluster_policy import HTTP_PROTOCOL_OPTIONS_KEY as HTTP_PROTOCOL_OPTIONS_KEY
from pilot.xds.cluster_policy import EffectivePolicy as EffectivePolicy
from pilot.xds.cluster_policy import (
    apply_load_balancer,
    apply_outlier_detection,
    apply_tcp_settings,
    circuit_breakers,
    common_http_options,
    http_protocol_options,
    port_level,
)
from pilot.xds.cluster_policy import effective_policy as effective_policy
from pilot.xds.cluster_policy import subset_labels as subset_labels
from pilot.xds.cluster_policy import tcp_settings as tcp_settings
from pilot.xds.cluster_tls import PROXY_PROTOCOL_TRANSPORT_SOCKET as PROXY_PROTOCOL_TRANSPORT_SOCKET
from pilot.xds.cluster_tls import TLS_TRANSPORT_SOCKET as TLS_TRANSPORT_SOCKET
from pilot.xds.cluster_tls import (
    apply_auto_mtls,
    apply_proxy_protocol,
    apply_tls,
    authn_deps,
    authn_version,
    auto_mtls,
    endpoint_tls_metadata,
)
from pilot.xds.units import Unit

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = datetime.timedelta(seconds=10)
UNIX_PREFIX = "unix://"

Cluster = cluster_pb2.Cluster


# ----- cluster building -----


def config_source(proxy: Proxy) -> config_source_pb2.ConfigSource:
    """Where a proxy fetches the EDS of a cluster or the RDS of a listener: over ADS as istiod says, or, for a
    proxy not on ADS, over its own transport to pilot (per-type gRPC, Delta gRPC or REST)."""
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.ApiVersion.V3)
    if proxy.xds_api == "ads":
        source.ads.SetInParent()
        return source
    api = source.api_config_source
    api.transport_api_version = config_source_pb2.ApiVersion.V3
    if proxy.xds_api == "rest":
        api.api_type = config_source_pb2.ApiConfigSource.REST
        api.cluster_names.append(names.XDS_REST_CLUSTER)
        api.refresh_delay.seconds = names.REST_REFRESH_DELAY_S
        api.request_timeout.seconds = names.REST_REFRESH_DELAY_S
    else:
        delta = proxy.xds_api == "delta-grpc"
        api.api_type = config_source_pb2.ApiConfigSource.DELTA_GRPC if delta else config_source_pb2.ApiConfigSource.GRPC
        api.set_node_on_first_message_only = True
        api.grpc_services.add().envoy_grpc.cluster_name = names.XDS_GRPC_CLUSTER
    return source


def _socket_address(address: str, port: int) -> address_pb2.Address:
    if address.startswith(UNIX_PREFIX):  # a ServiceEntry endpoint on a unix domain socket: istiod's pipe address
        return address_pb2.Address(pipe=address_pb2.Pipe(path=address[len(UNIX_PREFIX) :]))
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=address, port_value=port))


def load_assignment(
    cluster_name: str,
    endpoints: Iterable[Endpoint],
    tls_mode: Callable[[Endpoint], str] | None = None,
    balancer: locality.Balancer | None = None,
) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints grouped by locality (sorted), each group sorted by address and port, weighted by its
    endpoints' weights; then the cluster's locality load balancing for the proxy (``balancer``: priorities
    or locality weights, see ``pilot.xds.locality``).

    Shared by EDS and by the inline assignments of STRICT_DNS clusters. ``tls_mode`` gives an endpoint's
    ``tlsMode`` metadata (``envoy.transport_socket_match``), which auto-mTLS clusters match on ("": none).
    """
    groups = locality.group_endpoints(endpoints)
    if balancer is not None:
        groups = balancer.apply(groups)
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name)
    for group in groups:
        out = cla.endpoints.add()
        region, zone, sub_zone = group.locality
        if region or zone or sub_zone:
            out.locality.region = region
            out.locality.zone = zone
            out.locality.sub_zone = sub_zone
        for ep in group.endpoints:
            lb = out.lb_endpoints.add()
            lb.endpoint.address.CopyFrom(_socket_address(ep.address, ep.port))
            if ep.weight:
                lb.load_balancing_weight.value = ep.weight
            mode = tls_mode(ep) if tls_mode is not None else ""
            if mode:
                match = lb.metadata.filter_metadata[names.TRANSPORT_SOCKET_MATCH_METADATA]
                match.fields[names.TLS_MODE_METADATA_KEY].string_value = mode
        out.load_balancing_weight.value = group.weight
        if group.priority:
            out.priority = group.priority
    return cla


def _cluster_type(service: Service, proxy: Proxy) -> int:
    if service.resolution is Resolution.DNS:
        return Cluster.LOGICAL_DNS if service.dns_round_robin else Cluster.STRICT_DNS
    if service.resolution is Resolution.NONE and not proxy.is_router:
        return Cluster.ORIGINAL_DST
    # STATIC, and NONE on gateways: Istio's gateways cannot use passthrough clusters and fall back to EDS.
    return Cluster.EDS


def eds_resolution(service: Service, proxy: Proxy) -> bool:
    """Whether the proxy gets this service's endpoints over EDS (used by the EDS generator)."""
    return _cluster_type(service, proxy) == Cluster.EDS


def build_cluster(
    proxy: Proxy,
    service: Service,
    port: Port,
    subset: str,
    policy: EffectivePolicy,
    endpoints: Iterable[Endpoint] | None = None,
    *,
    auto_mtls: bool = False,
    tls_mode: Callable[[Endpoint], str] | None = None,
    credentials_allowed: bool = False,
) -> Cluster | None:
    """One outbound cluster; None when it cannot be expressed (DNS wildcard host without endpoints).

    ``endpoints`` matter for STRICT_DNS clusters only; None means the service has none, so the proxy
    resolves the hostname itself (``tls_mode`` gives their auto-mTLS metadata). ``auto_mtls``: the cluster has
    no TLS settings and its destination is in the mesh (see ``auto_mtls()``). Istio mTLS (ISTIO_MUTUAL, auto)
    is only configured for proxies with workload certificates (``pilot.push.authn.has_workload_certificates``).
    """
    name = names.outbound_cluster(port.number, subset, service.hostname)
    cluster = Cluster(name=name)
    cluster.type = _cluster_type(service, proxy)
    lb = locality_lb(policy.load_balancer, policy.outlier_detection)
    cluster.connect_timeout.FromTimedelta(DEFAULT_CONNECT_TIMEOUT)
    if cluster.type == Cluster.EDS:
        cluster.eds_cluster_config.eds_config.CopyFrom(config_source(proxy))
        cluster.eds_cluster_config.service_name = name
    elif cluster.type in (Cluster.STRICT_DNS, Cluster.LOGICAL_DNS):
        if endpoints is None:
            if "*" in service.hostname:
                log.warning("cluster %s: DNS resolution for a wildcard host needs endpoints; skipped", name)
                return None
            endpoints = [Endpoint(address=service.hostname, port=port.number, service_port_name=port.name)]
        if cluster.type == Cluster.LOGICAL_DNS and not endpoints:
            return None  # Envoy needs exactly one endpoint (a subset matched none); istiod omits it too
        balancer = locality.Balancer.of(lb, proxy)  # istiod balances inline endpoints too
        cluster.load_assignment.CopyFrom(load_assignment(name, endpoints, tls_mode, balancer))
        cluster.dns_lookup_family = Cluster.V4_ONLY
    apply_tcp_settings(cluster, policy.connection_pool)
    cluster.circuit_breakers.CopyFrom(circuit_breakers(policy.connection_pool, policy.retry_budget))
    apply_load_balancer(cluster, policy.load_balancer)
    apply_outlier_detection(cluster, policy.outlier_detection)
    locality.apply_cluster_config(cluster, lb)
    protocol_options = http_protocol_options(port, policy.connection_pool)
    if protocol_options is not None:
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Pack(protocol_options)
    # istiod's isHttp2Cluster: explicitly HTTP/2 upstream (not "use the downstream protocol").
    http2 = protocol_options is not None and protocol_options.explicit_http_config.HasField("http2_protocol_options")
    # DestinationRule credentialName: on gateways, and on sidecars through a rule with a workloadSelector
    # (istiod); other sidecars use the certificate paths, as istiod.
    source = config_source(proxy) if credentials_allowed else None
    apply_tls(cluster, policy.tls, service, port, subset, http2, has_workload_certificates(proxy), source)
    if auto_mtls and policy.tls is None:
        apply_auto_mtls(cluster, service, port, subset, http2)
    apply_proxy_protocol(cluster, policy.proxy_protocol)
    return cluster


def blackhole_cluster() -> Cluster:
    cluster = Cluster(name=names.BLACKHOLE_CLUSTER, type=Cluster.STATIC, lb_policy=Cluster.ROUND_ROBIN)
    cluster.connect_timeout.FromTimedelta(DEFAULT_CONNECT_TIMEOUT)
    return cluster


def passthrough_cluster() -> Cluster:
    cluster = Cluster(name=names.PASSTHROUGH_CLUSTER, type=Cluster.ORIGINAL_DST, lb_policy=Cluster.CLUSTER_PROVIDED)
    cluster.connect_timeout.FromTimedelta(DEFAULT_CONNECT_TIMEOUT)
    cluster.circuit_breakers.CopyFrom(circuit_breakers(None))
    # Traffic reaching it from the allow_any virtual host keeps the protocol it arrived with.
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.use_downstream_protocol_config.http_protocol_options.SetInParent()
    options.use_downstream_protocol_config.http2_protocol_options.SetInParent()
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Pack(options)
    return cluster


def _static_unit(name: str, make: Callable[[], Cluster]) -> Unit:
    return Unit(("cds", name), (), lambda: (make(),))


# ----- inbound (sidecars) -----

# istiod's maxSecondsValue: inbound ORIGINAL_DST clusters never clean up their hosts.
NEVER_CLEANUP_SECONDS = (2**63 - 1 - 999_999_999) // 1_000_000_000


def _bind_inbound_source(cluster: Cluster) -> None:
    """Connect from 127.0.0.6, which the capture rules do not redirect back to the proxy."""
    source = cluster.upstream_bind_config.source_address
    source.address = names.INBOUND_PASSTHROUGH_BIND_IPV4
    source.port_value = 0


def inbound_passthrough_cluster() -> Cluster:
    cluster = passthrough_cluster()
    cluster.name = names.INBOUND_PASSTHROUGH_CLUSTER
    _bind_inbound_source(cluster)
    return cluster


def inbound_cluster(name: str, port: Port, upstream: inbound.Upstream, pool: Any = None) -> Cluster:
    """``inbound|<port>||`` (istiod's buildInboundCluster): to the original destination (istiod's default
    inboundTrafficPolicy PASSTHROUGH), or to a Sidecar ingress listener's defaultEndpoint; with the connection
    pool that applies to it (``inbound_connection_pool``)."""
    cluster = Cluster(name=name)
    cluster.connect_timeout.FromTimedelta(DEFAULT_CONNECT_TIMEOUT)
    if upstream.original_dst:
        cluster.type = Cluster.ORIGINAL_DST
        cluster.lb_policy = Cluster.CLUSTER_PROVIDED
        cluster.cleanup_interval.seconds = NEVER_CLEANUP_SECONDS
    else:
        cluster.type = Cluster.STATIC
        cla = cluster.load_assignment
        cla.cluster_name = name
        endpoint = cla.endpoints.add().lb_endpoints.add().endpoint
        if upstream.pipe:
            endpoint.address.pipe.path = upstream.pipe
        else:
            endpoint.address.CopyFrom(_socket_address(upstream.address, upstream.port))
    cluster.circuit_breakers.CopyFrom(circuit_breakers(pool))
    apply_tcp_settings(cluster, pool)
    if not upstream.pipe and upstream.address not in (inbound.LOCALHOST, "::1"):
        _bind_inbound_source(cluster)
    options = http_protocol_options_pb2.HttpProtocolOptions()
    common_http_options(options.common_http_protocol_options, pool)
    if port.protocol.is_http2:
        options.explicit_http_config.http2_protocol_options.SetInParent()
    elif port.protocol is Protocol.UNKNOWN:  # sniffed: keep the protocol the request came with
        options.use_downstream_protocol_config.http_protocol_options.SetInParent()
        options.use_downstream_protocol_config.http2_protocol_options.SetInParent()
    elif port.protocol.is_http and options.HasField("common_http_protocol_options"):
        options.explicit_http_config.http_protocol_options.SetInParent()
    else:
        options.ClearField("common_http_protocol_options")  # TCP: no HTTP to apply them to
    if options.ListFields():
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Pack(options)
    return cluster


def inbound_connection_pool(proxy: Proxy, push: PushContext, chain: inbound.Chain) -> tuple[Any, tuple[ConfigKey, ...]]:
    """The connection pool of an inbound cluster, and the configs it came from (istiod's buildInboundCluster):
    the Sidecar's ingress listener for the port, else its inboundConnectionPool, else (for a service's port)
    the service's DestinationRule, port-level settings first; selectors are not consulted inbound."""
    deps: list[ConfigKey] = []
    sidecar = push.sidecar_for(proxy)
    if sidecar is not None:
        deps.append(sidecar.key)
        for listener in sidecar.spec.ingress or ():
            if listener.port is not None and listener.port.number == chain.target_port and listener.connection_pool:
                return listener.connection_pool, tuple(deps)
        if sidecar.spec.inbound_connection_pool is not None:
            return sidecar.spec.inbound_connection_pool, tuple(deps)
    if chain.sidecar is not None:
        return None, tuple(deps)  # a Sidecar ingress listener: no service, no DestinationRule
    rule = push.destination_rule(proxy, chain.hostname, inbound=True)
    if rule is None or rule.spec.traffic_policy is None:
        return None, tuple(deps)
    deps.extend(rule.keys)
    policy = rule.spec.traffic_policy
    per_port = port_level(policy, chain.port.number)
    return (per_port if per_port is not None else policy).connection_pool, tuple(deps)


def inbound_cluster_units(proxy: Proxy, push: PushContext) -> list[Unit]:
    """The clusters of a sidecar's inbound chains (see pilot.xds.inbound), and InboundPassthroughCluster for
    its virtualInbound passthrough chains. Keyed by everything that shapes them (the connection pool by its
    encoding), depending on the Sidecar and DestinationRule the pool may come from."""
    plan = inbound.plan(proxy, push)
    units = []
    for chain in plan.chains:
        pool, deps = inbound_connection_pool(proxy, push, chain)
        encoded = bytes(pool) if pool is not None else b""
        units.append(
            Unit(
                ("cds", chain.cluster, "inbound", chain.port.protocol.value, chain.upstream, encoded),
                deps,
                partial(lambda c, p: (inbound_cluster(c.cluster, c.port, c.upstream, p),), chain, pool),
            )
        )
    if plan.virtual:
        units.append(_static_unit(names.INBOUND_PASSTHROUGH_CLUSTER, inbound_passthrough_cluster))
    return units


def cluster_units(proxy: Proxy, push: PushContext, scope: ProxyScope) -> list[Unit]:
    """One unit per outbound cluster a proxy gets: service clusters (and subsets), then BlackHole and
    Passthrough (a sidecar's inbound clusters are ``inbound_cluster_units``). A cluster depends on its
    service, on the DestinationRule chosen for it and on the PeerAuthentications of the service's namespace
    and the mesh; its key adds what else shapes it (router or sidecar: a passthrough service is an EDS
    cluster on gateways; ADS or not: the EDS config source; workload certificates and whether auto-mTLS
    applies; the PeerAuthentications, which shape inline endpoints)."""
    units: list[Unit] = []
    seen: set[str] = set()
    certs = has_workload_certificates(proxy)
    for service in scope.services:
        rule = push.destination_rule(proxy, service.hostname)
        rule_keys = rule.keys if rule is not None else ()  # several when DestinationRules were merged
        deps = (ConfigKey(SERVICE_KIND, service.namespace, service.hostname), *rule_keys, *authn_deps(push, service))
        version = authn_version(push, service)
        subsets = [s.name for s in (rule.spec.subsets or ()) if s.name] if rule is not None else []
        for port in sorted(service.ports, key=lambda p: p.number):
            for subset in ["", *subsets]:
                name = names.outbound_cluster(port.number, subset, service.hostname)
                if name in seen:
                    continue  # duplicate subset names: the first one wins
                seen.add(name)
                policy = effective_policy(rule, port.number, subset)
                auto = certs and auto_mtls(push, service, port, policy)
                key: tuple[object, ...] = ("cds", name, proxy.is_router, proxy.xds_api, rule_keys, certs, auto, version)
                if service.resolution is Resolution.DNS:  # inline endpoints: balanced for the proxy's locality
                    lb = locality_lb(policy.load_balancer, policy.outlier_detection)
                    if lb is not None and lb.shapes_endpoints:
                        key = (*key, lb.needs.of(proxy))
                build = partial(_build_one, proxy, push, service, port, subset, rule, policy, auto)
                units.append(Unit(key, deps, build))
    units.append(_static_unit(names.BLACKHOLE_CLUSTER, blackhole_cluster))
    units.append(_static_unit(names.PASSTHROUGH_CLUSTER, passthrough_cluster))
    return units


def _build_one(
    proxy: Proxy,
    push: PushContext,
    service: Service,
    port: Port,
    subset: str,
    rule: Config | None,
    policy: EffectivePolicy,
    auto: bool,
) -> tuple[Cluster, ...]:
    endpoints: tuple[Endpoint, ...] | None = None
    if service.resolution is Resolution.DNS:
        port_eps = push.service_endpoints(service.hostname).for_port(port)
        if port_eps and subset:
            labels = subset_labels(rule, subset) or {}
            port_eps = tuple(e for e in port_eps if labels_match(labels, e.labels))
            endpoints = port_eps
        else:
            endpoints = port_eps or None
    tls_mode = endpoint_tls_metadata(push, service, rule, subset, port.number)
    allowed = rule is not None and (proxy.is_router or bool(rule_selector(rule)))
    cluster = build_cluster(
        proxy,
        service,
        port,
        subset,
        policy,
        endpoints,
        auto_mtls=auto,
        tls_mode=tls_mode,
        credentials_allowed=allowed,
    )
    return () if cluster is None else (cluster,)


def build_clusters(proxy: Proxy, push: PushContext) -> list[Cluster]:
    """All clusters for a proxy, built directly (no cache): outbound clusters, then BlackHole, Passthrough, then
    a sidecar's inbound clusters."""
    out: list[Cluster] = []
    for unit in [*cluster_units(proxy, push, scope_for(push, proxy)), *inbound_cluster_units(proxy, push)]:
        out.extend(unit.build())  # type: ignore[arg-type]
    return out
