"""Pushes reach only the proxies a change can affect, with only the types it affects (istiod's
ProxyNeedsPush and per-type skips), and an endpoint change is an EDS-only push of the changed assignment.

Two namespaces isolated by Sidecars; one SotW client per namespace subscribes the way Envoy does. Absence is
proven with a fence: after the change that must not reach a proxy, a change that must reach it is made, and
the first message the proxy receives has to be the fence's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpclib.client
import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from pilot.server import PilotServer, ServerOptions
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from tests.xds.test_ads_protocol import ads_request

SERVICE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{name}.{ns}.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{endpoints}]
"""
ROUTE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{name}.{ns}.svc.cluster.local]
  http: [{{timeout: {timeout}, route: [{{destination: {{host: {name}.{ns}.svc.cluster.local}}}}]}}]
"""
ISOLATION = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: {ns}}}
spec:
  egress: [{{hosts: ["./*"]}}]
"""


def write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


def endpoints(*addresses: str) -> str:
    return ", ".join(f"{{address: {a}}}" for a in addresses)


class Proxy:
    """A SotW client subscribing like Envoy: CDS, then EDS for the clusters, LDS, then RDS for the routes."""

    def __init__(self, stream: grpclib.client.Stream, namespace: str) -> None:
        self.stream = stream
        self.namespace = namespace
        self.eds: tuple[str, ...] = ()
        self.received: list[discovery_pb2.DiscoveryResponse] = []

    async def send(
        self, type_url: str, names: tuple[str, ...] = (), last: discovery_pb2.DiscoveryResponse | None = None
    ) -> None:
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names))
        if last is not None:
            request.response_nonce, request.version_info = last.nonce, last.version_info
        else:
            request.node.id = f"sidecar~10.0.0.1~app.{self.namespace}~{self.namespace}.svc.cluster.local"
            request.node.metadata.update({"NAMESPACE": self.namespace})
        await self.stream.send_message(request)

    async def recv(self) -> discovery_pb2.DiscoveryResponse:
        response = await asyncio.wait_for(self.stream.recv_message(), 5)
        assert response is not None
        self.received.append(response)
        names = {ENDPOINT_TYPE: self.eds, ROUTE_TYPE: ("80",)}.get(response.type_url, ())
        await self.send(response.type_url, names, last=response)  # ACK
        return response

    async def sync(self) -> None:
        await self.send(CLUSTER_TYPE)
        await self.recv()
        self.eds = (f"outbound|80||{'a' if self.namespace == 'team-a' else 'b'}.{self.namespace}.svc.cluster.local",)
        await self.stream.send_message(
            discovery_pb2.DiscoveryRequest(type_url=ENDPOINT_TYPE, resource_names=list(self.eds))
        )
        await self.recv()
        await self.stream.send_message(discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE))
        await self.recv()
        await self.stream.send_message(discovery_pb2.DiscoveryRequest(type_url=ROUTE_TYPE, resource_names=["80"]))
        await self.recv()
        self.received.clear()


