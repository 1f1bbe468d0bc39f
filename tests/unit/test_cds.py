"""CDS generator: cluster names and types, DestinationRule policies, subsets, determinism."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from pilot.config.validation import check
from pilot.model.config import Config, ConfigKey
from pilot.model.proxy import Proxy, parse_proxy
from pilot.model.service import Endpoint, Port, Protocol, Resolution, Service, ServiceEndpoints
from pilot.push.context import PushContext
from pilot.push.offline import push_of_configs
from pilot.xds import cds, names
from tests.fuzz.envoy_check import bootstrap_for, envoy_validate, find_envoy

Cluster = cluster_pb2.Cluster
MAX_UINT32 = 2**32 - 1
REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.other.svc.cluster.local"


def config(kind: str, namespace: str, name: str, spec: dict[str, Any]) -> Config:
    typed, errors = check(kind, spec, namespace)
    assert not errors, errors
    return Config(key=ConfigKey(kind, namespace, name), api_version="networking.istio.io/v1", spec=typed)


def push_of(services: list[Service], endpoints: list[ServiceEndpoints] = (), configs: list[Config] = ()) -> PushContext:
    return PushContext.of(configs, services, {e.hostname: e for e in endpoints})


def sidecar(namespace: str = "default", labels: dict[str, str] | None = None) -> Proxy:
    return parse_proxy(
        f"sidecar~10.0.0.9~app-1.{namespace}~{namespace}.svc.cluster.local",
        {"NAMESPACE": namespace, "LABELS": labels or {"app": "app"}},
    )


def router(namespace: str = "istio-system") -> Proxy:
    return parse_proxy(
        f"router~10.0.0.8~gw-1.{namespace}~{namespace}.svc.cluster.local",
        {"NAMESPACE": namespace, "LABELS": {"istio": "ingressgateway"}},
    )


def reviews(*ports: Port, resolution: Resolution = Resolution.STATIC) -> Service:
    return Service(
        REVIEWS, "default", ports or (Port("http", 9080, Protocol.HTTP),), resolution, addresses=("10.96.0.10",)
    )


def by_name(clusters: list[Cluster]) -> dict[str, Cluster]:
    return {c.name: c for c in clusters}


def dr(spec: dict[str, Any], namespace: str = "default", name: str = "reviews") -> Config:
    return config("DestinationRule", namespace, name, {"host": "reviews", **spec})


# ----- names and types -----


def test_static_service_gets_eds_cluster_with_istio_defaults() -> None:
    clusters = cds.build_clusters(sidecar(), push_of([reviews()]))
    assert [c.name for c in clusters] == [
        f"outbound|9080||{REVIEWS}",
        names.BLACKHOLE_CLUSTER,
        names.PASSTHROUGH_CLUSTER,
    ]
    c = clusters[0]
    assert c.type == Cluster.EDS
    assert c.eds_cluster_config.service_name == c.name
    assert c.eds_cluster_config.eds_config.HasField("ads")
    assert c.eds_cluster_config.eds_config.resource_api_version == 2  # V3
    assert c.connect_timeout.seconds == 10
    assert c.lb_policy == Cluster.LEAST_REQUEST
    (threshold,) = c.circuit_breakers.thresholds
    assert threshold.max_connections.value == MAX_UINT32
    assert threshold.max_pending_requests.value == MAX_UINT32
    assert threshold.max_requests.value == MAX_UINT32
    assert threshold.max_retries.value == MAX_UINT32
    assert threshold.track_remaining
    assert not c.HasField("outlier_detection")
    assert not c.HasField("transport_socket")
    assert not c.typed_extension_protocol_options


def test_special_clusters() -> None:
    clusters = by_name(cds.build_clusters(sidecar(), push_of([])))
    assert list(clusters) == [names.BLACKHOLE_CLUSTER, names.PASSTHROUGH_CLUSTER]
    blackhole = clusters[names.BLACKHOLE_CLUSTER]
    assert blackhole.type == Cluster.STATIC
    assert not blackhole.load_assignment.endpoints
    passthrough = clusters[names.PASSTHROUGH_CLUSTER]
    assert passthrough.type == Cluster.ORIGINAL_DST
    assert passthrough.lb_policy == Cluster.CLUSTER_PROVIDED


def test_dns_service_gets_strict_dns_with_hostname_when_no_endpoints() -> None:
    svc = Service("api.example.com", "default", (Port("https", 443, Protocol.TLS),), Resolution.DNS)
    c = by_name(cds.build_clusters(sidecar(), push_of([svc])))["outbound|443||api.example.com"]
    assert c.type == Cluster.STRICT_DNS
    assert c.dns_lookup_family == Cluster.V4_ONLY
    assert c.lb_policy == Cluster.LEAST_REQUEST
    assert c.load_assignment.cluster_name == c.name
    (group,) = c.load_assignment.endpoints
    (lb,) = group.lb_endpoints
    assert lb.endpoint.address.socket_address.address == "api.example.com"
    assert lb.endpoint.address.socket_address.port_value == 443


def test_dns_service_uses_its_endpoints_and_subset_labels() -> None:
    svc = Service("db.example.com", "default", (Port("tcp", 5432, Protocol.TCP),), Resolution.DNS)
    eps = ServiceEndpoints(
        "db.example.com",
        {
            "tcp": (
                Endpoint("db-a.example.com", 6432, "tcp", {"role": "primary"}),
                Endpoint("db-b.example.com", 6432, "tcp", {"role": "replica"}),
            )
        },
    )
    rule = config(
        "DestinationRule",
        "default",
        "db",
        {"host": "db.example.com", "subsets": [{"name": "primary", "labels": {"role": "primary"}}]},
    )
    clusters = by_name(cds.build_clusters(sidecar(), push_of([svc], [eps], [rule])))

    def addresses(name: str) -> list[str]:
        return [
            lb.endpoint.address.socket_address.address
            for group in clusters[name].load_assignment.endpoints
            for lb in group.lb_endpoints
        ]

    assert addresses("outbound|5432||db.example.com") == ["db-a.example.com", "db-b.example.com"]
    assert addresses("outbound|5432|primary|db.example.com") == ["db-a.example.com"]
    assert clusters["outbound|5432|primary|db.example.com"].type == Cluster.STRICT_DNS


def test_none_resolution_is_original_dst_for_sidecars_and_eds_for_gateways() -> None:
    svc = reviews(resolution=Resolution.NONE)
    name = f"outbound|9080||{REVIEWS}"
    c = by_name(cds.build_clusters(sidecar(), push_of([svc])))[name]
    assert c.type == Cluster.ORIGINAL_DST
    assert c.lb_policy == Cluster.CLUSTER_PROVIDED
    assert not c.HasField("eds_cluster_config")
    gw = by_name(cds.build_clusters(router(), push_of([svc])))[name]
    assert gw.type == Cluster.EDS


def test_subset_clusters_and_subset_policy_override() -> None:
    rule = dr(
        {
            "trafficPolicy": {
                "loadBalancer": {"simple": "ROUND_ROBIN"},
                "connectionPool": {"tcp": {"maxConnections": 7}},
            },
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {
                    "name": "v2",
                    "labels": {"version": "v2"},
                    "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}},
                },
            ],
        }
    )
    clusters = by_name(cds.build_clusters(sidecar(), push_of([reviews()], configs=[rule])))
    assert [n for n in clusters if n.startswith("outbound")] == [
        f"outbound|9080||{REVIEWS}",
        f"outbound|9080|v1|{REVIEWS}",
        f"outbound|9080|v2|{REVIEWS}",
    ]
    assert clusters[f"outbound|9080||{REVIEWS}"].lb_policy == Cluster.ROUND_ROBIN
    assert clusters[f"outbound|9080|v1|{REVIEWS}"].lb_policy == Cluster.ROUND_ROBIN
    v2 = clusters[f"outbound|9080|v2|{REVIEWS}"]
    assert v2.lb_policy == Cluster.RANDOM
    # Blocks the subset does not set are inherited from the top level.
    assert v2.circuit_breakers.thresholds[0].max_connections.value == 7
    assert v2.eds_cluster_config.service_name == v2.name


def test_port_level_settings_replace_the_top_level_policy_for_their_port() -> None:
    svc = reviews(Port("http", 9080, Protocol.HTTP), Port("admin", 9081, Protocol.HTTP))
    rule = dr(
        {
            "trafficPolicy": {
                "loadBalancer": {"simple": "ROUND_ROBIN"},
                "connectionPool": {"tcp": {"maxConnections": 7}},
                "portLevelSettings": [{"port": {"number": 9081}, "loadBalancer": {"simple": "RANDOM"}}],
            }
        }
    )
    clusters = by_name(cds.build_clusters(sidecar(), push_of([svc], configs=[rule])))
    main = clusters[f"outbound|9080||{REVIEWS}"]
    admin = clusters[f"outbound|9081||{REVIEWS}"]
    assert main.lb_policy == Cluster.ROUND_ROBIN
    assert main.circuit_breakers.thresholds[0].max_connections.value == 7
    assert admin.lb_policy == Cluster.RANDOM
    assert admin.circuit_breakers.thresholds[0].max_connections.value == MAX_UINT32


@pytest.mark.parametrize(
    ("simple", "policy"),
    [
        ("ROUND_ROBIN", Cluster.ROUND_ROBIN),
        ("LEAST_CONN", Cluster.LEAST_REQUEST),
        ("LEAST_REQUEST", Cluster.LEAST_REQUEST),
        ("RANDOM", Cluster.RANDOM),
    ],
)
def test_simple_load_balancer(simple: str, policy: int) -> None:
    rule = dr({"trafficPolicy": {"loadBalancer": {"simple": simple}}})
    (c, *_) = cds.build_clusters(sidecar(), push_of([reviews()], configs=[rule]))
    assert c.lb_policy == policy
    assert c.type == Cluster.EDS


def test_passthrough_load_balancer_makes_original_dst() -> None:
    rule = dr({"trafficPolicy": {"loadBalancer": {"simple": "PASSTHROUGH"}}})
    (c, *_) = cds.build_clusters(sidecar(), push_of([reviews()], configs=[rule]))
    assert c.type == Cluster.ORIGINAL_DST
    assert c.lb_policy == Cluster.CLUSTER_PROVIDED
    assert not c.HasField("eds_cluster_config")


def test_consistent_hash_ring_hash_and_maglev() -> None:
    rule = dr(
        {
            "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}},
            "subsets": [
                {
                    "name": "ring",
                    "labels": {"v": "1"},
                    "trafficPolicy": {
                        "loadBalancer": {"consistentHash": {"useSourceIp": True, "ringHash": {"minimumRingSize": 64}}}
                    },
                },
                {
                    "name": "maglev",
                    "labels": {"v": "2"},
                    "trafficPolicy": {
                        "loadBalancer": {"consistentHash": {"useSourceIp": True, "maglev": {"tableSize": 65537}}}
                    },
                },
            ],
        }
    )
    clusters = by_name(cds.build_clusters(sidecar(), push_of([reviews()], configs=[rule])))
    default = clusters[f"outbound|9080||{REVIEWS}"]
    assert default.lb_policy == Cluster.RING_HASH
    assert default.ring_hash_lb_config.minimum_ring_size.value == 1024
    ring = clusters[f"outbound|9080|ring|{REVIEWS}"]
    assert ring.lb_policy == Cluster.RING_HASH
    assert ring.ring_hash_lb_config.minimum_ring_size.value == 64
    maglev = clusters[f"outbound|9080|maglev|{REVIEWS}"]
    assert maglev.lb_policy == Cluster.MAGLEV
    assert maglev.maglev_lb_config.table_size.value == 65537


def test_connection_pool_maps_to_circuit_breakers_and_timeouts() -> None:
    rule = dr(
        {
            "trafficPolicy": {
                "connectionPool": {
                    "tcp": {"maxConnections": 100, "connectTimeout": "250ms"},
                    "http": {
                        "http1MaxPendingRequests": 10,
                        "http2MaxRequests": 1000,
                        "maxRetries": 3,
                        "maxRequestsPerConnection": 5,
                        "idleTimeout": "30s",
                    },
                }
            }
        }
    )
    (c, *_) = cds.build_clusters(sidecar(), push_of([reviews()], configs=[rule]))
    assert (c.connect_timeout.seconds, c.connect_timeout.nanos) == (0, 250_000_000)
    (threshold,) = c.circuit_breakers.thresholds
    assert threshold.max_connections.value == 100
    assert threshold.max_pending_requests.value == 10
    assert threshold.max_requests.value == 1000
    assert threshold.max_retries.value == 3
    assert threshold.track_remaining
    options = http_protocol_options_pb2.HttpProtocolOptions()
    c.typed_extension_protocol_options[cds.HTTP_PROTOCOL_OPTIONS_KEY].Unpack(options)
    assert options.common_http_protocol_options.idle_timeout.seconds == 30
    assert options.common_http_protocol_options.max_requests_per_connection.value == 5
    assert options.explicit_http_config.HasField("http_protocol_options")


@pytest.mark.parametrize(("http_idle", "expected"), [(None, 45), ("30s", 30)])
def test_tcp_idle_timeout_is_the_http_idle_timeout_unless_http_sets_one(http_idle: str | None, expected: int) -> None:
    """istiod's applyConnectionPool: tcp.idleTimeout stands in for an unset http.idleTimeout."""
    pool: dict[str, Any] = {"tcp": {"idleTimeout": "45s"}}
    if http_idle is not None:
        pool["http"] = {"idleTimeout": http_idle}
    (c, *_) = cds.build_clusters(
        sidecar(), push_of([reviews()], configs=[dr({"trafficPolicy": {"connectionPool": pool}})])
    )
    options = http_protocol_options_pb2.HttpProtocolOptions()
    c.typed_extension_protocol_options[cds.HTTP_PROTOCOL_OPTIONS_KEY].Unpack(options)
    assert options.common_http_protocol_options.idle_timeout.seconds == expected


