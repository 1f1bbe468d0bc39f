"""End to end through an ingress gateway: pilot → real Envoy (router, istio=ingressgateway) → aiohttp backends.

One pilot and one Envoy serve the whole module. A single Gateway (hosts "*") opens one port; each scenario
uses its own hostnames (ServiceEntry + DestinationRule + VirtualService bound to the gateway) and its own
backends, so scenarios do not interfere.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.e2e.harness import (
    Backends,
    EnvoyProcess,
    HttpClient,
    PilotProcess,
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

GATEWAY = "e2e-gateway"
ROUTER_NODE = "router~127.0.0.1~ingress-1.default~default.svc.cluster.local"
ROUTE_TIMEOUT = 10.0  # first routing of a new host: file write → watcher → debounce → push → Envoy
SWITCH_DEADLINE = 2.0  # a live edit must take effect within this (the suite's propagation budget)


@dataclass
class GatewayEnv:
    pilot: PilotProcess
    envoy: EnvoyProcess
    port: int  # the Gateway server port Envoy listens on (0.0.0.0_<port>)

    def diagnostics(self) -> str:
        return self.pilot.diagnostics() + "\n" + self.envoy.diagnostics()


@pytest.fixture(scope="module")
def gw(pilot_factory: Callable[..., PilotProcess], envoy_factory: Callable[..., EnvoyProcess]) -> GatewayEnv:
    port = free_port("0.0.0.0")
    gateway = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": GATEWAY, "namespace": "default"},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [{"port": {"number": port, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
        },
    }
    pilot = pilot_factory({"gateway.yaml": gateway})
    envoy = envoy_factory(pilot, ROUTER_NODE, {"istio": "ingressgateway", "app": "istio-ingressgateway"}, "gateway")
    envoy.wait_listener_sync(f"0.0.0.0_{port}", f"0.0.0.0:{port}")
    return GatewayEnv(pilot, envoy, port)


def bound(gateway_ref: str = GATEWAY) -> list[str]:
    return [gateway_ref]


async def test_weighted_split_80_20(gw: GatewayEnv, backends: Backends, client: HttpClient) -> None:
    host = "split.example.com"
    v1, v2 = await backends.start("v1", "v2")
    gw.pilot.write(
        "split.yaml",
        [
            service_entry("split", host, 80, [v1, v2]),
            destination_rule("split", host, ["v1", "v2"]),
            virtual_service(
                "split",
                [host],
                [{"route": [route_to(host, "v1", 80), route_to(host, "v2", 20)]}],
                gateways=bound(),
            ),
        ],
    )
    # Both subsets' clusters have endpoints once a batch shows both and nothing else.
    await client.wait_routed(gw.port, host, all_of("v1", "v2"), batch=40, within=ROUTE_TIMEOUT, describe=gw.diagnostics)

    counts = await client.count(400, gw.port, host)
    print(f"weighted 80/20 over 400 requests: {counts_str(counts)}")
    assert set(counts) == {"v1", "v2"}, f"every request should reach v1 or v2: {counts_str(counts)}"
    fraction = counts["v1"] / 400
    assert 0.70 <= fraction <= 0.90, f"v1 fraction {fraction:.3f} outside 0.70..0.90 ({counts_str(counts)})"


async def test_header_match_routes_to_v3(gw: GatewayEnv, backends: Backends, client: HttpClient) -> None:
    host = "headers.example.com"
    v1, v2, v3 = await backends.start("v1", "v2", "v3")
    gw.pilot.write(
        "headers.yaml",
        [
            service_entry("headers", host, 80, [v1, v2, v3]),
            destination_rule("headers", host, ["v1", "v2", "v3"]),
            virtual_service(
                "headers",
                [host],
                [
                    {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [route_to(host, "v3")]},
                    {"route": [route_to(host, "v1", 50), route_to(host, "v2", 50)]},
                ],
                gateways=[f"default/{GATEWAY}"],
            ),
        ],
    )
    jason = {"end-user": "jason"}
    await client.wait_routed(gw.port, host, only("v3"), headers=jason, within=ROUTE_TIMEOUT, describe=gw.diagnostics)
    await client.wait_routed(gw.port, host, all_of("v1", "v2"), batch=30, within=ROUTE_TIMEOUT)

    with_header = await client.send(50, gw.port, host, "/reviews/1", headers=jason)
    assert {r.key for r in with_header} == {"v3"}, [r.key for r in with_header]
    assert all(r.body["headers"].get("end-user") == "jason" for r in with_header)
    assert all(r.body["path"] == "/reviews/1" for r in with_header)

    for headers in ({"end-user": "mallory"}, {"end-user": "JASON"}, {}):
        counts = await client.count(50, gw.port, host, headers=headers)
        assert set(counts) <= {"v1", "v2"} and counts["v1"] and counts["v2"], (headers, counts_str(counts))


async def test_fault_abort(gw: GatewayEnv, backends: Backends, client: HttpClient) -> None:
    host = "fault.example.com"
    (v1,) = await backends.start("v1")

    def abort(status: int) -> dict:
        return {"abort": {"httpStatus": status, "percentage": {"value": 100}}}

    gw.pilot.write(
        "fault.yaml",
        [
            service_entry("fault", host, 80, [v1]),
            destination_rule("fault", host, ["v1"]),
            virtual_service(
                "fault",
                [host],
                [
                    {"match": [{"uri": {"prefix": "/teapot"}}], "fault": abort(418), "route": [route_to(host, "v1")]},
                    {"match": [{"uri": {"prefix": "/down"}}], "fault": abort(503), "route": [route_to(host, "v1")]},
                    {"route": [route_to(host, "v1")]},
                ],
                gateways=bound(),
            ),
        ],
    )
    await client.wait_routed(
        gw.port, host, only("HTTP 418"), path="/teapot", within=ROUTE_TIMEOUT, describe=gw.diagnostics
    )
    v1.reset()
    assert await client.count(20, gw.port, host, "/teapot/pot") == {"HTTP 418": 20}
    assert await client.count(20, gw.port, host, "/down") == {"HTTP 503": 20}
    assert v1.hits == 0, f"aborted requests must not reach the backend, it saw {v1.hits}"
    assert await client.count(20, gw.port, host, "/fine") == {"v1": 20}
    assert v1.hits == 20


async def test_route_timeout(gw: GatewayEnv, backends: Backends, client: HttpClient) -> None:
    host = "timeout.example.com"
    (slow,) = await backends.start("v1")
    gw.pilot.write(
        "timeout.yaml",
        [
            service_entry("timeout", host, 80, [slow]),
            virtual_service("timeout", [host], [{"route": [route_to(host)], "timeout": "0.3s"}], gateways=bound()),
        ],
    )
    await client.wait_routed(gw.port, host, only("v1"), within=ROUTE_TIMEOUT, describe=gw.diagnostics)

    slow.program(delay=2.0)
    replies = await client.send(3, gw.port, host, "/slow")
    for reply in replies:
        assert reply.status == 504, f"expected Envoy's 504 upstream timeout, got {reply.key}: {reply.body!r}"
        assert 0.25 <= reply.elapsed < 1.5, f"504 after {reply.elapsed:.2f}s; the route timeout is 0.3s"
    print("timeout replies after " + ", ".join(f"{r.elapsed:.2f}s" for r in replies))


async def test_retries(gw: GatewayEnv, backends: Backends, client: HttpClient) -> None:
    host = "retry.example.com"
    (flaky,) = await backends.start("v1")
    gw.pilot.write(
        "retry.yaml",
        [
            service_entry("retry", host, 80, [flaky]),
            virtual_service(
                "retry",
                [host],
                [
                    {
                        "route": [route_to(host)],
                        "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "5xx"},
                    }
                ],
                gateways=bound(),
            ),
        ],
    )
    await client.wait_routed(gw.port, host, only("v1"), within=ROUTE_TIMEOUT, describe=gw.diagnostics)

    # Two failures then a success: the retries hide them.
    flaky.reset()
    flaky.program(fail_next=2)
    reply = await client.get(gw.port, host, "/flaky")
    assert reply.status == 200 and reply.backend == "v1", reply
    assert flaky.hits == 3, f"backend should have seen 1 try + 2 retries, saw {flaky.hits}"

    # attempts: 3 means at most 4 tries: five failures in a row reach the client.
    flaky.reset()
    flaky.program(fail_next=5)
    reply = await client.get(gw.port, host, "/flaky")
    assert reply.status == 503, reply
    assert flaky.hits == 4, f"backend should have seen 1 try + 3 retries, saw {flaky.hits}"


async def _switch(
    client: HttpClient,
    gw: GatewayEnv,
    host: str,
    filename: str,
    content: list[dict],
    target: str,
    label: str,
) -> float:
    """Write ``content`` and measure the time until the first request routed by it (answered by ``target``)."""
    start = time.monotonic()
    gw.pilot.write(filename, content)

    async def routed() -> bool:
        return (await client.get(gw.port, host)).backend == target

    await wait_until(routed, 5.0, interval=0.0, message=f"{host} routed to {target}", describe=gw.diagnostics)
    elapsed = time.monotonic() - start
    record_write_to_routed(label, elapsed)
    # The new config sticks: nothing goes to the old destination any more.
    counts = await client.count(30, gw.port, host)
    assert counts == {target: 30}, counts_str(counts)
    return elapsed


async def test_live_edit_reroutes_quickly(gw: GatewayEnv, backends: Backends, client: HttpClient) -> None:
    host = "live.example.com"
    v1, v2 = await backends.start("v1", "v2")
    common = [service_entry("live", host, 80, [v1, v2]), destination_rule("live", host, ["v1", "v2"])]

    def vs_to(subset: str) -> list[dict]:
        return [*common, virtual_service("live", [host], [{"route": [route_to(host, subset)]}], gateways=bound())]

    gw.pilot.write("live.yaml", vs_to("v1"))
    await client.wait_routed(gw.port, host, only("v1"), batch=20, within=ROUTE_TIMEOUT, describe=gw.diagnostics)

    times = []
    for i, subset in enumerate(["v2", "v1", "v2"]):
        times.append(await _switch(client, gw, host, "live.yaml", vs_to(subset), subset, f"gateway edit {i + 1}"))
    print(f"E2E write->routed: {max(times):.2f}s (gateway live edits: {', '.join(f'{t:.2f}s' for t in times)})")
    assert max(times) < SWITCH_DEADLINE, f"live edit took {max(times):.2f}s to route (budget {SWITCH_DEADLINE}s)"


async def test_removed_endpoint_gets_no_traffic(gw: GatewayEnv, backends: Backends, client: HttpClient) -> None:
    host = "endpoints.example.com"
    a, b, c = await backends.start("a", "b", "c")
    vs = virtual_service("endpoints", [host], [{"route": [route_to(host)]}], gateways=bound())
    gw.pilot.write("endpoints.yaml", [service_entry("endpoints", host, 80, [a, b, c]), vs])
    await client.wait_routed(
        gw.port, host, all_of("a", "b", "c"), batch=30, within=ROUTE_TIMEOUT, describe=gw.diagnostics
    )

    start = time.monotonic()
    gw.pilot.write("endpoints.yaml", [service_entry("endpoints", host, 80, [a, b]), vs])
    await client.wait_routed(gw.port, host, all_of("a", "b"), batch=30, within=5.0, describe=gw.diagnostics)
    print(f"endpoint removal effective after {time.monotonic() - start:.2f}s")

    c.reset()
    counts = await client.count(100, gw.port, host)
    assert set(counts) == {"a", "b"}, counts_str(counts)
    assert c.hits == 0, f"removed endpoint still got {c.hits} requests"


async def test_invalid_virtual_service_is_rejected(gw: GatewayEnv, backends: Backends, client: HttpClient) -> None:
    host = "guarded.example.com"
    side_host = "guarded-side.example.com"
    bad_host = "guarded-bad.example.com"
    v1, v2 = await backends.start("v1", "v2")
    gw.pilot.write(
        "guarded-services.yaml",
        [
            service_entry("guarded", host, 80, [v1, v2]),
            destination_rule("guarded", host, ["v1", "v2"]),
        ],
    )

    def guarded_vs(http: list[dict]) -> dict:
        return virtual_service("guarded", [host], http, gateways=bound())

    def side_vs(subset: str) -> dict:
        return virtual_service("guarded-side", [side_host], [{"route": [route_to(host, subset)]}], gateways=bound())

    gw.pilot.write("guarded-vs.yaml", [guarded_vs([{"route": [route_to(host, "v1")]}])])
    await client.wait_routed(gw.port, host, only("v1"), batch=20, within=ROUTE_TIMEOUT, describe=gw.diagnostics)

    # 1. A new file: a valid VirtualService (doc 0) next to an invalid one (doc 1, negative weight).
    mark = gw.pilot.log_mark()
    bad_weight = virtual_service(
        "guarded-bad",
        [bad_host],
        [{"route": [route_to(host, "v2", -1), route_to(host, "v1", 101)]}],
        gateways=bound(),
    )
    gw.pilot.write("guarded-extra.yaml", [side_vs("v2"), bad_weight])
    line = await gw.pilot.wait_for_log(r"guarded-extra\.yaml\[doc 1\].*VirtualService default/guarded-bad", since=mark)
    print(f"pilot rejected: {line}")
    assert "WARN" in line and "weight" in line, line
    # The valid neighbour was accepted, the invalid object was not, the old routes still hold.
    await client.wait_routed(gw.port, side_host, only("v2"), within=5.0, describe=gw.diagnostics)
    assert await client.count(20, gw.port, bad_host) == {"HTTP 404": 20}
    assert await client.count(50, gw.port, host) == {"v1": 50}

    # 2. The valid VirtualService's file is replaced by invalid versions of it: the last good one is kept.
    invalid_versions = {
        "route and redirect": [{"route": [route_to(host, "v2")], "redirect": {"uri": "/elsewhere"}}],
        "negative weight": [{"route": [route_to(host, "v2", -1), route_to(host, "v1", 101)]}],
    }
    for flip, (what, http) in enumerate(invalid_versions.items()):
        mark = gw.pilot.log_mark()
        gw.pilot.write("guarded-vs.yaml", [guarded_vs(http)])
        line = await gw.pilot.wait_for_log(r"guarded-vs\.yaml\[doc 0\].*VirtualService default/guarded:", since=mark)
        print(f"pilot rejected ({what}): {line}")
        assert "WARN" in line, line
        # Barrier: a later valid change is routed, so pilot has pushed since it read the invalid file.
        barrier = "v1" if flip % 2 == 0 else "v2"
        gw.pilot.write("guarded-extra.yaml", [side_vs(barrier), bad_weight])
        await client.wait_routed(gw.port, side_host, only(barrier), within=5.0, describe=gw.diagnostics)
        counts = await client.count(50, gw.port, host)
        assert counts == {"v1": 50}, f"after an invalid edit ({what}) the last good VS must be served: {counts}"

    # 3. A valid version is accepted again.
    gw.pilot.write("guarded-vs.yaml", [guarded_vs([{"route": [route_to(host, "v2")]}])])
    await client.wait_routed(gw.port, host, only("v2"), batch=20, within=5.0, describe=gw.diagnostics)


async def test_xds_shape_and_debug_endpoints(gw: GatewayEnv, backends: Backends, client: HttpClient) -> None:
    """istiod's names and shapes, seen from Envoy's admin API, and pilot's debug view of the same proxy."""
    host = "shape.example.com"
    v1, v2 = await backends.start("v1", "v2")
    gw.pilot.write(
        "shape.yaml",
        [
            service_entry("shape", host, 80, [v1, v2]),
            destination_rule("shape", host, ["v1", "v2"]),
            virtual_service("shape", [host], [{"route": [route_to(host, "v2")]}], gateways=bound()),
        ],
    )
    await client.wait_routed(gw.port, host, only("v2"), within=ROUTE_TIMEOUT, describe=gw.diagnostics)
    dump = gw.envoy.config_dump()

    # LDS: the Gateway server port → listener 0.0.0.0_<port> at 0.0.0.0:<port>, HCM with RDS http.<port>.
    listeners = {
        item["name"]: item["active_state"]["listener"]
        for item in _dump_section(dump, "ListenersConfigDump", "dynamic_listeners")
        if "active_state" in item
    }
    name = f"0.0.0.0_{gw.port}"
    assert name in listeners, sorted(listeners)
    assert listeners[name]["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": gw.port}
    assert f'"route_config_name": "http.{gw.port}"' in json.dumps(listeners[name], indent=1), listeners[name]

    # RDS: http.<port> has a virtual host for the VirtualService's host.
    routes = {
        item["route_config"]["name"]: item["route_config"]
        for item in _dump_section(dump, "RoutesConfigDump", "dynamic_route_configs")
    }
    assert f"http.{gw.port}" in routes, sorted(routes)
    domains = {d for vhost in routes[f"http.{gw.port}"].get("virtual_hosts", []) for d in vhost.get("domains", [])}
    assert host in domains or f"{host}:*" in domains, sorted(domains)

    # CDS: outbound|<port>|<subset>|<fqdn>, plus the subset-less cluster.
    clusters = {
        item["cluster"]["name"] for item in _dump_section(dump, "ClustersConfigDump", "dynamic_active_clusters")
    }
    for subset in ("", "v1", "v2"):
        assert f"outbound|80|{subset}|{host}" in clusters, sorted(c for c in clusters if host in c)

    # EDS: each subset cluster holds only the endpoints whose labels match the subset.
    text = gw.envoy.clusters_text()
    for subset, member, other in (("v1", v1, v2), ("v2", v2, v1)):
        prefix = f"outbound|80|{subset}|{host}::"
        assert f"{prefix}{member.address}::" in text, f"{subset} lacks {member}:\n{_lines(text, host)}"
        assert f"{prefix}{other.address}::" not in text, f"{subset} has {other}:\n{_lines(text, host)}"
    for backend in (v1, v2):
        assert f"outbound|80||{host}::{backend.address}::" in text, _lines(text, host)

    # pilot's debug endpoints describe the same proxy and config; Envoy has ACKed everything sent.
    adsz = await gw.pilot.debug("/debug/adsz")
    assert any(c["labels"].get("istio") == "ingressgateway" for c in adsz["clients"]), adsz

    async def in_sync() -> bool:
        syncz = await gw.pilot.debug("/debug/syncz")
        entries = [e for e in syncz if e["proxy"] == "ingress-1.default"]
        assert len(entries) == 1, syncz
        entry = entries[0]
        for kind in ("cluster", "listener", "route", "endpoint"):
            assert entry[f"{kind}_sent"] and entry[f"{kind}_sent"] == entry[f"{kind}_acked"], entry
        errors = {t: r["lastError"] for t, r in entry.get("resources", {}).items() if r.get("lastError")}
        assert not errors, f"Envoy rejected pilot's config (NACK): {errors}"
        return True

    await wait_until(in_sync, 5.0, message="syncz: every type sent == acked, no NACK error", describe=gw.diagnostics)
    configz = json.dumps(await gw.pilot.debug("/debug/configz"))
    assert '"shape"' in configz and GATEWAY in configz
    registryz = json.dumps(await gw.pilot.debug("/debug/registryz"))
    assert host in registryz
    metrics = await gw.pilot.debug("/metrics")
    assert isinstance(metrics, str) and "pilot_xds" in metrics, metrics[:500]


def _dump_section(dump: dict, type_suffix: str, field: str) -> list[dict]:
    for config in dump["configs"]:
        if config["@type"].endswith("." + type_suffix):
            return config.get(field, [])
    return []


def _lines(text: str, needle: str) -> str:
    return "\n".join(line for line in text.splitlines() if needle in line)[:4000]
