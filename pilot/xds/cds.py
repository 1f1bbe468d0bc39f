"""CDS: the outbound clusters a proxy sees, with DestinationRule traffic policies applied.

One cluster ``outbound|<port>||<host>`` per visible service port, plus one ``outbound|<port>|<subset>|<host>``
per DestinationRule subset, plus ``BlackHoleCluster`` and ``PassthroughCluster``. The cluster type follows
the service resolution (Istio's ``convertResolution``): STATIC → EDS, DNS → STRICT_DNS with inline
endpoints, NONE → ORIGINAL_DST (gateways fall back to EDS, as in Istio).

Traffic policies follow Istio's ``MergeTrafficPolicy``: the DestinationRule's top-level policy, overridden by
its port-level settings for the port, overridden block by block by the subset's policy (whose own port-level
settings replace all blocks for that port).

Mesh mTLS (istiod's cluster_tls.go): TLS mode ISTIO_MUTUAL gets an UpstreamTlsContext with the workload's SDS
secrets (``pilot.xds.mtls``); without a TLS setting, a destination in the mesh gets auto-mTLS: Istio mTLS to the
endpoints whose EDS metadata says ``tlsMode: istio`` (their sidecar is injected), plaintext to the others,
through ``transport_socket_matches`` (a passthrough cluster, which has no EDS metadata, gets mTLS only when all
its instances have sidecars). Auto-mTLS is off for MESH_EXTERNAL services and when the PeerAuthentication of
the service's namespace (or the mesh) says DISABLE. Both need the proxy's workload certificates: a proxy
without Istio's agent (``pilot.push.authn.has_workload_certificates``) gets neither (ISTIO_MUTUAL clusters stay
plaintext for it, as auto-mTLS is off). Sidecars also get their inbound clusters (``pilot.xds.inbound``).

Locality load balancing (``pilot.xds.locality``): ``common_lb_config.locality_weighted_lb_config`` where istiod
sets it; the inline endpoints of STRICT_DNS clusters get the proxy's priorities and weights as EDS does.

Not implemented: ``credentialName`` (SDS) on DestinationRule TLS; clusters with it get no transport socket.
Warmup, tunnel and proxy protocol settings are ignored.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, protocol_pb2, proxy_protocol_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.transport_sockets.proxy_protocol.v3 import upstream_proxy_protocol_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, struct_pb2, wrappers_pb2

from pilot.config.convert import enum_name
from pilot.model.config import SERVICE_KIND, Config, ConfigKey
from pilot.model.proxy import Proxy
from pilot.model.service import Endpoint, Port, Protocol, Resolution, Service, labels_match
from pilot.push import credentials
from pilot.push.authn import TLS_MODE_ISTIO, TLS_MODE_LABEL, MtlsMode, has_workload_certificates
from pilot.push.context import PushContext, rule_selector
from pilot.push.locality import locality_lb
from pilot.push.scope import ProxyScope, scope_for
from pilot.xds import inbound, locality, mtls, names
from pilot.xds.filters import NO_TCP_SETTINGS, TcpProxySettings
from pilot.xds.units import Unit

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = datetime.timedelta(seconds=10)
UNIX_PREFIX = "unix://"
DEFAULT_MIN_RING_SIZE = 1024
DISABLED_TLS_MODE = "disabled"  # istiod's DisabledTLSModeLabel: the tlsMode of an endpoint without the label
MAX_UINT32 = 2**32 - 1
HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
PROXY_PROTOCOL_TRANSPORT_SOCKET = "envoy.transport_sockets.upstream_proxy_protocol"
# A runtime key nobody sets: Envoy's RuntimeDouble needs one, its default value is what applies.
SLOW_START_AGGRESSION_KEY = "pilot.slow_start.aggression"

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
    # Set at the top level or by a subset only: port-level settings have neither.
    retry_budget: Any = None
    proxy_protocol: Any = None


def _set_or(value: Any, fallback: Any) -> Any:
    return value if value is not None else fallback


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
        retry_budget=_set_or(getattr(policy, "retry_budget", None), base.retry_budget),
        proxy_protocol=_set_or(getattr(policy, "proxy_protocol", None), base.proxy_protocol),
    )
    per_port = _port_level(policy, port)
    if per_port is not None:
        # As documented by Istio: port-level policies do not inherit; unset blocks fall back to defaults.
        merged = EffectivePolicy(
            connection_pool=per_port.connection_pool,
            load_balancer=per_port.load_balancer,
            outlier_detection=per_port.outlier_detection,
            tls=per_port.tls,
            retry_budget=merged.retry_budget,
            proxy_protocol=merged.proxy_protocol,
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


def tcp_settings(rule: Config | None, subset: str = "", *, tunnel: bool = True) -> TcpProxySettings:
    """The tcp_proxy settings of a DestinationRule (istiod's buildOutboundNetworkFiltersWith*): the top-level
    policy's tcp idleTimeout and maxConnectionDuration, a source-IP hash when its consistentHash uses the
    source IP, unless the subset's own load balancer says otherwise (maybeSetHashPolicy), and (unless
    ``tunnel`` is False: AUTO_PASSTHROUGH) the subset's tunnel, or the top level's for no subset
    (tunnelingconfig.Apply)."""
    if rule is None:
        return NO_TCP_SETTINGS
    policy = rule.spec.traffic_policy
    pool = getattr(policy, "connection_pool", None) if policy is not None else None
    tcp = getattr(pool, "tcp", None) if pool is not None else None
    lb = getattr(policy, "load_balancer", None) if policy is not None else None
    consistent = getattr(lb, "consistent_hash", None) if lb is not None else None
    source_ip = bool(getattr(consistent, "use_source_ip", False)) if consistent is not None else False
    for candidate in rule.spec.subsets or ():
        if candidate.name != subset:
            continue
        subset_lb = getattr(candidate.traffic_policy, "load_balancer", None) if candidate.traffic_policy else None
        if subset_lb is not None:
            subset_hash = getattr(subset_lb, "consistent_hash", None)
            source_ip = bool(getattr(subset_hash, "use_source_ip", False)) if subset_hash is not None else False
        break
    idle = to_duration(getattr(tcp, "idle_timeout", None)) if tcp is not None else None
    duration = to_duration(getattr(tcp, "max_connection_duration", None)) if tcp is not None else None
    settings = _tunnel_settings(rule, subset) if tunnel else None
    if idle is None and duration is None and not source_ip and settings is None:
        return NO_TCP_SETTINGS
    hostname, use_post = (
        (f"{_join_host(settings.target_host)}:{settings.target_port}", settings.protocol == "POST")
        if settings is not None
        else ("", False)
    )
    return TcpProxySettings(
        idle_timeout=idle,
        max_connection_duration=duration,
        hash_source_ip=source_ip,
        tunnel_hostname=hostname,
        tunnel_use_post=use_post,
    )


def _tunnel_settings(rule: Config, subset: str) -> Any:
    if not subset:
        policy = rule.spec.traffic_policy
        return getattr(policy, "tunnel", None) if policy is not None else None
    for candidate in rule.spec.subsets or ():
        if candidate.name == subset:
            policy = candidate.traffic_policy
            return getattr(policy, "tunnel", None) if policy is not None else None
    return None


def _join_host(host: str) -> str:
    """net.JoinHostPort's host part: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


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
    slow_start = _slow_start(lb)
    if slow_start is not None and cluster.lb_policy == Cluster.ROUND_ROBIN:
        cluster.round_robin_lb_config.slow_start_config.CopyFrom(slow_start)
    elif slow_start is not None and cluster.lb_policy == Cluster.LEAST_REQUEST:
        cluster.least_request_lb_config.slow_start_config.CopyFrom(slow_start)


