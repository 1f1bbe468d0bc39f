"""Informer resilience against the fake API server over real HTTP: initial sync from (paged) lists, watches
closed by the server resumed from the last resourceVersion, 410 Gone answered by a relist whose diff
deletes what vanished, bookmarks, silent watches, API errors retried with backoff while /ready says what it
waits for, noise that is not a change, and API discovery of the served Istio version."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pilot.model.config import ConfigKey
from pilot.server import PilotServer
from pilot.sources.kube.informer import Informer
from tests.kube import objects as o
from tests.kube.conftest import FAST
from tests.kube.harness import FakeApiServer, serve_api, write_kubeconfig

pytestmark = pytest.mark.timeout(30)

REVIEWS = "reviews.default.svc.cluster.local"


async def until(predicate: Callable[[], object], within: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {within:g}s waiting for {what}"
        await asyncio.sleep(0.01)


def events(pilot: PilotServer, kind: str, event: str) -> int:
    """pilot_k8s_reg_events for one registry kind and event."""
    return pilot.discovery.counters[f"pilot_k8s_reg_events{{type={kind},event={event}}}"]


def informer(pilot: PilotServer, kind: str) -> Informer:
    assert pilot.kube is not None
    return pilot.kube.informers[kind]


async def test_initial_sync_reads_paged_lists_of_every_kind(api: FakeApiServer, start_pilot: Any) -> None:
    api.apply(o.namespace("default"))
    api.apply(o.node("node-1", **{"topology.kubernetes.io/zone": "z1"}))
    for i in range(5):
        api.apply(o.service(f"svc-{i}", ip=f"10.96.0.{i + 1}"))
        api.apply(o.pod(f"pod-{i}", ip=f"10.1.0.{i + 1}", app=f"svc-{i}"))
        api.apply(o.endpoint_slice(f"svc-{i}", [(f"10.1.0.{i + 1}", True, f"pod-{i}")]))
    api.apply(o.virtual_service("reviews", REVIEWS))
    api.apply(o.destination_rule("reviews", REVIEWS))
    api.apply(o.service_entry("ext", "ext.example.com", ["10.2.0.1"]))
    api.apply(o.workload_entry("we-1", "10.2.0.9", "ext"))
    api.apply(o.gateway("gw"))
    api.apply(o.sidecar())

    pilot = await start_pilot(informer=dataclasses.replace(FAST, page_size=2))

    keys = pilot.store.snapshot().keys()
    kinds = {k.kind for k in keys}
    assert kinds == {
        "Namespace", "Node", "Service", "Pod", "EndpointSlice",
        "VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry", "Gateway", "Sidecar",
    }  # fmt: skip
    assert len(keys) == 2 + 15 + 6
    assert all(pilot.store.get(k).source == "kubernetes" for k in keys)  # type: ignore[union-attr]
    # Five services in pages of two: three list requests, the later ones with the continue token.
    service_lists = api.requests("list", "services")
    assert len(service_lists) == 3 and "continue" in service_lists[-1].query
    assert all(r.query.get("limit") == "2" for r in service_lists)
    # Watches start at the list's resourceVersion and ask for bookmarks.
    await until(lambda: api.requests("watch", "services"), what="the Service watch")
    watch = api.requests("watch", "services")[0]
    assert watch.query["resourceVersion"] == informer(pilot, "Service").resource_version
    assert watch.query["allowWatchBookmarks"] == "true" and int(watch.query["timeoutSeconds"]) >= 300
    assert informer(pilot, "VirtualService").resource.api_version == "networking.istio.io/v1"
    assert events(pilot, "Service", "add") == 5
    assert pilot.discovery.counters["pilot_k8s_cfg_events{type=VirtualService,event=add}"] == 1
    services = pilot.discovery.current.services if pilot.discovery.current else {}
    assert {f"svc-{i}.default.svc.cluster.local" for i in range(5)} <= set(services)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{pilot.monitoring_port}/metrics") as response:
            metrics = await response.text()
    assert 'pilot_k8s_reg_events{event="add",type="Service"} 5\n' in metrics  # labels sorted, as istiod's
    assert 'pilot_k8s_cfg_events{event="add",type="VirtualService"} 1\n' in metrics


@pytest.mark.parametrize("abort", [False, True], ids=["closed", "reset"])
async def test_a_watch_closed_by_the_server_resumes_from_the_last_version_without_loss(
    api: FakeApiServer, start_pilot: Any, abort: bool
) -> None:
    api.apply(o.service("reviews"))
    api.apply(o.endpoint_slice("reviews", [("10.1.0.1", True)]))
    pilot = await start_pilot()
    slices = informer(pilot, "EndpointSlice")
    await until(lambda: api.open_watches("endpointslices") == 1, what="the EndpointSlice watch")
    version_before = slices.resource_version

    assert api.drop_watches("endpointslices", abort=abort) == 1
    # Written while no watch is open: only a resume from the last resourceVersion can bring them.
    api.apply(o.endpoint_slice("reviews", [("10.1.0.1", True), ("10.1.0.2", True)]))
    api.apply(o.endpoint_slice("reviews", [("10.1.0.2", True)]))
    api.apply(o.endpoint_slice("reviews", [("10.1.0.2", True), ("10.1.0.3", True)], suffix="def"))

    await until(lambda: len(api.requests("watch", "endpointslices")) == 2, what="the second watch")
    resumed = api.requests("watch", "endpointslices")[1]
    assert resumed.query["resourceVersion"] == version_before
    await until(lambda: slices.resource_version == str(api.revision), what="the informer to catch up")
    assert slices.lists == 1, "a closed watch must resume, not relist"
    assert events(pilot, "EndpointSlice", "update") == 2 and events(pilot, "EndpointSlice", "add") == 2
    index = pilot.env.endpoints.get(REVIEWS, "default")
    addresses = sorted(ep.address for eps in index.by_port.values() for ep in eps)
    assert addresses == ["10.1.0.2", "10.1.0.3"]


async def test_410_gone_relists_and_diffs_deletions_updates_and_additions(api: FakeApiServer, start_pilot: Any) -> None:
    for name, ip in (("a", "10.96.0.1"), ("b", "10.96.0.2"), ("c", "10.96.0.3")):
        api.apply(o.service(name, ip=ip))
    pilot = await start_pilot()
    services = informer(pilot, "Service")
    await until(lambda: api.open_watches("services") == 1, what="the Service watch")
    before = dict(pilot.discovery.counters)

    api.drop_watches("services")
    api.delete("Service", "b")
    api.apply(o.service("c", ip="10.96.0.3", port=81))
    api.apply(o.service("d", ip="10.96.0.4"))
    api.compact()  # the informer's resourceVersion is gone: its next watch gets ERROR 410 Expired

    await until(lambda: services.lists == 2, what="a relist")
    await until(lambda: services.synced.is_set() and services.resource_version == str(api.revision), what="resync")
    assert services.expired == 1
    delta = {k: v - before.get(k, 0) for k, v in pilot.discovery.counters.items() if k.startswith("pilot_k8s")}
    assert {k: v for k, v in delta.items() if v} == {
        "pilot_k8s_reg_events{type=Service,event=delete}": 1,
        "pilot_k8s_reg_events{type=Service,event=update}": 1,
        "pilot_k8s_reg_events{type=Service,event=add}": 1,
    }, "a relist delivers exactly the difference: nothing lost, nothing repeated"
    names = {k.name for k in pilot.store.snapshot() if k.kind == "Service"}
    assert names == {"a", "c", "d"}
    assert pilot.store.get(ConfigKey("Service", "default", "c")).spec["spec"]["ports"][0]["port"] == 81  # type: ignore[union-attr]


async def test_a_bookmark_moves_the_resume_point_past_a_compaction(api: FakeApiServer, start_pilot: Any) -> None:
    api.apply(o.service("a"))
    pilot = await start_pilot()
    services = informer(pilot, "Service")
    await until(lambda: api.open_watches("services") == 1, what="the Service watch")
    for i in range(3):  # other resources move the cluster's resourceVersion on
        api.apply(o.pod(f"p-{i}", app="x"))
    assert int(services.resource_version) < api.revision
    assert api.bookmark() >= 1
    await until(lambda: services.resource_version == str(api.revision), what="the bookmark's version")
    api.compact()
    api.drop_watches("services")
    await until(lambda: len(api.requests("watch", "services")) == 2, what="the resumed watch")
    api.apply(o.service("b", ip="10.96.0.9"))
    await until(lambda: pilot.store.get(ConfigKey("Service", "default", "b")) is not None, what="service b")
    assert services.expired == 0 and services.lists == 1, "resumed from the bookmark, so no 410 and no relist"


async def test_a_silent_watch_is_restarted_from_its_version(api: FakeApiServer, start_pilot: Any) -> None:
    pilot = await start_pilot(informer=dataclasses.replace(FAST, silence_deadline=0.2))
    services = informer(pilot, "Service")
    await until(lambda: len(api.requests("watch", "services")) >= 3, what="restarted watches")
    assert services.lists == 1
    assert {r.query["resourceVersion"] for r in api.requests("watch", "services")} == {services.resource_version}
    api.apply(o.service("late"))
    await until(lambda: pilot.store.get(ConfigKey("Service", "default", "late")) is not None, what="a later event")


async def test_api_errors_back_off_and_ready_names_the_informer_it_waits_for(
    api: FakeApiServer, start_pilot: Any
) -> None:
    api.apply(o.service("a"))
    api.fail("pods", 500, times=None)
    pilot = await start_pilot(wait=False)
    starting = asyncio.create_task(pilot.start())
    try:
        await until(lambda: pilot.monitoring_port > 0, what="the monitoring port")
        url = f"http://127.0.0.1:{pilot.monitoring_port}/ready"
        async with aiohttp.ClientSession() as http:
            body = ""

            async def not_ready() -> bool:
                nonlocal body
                async with http.get(url) as response:
                    body = await response.text()
                    failing = "Pod (v1): list failed: 500" in body
                    return response.status == 503 and failing and "listing" not in body  # the others synced

            deadline = time.monotonic() + 5
            while not await not_ready():
                assert time.monotonic() < deadline, f"/ready never named the failing informer: {body!r}"
                await asyncio.sleep(0.02)
            assert "Service (v1)" not in body, f"only the informers not synced are named: {body!r}"
            assert pilot.grpc_port == 0, "xDS must not accept before every informer has synced"
            # Retries back off: each gap at least half its doubling ceiling (0.05 s initial, 0.5 s cap).
            await until(lambda: len(api.requests("list", "pods")) >= 6, what="six attempts")
            times = [r.at for r in api.requests("list", "pods")]
            gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
            floors = [min(0.05 * 2**i, 0.5) / 2 for i in range(len(gaps))]
            assert all(gap >= floor * 0.9 for gap, floor in zip(gaps, floors, strict=True)), gaps

            api.heal()
            await asyncio.wait_for(starting, 5)
            async with http.get(url) as response:
                assert response.status == 200
    finally:
        if not starting.done():
            starting.cancel()
    assert informer(pilot, "Pod").errors >= 2
    # A watch error later is retried too, and events keep flowing.
    api.fail("services", 503, times=2)
    api.drop_watches("services")
    api.apply(o.service("b", ip="10.96.0.2"))
    await until(lambda: pilot.store.get(ConfigKey("Service", "default", "b")) is not None, what="service b")


async def test_changes_pilot_does_not_read_are_not_changes(api: FakeApiServer, start_pilot: Any) -> None:
    api.apply(o.pod("p", ip="10.1.0.7", app="x", node_name="n1"))
    api.apply(o.node("n1", **{"topology.kubernetes.io/zone": "z1"}))
    pilot = await start_pilot()
    revision = pilot.store.revision
    before = dict(pilot.discovery.counters)
    pod = api.get("Pod", "p")
    assert pod is not None
    status = {**pod["status"], "conditions": [{"type": "Ready", "status": "False"}], "phase": "Running"}
    api.set_status("Pod", "p", status)  # readiness churn: pilot reads readiness from EndpointSlices
    node = o.node("n1", **{"topology.kubernetes.io/zone": "z1"})
    node["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-01-01T00:01:00Z"
    api.apply(node)  # a heartbeat
    api.apply(o.pod("p", ip="10.1.0.7", app="x", node_name="n1"))  # re-applied unchanged: new managedFields only
    api.apply(o.service("fence"))
    await until(lambda: pilot.store.get(ConfigKey("Service", "default", "fence")) is not None, what="the fence")
    assert pilot.store.revision == revision + 1, "only the fence changed the store"
    changed = {k for k, v in pilot.discovery.counters.items() if k.startswith("pilot_k8s") and before.get(k) != v}
    assert changed == {"pilot_k8s_reg_events{type=Service,event=add}"}
    stored = pilot.store.get(ConfigKey("Pod", "default", "p"))
    assert stored is not None and "managedFields" not in stored.spec["metadata"]
    assert stored.spec["status"] == {"podIP": "10.1.0.7"} and stored.spec["spec"] == {"nodeName": "n1"}


async def test_the_served_istio_version_is_discovered(tmp_path: Path, start_pilot: Any) -> None:
    async with serve_api(istio_versions=("v1beta1", "v1alpha3")) as (old_api, url):
        old_api.apply(o.virtual_service("reviews", REVIEWS, version="v1beta1"))
        kubeconfig = write_kubeconfig(tmp_path / "old-cluster", url)
        pilot = await start_pilot(kubeconfig_path=kubeconfig)
        try:
            vs = informer(pilot, "VirtualService")
            assert vs.resource.api_version == "networking.istio.io/v1beta1"
            paths = {r.path for r in old_api.requests(plural="virtualservices")}
            assert paths == {"/apis/networking.istio.io/v1beta1/virtualservices"}
            stored = pilot.store.get(ConfigKey("VirtualService", "default", "reviews"))
            assert stored is not None and stored.api_version == "networking.istio.io/v1beta1"
        finally:
            await pilot.stop()
