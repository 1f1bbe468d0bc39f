"""The XdsCache: entries by key, cleared by the configs they depend on, stale writes refused, LRU bound;
and, generating real config, that a change of every config kind clears exactly its dependents."""

from __future__ import annotations

from collections.abc import Hashable

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from pilot.model.config import ConfigKey
from pilot.model.proxy import Proxy, parse_proxy
from pilot.push.context import PushContext
from pilot.xds.cache import XdsCache, max_entries_from_env
from pilot.xds.generate import Generator
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.xds.resource import Resource
from pilot.xds.snapshot import NameSet
from tests.support import push_of

A = ConfigKey("DestinationRule", "ns", "a")
B = ConfigKey("VirtualService", "ns", "b")


def res(name: str) -> tuple[Resource, ...]:
    return (Resource.of(name, cluster_pb2.Cluster(name=name)),)


def test_clear_drops_exactly_the_dependents() -> None:
    cache = XdsCache()
    cache.add(("cds", "x"), res("x"), (A,), token=1)
    cache.add(("cds", "y"), res("y"), (A, B), token=1)
    cache.add(("rds", "z"), res("z"), (B,), token=1)
    assert cache.clear([A]) == 2
    assert cache.keys() == [("rds", "z")]
    assert cache.dependents(B) == {("rds", "z")}, "the cleared entry no longer indexed under its other deps"
    assert cache.evictions["clear"] == 2


def test_hits_and_misses_are_counted_per_type() -> None:
    cache = XdsCache()
    assert cache.get(("eds", "x")) is None
    cache.add(("eds", "x"), res("x"), (), token=1)
    assert cache.get(("eds", "x")) == res("x") or cache.get(("eds", "x")) is not None
    assert cache.misses["eds"] == 1 and cache.hits["eds"] >= 1


def test_a_write_older_than_the_last_clear_is_dropped() -> None:
    """A push in flight (generated from context 4) must not store what context 5's change cleared."""
    cache = XdsCache()
    cache.clear([A], token=5)
    assert not cache.add(("cds", "x"), res("x"), (A,), token=4)
    assert cache.get(("cds", "x")) is None
    assert cache.add(("cds", "x"), res("x"), (A,), token=5)


def test_a_write_never_replaces_a_newer_entry() -> None:
    cache = XdsCache()
    newer = res("new")
    cache.add(("cds", "x"), newer, (A,), token=7)
    assert not cache.add(("cds", "x"), res("old"), (A,), token=6)
    assert cache.get(("cds", "x")) is newer


def test_size_bound_evicts_least_recently_used() -> None:
    cache = XdsCache(max_entries=2)
    cache.add(("cds", "1"), res("1"), (A,), token=1)
    cache.add(("cds", "2"), res("2"), (A,), token=1)
    cache.get(("cds", "1"))  # 1 is now the most recently used
    cache.add(("cds", "3"), res("3"), (A,), token=1)
    assert set(cache.keys()) == {("cds", "1"), ("cds", "3")}
    assert cache.evictions["size"] == 1
    assert cache.dependents(A) == {("cds", "1"), ("cds", "3")}


def test_cache_size_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOT_XDS_CACHE_SIZE", "123")
    assert max_entries_from_env() == 123
    monkeypatch.setenv("PILOT_XDS_CACHE_SIZE", "lots")
    with pytest.raises(ValueError, match="PILOT_XDS_CACHE_SIZE"):
        max_entries_from_env()