def test_outlier_detection() -> None:
    rule = dr(
        {
            "trafficPolicy": {
                "outlierDetection": {
                    "consecutive5xxErrors": 5,
                    "consecutiveGatewayErrors": 3,
                    "interval": "10s",
                    "baseEjectionTime": "30s",
                    "maxEjectionPercent": 50,
                }
            }
        }
    )
    (c, *_) = cds.build_clusters(sidecar(), push_of([reviews()], configs=[rule]))
    out = c.outlier_detection
    assert out.consecutive_5xx.value == 5
    assert out.enforcing_consecutive_5xx.value == 100
    assert out.consecutive_gateway_failure.value == 3
    assert out.enforcing_consecutive_gateway_failure.value == 100
    assert out.HasField("enforcing_success_rate") and out.enforcing_success_rate.value == 0
    assert out.interval.seconds == 10
    assert out.base_ejection_time.seconds == 30
    assert out.max_ejection_percent.value == 50
    assert c.common_lb_config.healthy_panic_threshold.value == 0.0


@pytest.mark.parametrize("protocol", [Protocol.HTTP2, Protocol.GRPC])
def test_http2_ports_get_explicit_http2(protocol: Protocol) -> None:
    svc = reviews(Port("grpc", 9090, protocol))
    (c, *_) = cds.build_clusters(sidecar(), push_of([svc]))
    assert set(c.typed_extension_protocol_options) == {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions"}
    options = http_protocol_options_pb2.HttpProtocolOptions()
    assert c.typed_extension_protocol_options[cds.HTTP_PROTOCOL_OPTIONS_KEY].Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")


def test_h2_upgrade_policy_and_use_client_protocol() -> None:
    rule = dr(
        {
            "trafficPolicy": {"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}},
            "subsets": [
                {
                    "name": "client",
                    "labels": {"v": "1"},
                    "trafficPolicy": {"connectionPool": {"http": {"useClientProtocol": True}}},
                }
            ],
        }
    )
    clusters = by_name(cds.build_clusters(sidecar(), push_of([reviews()], configs=[rule])))
    options = http_protocol_options_pb2.HttpProtocolOptions()
    clusters[f"outbound|9080||{REVIEWS}"].typed_extension_protocol_options[cds.HTTP_PROTOCOL_OPTIONS_KEY].Unpack(
        options
    )
    assert options.explicit_http_config.HasField("http2_protocol_options")
    clusters[f"outbound|9080|client|{REVIEWS}"].typed_extension_protocol_options[cds.HTTP_PROTOCOL_OPTIONS_KEY].Unpack(
        options
    )
    assert options.HasField("use_downstream_protocol_config")


def test_tls_simple_sets_upstream_tls_context_and_istio_mutual_is_left_out() -> None:
    rule = dr(
        {
            "trafficPolicy": {"tls": {"mode": "SIMPLE", "sni": "reviews.example.com"}},
            "subsets": [
                {"name": "plain", "labels": {"v": "1"}, "trafficPolicy": {"tls": {"mode": "DISABLE"}}},
                {"name": "mesh", "labels": {"v": "2"}, "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}},
            ],
        }
    )
    clusters = by_name(cds.build_clusters(sidecar(), push_of([reviews()], configs=[rule])))
    tls = clusters[f"outbound|9080||{REVIEWS}"].transport_socket
    assert tls.name == "envoy.transport_sockets.tls"
    context = tls_pb2.UpstreamTlsContext()
    assert tls.typed_config.Unpack(context)
    assert context.sni == "reviews.example.com"
    assert not clusters[f"outbound|9080|plain|{REVIEWS}"].HasField("transport_socket")
    assert not clusters[f"outbound|9080|mesh|{REVIEWS}"].HasField("transport_socket")


def test_tls_ca_crl_goes_with_the_ca() -> None:
    tls = {"mode": "SIMPLE", "caCertificates": "/ca.pem", "caCrl": "/crl.pem", "subjectAltNames": ["10.0.0.1"]}
    (c, *_) = cds.build_clusters(sidecar(), push_of([reviews()], configs=[dr({"trafficPolicy": {"tls": tls}})]))
    context = tls_pb2.UpstreamTlsContext()
    c.transport_socket.typed_config.Unpack(context)
    validation = context.common_tls_context.validation_context
    assert (validation.trusted_ca.filename, validation.crl.filename) == ("/ca.pem", "/crl.pem")
    (san,) = validation.match_typed_subject_alt_names
    assert san.san_type == san.IP_ADDRESS  # typed by its form


def test_tls_simple_defaults_sni_to_the_host() -> None:
    rule = dr({"trafficPolicy": {"tls": {"mode": "SIMPLE"}}})
    (c, *_) = cds.build_clusters(sidecar(), push_of([reviews()], configs=[rule]))
    context = tls_pb2.UpstreamTlsContext()
    c.transport_socket.typed_config.Unpack(context)
    assert context.sni == REVIEWS


# ----- visibility -----


def _two_namespaces() -> list[Service]:
    return [reviews(), Service(RATINGS, "other", (Port("http", 9080, Protocol.HTTP),))]


def test_sidecar_egress_hosts_limit_the_clusters() -> None:
    sc = config("Sidecar", "default", "default", {"egress": [{"hosts": ["./*"]}]})
    clusters = cds.build_clusters(sidecar(), push_of(_two_namespaces(), configs=[sc]))
    assert [c.name for c in clusters if c.name.startswith("outbound")] == [f"outbound|9080||{REVIEWS}"]
    no_sidecar = cds.build_clusters(sidecar(), push_of(_two_namespaces()))
    assert [c.name for c in no_sidecar if c.name.startswith("outbound")] == [
        f"outbound|9080||{RATINGS}",
        f"outbound|9080||{REVIEWS}",
    ]


def test_sidecar_egress_union_has_one_cluster_per_name() -> None:
    sc = config(
        "Sidecar",
        "default",
        "default",
        {
            "egress": [
                {"port": {"number": 9080, "protocol": "HTTP", "name": "http"}, "hosts": ["*/*"]},
                {"hosts": ["./*", "other/*"]},
            ]
        },
    )
    names_ = [c.name for c in cds.build_clusters(sidecar(), push_of(_two_namespaces(), configs=[sc]))]
    assert len(names_) == len(set(names_))
    assert f"outbound|9080||{RATINGS}" in names_ and f"outbound|9080||{REVIEWS}" in names_


def test_router_sees_services_exported_to_its_namespace() -> None:
    hidden = Service(
        "private.default.svc.cluster.local", "default", (Port("http", 80, Protocol.HTTP),), export_to=(".",)
    )
    clusters = cds.build_clusters(router(), push_of([*_two_namespaces(), hidden]))
    assert [c.name for c in clusters if c.name.startswith("outbound")] == [
        f"outbound|9080||{RATINGS}",
        f"outbound|9080||{REVIEWS}",
    ]


def test_deterministic_output() -> None:
    rule = dr(
        {
            "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 2}},
            "subsets": [{"name": "b", "labels": {"v": "b"}}, {"name": "a", "labels": {"v": "a"}}],
        }
    )
    services = [
        *_two_namespaces(),
        Service("x.example.com", "default", (Port("tcp", 1, Protocol.TCP),), Resolution.DNS),
    ]
    first = [c.SerializeToString() for c in cds.build_clusters(sidecar(), push_of(services, configs=[rule]))]
    second = [
        c.SerializeToString() for c in cds.build_clusters(sidecar(), push_of(list(reversed(services)), configs=[rule]))
    ]
    assert first == second


def test_service_entries_through_push_context_build() -> None:
    configs = [
        config(
            "ServiceEntry",
            "default",
            "external",
            {
                "hosts": ["api.example.com"],
                "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
                "resolution": "DNS",
            },
        ),
        config(
            "ServiceEntry",
            "default",
            "static",
            {
                "hosts": ["vm.internal"],
                "addresses": ["240.0.0.1"],
                "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
                "resolution": "STATIC",
                "endpoints": [{"address": "10.2.0.1", "labels": {"version": "v1"}}],
            },
        ),
        config(
            "DestinationRule",
            "default",
            "vm",
            {"host": "vm.internal", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]},
        ),
    ]
    push = push_of_configs(configs)
    clusters = by_name(cds.build_clusters(sidecar(), push))
    assert [n for n in clusters if n.startswith("outbound")] == [
        "outbound|443||api.example.com",
        "outbound|8080||vm.internal",
        "outbound|8080|v1|vm.internal",
    ]
    dns = clusters["outbound|443||api.example.com"]
    assert dns.type == Cluster.STRICT_DNS
    assert dns.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address == "api.example.com"
    assert clusters["outbound|8080|v1|vm.internal"].type == Cluster.EDS


def test_dns_round_robin_is_logical_dns_as_in_istiod() -> None:
    """istiod's convertResolution: DNS_ROUND_ROBIN → LOGICAL_DNS (one address at a time), its single endpoint or
    the host itself; a subset that selects no endpoint gets no cluster (Envoy refuses an empty LOGICAL_DNS)."""
    configs = [
        config(
            "ServiceEntry",
            "default",
            "rr",
            {
                "hosts": ["rr.example.com", "one.example.com"],
                "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
                "resolution": "DNS_ROUND_ROBIN",
            },
        ),
        config(
            "ServiceEntry",
            "default",
            "pinned",
            {
                "hosts": ["pinned.example.com"],
                "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                "resolution": "DNS_ROUND_ROBIN",
                "endpoints": [{"address": "origin.example.net", "labels": {"version": "v1"}}],
            },
        ),
        config(
            "DestinationRule",
            "default",
            "pinned",
            {
                "host": "pinned.example.com",
                "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
            },
        ),
    ]
    push = push_of_configs(configs)
    clusters = by_name(cds.build_clusters(sidecar(), push))
    rr = clusters["outbound|443||rr.example.com"]
    assert rr.type == Cluster.LOGICAL_DNS
    (group,) = rr.load_assignment.endpoints
    (only,) = group.lb_endpoints
    assert only.endpoint.address.socket_address.address == "rr.example.com"
    assert only.endpoint.address.socket_address.port_value == 443
    pinned = clusters["outbound|80|v1|pinned.example.com"]
    assert pinned.type == Cluster.LOGICAL_DNS
    assert pinned.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address == (
        "origin.example.net"
    )
    assert "outbound|80|v2|pinned.example.com" not in clusters
    envoy = find_envoy()
    if envoy is not None:  # Envoy refuses a LOGICAL_DNS cluster with other than one endpoint
        with tempfile.TemporaryDirectory() as workdir:
            accepted, output = envoy_validate(envoy, bootstrap_for(sidecar(), push), Path(workdir))
        assert accepted, output


# ----- retry budget, slow start, PROXY protocol -----


def test_retry_budget_goes_to_the_thresholds_with_istiod_defaults() -> None:
    """istiod's applyRetryBudget: 20 % and 3 concurrent retries unless set; a subset's budget replaces it."""
    rule = dr(
        {
            "trafficPolicy": {"retryBudget": {}},
            "subsets": [{"name": "v1", "labels": {"v": "1"}, "trafficPolicy": {"retryBudget": {"percent": 5.5}}}],
        }
    )
    clusters = by_name(cds.build_clusters(sidecar(), push_of([reviews()], configs=[rule])))
    (default,) = clusters[f"outbound|9080||{REVIEWS}"].circuit_breakers.thresholds
    assert default.retry_budget.budget_percent.value == 20.0
    assert default.retry_budget.min_retry_concurrency.value == 3
    (v1,) = clusters[f"outbound|9080|v1|{REVIEWS}"].circuit_breakers.thresholds
    assert v1.retry_budget.budget_percent.value == 5.5
    (plain,) = cds.build_clusters(sidecar(), push_of([reviews()]))[0].circuit_breakers.thresholds
    assert not plain.HasField("retry_budget")


@pytest.mark.parametrize(
    ("lb", "field"),
    [
        ({"simple": "ROUND_ROBIN", "warmup": {"duration": "30s"}}, "round_robin_lb_config"),
        ({"warmup": {"duration": "30s", "minimumPercent": 25, "aggression": 2}}, "least_request_lb_config"),
        ({"simple": "LEAST_REQUEST", "warmupDurationSecs": "30s"}, "least_request_lb_config"),
    ],
)
def test_warmup_is_envoy_slow_start(lb: dict[str, Any], field: str) -> None:
    rule = dr({"trafficPolicy": {"loadBalancer": lb}})
    (c, *_) = cds.build_clusters(sidecar(), push_of([reviews()], configs=[rule]))
    slow_start = getattr(c, field).slow_start_config
    assert slow_start.slow_start_window.seconds == 30
    if "warmup" in lb:  # istiod's setWarmup defaults: linear, 10 %
        assert slow_start.aggression.default_value == lb["warmup"].get("aggression", 1.0)
        assert slow_start.min_weight_percent.value == lb["warmup"].get("minimumPercent", 10.0)
    else:
        assert not slow_start.HasField("aggression")


def test_warmup_is_not_for_random_or_hash_balancing() -> None:
    for lb in ({"simple": "RANDOM", "warmup": {"duration": "30s"}}, {"consistentHash": {"useSourceIp": True}}):
        (c, *_) = cds.build_clusters(
            sidecar(), push_of([reviews()], configs=[dr({"trafficPolicy": {"loadBalancer": lb}})])
        )
        assert c.WhichOneof("lb_config") in (None, "ring_hash_lb_config")


def _proxy_protocol(socket: Any) -> Any:
    from envoy.extensions.transport_sockets.proxy_protocol.v3 import upstream_proxy_protocol_pb2

    assert socket.name == cds.PROXY_PROTOCOL_TRANSPORT_SOCKET
    config = upstream_proxy_protocol_pb2.ProxyProtocolUpstreamTransport()
    socket.typed_config.Unpack(config)
    return config


def test_proxy_protocol_wraps_whatever_the_cluster_speaks() -> None:
    """istiod's applyUpstreamProxyProtocol: around raw_buffer, around TLS, and around each auto-mTLS choice."""
    plain_rule = dr({"trafficPolicy": {"proxyProtocol": {"version": "V2"}}})
    (plain, *_) = cds.build_clusters(sidecar(), push_of([reviews()], configs=[plain_rule]))
    wrapper = _proxy_protocol(plain.transport_socket)
    assert wrapper.config.version == 1  # V2
    assert wrapper.transport_socket.name == "envoy.transport_sockets.raw_buffer"

    tls_rule = dr({"trafficPolicy": {"proxyProtocol": {}, "tls": {"mode": "SIMPLE", "caCertificates": "/ca.pem"}}})
    (tls, *_) = cds.build_clusters(sidecar(), push_of([reviews()], configs=[tls_rule]))
    wrapper = _proxy_protocol(tls.transport_socket)
    assert wrapper.config.version == 0  # V1, the default
    assert wrapper.transport_socket.name == cds.TLS_TRANSPORT_SOCKET

    policy = cds.effective_policy(plain_rule, 9080)
    auto = cds.build_cluster(sidecar(), reviews(), reviews().ports[0], "", policy, auto_mtls=True)
    assert auto is not None and not auto.HasField("transport_socket")
    inner = [_proxy_protocol(m.transport_socket).transport_socket.name for m in auto.transport_socket_matches]
    assert inner == [cds.TLS_TRANSPORT_SOCKET, "envoy.transport_sockets.raw_buffer"]

    envoy = find_envoy()
    if envoy is not None:
        rule = dr(
            {
                "trafficPolicy": {
                    "proxyProtocol": {"version": "V1"},
                    "retryBudget": {"percent": 10},
                    "loadBalancer": {"warmup": {"duration": "10s"}},
                }
            }
        )
        with tempfile.TemporaryDirectory() as workdir:
            accepted, output = envoy_validate(
                envoy, bootstrap_for(sidecar(), push_of([reviews()], configs=[rule])), Path(workdir)
            )
        assert accepted, output


def test_service_entry_subject_alt_names_are_checked_when_the_rule_names_none() -> None:
    """istiod: a ServiceEntry's subjectAltNames (its ServiceAccounts) for ISTIO_MUTUAL, auto-mTLS and SIMPLE
    TLS to it, unless the DestinationRule names its own."""
    entry = config(
        "ServiceEntry",
        "default",
        "vm",
        {
            "hosts": ["vm.example.com"],
            "ports": [
                {"number": 443, "name": "tls", "protocol": "TLS"},
                {"number": 80, "name": "http", "protocol": "HTTP"},
            ],
            "resolution": "STATIC",
            "location": "MESH_INTERNAL",
            "subjectAltNames": ["spiffe://cluster.local/ns/vm/sa/vm-app"],
            "endpoints": [{"address": "10.3.0.1"}],
        },
    )

    def sans(tls: dict[str, Any]) -> list[str]:
        rule = config("DestinationRule", "default", "vm", {"host": "vm.example.com", "trafficPolicy": {"tls": tls}})
        agent = parse_proxy("sidecar~10.0.0.9~a.default~default.svc.cluster.local", {"ISTIO_VERSION": "1.30.0"})
        (c, *_) = [x for x in cds.build_clusters(agent, push_of_configs([entry, rule])) if "443" in x.name]
        context = tls_pb2.UpstreamTlsContext()
        c.transport_socket.typed_config.Unpack(context)
        common = context.common_tls_context
        validation = (
            common.combined_validation_context.default_validation_context
            if common.HasField("combined_validation_context")
            else common.validation_context
        )
        return [m.matcher.exact for m in validation.match_typed_subject_alt_names]

    assert sans({"mode": "ISTIO_MUTUAL"}) == ["spiffe://cluster.local/ns/vm/sa/vm-app"]
    assert sans({"mode": "ISTIO_MUTUAL", "subjectAltNames": ["own"]}) == ["own"]
    assert sans({"mode": "SIMPLE", "caCertificates": "/ca.pem"}) == ["spiffe://cluster.local/ns/vm/sa/vm-app"]
    service = push_of_configs([entry]).service("vm.example.com")
    assert service is not None
    auto = cds.build_cluster(sidecar(), service, service.ports[0], "", cds.EffectivePolicy(), auto_mtls=True)
    assert auto is not None
    mesh = tls_pb2.UpstreamTlsContext()
    auto.transport_socket_matches[0].transport_socket.typed_config.Unpack(mesh)
    checked = mesh.common_tls_context.combined_validation_context.default_validation_context
    assert [m.matcher.exact for m in checked.match_typed_subject_alt_names] == [
        "spiffe://cluster.local/ns/vm/sa/vm-app"
    ]


def test_instance_service_accounts_become_spiffe_identities_to_check() -> None:
    """istiod's ServiceAccounts: subjectAltNames, then spiffe://<trust domain>/ns/<ns>/sa/<account> of each
    endpoint or selected WorkloadEntry; the trust domain is pilot's (--trust-domain)."""
    from pilot.registry.serviceentry import convert

    entry = config(
        "ServiceEntry",
        "vms",
        "app",
        {
            "hosts": ["app.vms.example"],
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "resolution": "STATIC",
            "location": "MESH_INTERNAL",
            "subjectAltNames": ["spiffe://legacy/app"],
            "endpoints": [
                {"address": "10.4.0.1", "serviceAccount": "app"},
                {"address": "10.4.0.2", "serviceAccount": "app"},
                {"address": "10.4.0.3", "serviceAccount": "batch"},
            ],
        },
    )
    (built,) = convert(entry, (), "cluster.local", "corp.example")
    assert built.service.subject_alt_names == (
        "spiffe://legacy/app",
        "spiffe://corp.example/ns/vms/sa/app",
        "spiffe://corp.example/ns/vms/sa/batch",
    )
    selecting = config(
        "ServiceEntry",
        "vms",
        "selected",
        {
            "hosts": ["selected.vms.example"],
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "resolution": "STATIC",
            "workloadSelector": {"labels": {"app": "selected"}},
        },
    )
    workload = config(
        "WorkloadEntry", "vms", "vm-1", {"address": "10.4.0.9", "labels": {"app": "selected"}, "serviceAccount": "vm"}
    )
    (built,) = convert(selecting, [workload], "cluster.local")
    assert built.service.subject_alt_names == ("spiffe://cluster.local/ns/vms/sa/vm",)
