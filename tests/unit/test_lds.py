"""LDS generator: sidecar outbound listeners, Gateway listeners, the shared HCM; Envoy validates the output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import json_format

from pilot.config.validation import check
from pilot.model.config import Config, ConfigKey
from pilot.model.proxy import Proxy, parse_proxy
from pilot.model.service import Endpoint, Port, Protocol, Resolution, Service, ServiceEndpoints
from pilot.push.context import PushContext
from pilot.xds import cds, eds, lds, names

Listener = listener_pb2.Listener
REVIEWS = "reviews.default.svc.cluster.local"
DB = "db.default.svc.cluster.local"
CACHE = "cache.default.svc.cluster.local"
SERVICES = [
    Service(REVIEWS, "default", (Port("http", 9080, Protocol.HTTP),), addresses=("10.96.0.10",)),
    Service(DB, "default", (Port("tcp", 5432, Protocol.TCP),), addresses=("10.96.0.20",)),
    Service(CACHE, "default", (Port("redis", 6379, Protocol.TCP),)),  # no VIP
    Service(
        "grpc.default.svc.cluster.local", "default", (Port("grpc", 9090, Protocol.GRPC),), addresses=("10.96.0.30",)
    ),
]


def _config(kind: str, namespace: str, name: str, spec: dict[str, Any]) -> Config:
    typed, errors = check(kind, spec, namespace)
    assert not errors, errors
    return Config(key=ConfigKey(kind, namespace, name), api_version="networking.istio.io/v1", spec=typed)


def _push(configs: list[Config] = (), services: list[Service] = SERVICES) -> PushContext:
    return PushContext.of(
        configs,
        services,
        {REVIEWS: ServiceEndpoints(REVIEWS, {"http": (Endpoint("10.1.0.1", 8080, "http", {"version": "v1"}),)})},
    )


def _sidecar(metadata: dict[str, Any] | None = None) -> Proxy:
    return parse_proxy(
        "sidecar~10.1.0.9~app-1.default~default.svc.cluster.local",
        {"NAMESPACE": "default", "LABELS": {"app": "app"}, **(metadata or {})},
    )


def _router() -> Proxy:
    return parse_proxy(
        "router~10.1.0.8~gw-1.istio-system~istio-system.svc.cluster.local",
        {"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway"}},
    )


def _by_name(listeners: list[Listener]) -> dict[str, Listener]:
    return {listener.name: listener for listener in listeners}


def _hcm(listener: Listener) -> hcm_pb2.HttpConnectionManager:
    (chain,) = listener.filter_chains
    (network_filter,) = chain.filters
    assert network_filter.name == names.HCM_FILTER
    manager = hcm_pb2.HttpConnectionManager()
    assert network_filter.typed_config.Unpack(manager)
    return manager


def _tcp(chain: Any) -> tcp_proxy_pb2.TcpProxy:
    (network_filter,) = chain.filters
    assert network_filter.name == "envoy.filters.network.tcp_proxy"
    proxy = tcp_proxy_pb2.TcpProxy()
    assert network_filter.typed_config.Unpack(proxy)
    return proxy


def _address(listener: Listener) -> tuple[str, int]:
    return listener.address.socket_address.address, listener.address.socket_address.port_value


# ----- HCM -----


def test_http_connection_manager_filters_and_settings() -> None:
    network_filter = lds.http_connection_manager("outbound_0.0.0.0_80", "80")
    manager = hcm_pb2.HttpConnectionManager()
    network_filter.typed_config.Unpack(manager)
    assert manager.stat_prefix == "outbound_0.0.0.0_80"
    assert manager.codec_type == hcm_pb2.HttpConnectionManager.AUTO
    assert manager.rds.route_config_name == "80"
    assert manager.rds.config_source.HasField("ads")
    assert manager.rds.config_source.resource_api_version == 2  # V3
    assert [f.name for f in manager.http_filters] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.cors",
        "envoy.filters.http.router",
    ]
    assert manager.http_filters[0].typed_config.Is(fault_pb2.HTTPFault.DESCRIPTOR)
    assert manager.http_filters[1].typed_config.Is(cors_pb2.Cors.DESCRIPTOR)
    assert manager.http_filters[2].typed_config.Is(router_pb2.Router.DESCRIPTOR)
    assert manager.HasField("use_remote_address") and not manager.use_remote_address.value
    assert manager.normalize_path.value


# ----- sidecars -----


def test_captured_sidecar_listeners() -> None:
    listeners = _by_name(lds.build_listeners(_sidecar(), _push()))
    assert sorted(listeners) == sorted(
        ["virtualOutbound", "0.0.0.0_9080", "0.0.0.0_9090", "10.96.0.20_5432", "0.0.0.0_6379"]
    )
    virtual = listeners["virtualOutbound"]
    assert _address(virtual) == ("0.0.0.0", 15001)
    assert virtual.use_original_dst.value
    assert not virtual.HasField("bind_to_port")
    (chain,) = virtual.filter_chains
    assert chain.name == "virtualOutbound-catchall-tcp"
    assert _tcp(chain).cluster == names.PASSTHROUGH_CLUSTER

    http = listeners["0.0.0.0_9080"]
    assert _address(http) == ("0.0.0.0", 9080)
    assert http.HasField("bind_to_port") and not http.bind_to_port.value
    manager = _hcm(http)
    assert manager.rds.route_config_name == "9080"
    assert manager.stat_prefix == "outbound_0.0.0.0_9080"
    assert _hcm(listeners["0.0.0.0_9090"]).rds.route_config_name == "9090"

    tcp = listeners["10.96.0.20_5432"]
    assert _address(tcp) == ("10.96.0.20", 5432)
    assert not tcp.bind_to_port.value
    assert _tcp(tcp.filter_chains[0]).cluster == f"outbound|5432||{DB}"
    assert _tcp(listeners["0.0.0.0_6379"].filter_chains[0]).cluster == f"outbound|6379||{CACHE}"


def test_tcp_services_sharing_a_port_without_vip_keep_the_first() -> None:
    """As istiod (a TCP-over-TCP conflict): nothing tells the two apart, so the later service is dropped."""
    other = Service("cache2.default.svc.cluster.local", "default", (Port("redis", 6379, Protocol.TCP),))
    listeners = _by_name(lds.build_listeners(_sidecar(), _push(services=[*SERVICES, other])))
    chains = listeners["0.0.0.0_6379"].filter_chains
    assert [_tcp(c).cluster for c in chains] == [f"outbound|6379||{CACHE}"]


def test_http_wins_over_tcp_on_a_shared_wildcard_port() -> None:
    tcp_first = Service("aaa.default.svc.cluster.local", "default", (Port("tcp", 9080, Protocol.TCP),))
    listeners = _by_name(lds.build_listeners(_sidecar(), _push(services=[*SERVICES, tcp_first])))
    assert _hcm(listeners["0.0.0.0_9080"]).rds.route_config_name == "9080"


def test_capture_mode_none_egress_binds_exactly() -> None:
    sc = _config(
        "Sidecar",
        "default",
        "default",
        {
            "egress": [
                {
                    "port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                    "bind": "127.0.0.2",
                    "captureMode": "NONE",
                    "hosts": ["./*"],
                },
                {
                    "port": {"number": 5432, "protocol": "TCP", "name": "tcp"},
                    "bind": "127.0.0.2",
                    "captureMode": "NONE",
                    "hosts": ["./db.default.svc.cluster.local"],
                },
            ]
        },
    )
    listeners = _by_name(lds.build_listeners(_sidecar(), _push([sc])))
    assert sorted(listeners) == ["127.0.0.2_5432", "127.0.0.2_9080"]  # nothing captured: no virtualOutbound
    http = listeners["127.0.0.2_9080"]
    assert _address(http) == ("127.0.0.2", 9080)
    assert not http.HasField("bind_to_port")  # Envoy's default: bind
    assert _hcm(http).rds.route_config_name == names.sidecar_route_name(9080)
    assert _tcp(listeners["127.0.0.2_5432"].filter_chains[0]).cluster == f"outbound|5432||{DB}"


def test_capture_mode_none_tcp_port_with_several_services_keeps_the_first() -> None:
    sc = _config(
        "Sidecar",
        "default",
        "default",
        {
            "egress": [
                {
                    "port": {"number": 6379, "protocol": "TCP", "name": "tcp"},
                    "bind": "127.0.0.1",
                    "captureMode": "NONE",
                    "hosts": ["./*"],
                }
            ]
        },
    )
    other = Service("cache2.default.svc.cluster.local", "default", (Port("redis", 6379, Protocol.TCP),))
    (listener,) = lds.build_listeners(_sidecar(), _push([sc], [*SERVICES, other]))
    assert listener.name == "127.0.0.1_6379"
    assert [_tcp(c).cluster for c in listener.filter_chains] == [f"outbound|6379||{CACHE}"]


def test_sidecar_mixing_captured_and_bound_egress() -> None:
    sc = _config(
        "Sidecar",
        "default",
        "default",
        {
            "egress": [
                {
                    "port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                    "bind": "127.0.0.1",
                    "captureMode": "NONE",
                    "hosts": ["./*"],
                },
                {"hosts": ["./reviews.default.svc.cluster.local"]},
            ]
        },
    )
    listeners = _by_name(lds.build_listeners(_sidecar(), _push([sc])))
    assert sorted(listeners) == ["0.0.0.0_9080", "127.0.0.1_9080", "virtualOutbound"]


def test_interception_mode_none_binds_every_port_on_localhost() -> None:
    listeners = _by_name(lds.build_listeners(_sidecar({"INTERCEPTION_MODE": "NONE"}), _push()))
    assert "virtualOutbound" not in listeners
    assert _address(listeners["127.0.0.1_9080"]) == ("127.0.0.1", 9080)
    assert not listeners["127.0.0.1_9080"].HasField("bind_to_port")
    assert _tcp(listeners["127.0.0.1_5432"].filter_chains[0]).cluster == f"outbound|5432||{DB}"


# ----- gateways -----


def _gateway(name: str, servers: list[dict[str, Any]], selector: dict[str, str] | None = None) -> Config:
    spec = {"selector": selector or {"istio": "ingressgateway"}, "servers": servers}
    return _config("Gateway", "istio-system", name, spec)


HTTP_SERVER = {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}


def test_gateway_http_servers_merge_per_port_and_bind() -> None:
    gateways = [
        _gateway("a", [HTTP_SERVER]),
        _gateway("b", [{**HTTP_SERVER, "hosts": ["b.example.com"]}]),
        _gateway(
            "c", [{"port": {"number": 8080, "name": "http2", "protocol": "HTTP2"}, "bind": "127.0.0.1", "hosts": ["*"]}]
        ),
        _gateway("other", [{**HTTP_SERVER, "port": {"number": 81, "name": "h", "protocol": "HTTP"}}], {"app": "x"}),
    ]
    listeners = _by_name(lds.build_listeners(_router(), _push(gateways)))
    assert sorted(listeners) == ["0.0.0.0_80", "127.0.0.1_8080"]
    port80 = listeners["0.0.0.0_80"]
    assert _address(port80) == ("0.0.0.0", 80)
    assert not port80.HasField("bind_to_port")
    manager = _hcm(port80)
    assert manager.rds.route_config_name == "http.80"
    assert manager.stat_prefix == "outbound_0.0.0.0_80"
    assert [f.name for f in manager.http_filters] == [names.FAULT_FILTER, names.CORS_FILTER, names.ROUTER_FILTER]
    # As istiod: gateways are the edge, so the client address is the remote address (sidecars: false).
    assert manager.use_remote_address.value
    bound = listeners["127.0.0.1_8080"]
    assert _address(bound) == ("127.0.0.1", 8080)
    assert _hcm(bound).rds.route_config_name == names.gateway_http_route_name(8080, "127.0.0.1")


def test_gateway_terminating_tls_and_passthrough_routes_by_sni() -> None:
    gateway = _gateway(
        "gw",
        [
            {
                "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                "hosts": ["*.example.com"],
                "tls": {"mode": "SIMPLE", "credentialName": "cert"},
            },
            {
                "port": {"number": 8443, "name": "tls", "protocol": "TLS"},
                "hosts": ["*.example.com"],
                "tls": {"mode": "PASSTHROUGH"},
            },
        ],
    )
    vs = _config(
        "VirtualService",
        "default",
        "tls",
        {
            "hosts": ["a.example.com", "b.example.com"],
            "gateways": ["istio-system/gw"],
            "tls": [
                {"match": [{"sniHosts": ["a.example.com"]}], "route": [{"destination": {"host": "reviews"}}]},
                {
                    "match": [{"sniHosts": ["b.example.com"], "port": 8443}],
                    "route": [
                        {"destination": {"host": "reviews", "port": {"number": 9080}}, "weight": 60},
                        {"destination": {"host": "db", "port": {"number": 5432}}, "weight": 40},
                    ],
                },
            ],
        },
    )
    listeners = _by_name(lds.build_listeners(_router(), _push([gateway, vs])))
    assert sorted(listeners) == ["0.0.0.0_443", "0.0.0.0_8443"]
    (https,) = listeners["0.0.0.0_443"].filter_chains  # TLS terminated with the credential (test_gateway_tls)
    assert list(https.filter_chain_match.server_names) == ["*.example.com"]
    assert https.transport_socket.name == "envoy.transport_sockets.tls"
    tls = listeners["0.0.0.0_8443"]
    assert [f.name for f in tls.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    first, second = tls.filter_chains
    assert list(first.filter_chain_match.server_names) == ["a.example.com"]
    assert _tcp(first).cluster == f"outbound|9080||{REVIEWS}"
    assert list(second.filter_chain_match.server_names) == ["b.example.com"]
    weighted = _tcp(second).weighted_clusters.clusters
    assert [(c.name, c.weight) for c in weighted] == [(f"outbound|9080||{REVIEWS}", 60), (f"outbound|5432||{DB}", 40)]


def test_gateway_tcp_server_uses_the_bound_tcp_route() -> None:
    gateway = _gateway("gw", [{"port": {"number": 5432, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}])
    vs = _config(
        "VirtualService",
        "istio-system",
        "db",
        {"hosts": ["*"], "gateways": ["gw"], "tcp": [{"route": [{"destination": {"host": DB}}]}]},
    )
    listeners = _by_name(lds.build_listeners(_router(), _push([gateway, vs])))
    assert _tcp(listeners["0.0.0.0_5432"].filter_chains[0]).cluster == f"outbound|5432||{DB}"
    assert lds.build_listeners(_router(), _push([gateway])) == []


def test_router_without_gateways_has_no_listeners() -> None:
    assert lds.build_listeners(_router(), _push()) == []


def test_deterministic_output() -> None:
    configs = [_gateway("b", [HTTP_SERVER]), _gateway("a", [{**HTTP_SERVER, "bind": "127.0.0.1"}])]
    for proxy in (_sidecar(), _router()):
        first = [x.SerializeToString() for x in lds.build_listeners(proxy, _push(configs))]
        second = [x.SerializeToString() for x in lds.build_listeners(proxy, _push(list(reversed(configs))))]
        assert first and first == second


# ----- Envoy accepts the output -----


def _envoy() -> str | None:
    local = Path(sys.executable).parent / "envoy"
    return str(local) if local.exists() else shutil.which("envoy")


def _bootstrap(proxy: Proxy, push: PushContext, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    clusters = cds.build_clusters(proxy, push)
    listeners = lds.build_listeners(proxy, push)
    ads_cluster = {
        "name": "xds-grpc",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            cds.HTTP_PROTOCOL_OPTIONS_KEY: {
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
    bootstrap = {
        "node": {"id": proxy.id, "cluster": "test"},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            }
        },
        "static_resources": {
            "clusters": [json.loads(json_format.MessageToJson(c)) for c in clusters] + [ads_cluster],
            "listeners": [json.loads(json_format.MessageToJson(x)) for x in listeners],
        },
    }
    path = tmp_path / f"{proxy.type.value}.json"
    path.write_text(json.dumps(bootstrap))
    return path, bootstrap


def _validate(envoy: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path), "-l", "error"], capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(_envoy() is None, reason="envoy binary not found")
def test_envoy_validates_generated_clusters_and_listeners(tmp_path: Path) -> None:
    envoy = _envoy()
    assert envoy is not None
    rule = _config(
        "DestinationRule",
        "default",
        "reviews",
        {
            "host": "reviews",
            "trafficPolicy": {
                "loadBalancer": {"simple": "ROUND_ROBIN"},
                "connectionPool": {
                    "tcp": {"maxConnections": 10, "connectTimeout": "1s"},
                    "http": {"idleTimeout": "5s"},
                },
                "outlierDetection": {"consecutive5xxErrors": 3, "interval": "5s", "baseEjectionTime": "30s"},
                "tls": {"mode": "SIMPLE"},
            },
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {
                    "name": "v2",
                    "labels": {"version": "v2"},
                    "trafficPolicy": {
                        "loadBalancer": {"consistentHash": {"maglev": {"tableSize": 65537}, "useSourceIp": True}}
                    },
                },
            ],
        },
    )
    gateway = _gateway(
        "gw",
        [
            HTTP_SERVER,
            {"port": {"number": 80, "name": "http-local", "protocol": "HTTP"}, "hosts": ["*"], "bind": "127.0.0.1"},
            {
                "port": {"number": 8443, "name": "tls", "protocol": "TLS"},
                "hosts": ["*"],
                "tls": {"mode": "PASSTHROUGH"},
            },
        ],
    )
    vs = _config(
        "VirtualService",
        "default",
        "tls",
        {
            "hosts": ["a.example.com"],
            "gateways": ["istio-system/gw"],
            "tls": [{"match": [{"sniHosts": ["a.example.com"]}], "route": [{"destination": {"host": "reviews"}}]}],
        },
    )
    external = Service("api.example.com", "default", (Port("https", 443, Protocol.TLS),), Resolution.DNS)
    headless = Service(
        "headless.default.svc.cluster.local", "default", (Port("http", 8000, Protocol.HTTP),), Resolution.NONE
    )
    push = _push([rule, gateway, vs], [*SERVICES, external, headless])

    expected_listeners = {
        "sidecar": {
            "virtualOutbound",
            "0.0.0.0_9080",
            "0.0.0.0_9090",
            "10.96.0.20_5432",
            "0.0.0.0_6379",
            "0.0.0.0_443",
            "0.0.0.0_8000",
        },
        "router": {"0.0.0.0_80", "127.0.0.1_80", "0.0.0.0_8443"},
    }
    for proxy in (_sidecar(), _router()):
        path, bootstrap = _bootstrap(proxy, push, tmp_path)
        result = _validate(envoy, path)
        assert result.returncode == 0, result.stdout + result.stderr
        static = bootstrap["static_resources"]
        cluster_names = {c["name"] for c in static["clusters"]}
        assert {
            f"outbound|9080|v2|{REVIEWS}",
            "outbound|443||api.example.com",
            names.PASSTHROUGH_CLUSTER,
        } <= cluster_names
        assert {x["name"] for x in static["listeners"]} == expected_listeners[proxy.type.value]
        assert eds.build_endpoints(proxy, push, [f"outbound|9080|v1|{REVIEWS}"])

    # The check has teeth: Envoy rejects a duplicated cluster, and an HCM whose router is not the last filter.
    path, bootstrap = _bootstrap(_sidecar(), push, tmp_path)
    static = bootstrap["static_resources"]
    static["clusters"].append(static["clusters"][0])
    path.write_text(json.dumps(bootstrap))
    assert _validate(envoy, path).returncode != 0
    path, bootstrap = _bootstrap(_sidecar(), push, tmp_path)
    http_listener = next(x for x in bootstrap["static_resources"]["listeners"] if x["name"] == "0.0.0.0_9080")
    manager = http_listener["filterChains"][0]["filters"][0]["typedConfig"]
    manager["httpFilters"].reverse()
    path.write_text(json.dumps(bootstrap))
    assert _validate(envoy, path).returncode != 0
