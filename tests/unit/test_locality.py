"""Locality load balancing, golden: Istio YAML in, ClusterLoadAssignment priorities and weights out (and the
cluster's locality_weighted_lb_config), as istiod's loadbalancer package computes them.

The mesh: one STATIC ServiceEntry with six endpoints in five localities; the client proxy sits in
us-east/zone-a/rack1 with label version=v1. Each row is a DestinationRule traffic policy (or none), the proxy's
locality, and the expected assignment, one line per LocalityLbEndpoints: ``P<priority> <locality>
w<weight> <endpoint last octets>``.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from pilot.model.proxy import Proxy, parse_proxy
from pilot.push.context import PushContext
from pilot.xds import cds, eds
from tests.support import push_of

HOST = "reviews.example.com"
CLUSTER = f"outbound|80||{HOST}"
SUBSET_V1 = f"outbound|80|v1|{HOST}"
CLUSTER_81 = f"outbound|81||{HOST}"

SERVICE_ENTRY = f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}, {{number: 81, name: http-alt, protocol: HTTP}}]
  endpoints:
  - {{address: 10.0.0.1, locality: us-east/zone-a/rack1, labels: {{version: v1}}}}
  - {{address: 10.0.0.6, locality: us-east/zone-a/rack1, labels: {{version: v2}}}}
  - {{address: 10.0.0.2, locality: us-east/zone-a/rack2, labels: {{version: v2}}}}
  - {{address: 10.0.0.3, locality: us-east/zone-b, labels: {{version: v1}}}}
  - {{address: 10.0.0.4, locality: us-west/zone-a, labels: {{version: v1}}}}
  - {{address: 10.0.0.5, locality: eu-west/zone-x, labels: {{version: v2}}}}
"""

OUTLIER = {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "30s"}
HERE = "us-east/zone-a/rack1"

# Unchanged assignment: localities sorted, every group at priority 0, weighted by its endpoint count.
FLAT = [
    "P0 eu-west/zone-x w1 .5",
    "P0 us-east/zone-a/rack1 w2 .1 .6",
    "P0 us-east/zone-a/rack2 w1 .2",
    "P0 us-east/zone-b w1 .3",
    "P0 us-west/zone-a w1 .4",
]
# istiod's default failover: same subzone 0, same zone 1, same region 2, elsewhere 3 (renumbered 0..3).
BY_DISTANCE = [
    "P3 eu-west/zone-x w1 .5",
    "P0 us-east/zone-a/rack1 w2 .1 .6",
    "P1 us-east/zone-a/rack2 w1 .2",
    "P2 us-east/zone-b w1 .3",
    "P3 us-west/zone-a w1 .4",
]


def _lb(setting: dict[str, Any], outlier: bool = True) -> dict[str, Any]:
    policy: dict[str, Any] = {"loadBalancer": {"localityLbSetting": setting}}
    if outlier:
        policy["outlierDetection"] = OUTLIER
    return policy


DISTRIBUTE = {"distribute": [{"from": "us-east/zone-a/*", "to": {"us-east/zone-a/*": 80, "us-east/zone-b/*": 20}}]}
PRIORITY_TOPOLOGY = {"failoverPriority": ["topology.kubernetes.io/region", "topology.kubernetes.io/zone"]}

