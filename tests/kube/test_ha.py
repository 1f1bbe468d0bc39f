"""HA on one machine: two pilot processes on one (fake) cluster, simulated proxies spread over them, the
Lease holder killed with SIGKILL. Its proxies reconnect to the survivor (as a Service in front of the
replicas would send them) and resync to exactly the cluster's state, including changes made while they
were disconnected; the survivor takes the Lease once it expires and writes status from then on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.kube import objects as o
from tests.kube.ads import Proxy
from tests.kube.harness import FakeApiServer
from tests.kube.process import KubePilotProcess, pilot_env

pytestmark = pytest.mark.timeout(60)

REVIEWS = "reviews.default.svc.cluster.local"
PROXIES_PER_PILOT = 4


async def until(predicate: Callable[[], object], within: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {within:g}s waiting for {what}"
        await asyncio.sleep(0.02)


def holder(api: FakeApiServer) -> str:
    lease = api.get("Lease", "pilot-status-leader", "istio-system")
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def validation(api: FakeApiServer, name: str) -> str | None:
    obj = api.get("VirtualService", name) or {}
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PassedValidation":
            return str(cond.get("status"))
    return None


def same_resources(a: Proxy, b: Proxy) -> bool:
    """The same clusters, endpoints and routes, byte for byte (version strings are per process)."""

    def encoded(proxy: Proxy) -> tuple[object, ...]:
        clusters = {n: c.SerializeToString(deterministic=True) for n, c in proxy.clusters.items()}
        routes = {n: r.SerializeToString(deterministic=True) for n, r in proxy.routes.items()}
        return clusters, proxy.endpoints, routes, proxy.listeners

    return encoded(a) == encoded(b)


@pytest.fixture
async def pilots(api: FakeApiServer, kubeconfig: Path, tmp_path: Path) -> AsyncIterator[list[KubePilotProcess]]:
    env = pilot_env(PILOT_ENABLE_STATUS="true", PILOT_DEBOUNCE_AFTER="10ms")
    started = [KubePilotProcess(tmp_path, kubeconfig, name=n, env=env) for n in ("pilot-a", "pilot-b")]
    try:
        yield started
    finally:
        problems = []
        for pilot in started:
            if pilot.proc is not None:
                code = await pilot.stop()
                if code != 0:
                    problems.append(f"{pilot.name} exited with {code}:\n{pilot.tail()}")
            if "Traceback" in pilot.log_text():
                problems.append(f"{pilot.name} logged a traceback:\n{pilot.tail()}")
        assert not problems, "\n".join(problems)


async def test_a_killed_leader_hands_over_its_lease_and_its_proxies(
    api: FakeApiServer, pilots: list[KubePilotProcess], proxies: Callable[..., Proxy]
) -> None:
    api.apply(o.namespace("default"))
    api.apply(o.service("reviews", ip="10.96.0.10"))
    api.apply(o.endpoint_slice("reviews", [("10.1.0.1", True), ("10.1.0.2", True)]))
    api.apply(o.virtual_service("reviews", REVIEWS, timeout="5s"))
    a, b = pilots
    await a.start()
    await until(lambda: holder(api) == "pilot-a", what="pilot-a to take the Lease")
    await b.start()
    await until(lambda: validation(api, "reviews") == "True", what="pilot-a's status on reviews")

    fleet: list[Proxy] = []
    for i in range(2 * PROXIES_PER_PILOT):
        target = a if i % 2 == 0 else b
        fleet.append(proxies(target.grpc_port, name=f"app-{i}"))

    def synced(endpoints: list[str], timeout: float) -> Callable[[], bool]:
        return lambda: all(p.eds(REVIEWS) == endpoints and p.route_timeout(host="reviews") == timeout for p in fleet)

    await until(synced(["10.1.0.1:8080", "10.1.0.2:8080"], 5), what="the fleet's first sync")

    await a.kill()
    killed_at = time.monotonic()
    # Changes while a's proxies are cut off, and an object that needs status from the next leader.
    api.apply(o.endpoint_slice("reviews", [("10.1.0.2", True), ("10.1.0.3", True)]))
    api.apply(o.virtual_service("reviews", REVIEWS, timeout="7s"))
    broken = o.virtual_service("broken", REVIEWS)
    broken["spec"]["http"][0]["route"][0]["weight"] = -1
    api.apply(broken)
    orphans = [p for p in fleet if p.port == a.grpc_port]
    for proxy in orphans:  # the Service in front of the replicas now sends new connections to b
        proxy.reconnect_to(b.grpc_port)

    await until(synced(["10.1.0.2:8080", "10.1.0.3:8080"], 7), what="every proxy, b's and a's, to converge on b")
    assert all(p.connected_to[-1] == b.grpc_port for p in fleet)
    assert all(p.streams == 2 for p in orphans) and all(p.streams == 1 for p in fleet if p not in orphans)
    reference = fleet[1]
    for proxy in fleet:
        assert sorted(proxy.clusters) == sorted(reference.clusters), proxy.node_id
        assert proxy.endpoints == reference.endpoints, proxy.node_id
        assert same_resources(proxy, reference), f"{proxy.node_id}: other resources than {reference.node_id}"

    await until(lambda: holder(api) == "pilot-b", what="pilot-b to take the expired Lease")
    took = time.monotonic() - killed_at
    await until(lambda: validation(api, "broken") == "False", what="pilot-b's status on the new object")
    after = [r.user_agent for r in api.requests("patch", "virtualservices") if r.name == "broken"]
    assert after and set(after) == {"pilot/0.1 (pilot-b)"}
    assert took < 5, f"the Lease (1.5 s) took {took:.1f}s to change hands"
    print(f"\nHA: Lease handed over {took:.2f}s after SIGKILL of the leader")


async def test_pilot_serve_with_kubeconfig_answers_ready_with_reasons(
    api: FakeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    """The CLI path: --kubeconfig turns Kubernetes on; /ready is 503 with the informer it waits for."""
    import aiohttp

    api.fail("endpointslices", 500, times=None)
    pilot = KubePilotProcess(tmp_path, kubeconfig, name="pilot-cli", env=pilot_env())
    starting = asyncio.create_task(pilot.start(ready_within=30))
    try:
        body = ""
        async with aiohttp.ClientSession() as http:

            async def waiting() -> bool:
                nonlocal body
                if not pilot.monitoring_port:
                    return False
                try:
                    async with http.get(f"http://127.0.0.1:{pilot.monitoring_port}/ready") as response:
                        body = await response.text()
                        failing = "EndpointSlice (discovery.k8s.io/v1): list failed: 500"
                        # Once the others synced, only the informer that cannot is named.
                        return response.status == 503 and failing in body and "Service (v1)" not in body
                except aiohttp.ClientError:
                    return False

            deadline = time.monotonic() + 15
            while not await waiting():
                assert time.monotonic() < deadline, f"no 503 naming only the EndpointSlice informer: {body!r}"
                await asyncio.sleep(0.05)
        api.heal()
        await asyncio.wait_for(starting, 30)
    finally:
        if not starting.done():
            starting.cancel()
        code = await pilot.stop()
    assert code == 0, pilot.tail()
    assert "Traceback" not in pilot.log_text()


def test_pilot_serve_refuses_what_it_cannot_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pilot.cli import main

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    bad_selectors = tmp_path / "selectors.yaml"
    bad_selectors.write_text("- matchExpressions: [{key: a, operator: Maybe}]\n")
    cases = {
        "nothing to serve": ["serve"],
        "--kubeconfig": ["serve", "--kubeconfig", str(tmp_path / "missing")],
        "needs Kubernetes sources": ["serve", "--config-dir", str(tmp_path), "--discovery-selectors", "x.yaml"],
        "operator: must be one of": ["serve", "--kubeconfig", str(kubeconfig), "--discovery-selectors",
                                     str(bad_selectors)],
        "not supported with Kubernetes": ["serve", "--kubeconfig", str(kubeconfig), "--workers", "2"],
    }  # fmt: skip
    for expected, args in cases.items():
        assert main(args) == 2, args
        assert expected in capsys.readouterr().err, args
    monkeypatch.setenv("PILOT_LEADER_LEASE_DURATION", "soon")
    assert main(["serve", "--kubeconfig", str(kubeconfig)]) == 2
    assert "PILOT_LEADER_LEASE_DURATION='soon'" in capsys.readouterr().err