def _slow_start(lb: Any) -> Cluster.SlowStartConfig | None:
    """istiod's setWarmup (aggression 1 and 10 % unless set), else the deprecated warmupDurationSecs."""
    warmup = getattr(lb, "warmup", None)
    if warmup is not None:
        config = Cluster.SlowStartConfig()
        window = to_duration(getattr(warmup, "duration", None))
        if window is not None:
            config.slow_start_window.CopyFrom(window)
        aggression = _wrapped(getattr(warmup, "aggression", None))
        config.aggression.default_value = float(aggression) if aggression is not None else 1.0
        config.aggression.runtime_key = SLOW_START_AGGRESSION_KEY
        minimum = _wrapped(getattr(warmup, "minimum_percent", None))
        config.min_weight_percent.value = float(minimum) if minimum is not None else 10.0
        return config
    window = to_duration(getattr(lb, "warmup_duration_secs", None))
    if window is None:
        return None
    config = Cluster.SlowStartConfig()
    config.slow_start_window.CopyFrom(window)
    return config


def _circuit_breakers(pool: Any, retry_budget: Any = None) -> circuit_breaker_pb2.CircuitBreakers:
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
    if retry_budget is not None:  # istiod's applyRetryBudget: 20 % and 3 concurrent retries unless set
        percent = _wrapped(getattr(retry_budget, "percent", None))
        threshold.retry_budget.budget_percent.value = float(percent) if percent is not None else 20.0
        threshold.retry_budget.min_retry_concurrency.value = _positive(retry_budget.min_retry_concurrency) or 3
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


