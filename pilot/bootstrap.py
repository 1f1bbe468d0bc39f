"""Envoy bootstrap for a proxy that takes all its config from pilot over ADS."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import yaml

from pilot.model.proxy import parse_proxy

XDS_CLUSTER = "xds-grpc"


def build_bootstrap(
    node_id: str,
    xds_host: str,
    xds_port: int,
    *,
    labels: Mapping[str, str] | None = None,
    namespace: str | None = None,
    admin_port: int = 15000,
    admin_address: str = "127.0.0.1",
) -> dict[str, Any]:
    # Validates the id the same way the server will, so a bad id fails here rather than at connect time.
    proxy = parse_proxy(node_id, {"NAMESPACE": namespace} if namespace else None)
    metadata: dict[str, Any] = {"NAMESPACE": proxy.namespace, "LABELS": dict(labels or {})}
    app = (labels or {}).get("app") or proxy.pod_name
    try:
        ipaddress.ip_address(xds_host)
        discovery_type = "STATIC"
    except ValueError:
        discovery_type = "STRICT_DNS"
    return {
        "node": {"id": node_id, "cluster": f"{app}.{proxy.namespace}", "metadata": metadata},
        "admin": {"address": {"socket_address": {"address": admin_address, "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    "type": discovery_type,
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {"socket_address": {"address": xds_host, "port_value": xds_port}}
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                }
            ]
        },
    }


def render_bootstrap(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)