# (id, DestinationRule trafficPolicy (None: no rule), proxy locality, cluster, expected assignment, whether the
# cluster gets locality_weighted_lb_config)
CASES: list[tuple[str, dict[str, Any] | None, str, str, list[str], bool]] = [
    ("no-rule", None, HERE, CLUSTER, FLAT, False),
    ("rule-without-outlier-detection", {"loadBalancer": {"simple": "ROUND_ROBIN"}}, HERE, CLUSTER, FLAT, False),
    # The mesh default (localityLbSetting enabled) fails over as soon as outlier detection is on.
    ("outlier-detection-mesh-default", {"outlierDetection": OUTLIER}, HERE, CLUSTER, BY_DISTANCE, False),
    ("enabled-without-rules", _lb({"enabled": True}), HERE, CLUSTER, BY_DISTANCE, False),
    ("disabled", _lb({"enabled": False}), HERE, CLUSTER, FLAT, False),
    ("disabled-with-failover", _lb({"enabled": False, "failover": [{"from": "us-east", "to": "eu-west"}]}), HERE,
     CLUSTER, FLAT, False),
    # failover: the named region comes before the other regions.
    ("failover", _lb({"failover": [{"from": "us-east", "to": "eu-west"}]}), HERE, CLUSTER, [
        "P3 eu-west/zone-x w1 .5",
        "P0 us-east/zone-a/rack1 w2 .1 .6",
        "P1 us-east/zone-a/rack2 w1 .2",
        "P2 us-east/zone-b w1 .3",
        "P4 us-west/zone-a w1 .4",
    ], True),
    ("failover-for-another-region", _lb({"failover": [{"from": "us-west", "to": "eu-west"}]}), HERE, CLUSTER,
     BY_DISTANCE, True),
    ("failover-without-outlier-detection", _lb({"failover": [{"from": "us-east", "to": "eu-west"}]}, outlier=False),
     HERE, CLUSTER, FLAT, False),
    ("failover-from-the-other-region", _lb({"failover": [{"from": "us-west", "to": "eu-west"}]}), "us-west/zone-a",
     CLUSTER, [
        "P1 eu-west/zone-x w1 .5",
        "P2 us-east/zone-a/rack1 w2 .1 .6",
        "P2 us-east/zone-a/rack2 w1 .2",
        "P2 us-east/zone-b w1 .3",
        "P0 us-west/zone-a w1 .4",
    ], True),
    # A proxy without a locality is "elsewhere" for every located endpoint: one priority.
    ("proxy-without-locality", {"outlierDetection": OUTLIER}, "", CLUSTER, FLAT, False),
    # distribute: 80 over zone-a's groups in proportion to their weights (rounded up), 20 to zone-b; the
    # localities no target names keep no endpoints. Needs no outlier detection.
    ("distribute", _lb(DISTRIBUTE, outlier=False), HERE, CLUSTER, [
        "P0 eu-west/zone-x w1",
        "P0 us-east/zone-a/rack1 w54 .1 .6",
        "P0 us-east/zone-a/rack2 w27 .2",
        "P0 us-east/zone-b w20 .3",
        "P0 us-west/zone-a w1",
    ], True),
    ("distribute-with-outlier-detection", _lb(DISTRIBUTE), HERE, CLUSTER, [
        "P0 eu-west/zone-x w1",
        "P0 us-east/zone-a/rack1 w54 .1 .6",
        "P0 us-east/zone-a/rack2 w27 .2",
        "P0 us-east/zone-b w20 .3",
        "P0 us-west/zone-a w1",
    ], True),
    ("distribute-from-elsewhere", _lb(DISTRIBUTE, outlier=False), "us-west/zone-a", CLUSTER, FLAT, True),
    # A region alone names all its zones; "*" matches every proxy.
    ("distribute-by-region", _lb({"distribute": [{"from": "*", "to": {"us-east": 90, "eu-west/*": 10}}]}), HERE,
     CLUSTER, [
        "P0 eu-west/zone-x w10 .5",
        "P0 us-east/zone-a/rack1 w45 .1 .6",
        "P0 us-east/zone-a/rack2 w23 .2",
        "P0 us-east/zone-b w23 .3",
        "P0 us-west/zone-a w1",
    ], True),
    # failoverPriority: endpoints matching more of the listed labels (in order) come first.
    ("failover-priority-topology", _lb(PRIORITY_TOPOLOGY), HERE, CLUSTER, [
        "P2 eu-west/zone-x w1 .5",
        "P0 us-east/zone-a/rack1 w2 .1 .6",
        "P0 us-east/zone-a/rack2 w1 .2",
        "P1 us-east/zone-b w1 .3",
        "P2 us-west/zone-a w1 .4",
    ], True),
    # A label splits a locality's group by priority.
    ("failover-priority-label", _lb({"failoverPriority": ["version"]}), HERE, CLUSTER, [
        "P1 eu-west/zone-x w1 .5",
        "P0 us-east/zone-a/rack1 w1 .1",
        "P1 us-east/zone-a/rack1 w1 .6",
        "P1 us-east/zone-a/rack2 w1 .2",
        "P0 us-east/zone-b w1 .3",
        "P0 us-west/zone-a w1 .4",
    ], True),
    ("failover-priority-override", _lb({"failoverPriority": ["version=v2"]}), HERE, CLUSTER, [
        "P0 eu-west/zone-x w1 .5",
        "P0 us-east/zone-a/rack1 w1 .6",
        "P1 us-east/zone-a/rack1 w1 .1",
        "P0 us-east/zone-a/rack2 w1 .2",
        "P1 us-east/zone-b w1 .3",
        "P1 us-west/zone-a w1 .4",
    ], True),
    # failoverPriority first, then failover by locality within each of its priorities (5 * first + second).
    ("failover-priority-and-failover",
     _lb({"failoverPriority": ["version"], "failover": [{"from": "us-east", "to": "eu-west"}]}), HERE, CLUSTER, [
        "P5 eu-west/zone-x w1 .5",
        "P0 us-east/zone-a/rack1 w1 .1",
        "P3 us-east/zone-a/rack1 w1 .6",
        "P4 us-east/zone-a/rack2 w1 .2",
        "P1 us-east/zone-b w1 .3",
        "P2 us-west/zone-a w1 .4",
    ], True),
    ("failover-priority-without-outlier-detection", _lb(PRIORITY_TOPOLOGY, outlier=False), HERE, CLUSTER, FLAT,
     False),
    # Policies merge per subset and port as every traffic policy block.
    ("subset-outlier-detection-default-cluster",
     {"loadBalancer": {"simple": "ROUND_ROBIN"}, "subsets": {"v1": {"outlierDetection": OUTLIER}}}, HERE, CLUSTER,
     FLAT, False),
    ("subset-outlier-detection-subset-cluster",
     {"loadBalancer": {"simple": "ROUND_ROBIN"}, "subsets": {"v1": {"outlierDetection": OUTLIER}}}, HERE, SUBSET_V1,
     ["P0 us-east/zone-a/rack1 w1 .1", "P1 us-east/zone-b w1 .3", "P2 us-west/zone-a w1 .4"], False),
    ("port-level-outlier-detection",
     {"portLevelSettings": [{"port": {"number": 80}, "outlierDetection": OUTLIER}]}, HERE, CLUSTER, BY_DISTANCE,
     False),
    ("port-level-outlier-detection-other-port",
     {"portLevelSettings": [{"port": {"number": 80}, "outlierDetection": OUTLIER}]}, HERE, CLUSTER_81, FLAT, False),
]  # fmt: skip


