"""Envoy bootstrap for a proxy that takes all its config from pilot.

How the proxy talks xDS (``xds_api``):

* ``ads`` (default, as istiod): one aggregated SotW gRPC stream; every ConfigSource is ``ads: {}``.
* ``delta``: one aggregated incremental (Delta) gRPC stream.
* ``grpc`` / ``delta-grpc``: no ADS; CDS and LDS on their own SotW / Delta streams of the per-type services
  (ClusterDiscoveryService, ListenerDiscoveryService). pilot then points the EDS of each cluster and the RDS
  of each listener at ``self``, so those follow the same API to the same server.
* ``rest``: no gRPC; Envoy polls ``POST /v3/discovery:<type>`` (JSON) on pilot's HTTP (monitoring) port over
  HTTP/1.1 every ``REST_REFRESH_DELAY``; EDS and RDS follow through ``self`` as above.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import yaml

from pilot.model.proxy import parse_proxy
from pilot.xds.names import REST_REFRESH_DELAY_S, XDS_GRPC_CLUSTER, XDS_REST_CLUSTER

XDS_CLUSTER = XDS_GRPC_CLUSTER
XDS_APIS = ("ads", "delta", "grpc", "delta-grpc", "rest")
REST_REFRESH_DELAY = f"{REST_REFRESH_DELAY_S}s"  # how often a REST proxy polls each of its subscriptions
REST_REQUEST_TIMEOUT = f"{REST_REFRESH_DELAY_S}s"


def _static_cluster(name: str, host: str, port: int, *, http2: bool) -> dict[str, Any]:
    try:
        ipaddress.ip_address(host)
        discovery_type = "STATIC"
    except ValueError:
        discovery_type = "STRICT_DNS"
    cluster: dict[str, Any] = {
        "name": name,
        "type": discovery_type,
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}
            ],
        },
    }
    if http2:  # gRPC; without it Envoy speaks HTTP/1.1 upstream, which REST needs
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def _dynamic_resources(xds_api: str) -> dict[str, Any]:
    if xds_api in ("ads", "delta"):
        return {
            "ads_config": {
                "api_type": "GRPC" if xds_api == "ads" else "DELTA_GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        }
    return {
        "cds_config": {"api_config_source": _api_config_source(xds_api), "resource_api_version": "V3"},
        "lds_config": {"api_config_source": _api_config_source(xds_api), "resource_api_version": "V3"},
    }


def _api_config_source(xds_api: str) -> dict[str, Any]:
    if xds_api in ("grpc", "delta-grpc"):
        return {
            "api_type": "GRPC" if xds_api == "grpc" else "DELTA_GRPC",
            "transport_api_version": "V3",
            "set_node_on_first_message_only": True,
            "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
        }
    if xds_api == "rest":
        return {
            "api_type": "REST",
            "transport_api_version": "V3",
            "cluster_names": [XDS_REST_CLUSTER],
            "refresh_delay": REST_REFRESH_DELAY,
            "request_timeout": REST_REQUEST_TIMEOUT,
        }
    raise ValueError(f"unknown xDS API {xds_api!r}: expected one of {', '.join(XDS_APIS)}")


def build_bootstrap(
    node_id: str,
    xds_host: str,
    xds_port: int,
    *,
    labels: Mapping[str, str] | None = None,
    namespace: str | None = None,
    admin_port: int = 15000,
    admin_address: str = "127.0.0.1",
    xds_api: str = "ads",
    rest_host: str = "127.0.0.1",
    rest_port: int = 15014,
) -> dict[str, Any]:
    # Validates the id the same way the server will, so a bad id fails here rather than at connect time.
    proxy = parse_proxy(node_id, {"NAMESPACE": namespace} if namespace else None)
    dynamic = _dynamic_resources(xds_api)
    metadata: dict[str, Any] = {"NAMESPACE": proxy.namespace, "LABELS": dict(labels or {})}
    app = (labels or {}).get("app") or proxy.pod_name
    if xds_api == "rest":
        cluster = _static_cluster(XDS_REST_CLUSTER, rest_host, rest_port, http2=False)
    else:
        cluster = _static_cluster(XDS_CLUSTER, xds_host, xds_port, http2=True)
    return {
        "node": {"id": node_id, "cluster": f"{app}.{proxy.namespace}", "metadata": metadata},
        "admin": {"address": {"socket_address": {"address": admin_address, "port_value": admin_port}}},
        "dynamic_resources": dynamic,
        "static_resources": {"clusters": [cluster]},
    }


def render_bootstrap(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)
