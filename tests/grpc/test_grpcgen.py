"""Proxyless gRPC generator: Istio YAML in, the resources a GENERATOR: grpc node gets out (table-driven).

Each case names the type and the resource names the gRPC client asks for, and the fields it must see (a
partial JSON form of each resource: every key given must be there with that value, lists element by element).
Resources go through pilot's Generator, as the server serves them (cache units, snapshots).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from pilot.model.proxy import Proxy, parse_proxy
from pilot.push.context import PushContext
from pilot.xds import grpcgen
from pilot.xds.cache import XdsCache
from pilot.xds.generate import Generator
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.xds.snapshot import NameSet
from tests.support import push_of

FQDN = "greeter.default.svc.cluster.local"
ROUTE = f"outbound|7070||{FQDN}"
V1 = f"outbound|7070|v1|{FQDN}"
V2 = f"outbound|7070|v2|{FQDN}"
NOSUCH = "outbound|7070||nosuch.default.svc.cluster.local"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
MESSAGES: dict[str, type[Message]] = {
    LISTENER_TYPE: listener_pb2.Listener,
    ROUTE_TYPE: route_pb2.RouteConfiguration,
    CLUSTER_TYPE: cluster_pb2.Cluster,
    ENDPOINT_TYPE: endpoint_pb2.ClusterLoadAssignment,
}

SERVICE = f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: greeter, namespace: default}}
spec:
  hosts: [{FQDN}]
  addresses: [10.96.0.7]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7070, name: grpc, protocol: GRPC}}, {{number: 7071, name: admin, protocol: GRPC}}]
  endpoints:
  - {{address: 127.0.0.2, ports: {{grpc: 5001}}, labels: {{version: v1}}, locality: us-east/zone-a}}
  - {{address: 127.0.0.3, ports: {{grpc: 5002}}, labels: {{version: v2}}, weight: 3}}
  - {{address: 127.0.0.4, ports: {{grpc: 5002}}, labels: {{version: v2}}}}
"""
SUBSETS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter, namespace: default}
spec:
  host: greeter
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""


def _vs(http: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: greeter, namespace: default}}
spec:
  hosts: [greeter]
  http:
{http}
"""


def _dr(spec: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: greeter, namespace: default}}
spec:
  host: greeter
{spec}
"""


def _docs(*parts: str) -> str:
    return "\n---\n".join(parts)


def grpc_node(namespace: str = "default") -> Proxy:
    return parse_proxy(
        f"sidecar~127.0.0.1~client.{namespace}~{namespace}.svc.cluster.local",
        {"GENERATOR": "grpc", "NAMESPACE": namespace},
    )


ENVOY_NODE = parse_proxy("sidecar~127.0.0.1~client.default~default.svc.cluster.local", {"NAMESPACE": "default"})


def generate(
    push: PushContext, type_url: str, names: list[str] | None, proxy: Proxy | None = None
) -> dict[str, dict[str, Any]]:
    """What the node gets of one type, by resource name, in protobuf JSON form."""
    generator = Generator(XdsCache(1000))
    out = {}
    for resource in generator.resources(type_url, proxy or grpc_node(), push, names):
        message = MESSAGES[type_url].FromString(resource.value)
        out[resource.name] = json_format.MessageToDict(message)
    return out


