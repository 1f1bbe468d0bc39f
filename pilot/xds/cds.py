"""CDS: the outbound clusters a proxy sees, with DestinationRule traffic policies applied.

One cluster ``outbound|<port>||<host>`` per visible service port, plus one ``outbound|<port>|<subset>|<host>``
per DestinationRule subset, plus ``BlackHoleCluster`` and ``PassthroughCluster``. The cluster type follows
the service resolution (Istio's ``convertResolution``): STATIC → EDS, DNS → STRICT_DNS with inline
endpoints, NONE → ORIGINAL_DST (gateways fall back to EDS, as in Istio).

Traffic policies follow Istio's ``MergeTrafficPolicy``: the DestinationRule's top-level policy, overridden by
its port-level settings for the port, overridden block by block by the subset's policy (whose own port-level
settings replace all blocks for that port).

Not implemented: TLS modes ISTIO_MUTUAL (needs SDS workload certificates) and ``credentialName`` (SDS);
clusters with those settings get no transport socket. Locality load balancing settings, warmup, tunnel and
proxy protocol settings are ignored.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from pilot.config.convert import enum_name
from pilot.model.config import SERVICE_KIND, Config, ConfigKey
from pilot.model.proxy import Proxy
from pilot.model.service import Endpoint, Port, Resolution, Service, labels_match
from pilot.push.context import PushContext
from pilot.push.scope import ProxyScope, scope_for
from pilot.xds import names
from pilot.xds.units import Unit

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = datetime.timedelta(seconds=10)
DEFAULT_MIN_RING_SIZE = 1024
MAX_UINT32 = 2**32 - 1
HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"

Cluster = cluster_pb2.Cluster


# ----- reading Istio specs (betterproto2 messages) -----


def to_duration(value: Any) -> duration_pb2.Duration | None:
    """A spec duration (timedelta, Duration-like message or "1.5s" string) as a protobuf Duration."""
    if value is None:
        return None
    out = duration_pb2.Duration()
    if isinstance(value, datetime.timedelta):
        out.FromTimedelta(value)
        return out
    if isinstance(value, str):
        out.FromJsonString(value)
        return out
    seconds = getattr(value, "seconds", None)
    if seconds is not None:
        out.seconds = int(seconds)
        out.nanos = int(getattr(value, "nanos", 0) or 0)
        return out
    raise TypeError(f"unsupported duration value {value!r}")


def _wrapped(value: Any) -> Any:
    """Wrapper types (UInt32Value...) may arrive as plain values, None, or messages with ``.value``."""
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return getattr(value, "value", value)


def _positive(value: Any) -> int:
    v = _wrapped(value)
    return int(v) if v else 0


def subset_labels(rule: Config | None, subset: str) -> Mapping[str, str] | None:
    """The labels of a DestinationRule subset, or None when the rule has no subset of that name."""
    if rule is None:
        return None
    for candidate in rule.spec.subsets or ():
        if candidate.name == subset:
            return dict(candidate.labels or {})
    return None


# ----- traffic policy merging -----


@dataclass(frozen=True)
class EffectivePolicy:
    """The traffic policy blocks that apply to one cluster (Istio's merged TrafficPolicy)."""

    connection_pool: Any = None
    load_balancer: Any = None
    outlier_detection: Any = None
    tls: Any = None


def _port_level(policy: Any, port: int) -> Any:
    for settings in getattr(policy, "port_level_settings", None) or ():
        selector = getattr(settings, "port", None)
        if selector is not None and selector.number == port:
            return settings
    return None


def _merge(base: EffectivePolicy, policy: Any, port: int) -> EffectivePolicy:
    """Override ``base`` with ``policy``'s set blocks; port-level settings then replace every block."""
    if policy is None:
        return base
    merged = EffectivePolicy(
        connection_pool=policy.connection_pool if policy.connection_pool is not None else base.connection_pool,
        load_balancer=policy.load_balancer if policy.load_balancer is not None else base.load_balancer,
        outlier_detection=(
            policy.outlier_detection if policy.outlier_detection is not None else base.outlier_detection
        ),
        tls=policy.tls if policy.tls is not None else base.tls,
    )
    per_port = _port_level(policy, port)
    if per_port is not None:
        # As documented by Istio: port-level policies do not inherit; unset blocks fall back to defaults.
        merged = EffectivePolicy(
            connection_pool=per_port.connection_pool,
            load_balancer=per_port.load_balancer,
            outlier_detection=per_port.outlier_detection,
            tls=per_port.tls,
        )
    return merged


def effective_policy(rule: Config | None, port: int, subset: str = "") -> EffectivePolicy:
    """The policy for ``outbound|port|subset|host`` given the DestinationRule chosen for the host."""
    if rule is None:
        return EffectivePolicy()
    policy = _merge(EffectivePolicy(), rule.spec.traffic_policy, port)
    if subset:
        for candidate in rule.spec.subsets or ():
            if candidate.name == subset:
                policy = _merge(policy, candidate.traffic_policy, port)
                break
    return policy


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
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=address, port_value=port))


