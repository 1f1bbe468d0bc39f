"""End to end through a sidecar: services in Kubernetes form (Service + EndpointSlice + Pods), a Sidecar resource
whose egress listener binds 127.0.0.1:<port> with captureMode NONE, DestinationRule subsets and VirtualServices
bound to the mesh. Requests go to 127.0.0.1:<port> and are routed by their Host header.

One pilot and one Envoy serve the module; every scenario uses its own services (all on the egress port).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.e2e.harness import (
    Backend,
    Backends,
    EnvoyProcess,
    HttpClient,
    PilotProcess,
    all_of,
    counts_str,
    destination_rule,
    endpoint_slice,
    free_port,
    kube_pods,
    kube_service,
    only,
    record_write_to_routed,
    route_to,
    virtual_service,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

SIDECAR_NODE = "sidecar~127.0.0.1~app-1.default~default.svc.cluster.local"
ROUTE_TIMEOUT = 10.0
SWITCH_DEADLINE = 2.0


@dataclass
class SidecarEnv:
    pilot: PilotProcess
    envoy: EnvoyProcess
    port: int  # the egress listener port, bound at 127.0.0.1

    def diagnostics(self) -> str:
        return self.pilot.diagnostics() + "\n" + self.envoy.diagnostics()

    def write_kube_service(self, name: str, cluster_ip: str, backends: list[Backend], *extra: dict) -> None:
        """Service + Pods + EndpointSlice (+ extra objects) in ``<name>.yaml``."""
        self.pilot.write(
            f"{name}.yaml",
            [
                kube_service(name, cluster_ip, self.port, backends[0].port),
                *kube_pods(name, backends),
                endpoint_slice(name, backends),
                *extra,
            ],
        )


@pytest.fixture(scope="module")
def sc(pilot_factory: Callable[..., PilotProcess], envoy_factory: Callable[..., EnvoyProcess]) -> SidecarEnv:
    port = free_port("127.0.0.1")
    sidecar = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": "default"},
        "spec": {
            "egress": [
                {
                    "port": {"number": port, "protocol": "HTTP", "name": "http"},
                    "bind": "127.0.0.1",
                    "captureMode": "NONE",
                    "hosts": ["./*"],
                }
            ]
        },
    }
    pilot = pilot_factory({"sidecar.yaml": sidecar})
    envoy = envoy_factory(pilot, SIDECAR_NODE, {"app": "app", "version": "v1"}, "sidecar")
    envoy.wait_listener_sync(f"127.0.0.1_{port}", f"127.0.0.1:{port}")
    return SidecarEnv(pilot, envoy, port)


async def test_routes_by_fqdn_and_short_host(sc: SidecarEnv, backends: Backends, client: HttpClient) -> None:
    reviews = await backends.start("v1", "v2", "v3", same_port=True)
    (ratings,) = await backends.start("ratings", same_port=True)
    vs = virtual_service(
        "reviews",
        ["reviews"],
        [
            {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [route_to("reviews", "v2")]},
            {"route": [route_to("reviews", "v1")]},
        ],
    )
    sc.write_kube_service("reviews", "10.96.0.50", reviews, destination_rule("reviews", "reviews", ["v1", "v2", "v3"]))
    sc.pilot.write("reviews-vs.yaml", vs)
    sc.write_kube_service("ratings", "10.96.0.51", [ratings])

    fqdn = "reviews.default.svc.cluster.local"
    jason = {"end-user": "jason"}
    await client.wait_routed(sc.port, fqdn, only("v1"), batch=20, within=ROUTE_TIMEOUT, describe=sc.diagnostics)
    await client.wait_routed(sc.port, fqdn, only("v2"), headers=jason, within=ROUTE_TIMEOUT)

    for host in (fqdn, "reviews", "reviews.default", f"reviews:{sc.port}", f"{fqdn}:{sc.port}"):
        counts = await client.count(20, sc.port, host)
        assert counts == {"v1": 20}, f"Host {host}: {counts_str(counts)}"
        counts = await client.count(20, sc.port, host, headers=jason)
        assert counts == {"v2": 20}, f"Host {host} with end-user: jason: {counts_str(counts)}"

    # v3 is a subset nobody routes to: it must see no traffic.
    v3 = reviews[2]
    assert v3.hits == 0, f"v3 got {v3.hits} requests although no route leads to it"

    # Another service on the same port is told apart by Host; an unknown Host is not routed anywhere.
    await client.wait_routed(sc.port, "ratings", only("ratings"), within=ROUTE_TIMEOUT, describe=sc.diagnostics)
    assert await client.count(10, sc.port, "ratings.default.svc.cluster.local") == {"ratings": 10}
    reply = await client.get(sc.port, "nosuch.default.svc.cluster.local")
    assert reply.backend is None, f"an unknown Host reached a backend: {reply.body!r}"

    # The backend sees the original Host.
    reply = await client.get(sc.port, "reviews", "/r/1")
    assert reply.body["host"] == "reviews" and reply.body["path"] == "/r/1", reply.body


async def test_weighted_subsets_from_pod_labels(sc: SidecarEnv, backends: Backends, client: HttpClient) -> None:
    # Two v1 pods and one v2 pod: the subset split follows the VS weights, not the pod count.
    pods = await backends.start("v1", "v1b", "v2", same_port=True, v1b={"version": "v1"})
    vs = virtual_service(
        "details",
        ["details.default.svc.cluster.local"],
        [{"route": [route_to("details", "v1", 50), route_to("details", "v2", 50)]}],
    )
    sc.write_kube_service("details", "10.96.0.52", pods, destination_rule("details", "details", ["v1", "v2"]), vs)
    await client.wait_routed(
        sc.port, "details", all_of("v1", "v1b", "v2"), batch=60, within=ROUTE_TIMEOUT, describe=sc.diagnostics
    )
    counts = await client.count(300, sc.port, "details")
    assert set(counts) == {"v1", "v1b", "v2"}, counts_str(counts)
    v2_fraction = counts["v2"] / 300
    assert 0.38 <= v2_fraction <= 0.62, f"v2 fraction {v2_fraction:.2f} should be ~0.5: {counts_str(counts)}"


async def test_live_edit_and_endpoint_removal(sc: SidecarEnv, backends: Backends, client: HttpClient) -> None:
    v1, v1b, v2 = await backends.start("v1", "v1b", "v2", same_port=True, v1b={"version": "v1"})
    dr = destination_rule("productpage", "productpage", ["v1", "v2"])

    def vs_to(subset: str) -> dict:
        return virtual_service("productpage", ["productpage"], [{"route": [route_to("productpage", subset)]}])

    sc.write_kube_service("productpage", "10.96.0.53", [v1, v1b, v2], dr)
    sc.pilot.write("productpage-vs.yaml", vs_to("v1"))
    await client.wait_routed(
        sc.port, "productpage", all_of("v1", "v1b"), batch=30, within=ROUTE_TIMEOUT, describe=sc.diagnostics
    )

    times = []
    for i, subset in enumerate(["v2", "v1"]):
        start = time.monotonic()
        sc.pilot.write("productpage-vs.yaml", vs_to(subset))
        targets = {"v2"} if subset == "v2" else {"v1", "v1b"}

        async def routed(targets: set[str] = targets) -> bool:
            return (await client.get(sc.port, "productpage")).backend in targets

        await wait_until(routed, 5.0, interval=0.0, message=f"productpage → {subset}", describe=sc.diagnostics)
        times.append(time.monotonic() - start)
        record_write_to_routed(f"sidecar edit {i + 1}", times[-1])
        counts = await client.count(30, sc.port, "productpage")
        assert set(counts) <= targets, counts_str(counts)
    print(f"E2E write->routed: {max(times):.2f}s (sidecar live edits: {', '.join(f'{t:.2f}s' for t in times)})")
    assert max(times) < SWITCH_DEADLINE, f"live edit took {max(times):.2f}s (budget {SWITCH_DEADLINE}s)"

    # Drop the v1b pod from the EndpointSlice (the Pod object stays): it gets no more traffic.
    sc.pilot.write(
        "productpage.yaml",
        [
            kube_service("productpage", "10.96.0.53", sc.port, v1.port),
            *kube_pods("productpage", [v1, v1b, v2]),
            endpoint_slice("productpage", [v1, v2]),
            dr,
        ],
    )
    await client.wait_routed(sc.port, "productpage", only("v1"), batch=30, within=5.0, describe=sc.diagnostics)
    v1b.reset()
    counts = await client.count(60, sc.port, "productpage")
    assert counts == {"v1": 60}, counts_str(counts)
    assert v1b.hits == 0, f"the removed endpoint still got {v1b.hits} requests"


async def test_subsets_split_over_two_destination_rules(sc: SidecarEnv, backends: Backends, client: HttpClient) -> None:
    """Istio's "split large destination rules": v1 and v2 live in two DestinationRules for one host. Both
    subsets must exist; a second rule replacing the first would turn the v1 route into 503s."""
    v1, v2 = await backends.start("v1", "v2", same_port=True)
    vs = virtual_service(
        "split",
        ["split"],
        [
            {"match": [{"headers": {"to": {"exact": "v1"}}}], "route": [route_to("split", "v1")]},
            {"route": [route_to("split", "v2")]},
        ],
    )
    sc.write_kube_service(
        "split",
        "10.96.0.54",
        [v1, v2],
        destination_rule("split-v1", "split", ["v1"]),
        destination_rule("split-v2", "split", ["v2"]),
        vs,
    )
    await client.wait_routed(sc.port, "split", only("v2"), batch=20, within=ROUTE_TIMEOUT, describe=sc.diagnostics)
    await client.wait_routed(sc.port, "split", only("v1"), headers={"to": "v1"}, within=ROUTE_TIMEOUT)
    assert await client.count(20, sc.port, "split", headers={"to": "v1"}) == {"v1": 20}
    assert await client.count(20, sc.port, "split") == {"v2": 20}