def contains(actual: Any, expected: Any, path: str = "") -> list[str]:
    """Where ``actual`` differs from the partial ``expected`` (dict keys given, lists element-wise)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        problems = []
        for key, value in expected.items():
            if key not in actual:
                problems.append(f"{path}.{key}: missing (have {sorted(actual)})")
            else:
                problems += contains(actual[key], value, f"{path}.{key}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: expected {len(expected)} items, got {actual!r}"]
        return [
            p for i, (a, e) in enumerate(zip(actual, expected, strict=True)) for p in contains(a, e, f"{path}[{i}]")
        ]
    return [] if actual == expected else [f"{path}: expected {expected!r}, got {actual!r}"]


@dataclass
class Case:
    id: str
    config: str
    type_url: str
    names: list[str] | None
    expected: dict[str, Any]  # resource name -> partial JSON; exactly these names are served
    absent: dict[str, list[str]] = field(default_factory=dict)  # resource name -> JSON keys that must be absent
    namespace: str = "default"


def _listener(name: str, route: str = ROUTE, address: str = "10.96.0.7", port: int = 7070) -> dict[str, Any]:
    return {
        "name": name,
        "address": {"socketAddress": {"address": address, "portValue": port}},
        "apiListener": {
            "apiListener": {
                "@type": HCM_TYPE,
                "rds": {"configSource": {"ads": {}}, "routeConfigName": route},
                "httpFilters": [
                    {"name": "envoy.filters.http.fault", "typedConfig": {"@type": FAULT_TYPE}},
                    {"name": "envoy.filters.http.router", "typedConfig": {"@type": ROUTER_TYPE}},
                ],
            }
        },
    }


def _endpoint(address: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"endpoint": {"address": {"socketAddress": {"address": address, "portValue": port}}}, **extra}


def _eds_cluster(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "EDS",
        "edsClusterConfig": {"edsConfig": {"ads": {}}, "serviceName": name},
        **extra,
    }


WEIGHTED = """
  - route:
    - {destination: {host: greeter, subset: v1}, weight: 75}
    - {destination: {host: greeter, subset: v2}, weight: 25}
    timeout: 2s
    corsPolicy: {allowOrigins: [{exact: "*"}]}
"""
HEADER_AND_FAULT = """
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: greeter, subset: v2}}]
  - match: [{headers: {x-fault: {prefix: "y"}}}]
    fault: {abort: {grpcStatus: PERMISSION_DENIED, percentage: {value: 100}}}
    route: [{destination: {host: greeter, subset: v2}}]
  - route: [{destination: {host: greeter, subset: v1}}]
