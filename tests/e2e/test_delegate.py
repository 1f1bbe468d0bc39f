"""Delegate VirtualServices end to end: pilot → real Envoy (ingress gateway) → aiohttp backends.

A root VirtualService in ``default`` bound to the gateway hands /productpage and /reviews to two delegates in
namespace ``bookinfo`` (whose short destination hosts resolve there). Requests reach the delegates' backends;
an edit of one delegate moves its traffic; a delegate route outside the root's match is dropped, reported in
push_status and the log, and never routes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.harness import (
    Backends,
    EnvoyProcess,
    HttpClient,
    PilotProcess,
    destination_rule,
    free_port,
    only,
    record_write_to_routed,
    route_to,
    service_entry,
    virtual_service,
)
from tests.e2e.test_gateway import ROUTE_TIMEOUT, ROUTER_NODE, SWITCH_DEADLINE, GatewayEnv

pytestmark = pytest.mark.timeout(90)

GATEWAY = "delegate-gateway"
HOST = "bookinfo.example.com"
PRODUCTPAGE = "productpage.bookinfo.svc.cluster.local"
REVIEWS = "reviews.bookinfo.svc.cluster.local"


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
    envoy = envoy_factory(pilot, ROUTER_NODE, {"istio": "ingressgateway"}, "gateway")
    envoy.wait_listener_sync(f"0.0.0.0_{port}", f"0.0.0.0:{port}")
    return GatewayEnv(pilot, envoy, port)


def root() -> dict[str, Any]:
    return virtual_service(
        "bookinfo",
        [HOST],
        [
            {
                "match": [{"uri": {"prefix": "/productpage"}}],
                "delegate": {"name": "productpage", "namespace": "bookinfo"},
            },
            {"match": [{"uri": {"prefix": "/reviews"}}], "delegate": {"name": "reviews", "namespace": "bookinfo"}},
        ],
        gateways=[GATEWAY],
    )


def reviews_delegate(subset: str) -> dict[str, Any]:
    return virtual_service(
        "reviews",
        [],
        [
            # Outside the root's /reviews: istiod drops this route with a warning.
            {"match": [{"uri": {"prefix": "/ratings"}}], "route": [route_to("reviews", "v1")]},
            {"route": [route_to("reviews", subset)]},
        ],
        namespace="bookinfo",
    )


async def test_delegates_route_their_paths_and_an_edit_moves_traffic(
    gw: GatewayEnv, backends: Backends, client: HttpClient
) -> None:
    productpage, v1, v2 = await backends.start("productpage", "v1", "v2")
    productpage_delegate = virtual_service(
        "productpage", [], [{"route": [route_to("productpage")]}], namespace="bookinfo"
    )
    services = [
        service_entry("productpage", PRODUCTPAGE, 80, [productpage], namespace="bookinfo"),
        service_entry("reviews", REVIEWS, 80, [v1, v2], namespace="bookinfo"),
        destination_rule("reviews", REVIEWS, ["v1", "v2"], namespace="bookinfo"),
    ]
    gw.pilot.write("bookinfo.yaml", [*services, productpage_delegate, reviews_delegate("v1"), root()])
    await client.wait_routed(
        gw.port, HOST, only("productpage"), path="/productpage", within=ROUTE_TIMEOUT, describe=gw.diagnostics
    )
    await client.wait_routed(gw.port, HOST, only("v1"), path="/reviews/1", within=5.0, describe=gw.diagnostics)
    assert await client.count(20, gw.port, HOST, "/productpage/static") == {"productpage": 20}
    assert await client.count(20, gw.port, HOST, "/reviews/2") == {"v1": 20}
    # Neither the root nor a merged route matches these: the dropped delegate route does not route /ratings.
    assert await client.count(10, gw.port, HOST, "/ratings") == {"HTTP 404": 10}
    assert await client.count(10, gw.port, HOST, "/") == {"HTTP 404": 10}

    status = await gw.pilot.debug("/debug/push_status")
    message = status["pilot_vservice_delegate"]["default/bookinfo"]["message"]
    assert "HTTPMatchRequests conflict" in message and "bookinfo/reviews" in message, message
    assert "bookinfo/reviews" in gw.pilot.log_text() and "HTTPMatchRequests conflict" in gw.pilot.log_text()

    # Editing the delegate (not the root) moves the reviews traffic to v2; productpage is untouched.
    start = time.monotonic()
    gw.pilot.write("bookinfo.yaml", [*services, productpage_delegate, reviews_delegate("v2"), root()])
    await client.wait_routed(gw.port, HOST, only("v2"), path="/reviews/1", within=5.0, describe=gw.diagnostics)
    elapsed = time.monotonic() - start
    record_write_to_routed("delegate edit", elapsed)
    assert elapsed < SWITCH_DEADLINE, f"delegate edit took {elapsed:.2f}s to route (budget {SWITCH_DEADLINE}s)"
    assert await client.count(30, gw.port, HOST, "/reviews/1") == {"v2": 30}
    assert await client.count(10, gw.port, HOST, "/productpage") == {"productpage": 10}
