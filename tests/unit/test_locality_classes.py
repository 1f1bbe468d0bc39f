"""Locality and proxy classes: where a proxy's locality comes from, when it splits proxy classes (only where
locality load balancing reads it), what stays shared across localities, cache invalidation, the EDS fast
path and proxyless gRPC."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from pilot.config.loader import load_text
from pilot.model.config import DESTINATION_RULE, ConfigKey
from pilot.model.locality import Locality
from pilot.model.proxy import Proxy, parse_proxy
from pilot.model.service import Endpoint
from pilot.push import locality as push_locality
from pilot.push.context import PushContext
from pilot.push.offline import environment_of
from pilot.xds import cds, eds, grpcgen
from pilot.xds.cache import XdsCache
from pilot.xds.generate import Generator
from pilot.xds.names import ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.xds.snapshot import NameSet
from tests.support import push_of

NODE = "sidecar~10.9.0.{n}~client-{n}.default~default.svc.cluster.local"

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a, namespace: default}
spec:
  hosts: [a.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, locality: us-east/zone-a}
  - {address: 10.0.0.2, locality: us-east/zone-b}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b, namespace: default}
spec:
  hosts: [b.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.1.1, locality: us-east/zone-a}
  - {address: 10.0.1.2, locality: us-east/zone-b}
"""

A_OUTLIER = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: default}
spec:
  host: a.example.com
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 1}}
"""

NARROW_SIDECAR = """
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: only-b, namespace: default}
spec:
  workloadSelector: {labels: {app: narrow}}
  egress: [{hosts: ["*/b.example.com"]}]
