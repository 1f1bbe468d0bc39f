"""Several Gateways on one router, merged as istiod's mergeGateways merges them: listeners and route names per
port, conflicting servers rejected (and listed in push_status) without touching the others, ports translated
to the router's own targetPorts, namespace-prefixed server hosts, and AUTO_PASSTHROUGH (east-west) gateways'
SNI filter chains, SNI-DNAT clusters and their endpoints."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from pilot.config.loader import load_text
from pilot.model.proxy import Proxy, parse_proxy
from pilot.push.context import PushContext
from pilot.push.offline import push_of_configs
from pilot.xds import cds, eds, lds, names, rds
from pilot.xds.cache import XdsCache
from pilot.xds.generate import Generator

NS = "istio-system"
REVIEWS = "reviews.default.svc.cluster.local"


def push_of(*objects: dict[str, Any]) -> PushContext:
    result = load_text("test.yaml", yaml.safe_dump_all(list(objects), sort_keys=False))
    assert not result.errors, [str(e) for e in result.errors]
    return push_of_configs(result.configs)


def gateway(name: str, *servers: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": list(servers)},
    }


def server(port: int, name: str, protocol: str, hosts: list[str], **extra: Any) -> dict[str, Any]:
    return {"port": {"number": port, "name": name, "protocol": protocol}, "hosts": hosts, **extra}


def simple(credential: str) -> dict[str, Any]:
    return {"mode": "SIMPLE", "credentialName": credential}


def router(ip: str = "10.0.0.1") -> Proxy:
    return parse_proxy(f"router~{ip}~gw-1.{NS}~{NS}.svc.cluster.local", {"LABELS": {"istio": "ingressgateway"}})


def layout(push: PushContext, proxy: Proxy | None = None) -> dict[str, list[tuple[tuple[str, ...], str]]]:
    """listener -> [(SNI names, RDS name or tcp_proxy cluster)] per filter chain."""
    out = {}
    for listener in lds.build_listeners(proxy or router(), push):
        chains = []
        for chain in listener.filter_chains:
            typed = chain.filters[0].typed_config
            if typed.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                manager = hcm_pb2.HttpConnectionManager()
                typed.Unpack(manager)
                target = manager.rds.route_config_name
            else:
                proxy_filter = tcp_proxy_pb2.TcpProxy()
                typed.Unpack(proxy_filter)
                target = proxy_filter.cluster or "weighted"
            chains.append((tuple(chain.filter_chain_match.server_names), target))
        out[listener.name] = chains
    return out


def rejected(push: PushContext) -> dict[str, str]:
    status = push.proxy_status().get("pilot_total_rejected_configs", {})
    return {gw: entry["message"] for gw, entry in status.items()}


# ----- merging: a table -----

MERGE_CASES: list[tuple[str, list[dict[str, Any]], dict[str, Any], dict[str, str]]] = [
    (
        "plain HTTP servers of two Gateways share http.<port>",
        [
            gateway("a", server(80, "http", "HTTP", ["a.example.com"])),
            gateway("b", server(80, "http", "HTTP", ["b.example.com"])),
        ],
        {"0.0.0.0_80": [((), "http.80")]},
        {},
    ),
    (
        "HTTPS servers of two Gateways: a chain each, by SNI, each with its own route",
        [
            gateway("a", server(443, "https", "HTTPS", ["a.example.com"], tls=simple("a"))),
            gateway("b", server(443, "https", "HTTPS", ["b.example.com"], tls=simple("b"))),
        ],
        {
            "0.0.0.0_443": [
                (("a.example.com",), "https.443.https.a.default"),
                (("b.example.com",), "https.443.https.b.default"),
            ]
        },
        {},
    ),
    (
        "a TCP server on an HTTP port is rejected, the HTTP server keeps working",
        [
            gateway("a", server(80, "http", "HTTP", ["*"])),
            gateway("b", server(80, "tcp", "TCP", ["*"])),
        ],
        {"0.0.0.0_80": [((), "http.80")]},
        {"default/b": "server 0: TCP server on port 80 conflicts with the HTTP server already there"},
    ),
    (
        "an HTTPS server repeating a host of another on the port is rejected",
        [
            gateway("a", server(443, "https", "HTTPS", ["a.example.com"], tls=simple("a"))),
            gateway("b", server(443, "https", "HTTPS", ["c.example.com", "a.example.com"], tls=simple("b"))),
        ],
        {"0.0.0.0_443": [(("a.example.com",), "https.443.https.a.default")]},
        {"default/b": "server 0: duplicate host names on port 443: a.example.com"},
    ),
    (
        "hosts repeated on another bind do not conflict",
        [
            gateway("a", server(443, "https", "HTTPS", ["a.example.com"], tls=simple("a"))),
            gateway("b", server(443, "https", "HTTPS", ["a.example.com"], tls=simple("b"), bind="127.0.0.5")),
        ],
        {
            "0.0.0.0_443": [(("a.example.com",), "https.443.https.a.default")],
            "127.0.0.5_443": [(("a.example.com",), "https.443.https.b.default.127.0.0.5")],
        },
        {},
    ),
    (
        "namespace-prefixed hosts repeating an SNI name are duplicates too (Envoy would reject the listener)",
        [
            gateway("a", server(443, "https", "HTTPS", ["ns1/a.example.com"], tls=simple("a"))),
            gateway("b", server(443, "https", "HTTPS", ["ns2/a.example.com"], tls=simple("b"))),
        ],
        {"0.0.0.0_443": [(("a.example.com",), "https.443.https.a.default")]},
        {"default/b": "server 0: duplicate host names on port 443: a.example.com"},
    ),
    (
        "HTTP servers with different binds get a listener each",
        [
            gateway("a", server(8080, "http", "HTTP", ["*"])),
            gateway("b", server(8080, "http", "HTTP", ["*"], bind="127.0.0.5")),
        ],
        {"0.0.0.0_8080": [((), "http.8080")], "127.0.0.5_8080": [((), "http.8080.127.0.0.5")]},
        {},
    ),
    (
        "an HTTP server after an HTTPS one on the same port: istiod appends its plain-text chain",
        [
            gateway("a", server(443, "https", "HTTPS", ["a.example.com"], tls=simple("a"))),
            gateway("b", server(443, "http", "HTTP", ["*"])),
        ],
        {"0.0.0.0_443": [(("a.example.com",), "https.443.https.a.default"), ((), "http.443")]},
        {},
    ),
]


@pytest.mark.parametrize(
    ("gateways", "expected", "expected_rejected"),
    [(c[1], c[2], c[3]) for c in MERGE_CASES],
    ids=[c[0] for c in MERGE_CASES],
)
def test_merge(gateways: list[dict[str, Any]], expected: dict[str, Any], expected_rejected: dict[str, str]) -> None:
    push = push_of(*gateways)
    assert layout(push) == expected
    assert rejected(push) == expected_rejected


def test_rejected_servers_stay_in_push_status_across_contexts() -> None:
    from pilot.model.environment import Environment
    from pilot.push.offline import environment_of

    objects = [gateway("a", server(80, "http", "HTTP", ["*"])), gateway("b", server(80, "tcp", "TCP", ["*"]))]
    result = load_text("gw.yaml", yaml.safe_dump_all(objects))
    env: Environment = environment_of(result.configs)
    first = PushContext.build(env, "1", 1)
    lds.build_listeners(router(), first)
    second = PushContext.build(env, "2", 2, first, frozenset({"VirtualService"}))
    assert "default/b" in rejected(second)  # nothing generated for the router in this context


def test_http_servers_of_two_gateways_share_one_route_with_both_hosts() -> None:
    push = push_of(
        gateway("a", server(80, "http", "HTTP", ["a.example.com"])),
        gateway("b", server(80, "http", "HTTP", ["b.example.com"])),
        vs("va", ["a.example.com"], ["default/a"]),
        vs("vb", ["b.example.com"], ["default/b"]),
        service_entry("backend", "backend.example.com"),
    )
    (route,) = rds.build_routes(router(), push, ["http.80"])
    assert [vh.name for vh in route.virtual_hosts] == ["a.example.com:80", "b.example.com:80"]


def test_a_rejected_server_adds_nothing_to_routes() -> None:
    push = push_of(
        gateway("a", server(443, "https", "HTTPS", ["a.example.com"], tls=simple("a"))),
        gateway("b", server(443, "https", "HTTPS", ["a.example.com"], tls=simple("b"))),
        vs("va", ["a.example.com"], ["default/a", "default/b"]),
        service_entry("backend", "backend.example.com"),
    )
    routes = {
        r.name: r for r in rds.build_routes(router(), push, ["https.443.https.a.default", "https.443.https.b.default"])
    }
    assert sorted(routes) == ["https.443.https.a.default"]


def vs(name: str, hosts: list[str], gateways: list[str], namespace: str = "default", dest: str = "backend") -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": hosts,
            "gateways": gateways,
            "http": [{"route": [{"destination": {"host": f"{dest}.example.com", "port": {"number": 80}}}]}],
        },
    }


def service_entry(name: str, host: str, ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "hosts": [host],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": ports or [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "endpoints": [{"address": "10.9.0.1"}],
            **spec,
        },
    }


# ----- namespace-prefixed hosts -----


def test_namespace_prefixed_hosts_bind_only_virtual_services_of_that_namespace() -> None:
    push = push_of(
        gateway(
            "gw",
            server(80, "http", "HTTP", ["ns1/a.example.com", "./b.example.com", "*/c.example.com"]),
        ),
        vs("a-in-ns1", ["a.example.com"], ["default/gw"], namespace="ns1"),
        vs("a-in-ns2", ["a.example.com"], ["default/gw"], namespace="ns2", dest="other"),
        vs("b-in-default", ["b.example.com"], ["default/gw"]),
        vs("b-in-ns2", ["b.example.com"], ["default/gw"], namespace="ns2", dest="other"),
        vs("c-in-ns2", ["c.example.com"], ["default/gw"], namespace="ns2", dest="other"),
        service_entry("backend", "backend.example.com"),
        service_entry("other", "other.example.com"),
    )
    (route,) = rds.build_routes(router(), push, ["http.80"])
    clusters = {vh.name: {r.route.cluster for r in vh.routes} for vh in route.virtual_hosts}
    assert clusters == {
        "a.example.com:80": {"outbound|80||backend.example.com"},  # ns1's, not ns2's
        "b.example.com:80": {"outbound|80||backend.example.com"},  # ./ is the Gateway's namespace (default)
        "c.example.com:80": {"outbound|80||other.example.com"},  # */ is any namespace
    }


def test_namespace_prefixed_hosts_bind_tls_routes_of_that_namespace() -> None:
    def tls_vs(name: str, namespace: str, dest: str) -> dict[str, Any]:
        return {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "hosts": ["a.example.com"],
                "gateways": ["default/gw"],
                "tls": [
                    {
                        "match": [{"sniHosts": ["a.example.com"]}],
                        "route": [{"destination": {"host": dest, "port": {"number": 443}}}],
                    }
                ],
            },
        }

    tls = {"mode": "PASSTHROUGH"}
    push = push_of(
        gateway("gw", server(443, "tls", "TLS", ["ns1/a.example.com"], tls=tls)),
        tls_vs("in-ns2", "ns2", "two.example.com"),
        tls_vs("in-ns1", "ns1", "one.example.com"),
    )
    assert layout(push) == {"0.0.0.0_443": [(("a.example.com",), "outbound|443||one.example.com")]}


# ----- port translation -----


def test_server_ports_listen_on_the_routers_own_target_ports() -> None:
    gateway_service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "istio-ingressgateway", "namespace": NS},
        "spec": {
            "clusterIP": "10.96.0.50",
            "ports": [
                {"name": "http2", "port": 80, "targetPort": 8080},
                {"name": "https", "port": 443, "targetPort": 8443},
            ],
            "selector": {"istio": "ingressgateway"},
        },
    }
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "gw-1", "namespace": NS, "labels": {"kubernetes.io/service-name": "istio-ingressgateway"}},
        "addressType": "IPv4",
        "ports": [{"name": "http2", "port": 8080}, {"name": "https", "port": 8443}],
        "endpoints": [{"addresses": ["10.0.0.1"]}],
    }
    push = push_of(
        gateway_service,
        slice_,
        gateway(
            "gw",
            server(80, "http", "HTTP", ["*"]),
            server(443, "https", "HTTPS", ["a.example.com"], tls=simple("a")),
            server(9000, "tcp", "HTTP", ["*"]),
        ),
    )
    assert layout(push) == {
        "0.0.0.0_8080": [((), "http.8080")],  # HTTP routes are named after the listen port
        "0.0.0.0_8443": [(("a.example.com",), "https.443.https.gw.default")],  # HTTPS after the server port
        "0.0.0.0_9000": [((), "http.9000")],  # not a port of its services: as written
    }
    # Another router (another IP) of the same Gateways is not an instance of that Service.
    assert sorted(layout(push, router("10.0.0.2"))) == ["0.0.0.0_443", "0.0.0.0_80", "0.0.0.0_9000"]


# ----- AUTO_PASSTHROUGH -----


def east_west_push(**dr: Any) -> PushContext:
    reviews = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 9080, "targetPort": 8080}]},
    }
    objects = [
        reviews,
        gateway(
            "cross-network",
            server(15443, "tls", "TLS", ["*.local"], tls={"mode": "AUTO_PASSTHROUGH"}),
            namespace=NS,
        ),
        service_entry("external", "api.external.com", location="MESH_EXTERNAL"),
    ]
    if dr:
        objects.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "reviews", "namespace": "default"},
                "spec": {"host": "reviews", **dr},
            }
        )
    return push_of(*objects)


def test_auto_passthrough_chains_match_the_dns_srv_sni_of_each_service_port_and_subset() -> None:
    push = east_west_push(subsets=[{"name": "v1", "labels": {"version": "v1"}}])
    (listener,) = lds.build_listeners(router(), push)
    assert listener.name == "0.0.0.0_15443"
    summary = [
        (
            list(c.filter_chain_match.server_names),
            list(c.filter_chain_match.application_protocols),
            layout(push)[listener.name][i][1],
        )
        for i, c in enumerate(listener.filter_chains)
    ]
    alpns = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]
    assert summary == [
        ([f"outbound_.9080_._.{REVIEWS}"], alpns, f"outbound_.9080_._.{REVIEWS}"),
        ([f"outbound_.9080_.v1_.{REVIEWS}"], alpns, f"outbound_.9080_.v1_.{REVIEWS}"),
    ]  # api.external.com is MESH_EXTERNAL and not under *.local: no chain
    assert [f.name for f in listener.listener_filters] == ["envoy.filters.listener.tls_inspector"]


def test_auto_passthrough_brings_sni_dnat_clusters_without_tls_and_their_endpoints() -> None:
    push = east_west_push(
        subsets=[{"name": "v1", "labels": {"version": "v1"}}], trafficPolicy={"tls": {"mode": "ISTIO_MUTUAL"}}
    )
    proxy = parse_proxy(
        f"router~10.0.0.1~gw-1.{NS}~{NS}.svc.cluster.local",
        {"LABELS": {"istio": "ingressgateway"}, "ISTIO_VERSION": "1.30.0"},
    )
    generator = Generator(XdsCache())
    clusters = {
        r.name: r.decode(cluster_pb2.Cluster) for r in generator.resources(names.CLUSTER_TYPE, proxy, push, None)
    }
    sni = f"outbound_.9080_._.{REVIEWS}"
    assert {sni, f"outbound_.9080_.v1_.{REVIEWS}", f"outbound|9080||{REVIEWS}"} <= set(clusters)
    assert not any(n.startswith("outbound_.") and "external" in n for n in clusters)
    dnat = clusters[sni]
    assert dnat.type == cluster_pb2.Cluster.EDS and dnat.eds_cluster_config.service_name == sni
    assert not dnat.HasField("transport_socket") and not dnat.transport_socket_matches  # the client's mTLS passes
    assert clusters[f"outbound|9080||{REVIEWS}"].HasField("transport_socket")  # the usual cluster keeps its TLS
    assert eds.build_endpoint(proxy, push, sni).cluster_name == sni
    # Without an AUTO_PASSTHROUGH server there are none.
    plain = push_of(gateway("gw", server(80, "http", "HTTP", ["*"])))
    assert not [c for c in cds.build_clusters(router(), plain) if c.name.startswith("outbound_.")]