def _destination_rule(policy: dict[str, Any]) -> str:
    policy = dict(policy)
    subset_policies = policy.pop("subsets", {})
    spec: dict[str, Any] = {"host": HOST, "trafficPolicy": policy}
    spec["subsets"] = [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]
    for subset in spec["subsets"]:
        if subset["name"] in subset_policies:
            subset["trafficPolicy"] = subset_policies[subset["name"]]
    doc = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": spec,
    }
    return yaml.safe_dump(doc)


def mesh(policy: dict[str, Any] | None) -> PushContext:
    text = SERVICE_ENTRY if policy is None else SERVICE_ENTRY + "---\n" + _destination_rule(policy)
    return push_of(text)


def client(locality: str = HERE, labels: dict[str, str] | None = None) -> Proxy:
    return parse_proxy(
        "sidecar~10.9.0.1~client.default~default.svc.cluster.local",
        {"LABELS": {"app": "client", "version": "v1"} if labels is None else labels},
        locality=locality,
    )


def summary(cla: endpoint_pb2.ClusterLoadAssignment) -> list[str]:
    lines = []
    for group in cla.endpoints:
        loc = group.locality
        name = "/".join(p for p in (loc.region, loc.zone, loc.sub_zone) if p)
        octets = " ".join(
            "." + lb.endpoint.address.socket_address.address.rsplit(".", 1)[1] for lb in group.lb_endpoints
        )
        lines.append(f"P{group.priority} {name} w{group.load_balancing_weight.value} {octets}".rstrip())
    return lines


def cluster_named(proxy: Proxy, push: PushContext, name: str) -> cluster_pb2.Cluster:
    found = [c for c in cds.build_clusters(proxy, push) if c.name == name]
    assert found, f"no cluster {name}"
    return found[0]