def _locality(name: str) -> endpoint_components_pb2.LocalityLbEndpoints:
    region, zone, sub_zone = ([*name.split("/"), "", "", ""])[:3]
    group = endpoint_components_pb2.LocalityLbEndpoints()
    if region or zone or sub_zone:
        group.locality.region = region
        group.locality.zone = zone
        group.locality.sub_zone = sub_zone
    return group


def load_assignment(cluster_name: str, endpoints: Iterable[Endpoint]) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints grouped by locality (sorted), each group sorted by address and port.

    Shared by EDS and by the inline assignments of STRICT_DNS clusters.
    """
    by_locality: dict[str, list[Endpoint]] = {}
    for ep in endpoints:
        by_locality.setdefault(ep.locality, []).append(ep)
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name)
    for locality in sorted(by_locality):
        group = _locality(locality)
        total = 0
        for ep in sorted(by_locality[locality], key=lambda e: (e.address, e.port, e.weight)):
            lb = group.lb_endpoints.add()
            lb.endpoint.address.CopyFrom(_socket_address(ep.address, ep.port))
            if ep.weight:
                lb.load_balancing_weight.value = ep.weight
            total += ep.weight or 1
        group.load_balancing_weight.value = total
        cla.endpoints.append(group)
    return cla


def _cluster_type(service: Service, proxy: Proxy) -> int:
    if service.resolution is Resolution.DNS:
        return Cluster.STRICT_DNS
    if service.resolution is Resolution.NONE and not proxy.is_router:
        return Cluster.ORIGINAL_DST
    # STATIC, and NONE on gateways: Istio's gateways cannot use passthrough clusters and fall back to EDS.
    return Cluster.EDS


def eds_resolution(service: Service, proxy: Proxy) -> bool:
    """Whether the proxy gets this service's endpoints over EDS (used by the EDS generator)."""
    return _cluster_type(service, proxy) == Cluster.EDS


def _apply_load_balancer(cluster: Cluster, lb: Any) -> None:
    if cluster.type == Cluster.ORIGINAL_DST:
        cluster.lb_policy = Cluster.CLUSTER_PROVIDED
        return
    cluster.lb_policy = Cluster.LEAST_REQUEST
    if lb is None:
        return
    consistent = getattr(lb, "consistent_hash", None)
    if consistent is not None:
        maglev = getattr(consistent, "maglev", None)
        if maglev is not None:
            cluster.lb_policy = Cluster.MAGLEV
            if _positive(getattr(maglev, "table_size", 0)):
                cluster.maglev_lb_config.table_size.value = _positive(maglev.table_size)
            else:
                cluster.maglev_lb_config.SetInParent()
            return
        ring = getattr(consistent, "ring_hash", None)
        size = _positive(getattr(ring, "minimum_ring_size", 0)) or _positive(
            getattr(consistent, "minimum_ring_size", 0)
        )
        cluster.lb_policy = Cluster.RING_HASH
        cluster.ring_hash_lb_config.minimum_ring_size.value = size or DEFAULT_MIN_RING_SIZE
        return
    simple = enum_name(getattr(lb, "simple", None))
    if simple == "ROUND_ROBIN":
        cluster.lb_policy = Cluster.ROUND_ROBIN
    elif simple == "RANDOM":
        cluster.lb_policy = Cluster.RANDOM
    elif simple == "PASSTHROUGH":
        cluster.type = Cluster.ORIGINAL_DST
        cluster.lb_policy = Cluster.CLUSTER_PROVIDED
        cluster.ClearField("eds_cluster_config")
        cluster.ClearField("load_assignment")
        cluster.ClearField("dns_lookup_family")
    # LEAST_CONN, LEAST_REQUEST and UNSPECIFIED keep LEAST_REQUEST.