"""

A = "outbound|80||a.example.com"
B = "outbound|80||b.example.com"


def sidecar_in(namespace: str) -> Proxy:
    return parse_proxy(f"sidecar~10.0.0.9~p.{namespace}~{namespace}.svc.cluster.local")


def proxy(n: int, locality: str = "", labels: dict[str, str] | None = None, **meta: Any) -> Proxy:
    metadata = {"LABELS": labels or {"app": "client"}, **meta}
    return parse_proxy(NODE.format(n=n), metadata, locality=locality)


def priorities(cla: endpoint_pb2.ClusterLoadAssignment) -> dict[str, int]:
    return {f"{g.locality.region}/{g.locality.zone}": g.priority for g in cla.endpoints}


# ----- the proxy's locality -----


def test_locality_from_the_envoy_node() -> None:
    node = base_pb2.Locality(region="us-east", zone="zone-a", sub_zone="rack1")
    found = parse_proxy(NODE.format(n=1), {}, locality=node).locality
    assert found == Locality("us-east", "zone-a", "rack1") and str(found) == "us-east/zone-a/rack1"
    assert parse_proxy(NODE.format(n=1), {}, locality=base_pb2.Locality()).locality == Locality()


def test_topology_labels_come_before_the_node_locality() -> None:
    """istiod: the registry's (label) view of the workload wins over what the node says; any one topology
    label is enough, the missing parts are empty."""
    labels = {"topology.kubernetes.io/region": "eu-west", "topology.istio.io/subzone": "rack9"}
    found = parse_proxy(NODE.format(n=1), {"LABELS": labels}, locality="us-east/zone-a").locality
    assert found == Locality("eu-west", "", "rack9")


def test_locality_label_in_dot_or_slash_form() -> None:
    for labels, expected in (
        ({"istio-locality": "us-east.zone-a.rack1"}, Locality("us-east", "zone-a", "rack1")),
        ({"topology.istio.io/locality": "us-west/zone-b"}, Locality("us-west", "zone-b")),
        # the newer label is read first
        ({"topology.istio.io/locality": "r1.z1", "istio-locality": "r2.z2"}, Locality("r1", "z1")),
    ):
        assert parse_proxy(NODE.format(n=1), {"LABELS": labels}, locality="x/y").locality == expected
    assert parse_proxy(NODE.format(n=1), {}).locality == Locality()


def test_locality_strings_round_trip() -> None:
    for text in ("", "r", "r/z", "r/z/s", "r//s", "//s"):
        assert str(Locality.parse(text)) == text


# ----- proxy classes -----


def test_a_mesh_without_locality_settings_keeps_locality_out_of_the_class() -> None:
    push = push_of(MESH)
    east, west = proxy(1, "us-east/zone-a"), proxy(2, "us-west/zone-a")
    assert push.view_of(east) == push.view_of(west)
    assert push.view_of(east).locality == ()


def test_outlier_detection_splits_classes_by_locality_only_for_endpoints_and_clusters() -> None:
    push = push_of(MESH + A_OUTLIER)
    a1, a2, b1 = proxy(1, "us-east/zone-a"), proxy(2, "us-east/zone-a"), proxy(3, "us-east/zone-b")
    assert push.view_of(a1) == push.view_of(a2)
    assert push.view_of(a1) != push.view_of(b1)
    assert push.view_of(a1).outbound == push.view_of(b1).outbound  # listeners, routes and scope stay shared

    generator = Generator(XdsCache())
    names = NameSet.of([A, B])

    def snap(type_url: str, p: Proxy, subscribed: NameSet | None = None) -> Any:
        return generator.snapshot(type_url, p, push, push.view_of(p), subscribed)

    assert snap(ENDPOINT_TYPE, a1, names) is snap(ENDPOINT_TYPE, a2, names)
    assert snap(ENDPOINT_TYPE, a1, names) is not snap(ENDPOINT_TYPE, b1, names)
    assert snap(LISTENER_TYPE, a1) is snap(LISTENER_TYPE, b1)
    assert snap(ROUTE_TYPE, a1, NameSet.of(["80"])) is snap(ROUTE_TYPE, b1, NameSet.of(["80"]))
    # b has no locality settings: its assignment is built once for both localities.
    east = snap(ENDPOINT_TYPE, a1, names).resources
    west = snap(ENDPOINT_TYPE, b1, names).resources
    assert east[B] is west[B]
    assert east[A] is not west[A]
    assert priorities(eds.build_endpoint(a1, push, A)) == {"us-east/zone-a": 0, "us-east/zone-b": 1}  # type: ignore[arg-type]
    assert priorities(eds.build_endpoint(b1, push, A)) == {"us-east/zone-a": 1, "us-east/zone-b": 0}  # type: ignore[arg-type]


def test_a_rule_that_starts_failing_over_splits_the_class_in_the_next_context() -> None:
    """The rule analysis is carried over while DestinationRules do not change, and redone when they do."""
    before = push_of(MESH)
    configs = load_text("test.yaml", MESH + A_OUTLIER).configs
    after = PushContext.build(environment_of(configs), "2", 2, before, frozenset({DESTINATION_RULE}))
    east, west = proxy(1, "us-east/zone-a"), proxy(2, "us-east/zone-b")
    assert before.view_of(east) == before.view_of(west)
    assert after.view_of(east).locality == ("us-east/zone-a",) and after.view_of(west).locality == ("us-east/zone-b",)
    unchanged = PushContext.build(environment_of(configs), "3", 3, after, frozenset({"VirtualService"}))
    assert unchanged.view_of(east) == after.view_of(east)


def test_a_sidecar_that_does_not_see_the_rule_keeps_one_class() -> None:
    push = push_of(MESH + A_OUTLIER + NARROW_SIDECAR)
    east = proxy(1, "us-east/zone-a", {"app": "narrow"})
    west = proxy(2, "us-west/zone-a", {"app": "narrow"})
    assert push.view_of(east).locality == () and push.view_of(east) == push.view_of(west)
    wide = proxy(3, "us-west/zone-a")
    assert push.view_of(wide).locality == ("us-west/zone-a",)


def test_routers_see_every_rule_of_their_namespace() -> None:
    push = push_of(MESH + A_OUTLIER)
    gw = "router~10.8.0.{n}~gw-{n}.default~default.svc.cluster.local"
    east = parse_proxy(gw.format(n=1), {"LABELS": {"istio": "ingressgateway"}}, locality="us-east/zone-a")
    west = parse_proxy(gw.format(n=2), {"LABELS": {"istio": "ingressgateway"}}, locality="us-west/zone-a")
    assert push.view_of(east) != push.view_of(west)


def test_failover_priority_classes_follow_the_label_values_only() -> None:
    rule = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: default}
spec:
  host: a.example.com
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1}
    loadBalancer: {localityLbSetting: {failoverPriority: [version]}}
"""
    push = push_of(MESH + rule)
    v1_east = proxy(1, "us-east/zone-a", {"app": "x", "version": "v1"})
    v1_west = proxy(2, "us-west/zone-a", {"app": "y", "version": "v1"})
    v2_east = proxy(3, "us-east/zone-a", {"app": "x", "version": "v2"})
    # The locality is not read (no failover list): only the version's value tells classes apart.
    assert push.view_of(v1_east) == push.view_of(v1_west)
    assert push.view_of(v1_east) != push.view_of(v2_east)