@pytest.fixture
async def pilot(tmp_path: Path) -> AsyncIterator[PilotServer]:
    for ns, name, address in (("team-a", "a", "10.0.1.1"), ("team-b", "b", "10.0.2.1")):
        write(tmp_path / f"{name}.yaml", SERVICE.format(name=name, ns=ns, endpoints=endpoints(address)))
        write(tmp_path / f"{name}-route.yaml", ROUTE.format(name=name, ns=ns, timeout="5s"))
        write(tmp_path / f"{name}-sidecar.yaml", ISOLATION.format(ns=ns))
    server = PilotServer(
        ServerOptions(config_dir=tmp_path, grpc_addr="127.0.0.1:0", monitoring_addr="127.0.0.1:0", debounce_after=0.01)
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def proxies(pilot: PilotServer) -> AsyncIterator[tuple[Proxy, Proxy]]:
    channels = [grpclib.client.Channel("127.0.0.1", pilot.grpc_port) for _ in range(2)]
    try:
        async with ads_request(channels[0]) as sa, ads_request(channels[1]) as sb:
            a, b = Proxy(sa, "team-a"), Proxy(sb, "team-b")
            await a.sync()
            await b.sync()
            yield a, b
            await sa.cancel()
            await sb.cancel()
    finally:
        for channel in channels:
            channel.close()


def route_timeout(response: discovery_pb2.DiscoveryResponse) -> float:
    rc = route_pb2.RouteConfiguration()
    assert response.resources[0].Unpack(rc)
    for vhost in rc.virtual_hosts:
        for route in vhost.routes:
            if route.route.HasField("timeout"):
                return route.route.timeout.seconds
    raise AssertionError("no route with a timeout")


def addresses(response: discovery_pb2.DiscoveryResponse) -> dict[str, list[str]]:
    out = {}
    for any_msg in response.resources:
        cla = endpoint_pb2.ClusterLoadAssignment()
        assert any_msg.Unpack(cla)
        out[cla.cluster_name] = [
            lb.endpoint.address.socket_address.address for g in cla.endpoints for lb in g.lb_endpoints
        ]
    return out


async def test_a_virtual_service_edit_reaches_only_the_namespace_that_sees_it(
    pilot: PilotServer, proxies: tuple[Proxy, Proxy]
) -> None:
    a, b = proxies
    write(pilot.options.config_dir / "a-route.yaml", ROUTE.format(name="a", ns="team-a", timeout="7s"))
    update = await a.recv()
    assert update.type_url == ROUTE_TYPE and route_timeout(update) == 7, "only RDS changes for a route edit"
    assert pilot.discovery.last_push_reach == (1, 2), "the push was queued for a proxy that cannot see the change"
    # Fence: a change b must see. The first thing b receives must be it, not a's edit.
    write(pilot.options.config_dir / "b-route.yaml", ROUTE.format(name="b", ns="team-b", timeout="9s"))
    fence = await b.recv()
    assert fence.type_url == ROUTE_TYPE and route_timeout(fence) == 9


async def test_an_endpoint_change_is_an_eds_only_push_to_the_proxies_that_watch_it(
    pilot: PilotServer, proxies: tuple[Proxy, Proxy]
) -> None:
    a, b = proxies
    contexts = pilot.discovery.counters["pilot_pushcontext_init"]
    write(
        pilot.options.config_dir / "b.yaml",
        SERVICE.format(name="b", ns="team-b", endpoints=endpoints("10.0.2.1", "10.0.2.2")),
    )
    update = await b.recv()
    assert update.type_url == ENDPOINT_TYPE
    assert addresses(update) == {"outbound|80||b.team-b.svc.cluster.local": ["10.0.2.1", "10.0.2.2"]}
    assert pilot.discovery.counters["pilot_pushcontext_init"] == contexts, "an endpoint change built a PushContext"
    assert pilot.discovery.last_push_reach == (1, 2), "queued for a proxy that does not watch the cluster"
    # Fence for a, and for b: nothing else was queued behind the EDS update.
    write(pilot.options.config_dir / "a-route.yaml", ROUTE.format(name="a", ns="team-a", timeout="8s"))
    fence = await a.recv()
    assert fence.type_url == ROUTE_TYPE and route_timeout(fence) == 8
    write(pilot.options.config_dir / "b-route.yaml", ROUTE.format(name="b", ns="team-b", timeout="6s"))
    fence = await b.recv()
    assert fence.type_url == ROUTE_TYPE and route_timeout(fence) == 6


async def test_a_new_service_is_a_full_push_to_those_who_can_see_it(
    pilot: PilotServer, proxies: tuple[Proxy, Proxy]
) -> None:
    a, b = proxies
    contexts = pilot.discovery.counters["pilot_pushcontext_init"]
    write(pilot.options.config_dir / "a2.yaml", SERVICE.format(name="a2", ns="team-a", endpoints=endpoints("10.0.1.9")))
    cds = await a.recv()
    assert cds.type_url == CLUSTER_TYPE
    assert pilot.discovery.counters["pilot_pushcontext_init"] == contexts + 1
    assert pilot.discovery.last_push_reach == (1, 2)
    write(pilot.options.config_dir / "b-route.yaml", ROUTE.format(name="b", ns="team-b", timeout="4s"))
    fence = await b.recv()
    assert fence.type_url == ROUTE_TYPE and route_timeout(fence) == 4
