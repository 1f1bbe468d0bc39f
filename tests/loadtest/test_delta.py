"""The Delta ADS client: against pilot once it serves Delta, and now against the transport floor."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from pilot.loadtest.fleet import FleetSpec
from pilot.loadtest.floor import FloorServer, build_script, close, start
from pilot.loadtest.probe import delta_unsupported
from pilot.loadtest.proxy import Shared, SimProxy
from pilot.loadtest.wire import CDS, EDS, LDS, RDS, WILDCARD
from tests.loadtest.conftest import ServedMesh

DEADLINE = 15.0


def test_delta_fleet_against_pilot(served_mesh: ServedMesh, tmp_path: Path) -> None:
    from pilot.cli import main

    reason = asyncio.run(delta_unsupported("127.0.0.1", served_mesh.grpc_port))
    if reason is not None and reason.startswith("UNIMPLEMENTED"):
        pytest.skip(f"pilot does not serve Delta ADS yet ({reason})")
    assert reason is None, reason
    path = tmp_path / "delta.json"
    argv = [
        "loadtest", "run", "--protocol", "delta",
        "--config-dir", str(served_mesh.config_dir), "--xds-addr", served_mesh.xds_addr,
        "--proxies", "12", "--routers", "1", "--churn-changes", "2", "--vs-edits", "1",
        "--settle", "0.2", "--timeout", "30", "--no-progress", "--json", str(path),
    ]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(path.read_text())
    assert report["connect_storm"]["synced"] == 12
    assert report["endpoint_churn"]["summary"]["converged"] == report["endpoint_churn"]["summary"]["expected"] > 0
    assert report["vs_edits"]["summary"]["converged"] == report["vs_edits"]["summary"]["expected"] > 0


async def _sync(proxies: list[SimProxy], shared: Shared) -> list[asyncio.Task[None]]:
    for p in proxies:
        p.awaiting_sync = True
    shared.synced.reset(len(proxies))
    tasks = [asyncio.create_task(p.run()) for p in proxies]
    await asyncio.wait_for(shared.synced.done.wait(), DEADLINE)
    assert not [p.error for p in proxies if p.error]
    return tasks


async def _stop(proxies: list[SimProxy], tasks: list[asyncio.Task[None]]) -> None:
    for p in proxies:
        p.stopping = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_delta_client_against_the_transport_floor(served_mesh: ServedMesh) -> None:
    nodes = FleetSpec(4, served_mesh.spec.namespace_names, routers=1).nodes()  # every group of the fleet
    # SotW proxies record what pilot sends them...
    sotw = Shared("127.0.0.1", served_mesh.grpc_port, "sotw")
    recorders = [SimProxy(n, sotw) for n in nodes]
    for p in recorders:
        p.start_recording()
    tasks = await _sync(recorders, sotw)
    await _stop(recorders, tasks)
    recording = {p.node.group: p.recorded for p in recorders if p.recorded}
    # ... which the floor replays, re-wrapped as Delta, to Delta proxies of the same groups.
    floor = FloorServer(build_script(recording, "sotw", "delta"), keep_requests=1000)
    server, port = await start(floor, "127.0.0.1")
    delta = Shared("127.0.0.1", port, "delta")
    proxies = [SimProxy(n, delta) for n in nodes]
    try:
        tasks = await _sync(proxies, delta)
        for twin, p in zip(recorders, proxies, strict=True):
            assert p.eds_names == twin.eds_names and p.eds_names
            assert p.route_names == twin.route_names
            for kind in range(4):
                assert dict(p.held[kind]) == dict(twin.held[kind])
            assert set(p.resource_versions[0]) == set(p.held[0])

        first_stream = [r for n, r in floor.requests if n == 1]
        first = first_stream[0]
        assert (first.type_url, list(first.resource_names_subscribe)) == (CDS, [WILDCARD])
        assert first.node.id == nodes[0].node_id and not first.response_nonce
        assert all(not r.HasField("node") for r in first_stream[1:])  # the node travels once per stream
        subscribe = {r.type_url: list(r.resource_names_subscribe) for r in first_stream if r.resource_names_subscribe}
        assert subscribe[EDS] == sorted(proxies[0].eds_names)
        assert subscribe[LDS] == [WILDCARD]
        assert subscribe[RDS] == sorted(proxies[0].route_names)
        acks = [r for r in first_stream if r.response_nonce]
        assert {r.type_url for r in acks} == {CDS, EDS, LDS, RDS}
        assert all(not r.resource_names_subscribe and not r.resource_names_unsubscribe for r in acks)

        # Reconnect: the first request of each type on the new stream carries every held version.
        before = len(floor.requests)
        for p in proxies:
            p.awaiting_sync = True
        delta.synced.reset(len(proxies))
        for p in proxies:
            p.drop_stream()
        await asyncio.wait_for(delta.synced.done.wait(), DEADLINE)
        again = [(n, r) for n, r in floor.requests[before:]]
        stream = min(n for n, _ in again if any(r.node.id == nodes[0].node_id for m, r in again if m == n))
        firsts: dict[str, discovery_pb2.DeltaDiscoveryRequest] = {}
        for n, r in again:
            if n == stream:
                firsts.setdefault(r.type_url, r)
        assert dict(firsts[CDS].initial_resource_versions) == dict(proxies[0].resource_versions[0])
        assert dict(firsts[EDS].initial_resource_versions) == dict(proxies[0].resource_versions[1])
        assert sorted(firsts[EDS].resource_names_subscribe) == sorted(proxies[0].eds_names)
        assert list(firsts[LDS].resource_names_subscribe) == [WILDCARD]
        assert all(not r.response_nonce for r in firsts.values())
    finally:
        await _stop(proxies, tasks)
        await close(server)
