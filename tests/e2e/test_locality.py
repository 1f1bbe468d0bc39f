"""Locality load balancing through a real Envoy.

The sidecar says where it is the way Envoy does, in its bootstrap's ``node.locality`` (us-east/zone-a). The
services are in Kubernetes form: their Pods run on Nodes labelled with topology.kubernetes.io/region and
zone, which give the endpoints their locality, as in istiod.

* failover: with outlier detection (and the mesh default locality setting), traffic stays in zone-a while
  its backend answers; once it fails with 5xx, outlier detection ejects it and traffic moves to zone-b.
* distribute: 20/80 between zone-a and zone-b, observed as shares of real traffic and in Envoy's config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import (
    Backend,
    Backends,
    EnvoyProcess,
    HttpClient,
    PilotProcess,
    counts_str,
    free_port,
    kube_service,
    only,
)

pytestmark = pytest.mark.timeout(90)

NODE_ID = "sidecar~127.0.0.1~client-1.default~default.svc.cluster.local"
REGION = "us-east"
ROUTE_TIMEOUT = 10.0
ZONES = ("zone-a", "zone-b")


class LocatedEnvoy(EnvoyProcess):
    """An Envoy whose bootstrap node carries a locality (what pilot-agent writes from the platform)."""

    def __init__(self, *args: Any, locality: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.locality = locality

    def write_bootstrap(self) -> None:
        super().write_bootstrap()
        bootstrap = yaml.safe_load(self.bootstrap_path.read_text())
        bootstrap["node"]["locality"] = self.locality
        self.bootstrap_path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))


@dataclass
class LocalityEnv:
    pilot: PilotProcess
    envoy: EnvoyProcess
    port: int

    def diagnostics(self) -> str:
        return self.pilot.diagnostics() + "\n" + self.envoy.diagnostics()

    def write_service(self, name: str, cluster_ip: str, by_zone: dict[str, Backend], rule: dict[str, Any]) -> None:
        """A Service whose Pods run on Nodes of the given zones, its EndpointSlice and a DestinationRule."""
        backends = list(by_zone.values())
        pods = [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{name}-{zone}", "namespace": "default", "labels": {"app": name}},
                "spec": {"nodeName": f"node-{zone}"},
                "status": {"podIP": backend.host, "phase": "Running"},
            }
            for zone, backend in by_zone.items()
        ]
        endpoints = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-1", "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": backends[0].port, "protocol": "TCP"}],
            "endpoints": [
                {
                    "addresses": [backend.host],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "name": f"{name}-{zone}", "namespace": "default"},
                }
                for zone, backend in by_zone.items()
            ],
        }
        destination_rule = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"host": name, "trafficPolicy": rule},
        }
        service = kube_service(name, cluster_ip, self.port, backends[0].port)
        self.pilot.write(f"{name}.yaml", [service, *pods, endpoints, destination_rule])

    def endpoint_groups(self, cluster: str) -> list[tuple[str, int, int, list[str]]]:
        """(zone, priority, weight, addresses) of each locality group Envoy holds for ``cluster``."""
        for config in self.envoy.config_dump()["configs"]:
            for entry in config.get("dynamic_endpoint_configs", ()):
                assignment = entry["endpoint_config"]
                if assignment["cluster_name"] != cluster:
                    continue
                return [
                    (
                        group.get("locality", {}).get("zone", ""),
                        group.get("priority", 0),
                        group.get("load_balancing_weight", 0),
                        [
                            lb["endpoint"]["address"]["socket_address"]["address"]
                            for lb in group.get("lb_endpoints", ())
                        ],
                    )
                    for group in assignment.get("endpoints", ())
                ]
        return []

    def cluster_config(self, cluster: str) -> dict[str, Any]:
        for config in self.envoy.config_dump()["configs"]:
            for entry in config.get("dynamic_active_clusters", ()):
                if entry["cluster"]["name"] == cluster:
                    return entry["cluster"]
        raise AssertionError(f"Envoy has no cluster {cluster}")


def nodes() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": f"node-{zone}",
                "labels": {"topology.kubernetes.io/region": REGION, "topology.kubernetes.io/zone": zone},
            },
        }
        for zone in ZONES
    ]


@pytest.fixture(scope="module")
def env(
    envoy_binary: str,
    e2e_workdir: Path,
    e2e_processes: list[Any],
    pilot_factory: Callable[..., PilotProcess],
) -> Any:
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
    pilot = pilot_factory({"sidecar.yaml": sidecar, "nodes.yaml": nodes()})
    envoy = LocatedEnvoy(
        envoy_binary,
        e2e_workdir,
        node_id=NODE_ID,
        xds_port=pilot.grpc_port,
        labels={"app": "client"},
        name="located",
        locality={"region": REGION, "zone": "zone-a"},
    )
    e2e_processes.append(envoy)
    envoy.start()
    try:
        envoy.wait_listener_sync(f"127.0.0.1_{port}", f"127.0.0.1:{port}")
        yield LocalityEnv(pilot, envoy, port)
    finally:
        envoy.stop()


async def test_traffic_stays_in_zone_until_its_endpoint_fails(
    env: LocalityEnv, backends: Backends, client: HttpClient
) -> None:
    near, far = await backends.start("near", "far", same_port=True)
    outlier = {
        "outlierDetection": {
            "consecutive5xxErrors": 2,
            "interval": "1s",
            "baseEjectionTime": "60s",
            "maxEjectionPercent": 100,
        }
    }
    env.write_service("failover", "10.96.1.10", {"zone-a": near, "zone-b": far}, outlier)
    cluster = f"outbound|{env.port}||failover.default.svc.cluster.local"

    await client.wait_routed(
        env.port, "failover", only("near"), batch=20, within=ROUTE_TIMEOUT, describe=env.diagnostics
    )
    # Priority 0 for the proxy's zone, 1 for the other zone of its region (istiod's failover priorities).
    assert sorted(env.endpoint_groups(cluster)) == [("zone-a", 0, 1, [near.host]), ("zone-b", 1, 1, [far.host])]
    counts = await client.count(40, env.port, "failover")
    assert counts == {"near": 40}, counts_str(counts)
    assert far.hits == 0, f"zone-b got {far.hits} requests while zone-a was healthy"

    # zone-a's backend starts failing: after two 5xx outlier detection ejects it and zone-b takes over.
    near.program(fail_next=1_000_000)
    await client.wait_routed(
        env.port, "failover", only("far"), batch=20, within=ROUTE_TIMEOUT, describe=env.diagnostics
    )
    failed_at_near = near.hits
    counts = await client.count(40, env.port, "failover")
    assert counts == {"far": 40}, counts_str(counts)
    assert near.hits == failed_at_near, "an ejected endpoint still got traffic"
    ejected = env.envoy.stats(r"outlier_detection\.ejections_enforced_consecutive_5xx")
    assert any(name.startswith(f"cluster.{cluster}.") and value >= 1 for name, value in ejected.items()), ejected


async def test_distribute_weights_split_traffic_between_zones(
    env: LocalityEnv, backends: Backends, client: HttpClient
) -> None:
    near, far = await backends.start("near", "far", same_port=True)
    distribute = {
        "loadBalancer": {
            "simple": "ROUND_ROBIN",
            "localityLbSetting": {
                "distribute": [
                    {
                        "from": f"{REGION}/zone-a/*",
                        "to": {f"{REGION}/zone-a/*": 20, f"{REGION}/zone-b/*": 80},
                    }
                ]
            },
        }
    }
    env.write_service("spread", "10.96.1.11", {"zone-a": near, "zone-b": far}, distribute)
    cluster = f"outbound|{env.port}||spread.default.svc.cluster.local"

    await client.wait_routed(
        env.port,
        "spread",
        lambda c: set(c) == {"near", "far"},
        batch=40,
        within=ROUTE_TIMEOUT,
        describe=env.diagnostics,
    )
    assert sorted(env.endpoint_groups(cluster)) == [("zone-a", 0, 20, [near.host]), ("zone-b", 0, 80, [far.host])]
    assert "locality_weighted_lb_config" in env.cluster_config(cluster).get("common_lb_config", {})

    counts = await client.count(400, env.port, "spread")
    assert set(counts) == {"near", "far"}, counts_str(counts)
    share = counts["far"] / 400
    assert 0.70 <= share <= 0.90, f"zone-b's share {share:.2f} should be about 0.80: {counts_str(counts)}"
