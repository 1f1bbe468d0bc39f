"""Every kind pilot watches, added, updated and deleted in the (fake) cluster, reaches a connected proxy as
the push its kind calls for: registry endpoints (EndpointSlice, Pod labels, Node topology, WorkloadEntry)
as EDS only without a new PushContext, services and DestinationRules as CDS, routes as RDS, Sidecars as the
scope they change, Gateways only on the gateway, Namespaces as nothing, PeerAuthentications only on the
proxies whose inbound side they shape.

Absence is proven with a fence: after each change has shown, a VirtualService on a fence service changes
its timeout; everything the proxy received up to the fence's RDS is what the change caused.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from pilot.server import PilotServer
from tests.kube import objects as o
from tests.kube.ads import Proxy
from tests.kube.harness import FakeApiServer

pytestmark = pytest.mark.timeout(60)

REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"
FENCE = "fence.default.svc.cluster.local"
EXT = "ext.example.com"
# A new service: its cluster, its endpoints, and its virtual host in the port's route configuration.
NEW_SERVICE = {"cds", "eds", "rds"}


@dataclass
class Mesh:
    api: FakeApiServer
    pilot: PilotServer
    sidecar: Proxy
    router: Proxy
    fences: Any = field(default_factory=lambda: itertools.count(1))

    async def fence(self, proxy: Proxy) -> None:
        """Change the fence route and wait for it: pushes for earlier changes have all arrived by then."""
        seconds = next(self.fences)
        self.api.apply(o.virtual_service("fence", FENCE, timeout=f"{seconds}s"))
        await proxy.wait(lambda p: p.route_timeout(host="fence") == seconds, what=f"fence {seconds}s")

    async def step(
        self, change: Callable[[FakeApiServer], object], shows: Callable[[Proxy], object], pushes: set[str]
    ) -> None:
        contexts = self.pilot.discovery.counters["pilot_pushcontext_init"]
        mark = self.sidecar.mark()
        change(self.api)
        await self.sidecar.wait(shows, what="the change")
        await self.fence(self.sidecar)
        window = self.sidecar.since(mark)
        assert window[-1] == "rds"
        caused = set(window[:-1])
        assert caused == pushes, f"expected {sorted(pushes)} before the fence, got {window}"
        if pushes == {"eds"}:
            # The fence itself is a config change: one PushContext for it, none for the endpoint change.
            assert self.pilot.discovery.counters["pilot_pushcontext_init"] == contexts + 1


@pytest.fixture
async def mesh(api: FakeApiServer, start_pilot: Any, proxies: Any) -> Mesh:
    api.apply(o.namespace("default"))
    api.apply(o.node("node-1", **{"topology.kubernetes.io/region": "r1", "topology.kubernetes.io/zone": "z1"}))
    api.apply(o.service("reviews", ip="10.96.0.10"))
    api.apply(o.pod("reviews-1", ip="10.1.0.1", node_name="node-1", app="reviews", version="v1"))
    api.apply(o.endpoint_slice("reviews", [("10.1.0.1", True, "reviews-1")]))
    api.apply(o.service("fence", ip="10.96.0.99"))
    api.apply(o.virtual_service("fence", FENCE, timeout="100s"))
    pilot = await start_pilot()
    sidecar = proxies(pilot.grpc_port)
    router = proxies(pilot.grpc_port, name="gw-1", node_type="router", labels={"istio": "ingressgateway"}, routes=())
    await sidecar.wait(lambda p: p.eds(REVIEWS) == ["10.1.0.1:8080"] and p.route_timeout(host="fence") == 100)
    await router.wait(lambda p: "cds" in p.received)
    return Mesh(api, pilot, sidecar, router)


async def test_service_changes_are_cluster_pushes(mesh: Mesh) -> None:
    ratings = o.service("ratings", ip="10.96.0.11")
    await mesh.step(lambda a: a.apply(ratings), lambda p: p.eds(RATINGS) == [], NEW_SERVICE)
    await mesh.step(
        lambda a: a.apply(o.service("ratings", ip="10.96.0.11", port=9080)),
        lambda p: f"outbound|9080||{RATINGS}" in p.clusters,
        {"cds", "eds", "lds", "rds"},  # a new port: its listener and route configuration too
    )
    await mesh.step(
        lambda a: a.delete("Service", "ratings"),
        lambda p: not any(RATINGS in c for c in p.clusters),
        {"cds", "eds", "lds"},  # eds: the answer to the narrower EDS subscription, as Envoy gets it
    )


async def test_endpoint_slice_changes_are_eds_only(mesh: Mesh) -> None:
    slice_b = o.endpoint_slice("reviews", [("10.1.0.2", True)], suffix="b")
    await mesh.step(lambda a: a.apply(slice_b), lambda p: p.eds(REVIEWS) == ["10.1.0.1:8080", "10.1.0.2:8080"], {"eds"})
    not_ready = o.endpoint_slice("reviews", [("10.1.0.2", False)], suffix="b")
    await mesh.step(lambda a: a.apply(not_ready), lambda p: p.eds(REVIEWS) == ["10.1.0.1:8080"], {"eds"})
    await mesh.step(lambda a: a.apply(slice_b), lambda p: p.eds(REVIEWS) == ["10.1.0.1:8080", "10.1.0.2:8080"], {"eds"})
    one = ["10.1.0.1:8080"]
    await mesh.step(lambda a: a.delete("EndpointSlice", "reviews-b"), lambda p: p.eds(REVIEWS) == one, {"eds"})
    counters = mesh.pilot.discovery.counters
    assert counters["pilot_k8s_reg_events{type=EndpointSlice,event=add}"] == 2  # reviews-abc, reviews-b
    assert counters["pilot_k8s_reg_events{type=EndpointSlice,event=update}"] == 2
    assert counters["pilot_k8s_reg_events{type=EndpointSlice,event=delete}"] == 1


async def test_pod_labels_and_node_topology_are_eds_only(mesh: Mesh) -> None:
    subsets = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "host": REVIEWS,
            "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
        },
    }
    v1, v2 = f"outbound|80|v1|{REVIEWS}", f"outbound|80|v2|{REVIEWS}"
    await mesh.step(lambda a: a.apply(subsets), lambda p: p.endpoints.get(v1) == ["10.1.0.1:8080"], {"cds", "eds"})
    relabelled = o.pod("reviews-1", ip="10.1.0.1", node_name="node-1", app="reviews", version="v2")
    await mesh.step(
        lambda a: a.apply(relabelled),
        lambda p: p.endpoints.get(v2) == ["10.1.0.1:8080"] and p.endpoints.get(v1) == [],
        {"eds"},
    )
    moved = o.node("node-1", **{"topology.kubernetes.io/region": "r2", "topology.kubernetes.io/zone": "z9"})
    await mesh.step(
        lambda a: a.apply(moved),
        lambda p: mesh.pilot.discovery.counters["pilot_k8s_reg_events{type=Node,event=update}"] == 1,
        {"eds"},
    )
    assert mesh.pilot.discovery.counters["pilot_k8s_reg_events{type=Pod,event=update}"] == 1


async def test_namespace_changes_push_nothing(mesh: Mesh) -> None:
    counters = mesh.pilot.discovery.counters
    await mesh.step(
        lambda a: a.apply(o.namespace("other")),
        lambda p: counters["pilot_k8s_reg_events{type=Namespace,event=add}"] == 2,
        set(),
    )
    await mesh.step(
        lambda a: a.apply(o.namespace("other", team="x")),
        lambda p: counters["pilot_k8s_reg_events{type=Namespace,event=update}"] == 1,
        set(),
    )
    await mesh.step(
        lambda a: a.delete("Namespace", "other", ""),
        lambda p: counters["pilot_k8s_reg_events{type=Namespace,event=delete}"] == 1,
        set(),
    )


async def test_service_entries_and_workload_entries(mesh: Mesh) -> None:
    ext = f"outbound|80||{EXT}"
    await mesh.step(lambda a: a.apply(o.service_entry("ext", EXT, [])), lambda p: ext in p.clusters, NEW_SERVICE)
    for address in ("10.2.0.1", "10.2.0.2"):
        entry = o.workload_entry("we-1", address, "ext")
        await mesh.step(lambda a, e=entry: a.apply(e), lambda p, x=address: p.eds(EXT) == [f"{x}:80"], {"eds"})
    await mesh.step(lambda a: a.delete("WorkloadEntry", "we-1"), lambda p: p.eds(EXT) == [], {"eds"})
    await mesh.step(lambda a: a.delete("ServiceEntry", "ext"), lambda p: ext not in p.clusters, NEW_SERVICE)
    counters = mesh.pilot.discovery.counters
    assert counters["pilot_k8s_cfg_events{type=WorkloadEntry,event=update}"] == 1
    assert counters["pilot_k8s_cfg_events{type=ServiceEntry,event=delete}"] == 1


async def test_virtual_services_are_route_pushes(mesh: Mesh) -> None:
    await mesh.step(
        lambda a: a.apply(o.virtual_service("reviews", REVIEWS, timeout="7s")),
        lambda p: p.route_timeout(host="reviews") == 7,
        {"rds"},
    )
    await mesh.step(
        lambda a: a.apply(o.virtual_service("reviews", REVIEWS, timeout="8s")),
        lambda p: p.route_timeout(host="reviews") == 8,
        {"rds"},
    )
    await mesh.step(
        lambda a: a.delete("VirtualService", "reviews"), lambda p: not p.route_timeout(host="reviews"), {"rds"}
    )
    counters = mesh.pilot.discovery.counters
    assert counters["pilot_k8s_cfg_events{type=VirtualService,event=add}"] == 2  # reviews and the fence
    assert counters["pilot_k8s_cfg_events{type=VirtualService,event=update}"] == 1 + 3  # and the three fences
    assert counters["pilot_k8s_cfg_events{type=VirtualService,event=delete}"] == 1


async def test_destination_rules_are_cluster_pushes(mesh: Mesh) -> None:
    cluster = f"outbound|80||{REVIEWS}"

    def lb(policy: int) -> Callable[[Proxy], bool]:
        return lambda p: cluster in p.clusters and p.clusters[cluster].lb_policy == policy

    random, round_robin, least_request = 3, 0, 1  # envoy.config.cluster.v3.Cluster.LbPolicy
    # An updated cluster is followed by its endpoints (Envoy drops them when it replaces the cluster).
    changed = {"cds", "eds"}
    await mesh.step(lambda a: a.apply(o.destination_rule("reviews", REVIEWS, lb="RANDOM")), lb(random), changed)
    await mesh.step(
        lambda a: a.apply(o.destination_rule("reviews", REVIEWS, lb="ROUND_ROBIN")), lb(round_robin), changed
    )
    await mesh.step(lambda a: a.delete("DestinationRule", "reviews"), lb(least_request), changed)


async def test_sidecars_change_what_a_proxy_sees(mesh: Mesh) -> None:
    only_fence = o.sidecar(hosts=(f"./{FENCE}",))
    await mesh.step(
        lambda a: a.apply(only_fence), lambda p: f"outbound|80||{REVIEWS}" not in p.clusters, {"cds", "eds", "rds"}
    )
    await mesh.step(
        lambda a: a.delete("Sidecar", "default"),
        lambda p: f"outbound|80||{REVIEWS}" in p.clusters,
        {"cds", "eds", "rds"},
    )


async def test_gateways_reach_only_the_gateway(mesh: Mesh) -> None:
    await mesh.step(
        lambda a: a.apply(o.gateway("gw", port=8080)), lambda p: mesh.router.listeners >= {"0.0.0.0_8080"}, set()
    )
    await mesh.router.wait(lambda p: "0.0.0.0_8080" in p.listeners, what="the gateway listener")
    await mesh.step(
        lambda a: a.apply(o.gateway("gw", port=8081)), lambda p: "0.0.0.0_8081" in mesh.router.listeners, set()
    )
    await mesh.step(lambda a: a.delete("Gateway", "gw"), lambda p: not mesh.router.listeners & {"0.0.0.0_8081"}, set())


def _plaintext_chains(proxy: Proxy, port: int) -> int:
    """Filter chains of virtualInbound for ``port`` that accept plaintext (no transport socket)."""
    listener = proxy.listener_configs.get("virtualInbound")
    if listener is None:
        return -1
    return sum(
        1
        for chain in listener.filter_chains
        if chain.filter_chain_match.destination_port.value == port and not chain.HasField("transport_socket")
    )


async def test_peer_authentications_reach_the_inbound_side_of_the_workload(mesh: Mesh, proxies: Any) -> None:
    # The reviews pod's own sidecar (its IP; Istio's injector label: it has workload certificates).
    labels = {"app": "reviews", "security.istio.io/tlsMode": "istio"}
    instance = proxies(mesh.pilot.grpc_port, name="reviews-1", ip="10.1.0.1", labels=labels)
    await instance.wait(lambda p: _plaintext_chains(p, 8080) > 0, what="PERMISSIVE inbound chains")
    # STRICT: no plaintext chain for the workload's port on the instance; the client-only sidecar (no inbound
    # side, no certificates) gets nothing at all.
    await mesh.step(
        lambda a: a.apply(o.peer_authentication("default", "STRICT")),
        lambda p: _plaintext_chains(instance, 8080) == 0,
        set(),
    )
    await mesh.step(
        lambda a: a.delete("PeerAuthentication", "default"), lambda p: _plaintext_chains(instance, 8080) > 0, set()
    )
