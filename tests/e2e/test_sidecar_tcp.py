"""A sidecar's TCP listener follows the VirtualService tcp routes of its service (pilot.xds.lds_l4), through a
real Envoy: a weighted split between two subsets, then a live edit sending everything to one.

The backends speak HTTP, which a tcp_proxy forwards byte for byte, so each connection tells which backend
it reached. The Sidecar binds the TCP port on 127.0.0.1 (captureMode NONE): no capture rules are needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.e2e.harness import (
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
    only,
)

pytestmark = pytest.mark.timeout(90)

NODE = "sidecar~127.0.0.1~client-1.default~default.svc.cluster.local"
HOST = "db.default.svc.cluster.local"
WITHIN = 10.0


def tcp_service(port: int, target_port: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {
            "clusterIP": "10.96.7.7",
            "selector": {"app": "db"},
            "ports": [{"name": "tcp", "port": port, "targetPort": target_port, "protocol": "TCP"}],
        },
    }


def tcp_routes(v1: int, v2: int) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {
            "hosts": [HOST],
            "tcp": [
                {
                    "route": [
                        {"destination": {"host": HOST, "subset": "v1"}, "weight": v1},
                        {"destination": {"host": HOST, "subset": "v2"}, "weight": v2},
                    ]
                }
            ],
        },
    }


def bound_sidecar(port: int) -> dict:
    """A Sidecar binding the TCP port on 127.0.0.1 without capture."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": "default"},
        "spec": {
            "egress": [
                {
                    "port": {"number": port, "protocol": "TCP", "name": "tcp"},
                    "bind": "127.0.0.1",
                    "captureMode": "NONE",
                    "hosts": ["./*"],
                }
            ]
        },
    }


async def test_weighted_tcp_route_and_a_live_edit(
    pilot_factory: Callable[..., PilotProcess],
    envoy_factory: Callable[..., EnvoyProcess],
    backends: Backends,
    client: HttpClient,
) -> None:
    port = free_port()
    pilot = pilot_factory({"sidecar.yaml": bound_sidecar(port)})
    v1, v2 = await backends.start("v1", "v2", same_port=True)
    slice_ = endpoint_slice("db", [v1, v2])
    slice_["ports"][0]["name"] = "tcp"  # the Service port's name: a "tcp" name keeps its protocol TCP
    objects = [tcp_service(port, v1.port), *kube_pods("db", [v1, v2]), slice_]
    pilot.write("db.yaml", [*objects, destination_rule("db", HOST, ["v1", "v2"]), tcp_routes(50, 50)])
    envoy = envoy_factory(pilot, NODE, {"app": "client"}, "client")
    envoy.wait_listener_sync(f"127.0.0.1_{port}", f"127.0.0.1:{port}", timeout=WITHIN)

    # Any Host header: a TCP listener does not look at it.
    await client.wait_routed(port, "anything", all_of("v1", "v2"), batch=40, within=WITHIN, describe=envoy.diagnostics)
    counts = await client.count(200, port, "anything")
    assert set(counts) == {"v1", "v2"} and 0.3 <= counts["v2"] / 200 <= 0.7, counts_str(counts)

    pilot.write("db.yaml", [*objects, destination_rule("db", HOST, ["v1", "v2"]), tcp_routes(0, 100)])
    await client.wait_routed(port, "anything", only("v2"), batch=20, within=WITHIN, describe=envoy.diagnostics)
    assert await client.count(50, port, "anything") == {"v2": 50}


async def test_destination_rule_idle_timeout_closes_an_idle_tcp_connection(
    pilot_factory: Callable[..., PilotProcess],
    envoy_factory: Callable[..., EnvoyProcess],
    backends: Backends,
    client: HttpClient,
) -> None:
    """connectionPool.tcp.idleTimeout becomes the tcp_proxy's idle_timeout (istiod): Envoy closes a connection
    that carried a request and then stayed idle, though the backend would keep it open (aiohttp: 75 s)."""
    port = free_port()
    pilot = pilot_factory({"sidecar.yaml": bound_sidecar(port)})
    (v1,) = await backends.start("v1")
    slice_ = endpoint_slice("db", [v1])
    slice_["ports"][0]["name"] = "tcp"
    rule = destination_rule("db", HOST, ["v1"])
    rule["spec"]["trafficPolicy"] = {"connectionPool": {"tcp": {"idleTimeout": "1s"}}}
    pilot.write("db.yaml", [tcp_service(port, v1.port), *kube_pods("db", [v1]), slice_, rule])
    envoy = envoy_factory(pilot, NODE, {"app": "client"}, "client")
    envoy.wait_listener_sync(f"127.0.0.1_{port}", f"127.0.0.1:{port}", timeout=WITHIN)
    await client.wait_routed(port, "anything", only("v1"), batch=5, within=WITHIN, describe=envoy.diagnostics)

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /idle HTTP/1.1\r\nHost: db\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WITHIN)
        assert head.startswith(b"HTTP/1.1 200"), head
        idle_from = time.monotonic()
        # Whatever is left of the response, then EOF when Envoy closes the idle connection.
        rest = await asyncio.wait_for(reader.read(), WITHIN)
        idle_for = time.monotonic() - idle_from
    finally:
        writer.close()
    assert b"v1" in rest
    assert 0.8 <= idle_for < WITHIN, f"closed after {idle_for:.2f} s of idleness; {envoy.diagnostics()}"