def test_rule_analysis_agrees_with_the_cluster_policy_merge() -> None:
    """pilot.push.locality merges policies on its own (pilot.push cannot import pilot.xds): it must find the
    same blocks as cds.effective_policy for every port and subset."""
    text = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: default}
spec:
  host: a.example.com
  trafficPolicy:
    loadBalancer: {localityLbSetting: {distribute: [{from: "us-east/*", to: {"us-east/*": 100}}]}}
    portLevelSettings:
    - port: {number: 81}
      outlierDetection: {consecutive5xxErrors: 2}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 3}
      loadBalancer: {localityLbSetting: {enabled: false}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      portLevelSettings:
      - port: {number: 80}
        loadBalancer: {localityLbSetting: {failoverPriority: [version]}}
        outlierDetection: {consecutive5xxErrors: 4}
"""
    push = push_of(MESH + "---\n" + text)
    rule = push.destination_rule(sidecar_in("default"), "a.example.com")
    assert rule is not None
    for port in (80, 81, 82):
        top = push_locality._blocks(rule.spec.traffic_policy, port, (None, None))
        for subset in ("", "v1", "v2"):
            policy = cds.effective_policy(rule, port, subset)
            spec = next((s for s in rule.spec.subsets if s.name == subset), None)
            blocks = push_locality._blocks(spec.traffic_policy, port, top) if spec is not None else top
            assert blocks == (policy.load_balancer, policy.outlier_detection), (port, subset)
    needs = push_locality.rule_needs(rule)
    assert needs.locality and needs.labels == frozenset({"version"})


# ----- caching, pushes -----


def test_a_rule_change_clears_locality_balanced_assignments() -> None:
    push = push_of(MESH + A_OUTLIER)
    generator = Generator(XdsCache())
    p = proxy(1, "us-east/zone-a")
    generator.resources(ENDPOINT_TYPE, p, push, [A, B])
    before = set(generator.cache.keys())
    generator.cache.clear([ConfigKey("DestinationRule", "default", "a")])
    dropped = before - set(generator.cache.keys())
    assert {key[1] for key in dropped} == {A}


def test_endpoint_only_push_derives_locality_balanced_snapshots() -> None:
    """The EDS fast path regenerates the changed host's assignment for each locality class."""
    push = push_of(MESH + A_OUTLIER)
    generator = Generator(XdsCache())
    names = NameSet.of([A, B])
    east, west = proxy(1, "us-east/zone-a"), proxy(2, "us-east/zone-b")
    before = {p.id: generator.snapshot(ENDPOINT_TYPE, p, push, push.view_of(p), names) for p in (east, west)}
    push.endpoint_index.update(
        "a.example.com",
        "default",
        "ServiceEntry/default/a",
        {
            "http": (
                Endpoint("10.0.0.1", 80, "http", locality="us-east/zone-a"),
                Endpoint("10.0.0.2", 80, "http", locality="us-east/zone-b"),
                Endpoint("10.0.0.3", 80, "http", locality="us-west/zone-c"),
            )
        },
    )
    generator.cache.clear([ConfigKey("Endpoints", "default", "a.example.com")])
    generator.endpoints_changed({"a.example.com"})
    for p, here in ((east, "us-east/zone-a"), (west, "us-east/zone-b")):
        after = generator.snapshot(ENDPOINT_TYPE, p, push, push.view_of(p), names)
        assert after.base is before[p.id] and after.touched == {A}
        cla = endpoint_pb2.ClusterLoadAssignment.FromString(after.resources[A].value)
        assert priorities(cla) == {
            here: 0,
            ({"us-east/zone-a", "us-east/zone-b"} - {here}).pop(): 1,
            "us-west/zone-c": 2,
        }


def test_proxyless_grpc_gets_the_same_priorities() -> None:
    push = push_of(MESH + A_OUTLIER)
    node = "sidecar~10.9.0.7~grpc-7.default~default.svc.cluster.local"
    client = parse_proxy(node, {"GENERATOR": "grpc"}, locality="us-east/zone-b")
    unit = grpcgen.endpoint_unit(client, push, A)
    assert unit is not None
    (cla,) = unit.build()
    assert priorities(cla) == {"us-east/zone-a": 1, "us-east/zone-b": 0}  # type: ignore[arg-type]
    assert all(g.load_balancing_weight.value == 1 for g in cla.endpoints)  # type: ignore[attr-defined]
