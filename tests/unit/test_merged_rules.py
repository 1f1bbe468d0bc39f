"""Several DestinationRules for one host act as one, as istiod merges them: subsets joined, the first
traffic policy wins, duplicates reported; the clusters depend on every merged rule."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2

from pilot.model.config import ConfigKey
from pilot.model.proxy import Proxy, parse_proxy
from pilot.xds import cds
from pilot.xds.cache import XdsCache
from pilot.xds.generate import Generator
from pilot.xds.names import CLUSTER_TYPE
from tests.support import push_of

HOST = "reviews.default.svc.cluster.local"
SIDECAR = parse_proxy("sidecar~10.0.0.9~app.default~default.svc.cluster.local")

SERVICE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1, labels: {version: v1}}, {address: 10.0.0.2, labels: {version: v2}}]
"""


def sidecar_in(namespace: str) -> Proxy:
    return parse_proxy(f"sidecar~10.0.0.9~p.{namespace}~{namespace}.svc.cluster.local")


def rule(name: str, subsets: str, policy: str = "") -> str:
    return f"""
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: reviews
  subsets: {subsets}
{policy}"""


SPLIT = (
    SERVICE
    + rule("reviews-a", "[{name: v1, labels: {version: v1}}]", "  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}")
    + rule("reviews-b", "[{name: v2, labels: {version: v2}}]", "  trafficPolicy: {loadBalancer: {simple: RANDOM}}")
)


def clusters(text: str) -> dict[str, cluster_pb2.Cluster]:
    return {c.name: c for c in cds.build_clusters(SIDECAR, push_of(text))}


def test_subsets_of_every_rule_for_the_host_are_served_and_the_first_policy_wins() -> None:
    built = clusters(SPLIT)
    for subset in ("", "v1", "v2"):
        assert f"outbound|9080|{subset}|{HOST}" in built, "a second DestinationRule must not hide the first"
    assert built[f"outbound|9080|v2|{HOST}"].lb_policy == cluster_pb2.Cluster.ROUND_ROBIN  # reviews-a's policy


def test_a_duplicate_subset_keeps_the_first_and_is_reported() -> None:
    text = (
        SERVICE
        + rule("reviews-a", "[{name: v1, labels: {version: v1}}]")
        + rule("reviews-b", "[{name: v1, labels: {version: v2}}, {name: v3, labels: {version: v3}}]")
    )
    push = push_of(text)
    assert push.destination_rule(sidecar_in("default"), HOST).keys == (  # type: ignore[union-attr]
        ConfigKey("DestinationRule", "default", "reviews-a"),
        ConfigKey("DestinationRule", "default", "reviews-b"),
    )
    subsets = {s.name: dict(s.labels) for s in push.destination_rule(sidecar_in("default"), HOST).spec.subsets}  # type: ignore[union-attr]
    assert subsets == {"v1": {"version": "v1"}, "v3": {"version": "v3"}}
    assert push.proxy_status()["pilot_destrule_subsets"] == {
        HOST: {"message": f"Duplicate subset v1 found while merging destination rules for {HOST}"}
    }


def test_rules_with_different_export_to_stay_apart() -> None:
    text = (
        SERVICE
        + rule("reviews-a", "[{name: v1, labels: {version: v1}}]")
        + rule("reviews-b", "[{name: v2, labels: {version: v2}}]", '  exportTo: ["."]')
    )
    push = push_of(text)
    assert push.destination_rule(sidecar_in("default"), HOST).keys == (
        ConfigKey("DestinationRule", "default", "reviews-a"),
    )  # type: ignore[union-attr]


def test_a_change_to_either_merged_rule_clears_the_clusters() -> None:
    push = push_of(SPLIT)
    for changed in ("reviews-a", "reviews-b"):
        generator = Generator(XdsCache())
        generator.resources(CLUSTER_TYPE, SIDECAR, push, None)
        assert generator.cache.clear([ConfigKey("DestinationRule", "default", changed)]) == 3, changed
