"""End to end over every xDS API pilot serves: real Envoys bootstrapped with ``pilot bootstrap --xds-api``.

One pilot serves the module. Each Envoy is a sidecar in its own namespace, whose Sidecar binds one egress
port on 127.0.0.1 and imports only that namespace (``./*``), so the proxies do not see each other's
services. Requests go to 127.0.0.1:<port> and are routed by their Host header, as in test_sidecar.

* ``delta``: Delta ADS (api_type DELTA_GRPC) routes a weighted split, follows a live VirtualService edit and
  stops sending to a removed endpoint.
* ``grpc``, ``delta-grpc``: the per-type services (CDS and LDS streams, then EDS and RDS streams), ``rest``:
  JSON polling of the monitoring port. Each routes and follows a live edit; config_dump shows where Envoy was
  told to fetch EDS and RDS from.
* ``ads``: an endpoint change reaches Envoy as EDS alone: Envoy's CDS, LDS and RDS update counters and
  pilot's sent nonces for those types do not move while the new endpoint starts to receive traffic.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    Backend,
    Backends,
    EnvoyProcess,
    HttpClient,
    PilotProcess,
    WaitTimeout,
    all_of,
    counts_str,
    destination_rule,
    free_port,
    only,
    record_write_to_routed,
    route_to,
    service_entry,
    virtual_service,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

MODES = ("ads", "delta", "grpc", "delta-grpc", "rest")
ROUTE_TIMEOUT = 10.0  # first routing of a new host
SWITCH_DEADLINE = 2.0  # a live edit over a gRPC stream
REST_SWITCH_DEADLINE = 4.0  # REST polls every second: up to one poll for RDS (or CDS, then EDS)

# What pilot must point EDS and RDS at for a proxy that is not on ADS. Envoy 1.40 rejects ``self``
# ("Missing config source specifier in envoy::config::core::v3::ConfigSource"): the source has to repeat the
# proxy's own API (the bootstrap's cds_config/lds_config api_config_source).
EXPECTED_SOURCE = {
    "ads": {"ads": {}, "resource_api_version": "V3"},
    "delta": {"ads": {}, "resource_api_version": "V3"},
    "grpc": {
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            "set_node_on_first_message_only": True,
        },
        "resource_api_version": "V3",
    },
    "delta-grpc": {
        "api_config_source": {
            "api_type": "DELTA_GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            "set_node_on_first_message_only": True,
        },
        "resource_api_version": "V3",
    },
    "rest": {
        "api_config_source": {
            "api_type": "REST",
            "transport_api_version": "V3",
            "cluster_names": ["xds-rest"],
            "refresh_delay": "1s",
            "request_timeout": "1s",
        },
        "resource_api_version": "V3",
    },
}


def namespace_of(mode: str) -> str:
    return f"xds-{mode}"


@dataclass
class Mesh:
    pilot: PilotProcess
    binary: str
    workdir: Path
    ports: dict[str, int]  # mode -> egress port of that mode's namespace
    processes: list[PilotProcess | EnvoyProcess]
    envoys: dict[str, EnvoyProcess] = field(default_factory=dict)

    def envoy(self, mode: str) -> EnvoyProcess:
        """The Envoy of one mode, started on first use and kept for the module."""
        if mode not in self.envoys:
            ns = namespace_of(mode)
            envoy = EnvoyProcess(
                self.binary,
                self.workdir,
                node_id=f"sidecar~127.0.0.1~app-{mode}.{ns}~{ns}.svc.cluster.local",
                xds_port=self.pilot.grpc_port,
                labels={"app": "app"},
                name=f"envoy-{mode}",
                xds_api=mode,
                rest_port=self.pilot.monitoring_port,
            )
            self.envoys[mode] = envoy
            self.processes.append(envoy)
            envoy.start()
        return self.envoys[mode]

    def diagnostics(self, mode: str) -> Callable[[], str]:
        return lambda: self.pilot.diagnostics() + "\n" + self.envoy(mode).diagnostics()


@pytest.fixture(scope="module")
def mesh(
    envoy_binary: str,
    e2e_workdir: Path,
    e2e_processes: list[PilotProcess | EnvoyProcess],
    pilot_factory: Callable[..., PilotProcess],
) -> Iterator[Mesh]:
    ports = {}
    sidecars = []
    for mode in MODES:
        ports[mode] = free_port("127.0.0.1")
        sidecars.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "Sidecar",
                "metadata": {"name": "default", "namespace": namespace_of(mode)},
                "spec": {
                    "egress": [
                        {
                            "port": {"number": ports[mode], "protocol": "HTTP", "name": "http"},
                            "bind": "127.0.0.1",
                            "captureMode": "NONE",
                            "hosts": ["./*"],
                        }
                    ]
                },
            }
        )
    pilot = pilot_factory({"sidecars.yaml": sidecars}, name="pilot-protocols")
    env = Mesh(pilot, envoy_binary, e2e_workdir, ports, e2e_processes)
    try:
        yield env
    finally:  # before pilot_factory stops pilot
        for envoy in env.envoys.values():
            envoy.stop()


def write_service(mesh: Mesh, mode: str, name: str, backends: list[Backend], *extra: dict[str, Any]) -> str:
    """ServiceEntry ``<name>.<namespace>.example.com`` on the mode's port (+ extra objects); returns the host."""
    ns = namespace_of(mode)
    host = f"{name}.{ns}.example.com"
    objects = [service_entry(name, host, mesh.ports[mode], backends, namespace=ns), *extra]
    mesh.pilot.write(f"{ns}-{name}.yaml", objects)
    return host