def _common_http_options(common: protocol_pb2.HttpProtocolOptions, pool: Any) -> None:
    """istiod's applyConnectionPool: idle timeout (http's, else tcp's), requests per connection, connection
    duration."""
    http = getattr(pool, "http", None) if pool is not None else None
    tcp = getattr(pool, "tcp", None) if pool is not None else None
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
        idle = to_duration(getattr(tcp, "idle_timeout", None))
        if idle is not None and not common.HasField("idle_timeout"):  # istiod: http.idleTimeout wins
            common.idle_timeout.CopyFrom(idle)


def _http_protocol_options(port: Port, pool: Any) -> http_protocol_options_pb2.HttpProtocolOptions | None:
    """HttpProtocolOptions for HTTP ports: explicit HTTP/2 for HTTP2/GRPC (or h2UpgradePolicy UPGRADE),
    the downstream protocol for useClientProtocol, and common options from the connection pool."""
    if not port.protocol.is_http:
        return None
    http = getattr(pool, "http", None) if pool is not None else None
    options = http_protocol_options_pb2.HttpProtocolOptions()
    _common_http_options(options.common_http_protocol_options, pool)
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


def _apply_tls(
    cluster: Cluster,
    tls: Any,
    service: Service,
    port: Port,
    subset: str,
    http2: bool,
    workload_certs: bool,
    credential_source: config_source_pb2.ConfigSource | None,
) -> None:
    if tls is None:
        return
    mode = enum_name(getattr(tls, "mode", None))
    if mode in ("", "DISABLE"):
        return
    if mode == "ISTIO_MUTUAL":
        if not workload_certs:
            log.debug("cluster %s: ISTIO_MUTUAL without workload certificates; plaintext", cluster.name)
            return
        # istiod: the DestinationRule's SNI, else the DNS-SRV name; its subjectAltNames (else the service
        # accounts, which the service model does not carry).
        sni = getattr(tls, "sni", "") or names.dns_srv_name(port.number, subset, service.hostname)
        sans = list(getattr(tls, "subject_alt_names", None) or service.subject_alt_names)
        context = mtls.istio_mutual_upstream(sni, sans, http2=http2)
        cluster.transport_socket.CopyFrom(mtls.transport_socket(context))
        return
    context = tls_pb2.UpstreamTlsContext(sni=getattr(tls, "sni", "") or service.hostname)
    common = context.common_tls_context
    if port.protocol.is_http2:
        common.alpn_protocols.append("h2")
    insecure = bool(_wrapped(getattr(tls, "insecure_skip_verify", None)))
    ca = getattr(tls, "ca_certificates", "")
    # istiod: a ServiceEntry's subjectAltNames stand in for the rule's when it names none.
    sans = list(getattr(tls, "subject_alt_names", None) or service.subject_alt_names)
    if getattr(tls, "credential_name", "") and credential_source is not None:
        _credential_tls(common, tls, credential_source, sans)
    elif ca and not insecure:
        validation = common.validation_context
        validation.trusted_ca.filename = ca
        if getattr(tls, "ca_crl", ""):
            validation.crl.filename = tls.ca_crl
        validation.match_typed_subject_alt_names.extend(mtls.san_matchers(sans))
    if mode == "MUTUAL":
        cert, key = getattr(tls, "client_certificate", ""), getattr(tls, "private_key", "")
        if cert and key:
            certificate = common.tls_certificates.add()
            certificate.certificate_chain.filename = cert
            certificate.private_key.filename = key
    cluster.transport_socket.name = TLS_TRANSPORT_SOCKET
    cluster.transport_socket.typed_config.Pack(context)


def _credential_tls(
    common: common_pb2.CommonTlsContext, tls: Any, source: config_source_pb2.ConfigSource, sans: list[str]
) -> None:
    """istiod's ApplyCustomSDSToClientCommonTLSContext: the client certificate (MUTUAL) and the CA to verify the
    server with (with the rule's SANs) from the credential's Secret, fetched over SDS from pilot."""
    for resource in credentials.client_resources(tls):
        sds = secret_pb2.SdsSecretConfig(name=resource, sds_config=source)
        if resource.endswith(credentials.CA_SUFFIX):
            combined = common.combined_validation_context
            combined.default_validation_context.match_typed_subject_alt_names.extend(mtls.san_matchers(sans))
            combined.validation_context_sds_secret_config.CopyFrom(sds)
        else:
            common.tls_certificate_sds_secret_configs.append(sds)


