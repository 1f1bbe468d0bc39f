"""DestinationRule traffic policies as Envoy cluster and tcp_proxy settings (istiod's cluster_traffic_policy.go).

Policies merge as Istio's ``MergeTrafficPolicy``: the DestinationRule's top-level policy, overridden by its
port-level settings for the port, overridden block by block by the subset's policy (whose own port-level
settings replace all blocks for that port); ``retryBudget``, ``proxyProtocol`` and ``tunnel`` exist at the top
level and per subset only. Translated here: load balancing (simple, consistent hash, slow start), the
connection pool (circuit breakers, connect timeout, keepalive, HTTP options), outlier detection, the retry
budget, and what a rule sets on the tcp_proxy filters leading to its host (``tcp_settings``). TLS is in
``pilot.xds.cluster_tls``; clusters themselves in ``pilot.xds.cds``.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from pilot.config.convert import enum_name
from pilot.model.config import Config
from pilot.model.service import Port
from pilot.xds.filters import NO_TCP_SETTINGS, TcpProxySettings

DEFAULT_MIN_RING_SIZE = 1024
MAX_UINT32 = 2**32 - 1
HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# A runtime key nobody sets: Envoy's RuntimeDouble needs one, its default value is what applies.
SLOW_START_AGGRESSION_KEY = "pilot.slow_start.aggression"

Cluster = cluster_pb2.Cluster


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


def wrapped(value: Any) -> Any:
    """Wrapper types (UInt32Value...) may arrive as plain values, None, or messages with ``.value``."""
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return getattr(value, "value", value)


def positive(value: Any) -> int:
    v = wrapped(value)
    return int(v) if v else 0


def subset_labels(rule: Config | None, subset: str) -> Mapping[str, str] | None:
    """The labels of a DestinationRule subset, or None when the rule has no subset of that name."""
    if rule is None:
        return None
    for candidate in rule.spec.subsets or ():
        if candidate.name == subset:
            return dict(candidate.labels or {})
    return None


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


def port_level(policy: Any, port: int) -> Any:
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
    per_port = port_level(policy, port)
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
        subset_policy = candidate.traffic_policy
        subset_lb = getattr(subset_policy, "load_balancer", None) if subset_policy is not None else None
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


def apply_load_balancer(cluster: Cluster, lb: Any) -> None:
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
            if positive(getattr(maglev, "table_size", 0)):
                cluster.maglev_lb_config.table_size.value = positive(maglev.table_size)
            else:
                cluster.maglev_lb_config.SetInParent()
            return
        ring = getattr(consistent, "ring_hash", None)
        size = positive(getattr(ring, "minimum_ring_size", 0)) or positive(getattr(consistent, "minimum_ring_size", 0))
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
        aggression = wrapped(getattr(warmup, "aggression", None))
        config.aggression.default_value = float(aggression) if aggression is not None else 1.0
        config.aggression.runtime_key = SLOW_START_AGGRESSION_KEY
        minimum = wrapped(getattr(warmup, "minimum_percent", None))
        config.min_weight_percent.value = float(minimum) if minimum is not None else 10.0
        return config
    window = to_duration(getattr(lb, "warmup_duration_secs", None))
    if window is None:
        return None
    config = Cluster.SlowStartConfig()
    config.slow_start_window.CopyFrom(window)
    return config


def circuit_breakers(pool: Any, retry_budget: Any = None) -> circuit_breaker_pb2.CircuitBreakers:
    threshold = circuit_breaker_pb2.CircuitBreakers.Thresholds(
        max_connections=wrappers_pb2.UInt32Value(value=MAX_UINT32),
        max_pending_requests=wrappers_pb2.UInt32Value(value=MAX_UINT32),
        max_requests=wrappers_pb2.UInt32Value(value=MAX_UINT32),
        max_retries=wrappers_pb2.UInt32Value(value=MAX_UINT32),
        track_remaining=True,
    )
    tcp = getattr(pool, "tcp", None) if pool is not None else None
    http = getattr(pool, "http", None) if pool is not None else None
    if tcp is not None and positive(tcp.max_connections):
        threshold.max_connections.value = positive(tcp.max_connections)
    if http is not None:
        if positive(http.http2_max_requests):
            threshold.max_requests.value = positive(http.http2_max_requests)
        if positive(http.http1_max_pending_requests):
            threshold.max_pending_requests.value = positive(http.http1_max_pending_requests)
        if positive(http.max_retries):
            threshold.max_retries.value = positive(http.max_retries)
    if retry_budget is not None:  # istiod's applyRetryBudget: 20 % and 3 concurrent retries unless set
        percent = wrapped(getattr(retry_budget, "percent", None))
        threshold.retry_budget.budget_percent.value = float(percent) if percent is not None else 20.0
        threshold.retry_budget.min_retry_concurrency.value = positive(retry_budget.min_retry_concurrency) or 3
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[threshold])


def apply_tcp_settings(cluster: Cluster, pool: Any) -> None:
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
        if positive(keepalive.probes):
            options.keepalive_probes.value = positive(keepalive.probes)
        for attr, target in (("time", "keepalive_time"), ("interval", "keepalive_interval")):
            value = to_duration(getattr(keepalive, attr, None))
            if value is not None and value.seconds:
                getattr(options, target).value = value.seconds


def common_http_options(common: protocol_pb2.HttpProtocolOptions, pool: Any) -> None:
    """istiod's applyConnectionPool: idle timeout (http's, else tcp's), requests per connection, connection
    duration."""
    http = getattr(pool, "http", None) if pool is not None else None
    tcp = getattr(pool, "tcp", None) if pool is not None else None
    if http is not None:
        idle = to_duration(getattr(http, "idle_timeout", None))
        if idle is not None:
            common.idle_timeout.CopyFrom(idle)
        if positive(http.max_requests_per_connection):
            common.max_requests_per_connection.value = positive(http.max_requests_per_connection)
    if tcp is not None:
        duration = to_duration(getattr(tcp, "max_connection_duration", None))
        if duration is not None:
            common.max_connection_duration.CopyFrom(duration)
        idle = to_duration(getattr(tcp, "idle_timeout", None))
        if idle is not None and not common.HasField("idle_timeout"):  # istiod: http.idleTimeout wins
            common.idle_timeout.CopyFrom(idle)


def http_protocol_options(port: Port, pool: Any) -> http_protocol_options_pb2.HttpProtocolOptions | None:
    """HttpProtocolOptions for HTTP ports: explicit HTTP/2 for HTTP2/GRPC (or h2UpgradePolicy UPGRADE),
    the downstream protocol for useClientProtocol, and common options from the connection pool."""
    if not port.protocol.is_http:
        return None
    http = getattr(pool, "http", None) if pool is not None else None
    options = http_protocol_options_pb2.HttpProtocolOptions()
    common_http_options(options.common_http_protocol_options, pool)
    http2 = protocol_pb2.Http2ProtocolOptions()
    if http is not None and positive(getattr(http, "max_concurrent_streams", 0)):
        http2.max_concurrent_streams.value = positive(http.max_concurrent_streams)
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


def apply_outlier_detection(cluster: Cluster, outlier: Any) -> None:
    if outlier is None:
        return
    out = outlier_detection_pb2.OutlierDetection()
    out.enforcing_success_rate.value = 0  # success-rate ejection stays off, as in Istio
    five_xx = wrapped(getattr(outlier, "consecutive_5xx_errors", None))
    if five_xx is None and positive(getattr(outlier, "consecutive_errors", 0)):
        five_xx = positive(outlier.consecutive_errors)  # deprecated field, still honoured
    if five_xx is not None:
        out.consecutive_5xx.value = int(five_xx)
        out.enforcing_consecutive_5xx.value = 100 if five_xx else 0
    gateway = wrapped(getattr(outlier, "consecutive_gateway_errors", None))
    if gateway is not None:
        out.consecutive_gateway_failure.value = int(gateway)
        out.enforcing_consecutive_gateway_failure.value = 100 if gateway else 0
    interval = to_duration(getattr(outlier, "interval", None))
    if interval is not None:
        out.interval.CopyFrom(interval)
    base = to_duration(getattr(outlier, "base_ejection_time", None))
    if base is not None:
        out.base_ejection_time.CopyFrom(base)
    if positive(getattr(outlier, "max_ejection_percent", 0)):
        out.max_ejection_percent.value = positive(outlier.max_ejection_percent)
    if getattr(outlier, "split_external_local_origin_errors", False):
        out.split_external_local_origin_errors = True
        local = positive(getattr(outlier, "consecutive_local_origin_failures", None))
        if local:
            out.consecutive_local_origin_failure.value = local
            out.enforcing_consecutive_local_origin_failure.value = 100
        out.enforcing_local_origin_success_rate.value = 0
    cluster.outlier_detection.CopyFrom(out)
    min_health = wrapped(getattr(outlier, "min_health_percent", 0)) or 0
    if min_health >= 0:
        cluster.common_lb_config.healthy_panic_threshold.CopyFrom(percent_pb2.Percent(value=float(min_health)))