def _circuit_breakers(pool: Any) -> circuit_breaker_pb2.CircuitBreakers:
    threshold = circuit_breaker_pb2.CircuitBreakers.Thresholds(
        max_connections=wrappers_pb2.UInt32Value(value=MAX_UINT32),
        max_pending_requests=wrappers_pb2.UInt32Value(value=MAX_UINT32),
        max_requests=wrappers_pb2.UInt32Value(value=MAX_UINT32),
        max_retries=wrappers_pb2.UInt32Value(value=MAX_UINT32),
        track_remaining=True,
    )
    tcp = getattr(pool, "tcp", None) if pool is not None else None
    http = getattr(pool, "http", None) if pool is not None else None
    if tcp is not None and _positive(tcp.max_connections):
        threshold.max_connections.value = _positive(tcp.max_connections)
    if http is not None:
        if _positive(http.http2_max_requests):
            threshold.max_requests.value = _positive(http.http2_max_requests)
        if _positive(http.http1_max_pending_requests):
            threshold.max_pending_requests.value = _positive(http.http1_max_pending_requests)
        if _positive(http.max_retries):
            threshold.max_retries.value = _positive(http.max_retries)
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[threshold])


def _apply_tcp_settings(cluster: Cluster, pool: Any) -> None:
    tcp = getattr(pool, "tcp", None) if pool is not None else None
    if tcp is None:
        return
    timeout = to_duration(getattr(tcp, "connect_timeout", None))
    if timeout is not None:
        cluster.connect_timeout.CopyFrom(timeout)
    keepalive = getattr(tcp, "tcp_keepalive", None)
    if keepalive is not None:
        options = cluster.upstream_connection_options.tcp_keepalive
        options.SetInParent()
        if _positive(keepalive.probes):
            options.keepalive_probes.value = _positive(keepalive.probes)
        for attr, target in (("time", "keepalive_time"), ("interval", "keepalive_interval")):
            value = to_duration(getattr(keepalive, attr, None))
            if value is not None and value.seconds:
                getattr(options, target).value = value.seconds


def _http_protocol_options(port: Port, pool: Any) -> http_protocol_options_pb2.HttpProtocolOptions | None:
    """HttpProtocolOptions for HTTP ports: explicit HTTP/2 for HTTP2/GRPC (or h2UpgradePolicy UPGRADE),
    the downstream protocol for useClientProtocol, and common options from the connection pool."""
    if not port.protocol.is_http:
        return None
    http = getattr(pool, "http", None) if pool is not None else None
    tcp = getattr(pool, "tcp", None) if pool is not None else None
    options = http_protocol_options_pb2.HttpProtocolOptions()
    common = options.common_http_protocol_options
    if http is not None:
        idle = to_duration(getattr(http, "idle_timeout", None))
        if idle is not None:
            common.idle_timeout.CopyFrom(idle)
        if _positive(http.max_requests_per_connection):
            common.max_requests_per_connection.value = _positive(http.max_requests_per_connection)
    if tcp is not None:
        duration = to_duration(getattr(tcp, "max_connection_duration", None))
        if duration is not None:
            common.max_connection_duration.CopyFrom(duration)
    http2 = protocol_pb2.Http2ProtocolOptions()
    if http is not None and _positive(getattr(http, "max_concurrent_streams", 0)):
        http2.max_concurrent_streams.value = _positive(http.max_concurrent_streams)
    upgrade = enum_name(getattr(http, "h2_upgrade_policy", None)) == "UPGRADE" if http is not None else False
    if http is not None and getattr(http, "use_client_protocol", False):
        options.use_downstream_protocol_config.http_protocol_options.SetInParent()
        options.use_downstream_protocol_config.http2_protocol_options.CopyFrom(http2)
    elif port.protocol.is_http2 or upgrade:
        options.explicit_http_config.http2_protocol_options.CopyFrom(http2)
    elif options.HasField("common_http_protocol_options"):
        options.explicit_http_config.http_protocol_options.SetInParent()
    else:
        return None  # plain HTTP/1.1 with defaults: Envoy's default upstream protocol, nothing to say
    return options