class ConfigRejected(Exception):
    """Envoy rejected pilot's config: no use waiting (wait_until retries only on AssertionError and friends)."""


def config_accepted(envoy: EnvoyProcess, port: int) -> bool:
    """The egress listener is up; fails at once when Envoy rejected pilot's clusters or listeners."""
    rejected = {k: v for k, v in envoy.stats(r"(cds|lds)\.update_rejected").items() if v}
    if rejected:
        raise ConfigRejected(f"{envoy.name} rejected pilot's config: {rejected}\n{envoy.diagnostics()}")
    return envoy.has_listener(f"127.0.0.1_{port}", f"127.0.0.1:{port}")


async def wait_ready(mesh: Mesh, mode: str) -> EnvoyProcess:
    envoy = mesh.envoy(mode)
    port = mesh.ports[mode]
    try:
        await wait_until(lambda: config_accepted(envoy, port), ROUTE_TIMEOUT, message=f"{envoy.name} listener")
    except WaitTimeout as exc:
        raise AssertionError(f"{exc}\n{mesh.diagnostics(mode)()}") from None
    return envoy


async def switch(
    mesh: Mesh, mode: str, client: HttpClient, host: str, write: Callable[[], None], targets: set[str], label: str
) -> float:
    """Apply ``write`` and wait until ``host`` is answered by ``targets``; returns write->routed seconds."""
    start = time.monotonic()
    write()
    deadline = REST_SWITCH_DEADLINE if mode == "rest" else SWITCH_DEADLINE

    async def routed() -> bool:
        # A batch, not one request: before a split is replaced, a single request may already hit the target.
        counts = await client.count(10, mesh.ports[mode], host, concurrency=10)
        return set(counts) <= targets

    await wait_until(
        routed, deadline + 3.0, interval=0.0, message=f"{host} → {targets}", describe=mesh.diagnostics(mode)
    )
    elapsed = time.monotonic() - start
    record_write_to_routed(f"{mode} {label}", elapsed)
    counts = await client.count(30, mesh.ports[mode], host)
    assert set(counts) <= targets, counts_str(counts)
    assert elapsed < deadline, f"{mode} {label} took {elapsed:.2f}s (budget {deadline}s)"
    return elapsed


# ----- config_dump -----


def dynamic_config(envoy: EnvoyProcess) -> dict[str, Any]:
    """EDS config sources of the dynamic clusters, RDS config sources of the HTTP listeners, and the names of
    the dynamic clusters, listeners and route configurations Envoy holds."""
    out: dict[str, Any] = {"eds": {}, "rds": {}, "clusters": set(), "listeners": set(), "routes": set()}
    for section in envoy.config_dump()["configs"]:
        kind = section["@type"].rsplit(".", 1)[-1]
        if kind == "ClustersConfigDump":
            for entry in section.get("dynamic_active_clusters", []):
                cluster = entry["cluster"]
                out["clusters"].add(cluster["name"])
                if "eds_cluster_config" in cluster:
                    out["eds"][cluster["name"]] = cluster["eds_cluster_config"]["eds_config"]
        elif kind == "ListenersConfigDump":
            for entry in section.get("dynamic_listeners", []):
                listener = entry.get("active_state", {}).get("listener")
                if listener is None:
                    continue
                out["listeners"].add(listener["name"])
                for chain in listener.get("filter_chains", []):
                    for f in chain.get("filters", []):
                        rds = f.get("typed_config", {}).get("rds")
                        if rds:
                            out["rds"][rds["route_config_name"]] = rds["config_source"]
        elif kind == "RoutesConfigDump":
            for entry in section.get("dynamic_route_configs", []):
                out["routes"].add(entry["route_config"]["name"])
    return out