def _apply_auto_mtls(cluster: Cluster, service: Service, port: Port, subset: str, http2: bool) -> None:
    """istiod's auto-detected ISTIO_MUTUAL: mTLS to endpoints labelled ``tlsMode: istio``, plaintext to others
    (a passthrough cluster has no endpoint metadata: it was decided for all of them at once)."""
    sni = names.dns_srv_name(port.number, subset, service.hostname)
    context = mtls.istio_mutual_upstream(sni, service.subject_alt_names, http2=http2)
    socket = mtls.transport_socket(context)
    if cluster.type == Cluster.ORIGINAL_DST:
        cluster.transport_socket.CopyFrom(socket)
        return
    istio = cluster.transport_socket_matches.add(name=f"tlsMode-{TLS_MODE_ISTIO}")
    istio.match.fields[names.TLS_MODE_METADATA_KEY].string_value = TLS_MODE_ISTIO
    istio.transport_socket.CopyFrom(socket)
    plaintext = cluster.transport_socket_matches.add(name="tlsMode-disabled")
    plaintext.match.CopyFrom(struct_pb2.Struct())
    plaintext.transport_socket.CopyFrom(mtls.raw_buffer_socket())


def endpoint_tls_mode(endpoint: Endpoint) -> str:
    """The endpoint's ``security.istio.io/tlsMode`` label (Istio's injector sets ``istio``); "disabled" when unset."""
    return endpoint.labels.get(TLS_MODE_LABEL, DISABLED_TLS_MODE)


def service_mtls_mode(push: PushContext, service: Service, port: Port, policy: EffectivePolicy) -> MtlsMode:
    """istiod's BestEffortInferServiceMTLSMode: what mTLS a destination accepts, as far as a client can tell."""
    if service.mesh_external:
        return MtlsMode.UNKNOWN
    passthrough = enum_name(getattr(policy.load_balancer, "simple", None)) == "PASSTHROUGH"
    if service.resolution is Resolution.NONE or passthrough:
        # A passthrough cluster cannot choose per endpoint: mTLS only when every instance has a sidecar.
        instances = push.service_endpoints(service.hostname).for_port(port)
        if not instances or any(endpoint_tls_mode(ep) == DISABLED_TLS_MODE for ep in instances):
            return MtlsMode.DISABLE
    mode = push.authn_policies.namespace_mode(service.namespace)
    return mode if mode is not MtlsMode.UNKNOWN else MtlsMode.PERMISSIVE


def auto_mtls(push: PushContext, service: Service, port: Port, policy: EffectivePolicy) -> bool:
    """Whether a cluster without TLS settings gets auto-detected Istio mTLS (mesh enableAutoMtls is on)."""
    if policy.tls is not None:
        return False  # user supplied (even DISABLE)
    return service_mtls_mode(push, service, port, policy) not in (MtlsMode.UNKNOWN, MtlsMode.DISABLE)


def destination_rule_tls_mode(rule: Config | None, subset: str, port: int) -> str | None:
    """istiod's tlsModeForDestinationRule: the TLS mode a DestinationRule sets for a cluster (None: none)."""
    if rule is None:
        return None
    if not subset:
        return _policy_tls_mode(rule.spec.traffic_policy, port)
    for candidate in rule.spec.subsets or ():
        if candidate.name == subset:
            mode = _policy_tls_mode(candidate.traffic_policy, port)
            return mode if mode is not None else _policy_tls_mode(rule.spec.traffic_policy, port)
    return None


def _policy_tls_mode(policy: Any, port: int) -> str | None:
    if policy is None:
        return None
    mode = enum_name(policy.tls.mode) if policy.tls is not None else None
    for settings in policy.port_level_settings or ():
        if settings.port is not None and settings.port.number == port and settings.tls is not None:
            return enum_name(settings.tls.mode)
    return mode