def _apply_outlier_detection(cluster: Cluster, outlier: Any) -> None:
    if outlier is None:
        return
    out = outlier_detection_pb2.OutlierDetection()
    out.enforcing_success_rate.value = 0  # success-rate ejection stays off, as in Istio
    five_xx = _wrapped(getattr(outlier, "consecutive_5xx_errors", None))
    if five_xx is None and _positive(getattr(outlier, "consecutive_errors", 0)):
        five_xx = _positive(outlier.consecutive_errors)  # deprecated field, still honoured
    if five_xx is not None:
        out.consecutive_5xx.value = int(five_xx)
        out.enforcing_consecutive_5xx.value = 100 if five_xx else 0
    gateway = _wrapped(getattr(outlier, "consecutive_gateway_errors", None))
    if gateway is not None:
        out.consecutive_gateway_failure.value = int(gateway)
        out.enforcing_consecutive_gateway_failure.value = 100 if gateway else 0
    interval = to_duration(getattr(outlier, "interval", None))
    if interval is not None:
        out.interval.CopyFrom(interval)
    base = to_duration(getattr(outlier, "base_ejection_time", None))
    if base is not None:
        out.base_ejection_time.CopyFrom(base)
    if _positive(getattr(outlier, "max_ejection_percent", 0)):
        out.max_ejection_percent.value = _positive(outlier.max_ejection_percent)
    if getattr(outlier, "split_external_local_origin_errors", False):
        out.split_external_local_origin_errors = True
        local = _positive(getattr(outlier, "consecutive_local_origin_failures", None))
        if local:
            out.consecutive_local_origin_failure.value = local
            out.enforcing_consecutive_local_origin_failure.value = 100
        out.enforcing_local_origin_success_rate.value = 0
    cluster.outlier_detection.CopyFrom(out)
    min_health = _wrapped(getattr(outlier, "min_health_percent", 0)) or 0
    if min_health >= 0:
        cluster.common_lb_config.healthy_panic_threshold.CopyFrom(percent_pb2.Percent(value=float(min_health)))


def _apply_tls(cluster: Cluster, tls: Any, service: Service, port: Port) -> None:
    if tls is None:
        return
    mode = enum_name(getattr(tls, "mode", None))
    if mode in ("", "DISABLE"):
        return
    if mode == "ISTIO_MUTUAL":
        log.debug("cluster %s: ISTIO_MUTUAL TLS is not supported; sending plaintext", cluster.name)
        return
    if getattr(tls, "credential_name", ""):
        log.warning("cluster %s: TLS credentialName (SDS) is not supported; sending plaintext", cluster.name)
        return
    context = tls_pb2.UpstreamTlsContext(sni=getattr(tls, "sni", "") or service.hostname)
    common = context.common_tls_context
    if port.protocol.is_http2:
        common.alpn_protocols.append("h2")
    insecure = bool(_wrapped(getattr(tls, "insecure_skip_verify", None)))
    ca = getattr(tls, "ca_certificates", "")
    if ca and not insecure:
        validation = common.validation_context
        validation.trusted_ca.filename = ca
        for san in getattr(tls, "subject_alt_names", None) or ():
            validation.match_typed_subject_alt_names.append(
                common_pb2.SubjectAltNameMatcher(
                    san_type=common_pb2.SubjectAltNameMatcher.DNS, matcher=string_pb2.StringMatcher(exact=san)
                )
            )
    if mode == "MUTUAL":
        cert, key = getattr(tls, "client_certificate", ""), getattr(tls, "private_key", "")
        if cert and key:
            certificate = common.tls_certificates.add()
            certificate.certificate_chain.filename = cert
            certificate.private_key.filename = key
    cluster.transport_socket.name = TLS_TRANSPORT_SOCKET
    cluster.transport_socket.typed_config.Pack(context)


