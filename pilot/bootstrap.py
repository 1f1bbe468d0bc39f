"""Envoy bootstrap for a proxy that takes all its config from pilot.

How the proxy talks xDS (``xds_api``):

* ``ads`` (default, as istiod): one aggregated SotW gRPC stream; every ConfigSource is ``ads: {}``.
* ``delta``: one aggregated incremental (Delta) gRPC stream.
* ``grpc`` / ``delta-grpc``: no ADS; CDS and LDS on their own SotW / Delta streams of the per-type services
  (ClusterDiscoveryService, ListenerDiscoveryService). pilot then points the EDS of each cluster and the RDS
  of each listener at ``self``, so those follow the same API to the same server.
* ``rest``: no gRPC; Envoy polls ``POST /v3/discovery:<type>`` (JSON) on pilot's HTTP (monitoring) port over
  HTTP/1.1 every ``REST_REFRESH_DELAY``; EDS and RDS follow through ``self`` as above.

``build_grpc_bootstrap`` writes instead what a proxyless gRPC client reads from the file named by
``GRPC_XDS_BOOTSTRAP`` (as Istio's agent writes it): pilot as the one xDS server over plaintext ADS, and a node
whose metadata asks for the grpc generator (``GENERATOR: grpc``) with the client's namespace and labels.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pilot.model.proxy import parse_proxy
from pilot.security import envoytls
from pilot.xds.names import (
    GRPC_CERTIFICATE_PROVIDER,
    REST_REFRESH_DELAY_S,
    SDS_CLUSTER,
    SDS_SOCKET,
    XDS_GRPC_CLUSTER,
    XDS_REST_CLUSTER,
)

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


def sds_cluster(socket_path: str = SDS_SOCKET) -> dict[str, Any]:
    """Istio's ``sds-grpc`` bootstrap cluster: the node agent's SDS server (workload certificates ``default`` and
    ``ROOTCA``, which pilot's mTLS config refers to) on a unix socket, over HTTP/2."""
    return {
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": SDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket_path}}}}]}],
        },
    }


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
    sds_socket: str | None = None,
    xds_tls: envoytls.XdsClientTls | None = None,
) -> dict[str, Any]:
    """``sds_socket``: also define Istio's ``sds-grpc`` cluster on that unix socket (the node agent's, by default
    ``names.SDS_SOCKET``), which mesh mTLS needs for the workload certificates. ``xds_tls``: reach pilot's TLS
    xDS port (15012) with a client certificate (pilot.security.envoytls)."""
    # Validates the id the same way the server will, so a bad id fails here rather than at connect time.
    proxy = parse_proxy(node_id, {"NAMESPACE": namespace} if namespace else None)
    dynamic = _dynamic_resources(xds_api)
    metadata: dict[str, Any] = {"NAMESPACE": proxy.namespace, "LABELS": dict(labels or {})}
    app = (labels or {}).get("app") or proxy.pod_name
    if xds_api == "rest":
        cluster = _static_cluster(XDS_REST_CLUSTER, rest_host, rest_port, http2=False)
    else:
        cluster = _static_cluster(XDS_CLUSTER, xds_host, xds_port, http2=True)
        if xds_tls is not None:
            cluster["transport_socket"] = envoytls.transport_socket(xds_tls)
    return {
        "node": {"id": node_id, "cluster": f"{app}.{proxy.namespace}", "metadata": metadata},
        "admin": {"address": {"socket_address": {"address": admin_address, "port_value": admin_port}}},
        "dynamic_resources": dynamic,
        "static_resources": {
            "clusters": [cluster] if sds_socket is None else [cluster, sds_cluster(sds_socket)],
            **({"secrets": envoytls.static_secrets(xds_tls)} if xds_tls is not None and xds_api != "rest" else {}),
        },
    }


def render_bootstrap(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)


GRPC_GENERATOR = "grpc"  # node.metadata.GENERATOR that selects pilot.xds.grpcgen
GRPC_SERVER_LISTENER_TEMPLATE = "xds.istio.io/grpc/lds/inbound/%s"


def build_grpc_bootstrap(
    node_id: str,
    xds_host: str,
    xds_port: int,
    *,
    labels: Mapping[str, str] | None = None,
    namespace: str | None = None,
    certificates: tuple[Path, Path, Path] | None = None,
) -> dict[str, Any]:
    """A gRPC xDS bootstrap (gRFC A27/A30): ``xds_servers`` with pilot's address, insecure channel credentials
    and ``xds_v3``; the node with its id, and metadata GENERATOR, NAMESPACE and LABELS. ``certificates``
    (workload certificate, key, root) become the ``default`` file_watcher certificate provider (gRFC A29) that
    mesh mTLS clusters name, as istio-agent's gRPC bootstrap does."""
    proxy = parse_proxy(node_id, {"NAMESPACE": namespace} if namespace else None)
    host = f"[{xds_host}]" if ":" in xds_host else xds_host
    app = (labels or {}).get("app") or proxy.pod_name
    metadata: dict[str, Any] = {
        "GENERATOR": GRPC_GENERATOR,
        "NAMESPACE": proxy.namespace,
        "LABELS": dict(labels or {}),
    }
    out: dict[str, Any] = {
        "xds_servers": [
            {
                "server_uri": f"{host}:{xds_port}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node_id, "cluster": f"{app}.{proxy.namespace}", "metadata": metadata},
        # What an xDS-enabled gRPC server asks for its listening address (istio-agent's template).
        "server_listener_resource_name_template": GRPC_SERVER_LISTENER_TEMPLATE,
    }
    if certificates is not None:
        cert, key, ca = certificates
        out["certificate_providers"] = {
            GRPC_CERTIFICATE_PROVIDER: {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": str(cert),
                    "private_key_file": str(key),
                    "ca_certificate_file": str(ca),
                    "refresh_interval": "900s",
                },
            }
        }
    return out


def render_grpc_bootstrap(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2) + "\n"