"""

CASES = [
    # ----- LDS: the Listener named exactly as the target -----
    Case(
        "lds-fqdn-target",
        SERVICE,
        LISTENER_TYPE,
        [f"{FQDN}:7070"],
        {f"{FQDN}:7070": _listener(f"{FQDN}:7070")},
    ),
    Case(
        "lds-short-names-in-own-namespace",
        SERVICE,
        LISTENER_TYPE,
        ["greeter:7070", "greeter.default:7071", "greeter.default.svc:7070"],
        {
            "greeter:7070": _listener("greeter:7070"),
            "greeter.default:7071": _listener("greeter.default:7071", f"outbound|7071||{FQDN}", port=7071),
            "greeter.default.svc:7070": _listener("greeter.default.svc:7070"),
        },
    ),
    Case("lds-short-name-other-namespace", SERVICE, LISTENER_TYPE, ["greeter:7070"], {}, namespace="other"),
    Case(
        "lds-qualified-from-other-namespace",
        SERVICE,
        LISTENER_TYPE,
        [f"{FQDN}:7070"],
        {f"{FQDN}:7070": _listener(f"{FQDN}:7070")},
        namespace="other",
    ),
    Case("lds-unknown-port", SERVICE, LISTENER_TYPE, ["greeter:9999"], {}),
    Case("lds-unknown-host", SERVICE, LISTENER_TYPE, ["nosuch:7070"], {}),
    Case("lds-server-listener-not-served", SERVICE, LISTENER_TYPE, ["xds.istio.io/grpc/lds/inbound/0.0.0.0:7070"], {}),
    Case(
        "lds-wildcard-every-port-by-fqdn",
        SERVICE,
        LISTENER_TYPE,
        None,
        {
            f"{FQDN}:7070": _listener(f"{FQDN}:7070"),
            f"{FQDN}:7071": _listener(f"{FQDN}:7071", f"outbound|7071||{FQDN}", port=7071),
        },
    ),
    # ----- RDS: the service's virtual host, translated as for Envoy, adapted for gRPC -----
    Case(
        "rds-default-route-without-virtual-service",
        SERVICE,
        ROUTE_TYPE,
        [ROUTE],
        {
            ROUTE: {
                "name": ROUTE,
                "virtualHosts": [
                    {
                        "name": f"{FQDN}:7070",
                        "routes": [
                            {
                                "match": {"prefix": "/"},
                                "route": {"cluster": ROUTE, "maxStreamDuration": {"maxStreamDuration": "0s"}},
                            }
                        ],
                    }
                ],
            }
        },
    ),
    Case(
        "rds-weighted-split-timeout-cors-dropped",
        _docs(SERVICE, SUBSETS, _vs(WEIGHTED)),
        ROUTE_TYPE,
        [ROUTE],
        {
            ROUTE: {
                "virtualHosts": [
                    {
                        "routes": [
                            {
                                "match": {"prefix": "/"},
                                "route": {
                                    "weightedClusters": {
                                        "clusters": [{"name": V1, "weight": 75}, {"name": V2, "weight": 25}]
                                    },
                                    "timeout": "2s",
                                    "maxStreamDuration": {"maxStreamDuration": "2s"},
                                },
                            }
                        ]
                    }
                ]
            }
        },
        absent={ROUTE: ["typedPerFilterConfig", "maxGrpcTimeout"]},
    ),
    Case(
        "rds-header-match-and-grpc-fault-abort",
        _docs(SERVICE, SUBSETS, _vs(HEADER_AND_FAULT)),
        ROUTE_TYPE,
        [ROUTE],
        {
            ROUTE: {
                "virtualHosts": [
                    {
                        "routes": [
                            {
                                "match": {
                                    "prefix": "/",
                                    "headers": [{"name": "end-user", "stringMatch": {"exact": "jason"}}],
                                },
                                "route": {"cluster": V2},
                            },
                            {
                                "match": {"headers": [{"name": "x-fault", "stringMatch": {"prefix": "y"}}]},
                                "route": {"cluster": V2},
                                "typedPerFilterConfig": {
                                    "envoy.filters.http.fault": {
                                        "@type": FAULT_TYPE,
                                        "abort": {
                                            "grpcStatus": 7,
                                            "percentage": {"numerator": 1000000, "denominator": "MILLION"},
                                        },
                                    }
                                },
                            },
                            {"match": {"prefix": "/"}, "route": {"cluster": V1}},
                        ]
                    }
                ]
            }
        },
    ),
    Case(
        "rds-unknown-service-has-no-virtual-host",
        SERVICE,
        ROUTE_TYPE,
        [NOSUCH],
        {NOSUCH: {"name": NOSUCH}},
        absent={NOSUCH: ["virtualHosts"]},
    ),
    Case("rds-not-a-cluster-name", SERVICE, ROUTE_TYPE, ["7070"], {}),
    # ----- CDS: EDS clusters over ADS, by name -----
    Case(
        "cds-default-and-subsets-by-name",
        _docs(SERVICE, SUBSETS),
        CLUSTER_TYPE,
        [ROUTE, V2],
        {ROUTE: _eds_cluster(ROUTE, altStatName=f"{ROUTE};"), V2: _eds_cluster(V2)},
        absent={ROUTE: ["lbPolicy", "circuitBreakers", "connectTimeout"]},
    ),
    Case("cds-unknown-subset", _docs(SERVICE, SUBSETS), CLUSTER_TYPE, [f"outbound|7070|v9|{FQDN}"], {}),
    Case("cds-unknown-port", _docs(SERVICE, SUBSETS), CLUSTER_TYPE, [f"outbound|9999||{FQDN}"], {}),
    Case("cds-wildcard-is-nothing", _docs(SERVICE, SUBSETS), CLUSTER_TYPE, None, {}),
    Case(
        "cds-unsupported-simple-lb-is-round-robin-and-max-requests",
        _docs(
            SERVICE,
            _dr(
                "  trafficPolicy:\n    loadBalancer: {simple: LEAST_REQUEST}\n"
                "    connectionPool: {http: {http2MaxRequests: 50}, tcp: {maxConnections: 7}}\n"
            ),
        ),
        CLUSTER_TYPE,
        [ROUTE],
        {ROUTE: _eds_cluster(ROUTE, circuitBreakers={"thresholds": [{"maxRequests": 50}]})},
        absent={ROUTE: ["lbPolicy"]},
    ),
    Case(
        "cds-consistent-hash-is-ring-hash-within-grpc-limits",
        _docs(
            SERVICE,
            _dr(
                "  trafficPolicy:\n    loadBalancer: {consistentHash: {httpHeaderName: x-user, "
                "ringHash: {minimumRingSize: 99999999}}}\n"
            ),
        ),
        CLUSTER_TYPE,
        [ROUTE],
        {ROUTE: _eds_cluster(ROUTE, lbPolicy="RING_HASH", ringHashLbConfig={"minimumRingSize": "8388608"})},
    ),
    Case(
        "cds-dns-service-is-logical-dns",
        """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: grpc, protocol: GRPC}]