def assert_config_sources(envoy: EnvoyProcess, mode: str, port: int, cluster: str) -> None:
    config = dynamic_config(envoy)
    assert config["eds"].get(cluster) == EXPECTED_SOURCE[mode], config["eds"]
    assert config["rds"].get(str(port)) == EXPECTED_SOURCE[mode], config["rds"]
    assert str(port) in config["routes"] and f"127.0.0.1_{port}" in config["listeners"]


def least_request(rule: dict[str, Any]) -> dict[str, Any]:
    """The DestinationRule with a traffic policy: every cluster of its host changes."""
    return {**rule, "spec": {**rule["spec"], "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}}}}


def clusters_updated(envoy: EnvoyProcess, host: str) -> bool:
    """Every cluster of ``host`` is active with the LEAST_REQUEST policy and none is left warming (an updated
    cluster warms until its endpoints come again; Envoy 1.40 may also take them from its EDS cache)."""
    active: dict[str, str] = {}
    warming: list[str] = []
    for section in envoy.config_dump()["configs"]:
        if section["@type"].endswith(".ClustersConfigDump"):
            for entry in section.get("dynamic_active_clusters", []):
                active[entry["cluster"]["name"]] = entry["cluster"].get("lb_policy", "ROUND_ROBIN")
            warming = [e["cluster"]["name"] for e in section.get("dynamic_warming_clusters", [])]
    mine = {name: policy for name, policy in active.items() if name.endswith(f"|{host}")}
    return bool(mine) and set(mine.values()) == {"LEAST_REQUEST"} and not warming


async def update_clusters(
    mesh: Mesh, mode: str, client: HttpClient, host: str, file: str, objects: list[dict[str, Any]], targets: set[str]
) -> None:
    """Rewrite ``file`` (its DestinationRule now with a traffic policy) and check that the updated clusters
    finish warming and keep routing to ``targets``."""
    envoy = mesh.envoy(mode)
    mesh.pilot.write(file, objects)
    within = REST_SWITCH_DEADLINE if mode == "rest" else SWITCH_DEADLINE
    await wait_until(
        lambda: clusters_updated(envoy, host),
        within + 3.0,
        message=f"{host} clusters updated",
        describe=mesh.diagnostics(mode),
    )
    counts = await client.count(30, mesh.ports[mode], host)
    assert set(counts) <= targets and sum(counts.values()) == 30, counts_str(counts)


# ----- Envoy and pilot counters -----


def update_counts(envoy: EnvoyProcess, cluster: str) -> dict[str, int]:
    """Successful CDS, LDS and RDS updates, and EDS updates of one cluster, as Envoy counts them."""
    stats = envoy.stats(r"update_success$")
    return {
        "cds": stats.get("cluster_manager.cds.update_success", 0),
        "lds": stats.get("listener_manager.lds.update_success", 0),
        "rds": sum(v for k, v in stats.items() if re.fullmatch(r"http\..*\.rds\..*\.update_success", k)),
        "eds": stats.get(f"cluster.{cluster}.update_success", 0),
    }


async def sync_status(pilot: PilotProcess, proxy: str) -> dict[str, str]:
    (entry,) = [e for e in await pilot.debug("/debug/syncz") if e["proxy"] == proxy]
    return {k: v for k, v in entry.items() if k.endswith(("_sent", "_acked"))}


# ----- tests -----


async def test_delta_ads_split_live_edit_and_endpoint_removal(
    mesh: Mesh, backends: Backends, client: HttpClient
) -> None:
    mode = "delta"
    envoy = await wait_ready(mesh, mode)
    port = mesh.ports[mode]
    await mesh.pilot.wait_for_log(r"new delta connection for node sidecar~127\.0\.0\.1~app-delta\.", within=1.0)
    v1, v1b, v2 = await backends.start("v1", "v1b", "v2", v1b={"version": "v1"})
    name = "split"
    host = f"{name}.{namespace_of(mode)}.example.com"
    rule = destination_rule(name, host, ["v1", "v2"], namespace=namespace_of(mode))

    def routes(*weights: tuple[str, int]) -> dict[str, Any]:
        http = [{"route": [route_to(host, subset, weight) for subset, weight in weights]}]
        return virtual_service(name, [host], http, namespace=namespace_of(mode))

    write_service(mesh, mode, name, [v1, v2], rule, routes(("v1", 80), ("v2", 20)))
    await client.wait_routed(
        port, host, all_of("v1", "v2"), batch=40, within=ROUTE_TIMEOUT, describe=mesh.diagnostics(mode)
    )
    counts = await client.count(300, port, host)
    assert set(counts) == {"v1", "v2"}, counts_str(counts)
    fraction = counts["v1"] / 300
    assert 0.70 <= fraction <= 0.90, f"v1 fraction {fraction:.3f} outside 0.70..0.90 ({counts_str(counts)})"
    assert_config_sources(envoy, mode, port, f"outbound|{port}|v1|{host}")

    # Live VirtualService edits move all traffic, and back.
    file = f"{namespace_of(mode)}-{name}.yaml"
    service = [service_entry(name, host, port, [v1, v2], namespace=namespace_of(mode)), rule]
    await switch(
        mesh, mode, client, host, lambda: mesh.pilot.write(file, [*service, routes(("v2", 100))]), {"v2"}, "edit 1"
    )
    await switch(
        mesh, mode, client, host, lambda: mesh.pilot.write(file, [*service, routes(("v1", 100))]), {"v1"}, "edit 2"
    )

    # Updated clusters (a traffic policy) leave warming and keep routing.
    rule = least_request(rule)
    service = [service[0], rule]
    await update_clusters(mesh, mode, client, host, file, [*service, routes(("v1", 100))], {"v1"})

    # A second v1 endpoint joins, then leaves: an endpoint-only delta each time.
    cluster = f"outbound|{port}|v1|{host}"
    before = update_counts(envoy, cluster)
    grown = [service_entry(name, host, port, [v1, v1b, v2], namespace=namespace_of(mode)), rule, routes(("v1", 100))]
    mesh.pilot.write(file, grown)
    await client.wait_routed(port, host, all_of("v1", "v1b"), batch=30, within=5.0, describe=mesh.diagnostics(mode))
    mesh.pilot.write(file, [*service, routes(("v1", 100))])
    await client.wait_routed(port, host, only("v1"), batch=30, within=5.0, describe=mesh.diagnostics(mode))
    v1b.reset()
    counts = await client.count(60, port, host)
    assert counts == {"v1": 60}, counts_str(counts)
    assert v1b.hits == 0, f"the removed endpoint still got {v1b.hits} requests"
    after = update_counts(envoy, cluster)
    assert after["eds"] >= before["eds"] + 2, (before, after)
    assert {k: after[k] for k in ("cds", "lds", "rds")} == {k: before[k] for k in ("cds", "lds", "rds")}, (
        before,
        after,
    )


@pytest.mark.parametrize("mode", ["grpc", "delta-grpc", "rest"])
async def test_non_ads_api_routes_and_follows_a_live_edit(
    mode: str, mesh: Mesh, backends: Backends, client: HttpClient
) -> None:
    envoy = await wait_ready(mesh, mode)
    port = mesh.ports[mode]
    v1, v2 = await backends.start("v1", "v2")
    name = "edit"
    ns = namespace_of(mode)
    host = f"{name}.{ns}.example.com"
    rule = destination_rule(name, host, ["v1", "v2"], namespace=ns)

    def vs_to(subset: str) -> dict[str, Any]:
        return virtual_service(name, [host], [{"route": [route_to(host, subset)]}], namespace=ns)

    write_service(mesh, mode, name, [v1, v2], rule, vs_to("v1"))
    await client.wait_routed(port, host, only("v1"), batch=10, within=ROUTE_TIMEOUT, describe=mesh.diagnostics(mode))
    assert_config_sources(envoy, mode, port, f"outbound|{port}|v1|{host}")

    file = f"{ns}-{name}.yaml"
    service = service_entry(name, host, port, [v1, v2], namespace=ns)
    await switch(mesh, mode, client, host, lambda: mesh.pilot.write(file, [service, rule, vs_to("v2")]), {"v2"}, "edit")
    rule = least_request(rule)
    await update_clusters(mesh, mode, client, host, file, [service, rule, vs_to("v2")], {"v2"})

    if mode != "rest":
        # Not one aggregated stream: Envoy holds a stream per type (EDS and RDS may open one per resource).
        adsz = await mesh.pilot.debug("/debug/adsz")
        mine = [c for c in adsz["clients"] if c["connectionId"].startswith(f"app-{mode}.{ns}-")]
        watched = {t.rsplit(".", 1)[-1] for c in mine for t in c["watches"]}
        assert watched == {"Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration"}, mine
        assert all(len(c["watches"]) == 1 for c in mine), mine


async def test_endpoint_change_reaches_envoy_as_eds_only(mesh: Mesh, backends: Backends, client: HttpClient) -> None:
    mode = "ads"
    envoy = await wait_ready(mesh, mode)
    port = mesh.ports[mode]
    ns = namespace_of(mode)
    old, new = await backends.start("old", "new")
    host = write_service(mesh, mode, "eds", [old])
    await client.wait_routed(port, host, only("old"), within=ROUTE_TIMEOUT, describe=mesh.diagnostics(mode))
    cluster = f"outbound|{port}||{host}"
    proxy = f"app-{mode}.{ns}"

    def settled(status: dict[str, str]) -> bool:
        return all(status[f"{t}_sent"] == status[f"{t}_acked"] for t in ("cluster", "endpoint", "listener", "route"))

    before_sync = await wait_until(
        lambda: _settled_status(mesh.pilot, proxy, settled), 5.0, message="Envoy to ACK everything"
    )
    before = update_counts(envoy, cluster)

    write_service(mesh, mode, "eds", [old, new])
    await client.wait_routed(port, host, all_of("old", "new"), batch=20, within=5.0, describe=mesh.diagnostics(mode))
    after_sync = await wait_until(
        lambda: _settled_status(
            mesh.pilot, proxy, lambda s: settled(s) and s["endpoint_sent"] != before_sync["endpoint_sent"]
        ),
        5.0,
        message="Envoy to ACK the endpoint push",
    )
    after = update_counts(envoy, cluster)
    assert after["eds"] == before["eds"] + 1, (before, after)
    assert {k: after[k] for k in ("cds", "lds", "rds")} == {k: before[k] for k in ("cds", "lds", "rds")}, (
        before,
        after,
    )
    for kind in ("cluster", "listener", "route"):
        assert after_sync[f"{kind}_sent"] == before_sync[f"{kind}_sent"], (kind, before_sync, after_sync)


async def _settled_status(
    pilot: PilotProcess, proxy: str, predicate: Callable[[dict[str, str]], bool]
) -> dict[str, str] | None:
    status = await sync_status(pilot, proxy)
    return status if predicate(status) else None


async def test_delta_envoy_resyncs_after_pilot_restarts(mesh: Mesh, backends: Backends, client: HttpClient) -> None:
    # Runs last: it restarts the module's pilot. Envoy reconnects with initial_resource_versions; its wildcard
    # subscriptions must survive (a service created after the restart still arrives) and a change made while
    # pilot was down must arrive.
    mode = "delta"
    await wait_ready(mesh, mode)
    port, ns = mesh.ports[mode], namespace_of(mode)
    v1, v2 = await backends.start("v1", "v2")
    name = "restart"
    host = f"{name}.{ns}.example.com"
    rule = destination_rule(name, host, ["v1", "v2"], namespace=ns)

    def vs_to(subset: str) -> dict[str, Any]:
        return virtual_service(name, [host], [{"route": [route_to(host, subset)]}], namespace=ns)

    write_service(mesh, mode, name, [v1, v2], rule, vs_to("v1"))
    await client.wait_routed(port, host, only("v1"), within=ROUTE_TIMEOUT, describe=mesh.diagnostics(mode))

    mesh.pilot.stop(check=True)
    mesh.pilot.write(f"{ns}-{name}.yaml", [service_entry(name, host, port, [v1, v2], namespace=ns), rule, vs_to("v2")])
    counts = await client.count(10, port, host)
    assert counts == {"v1": 10}, f"Envoy should keep its config while pilot is down: {counts_str(counts)}"
    mark = mesh.pilot.log_mark()
    mesh.pilot.start(keep_ports=True)
    await mesh.pilot.wait_for_log(
        r"new delta connection for node sidecar~127\.0\.0\.1~app-delta\.", since=mark, within=10.0
    )
    await client.wait_routed(port, host, only("v2"), within=ROUTE_TIMEOUT, describe=mesh.diagnostics(mode))

    (later,) = await backends.start("later")
    later_host = write_service(mesh, mode, "later", [later])
    await client.wait_routed(port, later_host, only("later"), within=ROUTE_TIMEOUT, describe=mesh.diagnostics(mode))