@pytest.mark.parametrize(
    ("policy", "locality", "cluster", "expected", "weighted"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_golden(
    policy: dict[str, Any] | None, locality: str, cluster: str, expected: list[str], weighted: bool
) -> None:
    push = mesh(policy)
    proxy = client(locality)
    cla = eds.build_endpoint(proxy, push, cluster)
    assert cla is not None
    assert summary(cla) == expected
    built = cluster_named(proxy, push, cluster)
    assert built.common_lb_config.HasField("locality_weighted_lb_config") is weighted
    # Envoy's rules: priorities 0..N without gaps, one group per locality within a priority.
    priorities = sorted({g.priority for g in cla.endpoints})
    assert priorities == list(range(len(priorities)))
    pairs = [(g.priority, g.locality.SerializeToString()) for g in cla.endpoints]
    assert len(pairs) == len(set(pairs))


def test_uneven_distribute_weights_round_up() -> None:
    """us-east's 50 over its groups by their weights (2:1:1): 25, 12.5 and 12.5, rounded up (istiod's math.Ceil)."""
    setting = {"distribute": [{"from": "us-east/*", "to": {"us-east/*": 50, "us-west/*": 25, "eu-west/*": 25}}]}
    cla = eds.build_endpoint(client(), mesh(_lb(setting, outlier=False)), CLUSTER)
    assert cla is not None
    weights = {line.split()[1]: line.split()[2] for line in summary(cla)}
    assert weights == {
        "eu-west/zone-x": "w25",
        "us-east/zone-a/rack1": "w25",  # 50 * 2/4
        "us-east/zone-a/rack2": "w13",  # 50 * 1/4 = 12.5
        "us-east/zone-b": "w13",
        "us-west/zone-a": "w25",
    }


def test_failover_priority_is_skipped_for_a_proxy_without_labels() -> None:
    """istiod applies failoverPriority only when the proxy has labels (its locality adds topology labels)."""
    push = mesh(_lb({"failoverPriority": ["version"]}))
    cla = eds.build_endpoint(client("", labels={}), push, CLUSTER)
    assert cla is not None and summary(cla) == FLAT
    # With only a locality, its topology labels count: version differs from every endpoint's but "".
    cla = eds.build_endpoint(client(HERE, labels={}), push, CLUSTER)
    assert cla is not None and {line.split()[0] for line in summary(cla)} == {"P0"}


def test_dns_cluster_inline_endpoints_are_balanced_for_the_proxy() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [ext.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: a.ext.example.com, locality: us-east/zone-a}
  - {address: b.ext.example.com, locality: us-west/zone-a}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext, namespace: default}
spec:
  host: ext.example.com
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1}
    loadBalancer: {localityLbSetting: {failover: [{from: us-west, to: us-east}]}}
"""
    push = push_of(text)
    name = "outbound|80||ext.example.com"
    east = cluster_named(client("us-east/zone-a"), push, name)
    west = cluster_named(client("us-west/zone-a"), push, name)
    assert east.type == cluster_pb2.Cluster.STRICT_DNS
    assert [(g.locality.region, g.priority) for g in east.load_assignment.endpoints] == [
        ("us-east", 0),
        ("us-west", 1),
    ]
    assert [(g.locality.region, g.priority) for g in west.load_assignment.endpoints] == [
        ("us-east", 1),
        ("us-west", 0),
    ]
    assert east.common_lb_config.HasField("locality_weighted_lb_config")


def test_locality_label_of_an_endpoint_counts_when_the_registry_gave_none() -> None:
    """A WorkloadEntry-style ``istio-locality`` label (dots for slashes) places the endpoint."""
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: labelled, namespace: default}
spec:
  hosts: [labelled.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.1.0.1, labels: {istio-locality: us-east.zone-a.rack1}}
  - {address: 10.1.0.2, labels: {topology.istio.io/locality: us-west.zone-a}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: labelled, namespace: default}
spec:
  host: labelled.example.com
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 1}}
"""
    cla = eds.build_endpoint(client(), push_of(text), "outbound|80||labelled.example.com")
    assert cla is not None
    assert summary(cla) == ["P0 us-east/zone-a/rack1 w1 .1", "P1 us-west/zone-a w1 .2"]


def test_spellings_of_one_locality_make_one_group() -> None:
    """Envoy rejects an assignment listing one locality twice at a priority."""
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: spelled, namespace: default}
spec:
  hosts: [spelled.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.2.0.1, locality: us-east/zone-a}
  - {address: 10.2.0.2, locality: us-east/zone-a/}
"""
    cla = eds.build_endpoint(client(), push_of(text), "outbound|80||spelled.example.com")
    assert cla is not None and summary(cla) == ["P0 us-east/zone-a w2 .1 .2"]