# ----- every config kind clears exactly its dependents -----

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc-a, namespace: default}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints: [{address: 10.0.0.1, labels: {v: "1"}}, {address: 10.0.0.2, labels: {v: "2"}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc-b, namespace: default}
spec:
  hosts: [b.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints: [{address: 10.0.1.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: default}
spec:
  host: a.example.com
  subsets: [{name: v1, labels: {v: "1"}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: default}
spec:
  hosts: [a.example.com]
  gateways: [mesh, ingress]
  http: [{route: [{destination: {host: a.example.com, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: only-b, namespace: default}
spec:
  workloadSelector: {labels: {app: narrow}}
  egress: [{hosts: ["*/b.example.com"]}]
"""

SIDECAR = parse_proxy("sidecar~10.0.0.9~app.default~default.svc.cluster.local", {"LABELS": {"app": "wide"}})
NARROW = parse_proxy("sidecar~10.0.0.8~narrow.default~default.svc.cluster.local", {"LABELS": {"app": "narrow"}})
ROUTER = parse_proxy("router~10.0.0.7~gw.default~default.svc.cluster.local", {"LABELS": {"istio": "ingressgateway"}})
EDS_NAMES = (
    "outbound|80||a.example.com",
    "outbound|80|v1|a.example.com",
    "outbound|80||b.example.com",
)


def _generate_everything(generator: Generator, push: PushContext) -> dict[Hashable, str]:
    """Generate all four types for three proxy classes; returns {cache key: label} for readable asserts."""
    labels: dict[Hashable, str] = {}
    proxies: list[tuple[str, Proxy]] = [("sidecar", SIDECAR), ("narrow", NARROW), ("router", ROUTER)]
    for label, proxy in proxies:
        routes = ("http.8080",) if proxy.is_router else ("80",)
        for type_url, names in (
            (CLUSTER_TYPE, None),
            (ENDPOINT_TYPE, EDS_NAMES),
            (LISTENER_TYPE, None),
            (ROUTE_TYPE, routes),
        ):
            before = set(generator.cache.keys())
            generator.resources(type_url, proxy, push, names)
            for key in set(generator.cache.keys()) - before:
                if key[0] in ("rds-vs", "rds-default"):
                    labels[key] = f"part:{key[0]}:{key[1]}"  # encoded pieces shared by route configurations
                else:
                    labels[key] = f"{label}:{key[0]}:{key[1] if key[0] in ('cds', 'eds', 'rds') else ''}"
    return labels


def _cleared_by(key: ConfigKey, parts: bool = False) -> set[str]:
    push = push_of(MESH)
    generator = Generator(XdsCache())
    labels = _generate_everything(generator, push)
    before = set(generator.cache.keys())
    generator.cache.clear([key])
    cleared = {labels[k] for k in before - set(generator.cache.keys())}
    return {c for c in cleared if c.startswith("part:") == parts}


def _shorten(labels: set[str]) -> set[str]:
    return {label.rstrip(":") for label in labels}


def test_a_service_change_clears_its_clusters_endpoints_and_every_view_that_sees_it() -> None:
    cleared = _shorten(_cleared_by(ConfigKey("ServiceEntry", "default", "a.example.com")))
    assert cleared == {
        "sidecar:cds:outbound|80||a.example.com",
        "sidecar:cds:outbound|80|v1|a.example.com",
        "router:cds:outbound|80||a.example.com",
        "router:cds:outbound|80|v1|a.example.com",
        "sidecar:eds:outbound|80||a.example.com",
        "sidecar:eds:outbound|80|v1|a.example.com",
        # listeners and routes of the classes that see a (not the narrow sidecar, which imports only b)
        "sidecar:lds",
        "sidecar:rds:80",
        "router:lds",
        "router:rds:http.8080",
    }


def test_an_endpoint_change_clears_only_that_services_assignments() -> None:
    cleared = _cleared_by(ConfigKey("Endpoints", "default", "a.example.com"))
    assert cleared == {"sidecar:eds:outbound|80||a.example.com", "sidecar:eds:outbound|80|v1|a.example.com"}


def test_a_destination_rule_change_clears_its_host_clusters_subset_endpoints_and_routes() -> None:
    cleared = _shorten(_cleared_by(ConfigKey("DestinationRule", "default", "a")))
    assert "sidecar:eds:outbound|80|v1|a.example.com" in cleared
    assert "sidecar:eds:outbound|80||a.example.com" not in cleared, "the plain cluster's endpoints ignore the DR"
    assert {c for c in cleared if ":cds:" in c} == {
        "sidecar:cds:outbound|80||a.example.com",
        "sidecar:cds:outbound|80|v1|a.example.com",
        "router:cds:outbound|80||a.example.com",
        "router:cds:outbound|80|v1|a.example.com",
    }
    assert not any(c.startswith("narrow:") for c in cleared)
    assert not any("b.example.com" in c for c in cleared)


def test_a_virtual_service_change_clears_only_listeners_and_routes_of_classes_that_see_it() -> None:
    cleared = _shorten(_cleared_by(ConfigKey("VirtualService", "default", "a")))
    assert cleared == {"sidecar:lds", "sidecar:rds:80", "router:lds", "router:rds:http.8080"}


def test_a_gateway_change_clears_only_the_router() -> None:
    cleared = _shorten(_cleared_by(ConfigKey("Gateway", "default", "ingress")))
    assert cleared and all(c.startswith("router:") for c in cleared)
    assert not any(":cds:" in c or ":eds:" in c for c in cleared)


def test_a_sidecar_change_clears_only_the_class_it_applies_to() -> None:
    cleared = _shorten(_cleared_by(ConfigKey("Sidecar", "default", "only-b")))
    assert cleared and all(c.startswith("narrow:") for c in cleared)
    assert not any(":cds:" in c or ":eds:" in c for c in cleared)


# ----- the generator: proxy classes share, endpoint-only pushes regenerate only what changed -----


def test_proxies_of_one_class_share_one_snapshot_and_one_generation() -> None:
    push = push_of(MESH)
    generator = Generator(XdsCache())
    other = parse_proxy("sidecar~10.0.0.5~other.default~default.svc.cluster.local", {"LABELS": {"app": "x"}})
    first = generator.snapshot(CLUSTER_TYPE, SIDECAR, push, push.view_of(SIDECAR), None)
    built = generator.generated
    second = generator.snapshot(CLUSTER_TYPE, other, push, push.view_of(other), None)
    assert first is second and generator.generated == built


def test_labels_matter_only_through_what_they_select() -> None:
    push = push_of(MESH)
    other = parse_proxy("sidecar~10.0.0.5~other.default~default.svc.cluster.local", {"LABELS": {"app": "x"}})
    assert push.view_of(SIDECAR) == push.view_of(other)
    assert push.view_of(SIDECAR) != push.view_of(NARROW)


def test_source_label_routing_makes_labels_part_of_the_view() -> None:
    push = push_of(
        MESH
        + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: by-source, namespace: default}
spec:
  hosts: [b.example.com]
  http:
  - match: [{sourceLabels: {app: a}}]
    route: [{destination: {host: b.example.com}}]
"""
    )
    other = parse_proxy("sidecar~10.0.0.5~other.default~default.svc.cluster.local", {"LABELS": {"app": "x"}})
    assert push.view_of(SIDECAR) != push.view_of(other)


def test_endpoint_only_change_regenerates_only_that_hosts_assignments() -> None:
    push = push_of(MESH)
    generator = Generator(XdsCache())
    names = NameSet.of(EDS_NAMES)
    view = push.view_of(SIDECAR)
    before = generator.snapshot(ENDPOINT_TYPE, SIDECAR, push, view, names)
    built = generator.generated
    # b's endpoints change in the live index: only b's assignment is rebuilt, on a snapshot derived from before.
    svc = push.service("b.example.com")
    assert svc is not None
    from pilot.model.service import Endpoint

    push.endpoint_index.update(
        "b.example.com", "default", "ServiceEntry/Kubernetes", {"http": (Endpoint("10.0.1.2", 80, "http"),)}
    )
    generator.cache.clear([ConfigKey("Endpoints", "default", "b.example.com")])
    generator.endpoints_changed({"b.example.com"})
    after = generator.snapshot(ENDPOINT_TYPE, SIDECAR, push, view, names)
    assert generator.generated == built + 1
    assert after.base is before and after.touched == {"outbound|80||b.example.com"}
    diff = after.diff(before.versions)
    assert [r.name for r in diff.changed] == ["outbound|80||b.example.com"] and not diff.removed


def test_encoded_route_parts_are_shared_and_cleared_by_what_they_read() -> None:
    """A VirtualService's routes depend on it and on its destinations; a default route on its service and DR."""
    assert _cleared_by(ConfigKey("VirtualService", "default", "a"), parts=True) == {
        "part:rds-vs:VirtualService/default/a"
    }
    assert _cleared_by(ConfigKey("DestinationRule", "default", "a"), parts=True) == {
        "part:rds-vs:VirtualService/default/a"
    }
    assert _cleared_by(ConfigKey("ServiceEntry", "default", "b.example.com"), parts=True) == {
        "part:rds-default:b.example.com"
    }
    assert _cleared_by(ConfigKey("Endpoints", "default", "b.example.com"), parts=True) == set()


def test_route_configurations_from_shared_parts_equal_fresh_ones() -> None:
    push = push_of(MESH)
    shared = Generator(XdsCache())
    others = parse_proxy("sidecar~10.0.0.4~x.other~other.svc.cluster.local", {"NAMESPACE": "other"})
    for proxy in (SIDECAR, others):  # the second class reuses the first's encoded parts where it can
        via_parts = shared.resources(ROUTE_TYPE, proxy, push, ("80",))
        fresh = Generator(XdsCache()).resources(ROUTE_TYPE, proxy, push, ("80",))
        assert [r.value for r in via_parts] == [r.value for r in fresh]
    assert shared.cache.hits["rds-default"] > 0, "the second namespace did not reuse a default route"