""",
        CLUSTER_TYPE,
        ["outbound|443||api.example.com"],
        {
            "outbound|443||api.example.com": {
                "type": "LOGICAL_DNS",
                "loadAssignment": {
                    "endpoints": [
                        {
                            "locality": {},
                            "lbEndpoints": [_endpoint("api.example.com", 443)],
                        }
                    ]
                },
            }
        },
        absent={"outbound|443||api.example.com": ["edsClusterConfig"]},
    ),
    # ----- EDS: every locality named and weighted -----
    Case(
        "eds-localities-named-and-weighted",
        SERVICE,
        ENDPOINT_TYPE,
        [ROUTE],
        {
            ROUTE: {
                "endpoints": [
                    {
                        "locality": {},
                        "loadBalancingWeight": 4,
                        "lbEndpoints": [
                            _endpoint("127.0.0.3", 5002, loadBalancingWeight=3),
                            _endpoint("127.0.0.4", 5002),
                        ],
                    },
                    {
                        "locality": {"region": "us-east", "zone": "zone-a"},
                        "loadBalancingWeight": 1,
                        "lbEndpoints": [_endpoint("127.0.0.2", 5001)],
                    },
                ]
            }
        },
    ),
    Case(
        "eds-subset",
        _docs(SERVICE, SUBSETS),
        ENDPOINT_TYPE,
        [V1],
        {
            V1: {
                "endpoints": [
                    {
                        "locality": {"region": "us-east", "zone": "zone-a"},
                        "loadBalancingWeight": 1,
                        "lbEndpoints": [_endpoint("127.0.0.2", 5001)],
                    }
                ]
            }
        },
    ),
    Case("eds-dns-service-has-none", SERVICE.replace("STATIC", "DNS"), ENDPOINT_TYPE, [ROUTE], {}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_generated(case: Case) -> None:
    served = generate(push_of(case.config), case.type_url, case.names, grpc_node(case.namespace))
    assert sorted(served) == sorted(case.expected), f"served {sorted(served)}"
    for name, expected in case.expected.items():
        problems = contains(served[name], expected, name)
        assert not problems, "\n".join(problems) + f"\nfull resource: {served[name]}"
    for name, keys in case.absent.items():
        text = repr(served[name])
        for key in keys:
            assert f"'{key}'" not in text, f"{name}: {key} should be absent: {served[name]}"


def test_duplicate_addresses_are_served_once() -> None:
    """gRPC rejects an assignment listing an address twice (Envoy does not care)."""
    doubled = SERVICE.replace(
        "  - {address: 127.0.0.4, ports: {grpc: 5002}, labels: {version: v2}}",
        "  - {address: 127.0.0.3, ports: {grpc: 5002}, labels: {version: v2}}",
    )
    (cla,) = generate(push_of(doubled), ENDPOINT_TYPE, [ROUTE]).values()
    addresses = [
        lb["endpoint"]["address"]["socketAddress"]["address"] for g in cla["endpoints"] for lb in g["lbEndpoints"]
    ]
    assert sorted(addresses) == ["127.0.0.2", "127.0.0.3"]
    for group in cla["endpoints"]:  # a locality weighs what it kept
        assert group["loadBalancingWeight"] == sum(lb.get("loadBalancingWeight", 1) for lb in group["lbEndpoints"])


HEADLESS = """
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: grpc, port: 7070, targetPort: 5000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: default, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: grpc, port: 5000}]
endpoints:
- {addresses: [10.1.0.1], conditions: {ready: true}}
- {addresses: [10.1.0.2], conditions: {ready: true}}
"""


def test_headless_service_gets_endpoints() -> None:
    """A headless service is an original-destination cluster for Envoy; gRPC balances over its endpoints."""
    push = push_of(HEADLESS)
    name = "outbound|7070||db.default.svc.cluster.local"
    assert generate(push, CLUSTER_TYPE, [name])[name]["type"] == "EDS"
    (group,) = generate(push, ENDPOINT_TYPE, [name])[name]["endpoints"]
    assert [lb["endpoint"]["address"]["socketAddress"]["address"] for lb in group["lbEndpoints"]] == [
        "10.1.0.1",
        "10.1.0.2",
    ]


def test_envoy_and_grpc_nodes_do_not_share_views_or_cache_entries() -> None:
    push = push_of(_docs(SERVICE, SUBSETS, _vs(WEIGHTED)))
    grpc = grpc_node()
    assert push.view_of(grpc) != push.view_of(ENVOY_NODE)
    generator = Generator(XdsCache(1000))
    for type_url, names in ((ROUTE_TYPE, [ROUTE]), (CLUSTER_TYPE, None), (ENDPOINT_TYPE, [V1]), (LISTENER_TYPE, None)):
        grpc_keys = {u.key for u in generator.units(type_url, grpc, push, names)}
        envoy_keys = {u.key for u in generator.units(type_url, ENVOY_NODE, push, names)}
        assert not grpc_keys & envoy_keys, type_url
        assert all(str(key[0]).startswith("grpc-") for key in grpc_keys), grpc_keys
    # The snapshots of one type and subscription are kept apart by view.
    names = NameSet.of([ROUTE])
    grpc_snapshot = generator.snapshot(ENDPOINT_TYPE, grpc, push, push.view_of(grpc), names)
    envoy_snapshot = generator.snapshot(ENDPOINT_TYPE, ENVOY_NODE, push, push.view_of(ENVOY_NODE), names)
    assert grpc_snapshot is not envoy_snapshot
    assert grpc_snapshot.resources[ROUTE].value != envoy_snapshot.resources[ROUTE].value  # a locality for gRPC


def test_endpoint_only_push_derives_grpc_assignments() -> None:
    """After an endpoint-only push, EDS snapshots are derived per host: a grpc node keeps gRPC's form."""
    config = _docs(SERVICE, SUBSETS)
    push = push_of(config)
    proxy = grpc_node()
    generator = Generator(XdsCache(1000))
    names = NameSet.of([ROUTE])
    view = push.view_of(proxy)
    first = generator.snapshot(ENDPOINT_TYPE, proxy, push, view, names)
    generator.endpoints_changed([FQDN])
    second = generator.snapshot(ENDPOINT_TYPE, proxy, push, view, names)
    assert second is not first
    (resource,) = second.resources.values()
    cla = endpoint_pb2.ClusterLoadAssignment.FromString(resource.value)
    assert all(group.HasField("locality") for group in cla.endpoints)


@pytest.mark.parametrize(
    ("name", "namespace", "expected"),
    [
        ("foo", "default", "foo.default.svc.cluster.local"),
        ("foo.default", "default", "foo.default.svc.cluster.local"),
        ("foo.default.svc", "default", "foo.default.svc.cluster.local"),
        ("foo.other", "default", ""),
        ("foo.example.com", "default", ""),
    ],
)
def test_short_name_expansion(name: str, namespace: str, expected: str) -> None:
    from pilot.xds.grpcgen_lds import expand_short_name

    assert expand_short_name(name, grpc_node(namespace), "cluster.local") == expected


def test_generator_is_read_from_node_metadata() -> None:
    assert grpcgen.is_grpc(grpc_node())
    assert not grpcgen.is_grpc(ENVOY_NODE)
    push = push_of(SERVICE)
    assert sorted(generate(push, LISTENER_TYPE, None)) == [f"{FQDN}:7070", f"{FQDN}:7071"]
    assert f"{FQDN}:7070" not in generate(push, LISTENER_TYPE, None, ENVOY_NODE)
