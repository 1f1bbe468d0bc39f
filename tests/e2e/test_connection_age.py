"""PILOT_KEEPALIVE_MAX_SERVER_CONNECTION_AGE with a real Envoy: pilot ends the xDS connection at its age,
Envoy reconnects by itself, keeps routing throughout, and takes edits made after the reconnections."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.harness import (
    Backends,
    EnvoyProcess,
    HttpClient,
    PilotProcess,
    free_port,
    only,
    route_to,
    service_entry,
    virtual_service,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

ROUTER_NODE = "router~127.0.0.1~aged-1.default~default.svc.cluster.local"
WITHIN = 15.0


async def test_envoy_reconnects_after_the_connection_age_and_keeps_its_config(
    pilot_factory: Callable[..., PilotProcess],
    envoy_factory: Callable[..., EnvoyProcess],
    backends: Backends,
    client: HttpClient,
) -> None:
    port = free_port("0.0.0.0")
    gateway = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "aged", "namespace": "default"},
        "spec": {
            "selector": {"istio": "aged"},
            "servers": [{"port": {"number": port, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
        },
    }
    v1, v2 = await backends.start("v1", "v2")
    host = "aged.example.com"

    def routes_to(backend: str) -> list[dict]:
        service = f"{backend}.aged.internal"
        return [
            service_entry(backend, service, 80, [v1 if backend == "v1" else v2]),
            virtual_service("aged", [host], [{"route": [route_to(service, port=80)]}], gateways=["aged"]),
        ]

    pilot = pilot_factory(
        {"gateway.yaml": gateway, "routes.yaml": routes_to("v1")},
        name="pilot-aged",
        env={"PILOT_KEEPALIVE_MAX_SERVER_CONNECTION_AGE": "1s"},
    )
    envoy = envoy_factory(pilot, ROUTER_NODE, {"istio": "aged"}, "aged")
    envoy.wait_listener_sync(f"0.0.0.0_{port}", f"0.0.0.0:{port}")
    await client.wait_routed(port, host, only("v1"), within=WITHIN, describe=envoy.diagnostics)

    def connections() -> int:
        return envoy.stats(r"^cluster\.xds-grpc\.upstream_cx_total$").get("cluster.xds-grpc.upstream_cx_total", 0)

    await wait_until(lambda: connections() >= 3, WITHIN, message="two reconnections", describe=envoy.diagnostics)
    assert set(await client.count(20, port, host)) == {"v1"}  # nothing lost across the reconnections
    pilot.write("routes.yaml", routes_to("v2"))
    await client.wait_routed(port, host, only("v2"), within=WITHIN, describe=envoy.diagnostics)
