"""The network filters of generated listeners (the HTTP connection manager with RDS, tcp_proxy), and the
filter-chain helpers listeners share (unique matches, the TLS inspector)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.type.v3 import hash_policy_pb2
from google.protobuf import duration_pb2

from pilot.xds import names

Filter = listener_components_pb2.Filter
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
TLS_INSPECTOR_FILTER = "envoy.filters.listener.tls_inspector"


def http_connection_manager(
    stat_prefix: str,
    route_name: str,
    *,
    use_remote_address: bool = False,
    source: config_source_pb2.ConfigSource | None = None,
    forward_client_cert: bool = False,
) -> Filter:
    """The HCM every HTTP listener uses: RDS over ADS, codec AUTO, filters fault → cors → router.

    Routes refer to the fault and cors filters by name in ``typed_per_filter_config``, so both stay in the
    chain with empty configs. ``forward_client_cert`` (gateways, as istiod's buildGatewayConnectionManager):
    ``x-forwarded-client-cert`` is replaced by the details of the client's certificate (SANITIZE_SET).
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
    if forward_client_cert:
        manager.forward_client_cert_details = hcm_pb2.HttpConnectionManager.SANITIZE_SET
        details = manager.set_current_client_cert_details
        details.subject.value = True
        details.cert = details.dns = details.uri = True
    out = Filter(name=names.HCM_FILTER)
    out.typed_config.Pack(manager)
    return out


@dataclass(frozen=True)
class TcpProxySettings:
    """What a DestinationRule sets on the tcp_proxy filters that lead to its host
    (pilot.xds.cluster_policy.tcp_settings)."""

    idle_timeout: duration_pb2.Duration | None = None
    max_connection_duration: duration_pb2.Duration | None = None
    hash_source_ip: bool = False
    tunnel_hostname: str = ""  # trafficPolicy.tunnel: "<targetHost>:<targetPort>" to CONNECT (or POST) to
    tunnel_use_post: bool = False


NO_TCP_SETTINGS = TcpProxySettings()


def tcp_proxy(
    stat_prefix: str,
    cluster: str | None = None,
    weighted: Iterable[tuple[str, int]] = (),
    settings: TcpProxySettings = NO_TCP_SETTINGS,
) -> Filter:
    """A tcp_proxy network filter to one cluster, or to weighted clusters."""
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix)
    if cluster is not None:
        proxy.cluster = cluster
    else:
        for name, weight in weighted:
            proxy.weighted_clusters.clusters.add(name=name, weight=weight)
    if settings.idle_timeout is not None:
        proxy.idle_timeout.CopyFrom(settings.idle_timeout)
    if settings.max_connection_duration is not None:
        proxy.max_downstream_connection_duration.CopyFrom(settings.max_connection_duration)
    if settings.hash_source_ip:
        proxy.hash_policy.append(hash_policy_pb2.HashPolicy(source_ip=hash_policy_pb2.HashPolicy.SourceIp()))
    if settings.tunnel_hostname:
        proxy.tunneling_config.hostname = settings.tunnel_hostname
        proxy.tunneling_config.use_post = settings.tunnel_use_post
    out = Filter(name=TCP_PROXY_FILTER)
    out.typed_config.Pack(proxy)
    return out


def unique_chains(
    chains: Iterable[listener_components_pb2.FilterChain],
) -> tuple[list[listener_components_pb2.FilterChain], int]:
    """Envoy rejects a listener with two chains of one match: the first of each, and how many were dropped."""
    seen: set[bytes] = set()
    out = []
    dropped = 0
    for chain in chains:
        match = chain.filter_chain_match.SerializeToString(deterministic=True)
        if match in seen:
            dropped += 1
            continue
        seen.add(match)
        out.append(chain)
    return out, dropped


def needs_tls_inspector(chain: listener_components_pb2.FilterChain) -> bool:
    match = chain.filter_chain_match
    return bool(match.server_names or match.application_protocols or chain.HasField("transport_socket"))


def add_tls_inspector(listener: listener_pb2.Listener, chains: Sequence[listener_components_pb2.FilterChain]) -> None:
    """The TLS inspector listener filter, when some chain matches on SNI or ALPN or terminates TLS."""
    if any(needs_tls_inspector(chain) for chain in chains):
        inspector = listener.listener_filters.add(name=TLS_INSPECTOR_FILTER)
        inspector.typed_config.Pack(tls_inspector_pb2.TlsInspector())
