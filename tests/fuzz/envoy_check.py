"""Run what pilot generates for a proxy through ``envoy --mode validate``.

Envoy validates a bootstrap, so the generated resources become one: every cluster static (EDS clusters keep
their ADS config source, which validation does not contact), every listener static, and every route
configuration inlined into a listener of its own (Envoy then checks that its routes name known clusters).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from pilot.model.proxy import Proxy
from pilot.push.context import PushContext
from pilot.xds.cache import XdsCache
from pilot.xds.generate import Generator
from pilot.xds.names import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.xds.resource import Resource

HCM = "envoy.filters.network.http_connection_manager"


def find_envoy() -> str | None:
    envoy = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
    return envoy if Path(envoy).exists() else None


def _decode(resources: Iterable[Resource], message_type: type) -> list[Any]:
    out = []
    for resource in resources:
        message = message_type()
        message.ParseFromString(resource.value)
        out.append(message)
    return out


def _json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def route_names(listeners: Iterable[listener_pb2.Listener]) -> set[str]:
    """The RDS route configuration names the listeners' HTTP connection managers ask for."""
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

    names: set[str] = set()
    for listener in listeners:
        for chain in [*listener.filter_chains, listener.default_filter_chain]:
            for network_filter in chain.filters:
                if network_filter.name != HCM:
                    continue
                hcm = hcm_pb2.HttpConnectionManager()
                network_filter.typed_config.Unpack(hcm)
                if hcm.HasField("rds"):
                    names.add(hcm.rds.route_config_name)
    return names


def bootstrap_for(proxy: Proxy, push: PushContext) -> dict[str, Any]:
    """A bootstrap holding everything pilot would send ``proxy`` (CDS, LDS, and the RDS they name)."""
    generator = Generator(XdsCache())
    clusters = _decode(generator.resources(CLUSTER_TYPE, proxy, push, None), cluster_pb2.Cluster)
    listeners = _decode(generator.resources(LISTENER_TYPE, proxy, push, None), listener_pb2.Listener)
    routes = _decode(
        generator.resources(ROUTE_TYPE, proxy, push, sorted(route_names(listeners))), route_pb2.RouteConfiguration
    )
    static_listeners = [_json(listener) for listener in listeners]
    for index, route in enumerate(routes):
        static_listeners.append(_route_holder(index, route))
    xds = {
        "name": "xds-grpc",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": "xds-grpc",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}}}
                    ]
                }
            ],
        },
    }
    return {
        "node": {"id": proxy.id, "cluster": "fuzz"},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            },
        },
        "static_resources": {"clusters": [xds, *(_json(c) for c in clusters)], "listeners": static_listeners},
    }


def _route_holder(index: int, route: route_pb2.RouteConfiguration) -> dict[str, Any]:
    """A listener whose HTTP connection manager carries ``route`` inline (validated with its clusters)."""
    return {
        "name": f"fuzz-routes-{index}",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 40000 + index}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": HCM,
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                            "http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": f"fuzz_{index}",
                            "route_config": _json(route),
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                    },
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }


def envoy_validate(envoy: str, bootstrap: dict[str, Any], workdir: Path) -> tuple[bool, str]:
    """(whether Envoy accepts the bootstrap, its output)."""
    path = workdir / "bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path), "--use-dynamic-base-id", "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode == 0, (result.stdout + result.stderr)[-4000:]