def endpoint_tls_metadata(
    push: PushContext, service: Service, rule: Config | None, subset: str, port: int
) -> Callable[[Endpoint], str]:
    """istiod's mtlsChecker: an endpoint's ``tlsMode`` metadata value, or "" when mTLS is not possible for it:
    the DestinationRule's TLS mode decides when it has one; otherwise the endpoint must have a sidecar and the
    PeerAuthentication in effect for it (workload, port-level included) must not say DISABLE."""
    dr_mode = destination_rule_tls_mode(rule, subset, port)
    policies = push.authn_policies

    def tls_mode(endpoint: Endpoint) -> str:
        label = endpoint_tls_mode(endpoint)
        if dr_mode is not None:
            enabled = dr_mode == "ISTIO_MUTUAL"
        elif label != TLS_MODE_ISTIO:
            enabled = False
        else:
            effective = policies.effective(service.namespace, endpoint.labels)
            enabled = effective.mode_for_port(endpoint.port) is not MtlsMode.DISABLE
        return label if enabled and label not in ("", DISABLED_TLS_MODE) else ""

    return tls_mode


def authn_version(push: PushContext, service: Service) -> tuple[tuple[ConfigKey, int], ...]:
    """The PeerAuthentications that can shape a service's clusters and endpoints (its namespace's and the
    mesh's), with their content: a cache key part (istiod's PeerAuthentication version)."""
    return push.authn_policies.version_of((service.namespace, push.root_namespace))


def authn_deps(push: PushContext, service: Service) -> frozenset[ConfigKey]:
    return push.authn_policies.keys_in((service.namespace, push.root_namespace))


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
    _apply_tcp_settings(cluster, policy.connection_pool)
    cluster.circuit_breakers.CopyFrom(_circuit_breakers(policy.connection_pool, policy.retry_budget))
    _apply_load_balancer(cluster, policy.load_balancer)
    _apply_outlier_detection(cluster, policy.outlier_detection)
    locality.apply_cluster_config(cluster, lb)
    protocol_options = _http_protocol_options(port, policy.connection_pool)
    if protocol_options is not None:
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Pack(protocol_options)
    # istiod's isHttp2Cluster: explicitly HTTP/2 upstream (not "use the downstream protocol").
    http2 = protocol_options is not None and protocol_options.explicit_http_config.HasField("http2_protocol_options")
    # DestinationRule credentialName: on gateways, and on sidecars through a rule with a workloadSelector
    # (istiod); other sidecars use the certificate paths, as istiod.
    source = config_source(proxy) if credentials_allowed else None
    _apply_tls(cluster, policy.tls, service, port, subset, http2, has_workload_certificates(proxy), source)
    if auto_mtls and policy.tls is None:
        _apply_auto_mtls(cluster, service, port, subset, http2)
    _apply_proxy_protocol(cluster, policy.proxy_protocol)
    return cluster


def _apply_proxy_protocol(cluster: Cluster, proxy_protocol: Any) -> None:
    """istiod's applyUpstreamProxyProtocol: a PROXY header before whatever the cluster speaks (plaintext, TLS,
    or each auto-mTLS choice)."""
    if proxy_protocol is None:
        return
    version = (
        proxy_protocol_pb2.ProxyProtocolConfig.V2
        if enum_name(getattr(proxy_protocol, "version", None)) == "V2"
        else proxy_protocol_pb2.ProxyProtocolConfig.V1
    )

    def wrapped(inner: base_pb2.TransportSocket) -> base_pb2.TransportSocket:
        config = upstream_proxy_protocol_pb2.ProxyProtocolUpstreamTransport()
        config.config.version = version
        config.transport_socket.CopyFrom(inner)
        out = base_pb2.TransportSocket(name=PROXY_PROTOCOL_TRANSPORT_SOCKET)
        out.typed_config.Pack(config)
        return out

    if cluster.HasField("transport_socket"):
        cluster.transport_socket.CopyFrom(wrapped(cluster.transport_socket))
    elif not cluster.transport_socket_matches:
        cluster.transport_socket.CopyFrom(wrapped(mtls.raw_buffer_socket()))
    for match in cluster.transport_socket_matches:
        match.transport_socket.CopyFrom(wrapped(match.transport_socket))


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
    cluster.circuit_breakers.CopyFrom(_circuit_breakers(pool))
    _apply_tcp_settings(cluster, pool)
    if not upstream.pipe and upstream.address not in (inbound.LOCALHOST, "::1"):
        _bind_inbound_source(cluster)
    options = http_protocol_options_pb2.HttpProtocolOptions()
    _common_http_options(options.common_http_protocol_options, pool)
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
    per_port = _port_level(policy, chain.port.number)
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
