"""A change to a delegate VirtualService reaches the proxies that see one of its roots, and only them: the
root's route configuration is regenerated (its cached routes depend on the delegate) and pushed.

Same setting as test_push_scope: two namespaces isolated by Sidecars, one SotW client each. team-a's service
is routed by a root VirtualService whose routes come from a delegate in a third namespace (which team-a's
Sidecar does not import: delegates are not subject to egress hosts, their roots are).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpclib.client
import pytest

from pilot.server import PilotServer, ServerOptions
from pilot.xds.names import ROUTE_TYPE
from tests.xds.test_ads_protocol import ads_request
from tests.xds.test_push_scope import ISOLATION, ROUTE, SERVICE, Proxy, endpoints, route_timeout, write

ROOT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: team-a}
spec:
  hosts: [a.team-a.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /}}]
    delegate: {name: a-routes, namespace: routes}
"""
DELEGATE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: a-routes, namespace: routes}}
spec:
  exportTo: [team-a]
  http: [{{timeout: {timeout}, route: [{{destination: {{host: a.team-a.svc.cluster.local}}}}]}}]
"""


@pytest.fixture
async def pilot(tmp_path: Path) -> AsyncIterator[PilotServer]:
    for ns, name, address in (("team-a", "a", "10.0.1.1"), ("team-b", "b", "10.0.2.1")):
        write(tmp_path / f"{name}.yaml", SERVICE.format(name=name, ns=ns, endpoints=endpoints(address)))
        write(tmp_path / f"{name}-sidecar.yaml", ISOLATION.format(ns=ns))
    write(tmp_path / "a-route.yaml", ROOT)
    write(tmp_path / "a-delegate.yaml", DELEGATE.format(timeout="5s"))
    write(tmp_path / "b-route.yaml", ROUTE.format(name="b", ns="team-b", timeout="5s"))
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


async def test_a_delegate_edit_reaches_only_the_proxies_that_see_its_root(
    pilot: PilotServer, proxies: tuple[Proxy, Proxy]
) -> None:
    a, b = proxies
    config_dir = pilot.options.config_dir
    write(config_dir / "a-delegate.yaml", DELEGATE.format(timeout="7s"))
    update = await a.recv()
    assert update.type_url == ROUTE_TYPE and route_timeout(update) == 7, "the root's routes follow the delegate"
    assert pilot.discovery.last_push_reach == (1, 2), "the push was queued for a proxy that cannot see the root"

    # Without the delegate the root has no routes: a's service falls back to its default route (no timeout).
    os.remove(config_dir / "a-delegate.yaml")
    update = await a.recv()
    assert update.type_url == ROUTE_TYPE and route_timeout(update) == 0
    # A delegate that appears is merged in and pushed, as the root depended on it while it was missing.
    write(config_dir / "a-delegate.yaml", DELEGATE.format(timeout="9s"))
    update = await a.recv()
    assert update.type_url == ROUTE_TYPE and route_timeout(update) == 9

    # Fence: the first thing b receives is its own route edit, none of the delegate's changes.
    write(config_dir / "b-route.yaml", ROUTE.format(name="b", ns="team-b", timeout="6s"))
    fence = await b.recv()
    assert fence.type_url == ROUTE_TYPE and route_timeout(fence) == 6
