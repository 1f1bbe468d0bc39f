"""Proxyless gRPC end to end: a real grpcio client (``xds:///host:port``, GRPC_XDS_BOOTSTRAP from ``pilot
bootstrap --grpc``) against a real ``pilot serve`` and real grpcio servers on 127.0.0.x.

Services are ServiceEntries whose endpoints are the servers; the client reaches them by pilot's LDS → RDS →
CDS → EDS alone. Every test also checks that gRPC accepted everything pilot sent (no NACK in pilot's log).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from tests.e2e.harness import (
    PilotProcess,
    all_of,
    destination_rule,
    only,
    route_to,
    service_entry,
    virtual_service,
)
from tests.grpc.harness import EchoServer, EchoServers, GrpcClient

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_nacks")]

PORT = 7070  # the service port: part of the target and of every resource name; nothing listens on it
ROUTE_DEADLINE = 10.0  # first config for a new client and service
SWITCH_DEADLINE = 5.0  # a VirtualService edit reaching the client


def fqdn(name: str) -> str:
    return f"{name}.default.svc.cluster.local"


def write_service(
    pilot: PilotProcess, name: str, servers: list[EchoServer], http: list[dict[str, Any]] | None = None
) -> None:
    """A GRPC ServiceEntry on PORT whose endpoints are ``servers``, subsets by version, and a VirtualService."""
    docs = [
        service_entry(name, fqdn(name), PORT, servers, protocol="GRPC"),  # type: ignore[arg-type]
        destination_rule(name, name, sorted({s.labels["version"] for s in servers if "version" in s.labels})),
    ]
    pilot.write(f"{name}.yaml", docs)
    if http is not None:
        pilot.write(f"{name}-vs.yaml", virtual_service(name, [name], http))


async def test_weighted_split(pilot: PilotProcess, servers: EchoServers, client: GrpcClient) -> None:
    v1, v2 = servers.start("v1", "v2")
    write_service(pilot, "split", [v1, v2], [{"route": [route_to("split", "v1", 75), route_to("split", "v2", 25)]}])
    target = f"xds:///{fqdn('split')}:{PORT}"
    await client.wait_for(target, all_of("v1", "v2"), within=ROUTE_DEADLINE, batch=40)

    before = (v1.hits, v2.hits)
    replies = await client.calls(target, 400)
    assert set(replies) == {"v1", "v2"}, replies
    # 75/25 of 400: 300 ± 8.7 (one standard deviation) for v1; ±60 is about 7 deviations.
    assert 240 <= replies["v1"] <= 360, f"75/25 split gave {dict(replies)}"
    assert (v1.hits - before[0], v2.hits - before[1]) == (replies["v1"], replies["v2"])


async def test_header_match_routes_by_metadata(pilot: PilotProcess, servers: EchoServers, client: GrpcClient) -> None:
    v1, v2 = servers.start("v1", "v2")
    http = [
        {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [route_to("match", "v2")]},
        {
            # Settings gRPC ignores or reads differently must not make it reject the route configuration.
            "route": [route_to("match", "v1")],
            "timeout": "5s",
            "retries": {"attempts": 2, "perTryTimeout": "2s", "retryOn": "unavailable,5xx"},
            "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}], "allowMethods": ["POST"]},
        },
    ]
    write_service(pilot, "match", [v1, v2], http)
    # The short name, as a client in the service's namespace may spell it.
    target = f"xds:///match:{PORT}"
    await client.wait_for(target, only("v1"), within=ROUTE_DEADLINE)

    assert await client.calls(target, 20, metadata={"end-user": "jason"}) == Counter(v2=20)
    assert await client.calls(target, 20, metadata={"end-user": "someone-else"}) == Counter(v1=20)
    assert await client.calls(target, 20) == Counter(v1=20)


@pytest.mark.parametrize(
    ("abort", "status"),
    [
        ({"grpcStatus": "PERMISSION_DENIED"}, "PERMISSION_DENIED"),
        # gRPC maps an HTTP status to a gRPC one (404 → UNIMPLEMENTED), as for a real HTTP error.
        ({"httpStatus": 404}, "UNIMPLEMENTED"),
    ],
    ids=["grpc-status", "http-status"],
)
async def test_fault_abort_returns_the_configured_status(
    pilot: PilotProcess, servers: EchoServers, client: GrpcClient, abort: dict[str, Any], status: str
) -> None:
    (v1,) = servers.start("v1")
    name = f"fault-{status.lower().replace('_', '-')}"
    http = [
        {
            "match": [{"headers": {"x-fault": {"exact": "on"}}}],
            "fault": {"abort": {**abort, "percentage": {"value": 100}}},
            "route": [route_to(name, "v1")],
        },
        {"route": [route_to(name, "v1")]},
    ]
    write_service(pilot, name, [v1], http)
    target = f"xds:///{fqdn(name)}:{PORT}"
    await client.wait_for(target, only("v1"), within=ROUTE_DEADLINE)

    hits = v1.hits
    replies = await client.calls(target, 20, metadata={"x-fault": "on"})
    assert replies == Counter({f"status:{status}": 20}), replies
    assert "Fault injected" in client.last_details[status]
    assert v1.hits == hits, "aborted calls must not reach the server"
    assert await client.calls(target, 5) == Counter(v1=5)


async def test_live_virtual_service_edit(pilot: PilotProcess, servers: EchoServers, client: GrpcClient) -> None:
    v1, v2 = servers.start("v1", "v2")
    write_service(pilot, "live", [v1, v2], [{"route": [route_to("live", "v1")]}])
    target = f"xds:///{fqdn('live')}:{PORT}"
    await client.wait_for(target, only("v1"), within=ROUTE_DEADLINE, batch=10)

    started = time.monotonic()
    pilot.write("live-vs.yaml", virtual_service("live", ["live"], [{"route": [route_to("live", "v2")]}]))
    await client.wait_for(target, only("v2"), within=SWITCH_DEADLINE, batch=5, message="the edit to reach gRPC")
    print(f"gRPC write->routed (VirtualService edit): {time.monotonic() - started:.2f}s")
    assert await client.calls(target, 20) == Counter(v2=20)

    # Without a VirtualService the default route balances over every endpoint of the service.
    pilot.remove("live-vs.yaml")
    await client.wait_for(target, all_of("v1", "v2"), within=SWITCH_DEADLINE, message="the default route")


async def test_target_is_served_once_its_service_appears(
    pilot: PilotProcess, servers: EchoServers, client: GrpcClient
) -> None:
    """A Listener asked for before it exists: gRPC waits (it learns of absence only by its own timeout), and
    pilot, remembering the name, sends it as soon as the service is created."""
    target = f"xds:///later.default.svc.cluster.local:{PORT}"
    assert await client.calls(target, 1, timeout=0.5) == Counter({"status:DEADLINE_EXCEEDED": 1})
    (v1,) = servers.start("v1")
    write_service(pilot, "later", [v1])
    await client.wait_for(target, only("v1"), within=SWITCH_DEADLINE, batch=5)