def build_cluster(
    proxy: Proxy,
    service: Service,
    port: Port,
    subset: str,
    policy: EffectivePolicy,
    endpoints: Iterable[Endpoint] | None = None,
) -> Cluster | None:
    """One outbound cluster; None when it cannot be expressed (DNS wildcard host without endpoints).

    ``endpoints`` matter for STRICT_DNS clusters only; None means the service has none, so the proxy
    resolves the hostname itself.
    """
    name = names.outbound_cluster(port.number, subset, service.hostname)
    cluster = Cluster(name=name)
    cluster.type = _cluster_type(service, proxy)
    cluster.connect_timeout.FromTimedelta(DEFAULT_CONNECT_TIMEOUT)
    if cluster.type == Cluster.EDS:
        cluster.eds_cluster_config.eds_config.CopyFrom(config_source(proxy))
        cluster.eds_cluster_config.service_name = name
    elif cluster.type == Cluster.STRICT_DNS:
        if endpoints is None:
            if "*" in service.hostname:
                log.warning("cluster %s: DNS resolution for a wildcard host needs endpoints; skipped", name)
                return None
            endpoints = [Endpoint(address=service.hostname, port=port.number, service_port_name=port.name)]
        cluster.load_assignment.CopyFrom(load_assignment(name, endpoints))
        cluster.dns_lookup_family = Cluster.V4_ONLY
    _apply_tcp_settings(cluster, policy.connection_pool)
    cluster.circuit_breakers.CopyFrom(_circuit_breakers(policy.connection_pool))
    _apply_load_balancer(cluster, policy.load_balancer)
    _apply_outlier_detection(cluster, policy.outlier_detection)
    protocol_options = _http_protocol_options(port, policy.connection_pool)
    if protocol_options is not None:
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Pack(protocol_options)
    _apply_tls(cluster, policy.tls, service, port)
    return cluster


def blackhole_cluster() -> Cluster:
    cluster = Cluster(name=names.BLACKHOLE_CLUSTER, type=Cluster.STATIC, lb_policy=Cluster.ROUND_ROBIN)
    cluster.connect_timeout.FromTimedelta(DEFAULT_CONNECT_TIMEOUT)
    return cluster


def passthrough_cluster() -> Cluster:
    cluster = Cluster(name=names.PASSTHROUGH_CLUSTER, type=Cluster.ORIGINAL_DST, lb_policy=Cluster.CLUSTER_PROVIDED)
    cluster.connect_timeout.FromTimedelta(DEFAULT_CONNECT_TIMEOUT)
    cluster.circuit_breakers.CopyFrom(_circuit_breakers(None))
    # Traffic reaching it from the allow_any virtual host keeps the protocol it arrived with.
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.use_downstream_protocol_config.http_protocol_options.SetInParent()
    options.use_downstream_protocol_config.http2_protocol_options.SetInParent()
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Pack(options)
    return cluster


def _static_unit(name: str, make: Callable[[], Cluster]) -> Unit:
    return Unit(("cds", name), (), lambda: (make(),))


def cluster_units(proxy: Proxy, push: PushContext, scope: ProxyScope) -> list[Unit]:
    """One unit per cluster a proxy gets: outbound service clusters (and subsets), then BlackHole and
    Passthrough. A cluster depends on its service and on the DestinationRule chosen for it; its key adds
    what else shapes it (router or sidecar: a passthrough service is an EDS cluster on gateways; ADS or not:
    the EDS config source)."""
    units: list[Unit] = []
    seen: set[str] = set()
    for service in scope.services:
        rule = push.destination_rule(proxy.namespace, service.hostname)
        rule_keys = rule.keys if rule is not None else ()  # several when DestinationRules were merged
        deps = (ConfigKey(SERVICE_KIND, service.namespace, service.hostname), *rule_keys)
        subsets = [s.name for s in (rule.spec.subsets or ()) if s.name] if rule is not None else []
        for port in sorted(service.ports, key=lambda p: p.number):
            for subset in ["", *subsets]:
                name = names.outbound_cluster(port.number, subset, service.hostname)
                if name in seen:
                    continue  # duplicate subset names: the first one wins
                seen.add(name)
                key = ("cds", name, proxy.is_router, proxy.xds_api, rule_keys)
                units.append(Unit(key, deps, partial(_build_one, proxy, push, service, port, subset, rule)))
    units.append(_static_unit(names.BLACKHOLE_CLUSTER, blackhole_cluster))
    units.append(_static_unit(names.PASSTHROUGH_CLUSTER, passthrough_cluster))
    return units


def _build_one(
    proxy: Proxy, push: PushContext, service: Service, port: Port, subset: str, rule: Config | None
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
    cluster = build_cluster(proxy, service, port, subset, effective_policy(rule, port.number, subset), endpoints)
    return () if cluster is None else (cluster,)


def build_clusters(proxy: Proxy, push: PushContext) -> list[Cluster]:
    """All clusters for a proxy, built directly (no cache): outbound clusters, then BlackHole, Passthrough."""
    out: list[Cluster] = []
    for unit in cluster_units(proxy, push, scope_for(push, proxy)):
        out.extend(unit.build())  # type: ignore[arg-type]
    return out
