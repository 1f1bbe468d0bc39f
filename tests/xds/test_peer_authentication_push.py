"""A PeerAuthentication change is pushed as istiod pushes it: to the proxies whose scope holds its namespace
(their own, the root, or their services' namespaces), with CDS, EDS and LDS but no RDS.

Two namespaces isolated by Sidecars, one injected sidecar each (SotW clients subscribing as Envoy does).
Absence is proven with a fence, as in test_push_scope: after the change, a change the other proxy must see
is made, and the first message it receives has to be that one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpclib.client
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from pilot.server import PilotServer, ServerOptions
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE
from tests.xds.test_ads_protocol import ads_request
from tests.xds.test_push_scope import ISOLATION, ROUTE, SERVICE, Proxy, route_timeout, write

INJECTED = "security.istio.io/tlsMode"
PEER = """
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {{name: default, namespace: {ns}}}
spec: {{mtls: {{mode: {mode}}}}}
"""


class InjectedProxy(Proxy):
    """An injected sidecar: its pod carries Istio's tlsMode label, so pilot sends it mTLS config."""

    async def send(
        self, type_url: str, names: tuple[str, ...] = (), last: discovery_pb2.DiscoveryResponse | None = None
    ) -> None:
        if last is not None:
            await super().send(type_url, names, last)
            return
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names))
        request.node.id = f"sidecar~10.0.9.1~app.{self.namespace}~{self.namespace}.svc.cluster.local"
        request.node.metadata.update({"NAMESPACE": self.namespace, "LABELS": {"app": "x", INJECTED: "istio"}})
        await self.stream.send_message(request)


@pytest.fixture
async def pilot(tmp_path: Path) -> AsyncIterator[PilotServer]:
    for ns, name, address in (("team-a", "a", "10.0.1.1"), ("team-b", "b", "10.0.2.1")):
        labelled = f"{{address: {address}, labels: {{{INJECTED}: istio}}}}"
        write(tmp_path / f"{name}.yaml", SERVICE.format(name=name, ns=ns, endpoints=labelled))
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
            a, b = InjectedProxy(sa, "team-a"), InjectedProxy(sb, "team-b")
            await a.sync()
            await b.sync()
            yield a, b
            await sa.cancel()
            await sb.cancel()
    finally:
        for channel in channels:
            channel.close()


def auto_mtls(response: discovery_pb2.DiscoveryResponse, name: str) -> bool:
    for any_msg in response.resources:
        cluster = cluster_pb2.Cluster()
        assert any_msg.Unpack(cluster)
        if cluster.name == name:
            return bool(cluster.transport_socket_matches)
    raise AssertionError(f"no cluster {name}")


def tls_modes(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    out = []
    for any_msg in response.resources:
        cla = endpoint_pb2.ClusterLoadAssignment()
        assert any_msg.Unpack(cla)
        for group in cla.endpoints:
            for lb in group.lb_endpoints:
                meta = lb.metadata.filter_metadata.get("envoy.transport_socket_match")
                out.append(dict(meta).get("tlsMode", "") if meta is not None else "")
    return out


async def test_a_namespace_policy_reaches_its_proxies_with_cds_and_eds_only(
    pilot: PilotServer, proxies: tuple[Proxy, Proxy]
) -> None:
    a, b = proxies
    cluster = "outbound|80||a.team-a.svc.cluster.local"
    write(pilot.options.config_dir / "pa.yaml", PEER.format(ns="team-a", mode="DISABLE"))
    cds = await a.recv()
    assert cds.type_url == CLUSTER_TYPE and not auto_mtls(cds, cluster), "DISABLE turns auto-mTLS off"
    eds = await a.recv()
    assert eds.type_url == ENDPOINT_TYPE and tls_modes(eds) == [""], "and the endpoint's tlsMode metadata"
    assert pilot.discovery.last_push_reach == (1, 2), "queued for a proxy that cannot see the policy"
    # Fence for b: its first message is its own route change, not anything of team-a's policy.
    write(pilot.options.config_dir / "b-route.yaml", ROUTE.format(name="b", ns="team-b", timeout="9s"))
    fence = await b.recv()
    assert fence.type_url == ROUTE_TYPE and route_timeout(fence) == 9
    # Back to STRICT: mTLS again; a's next message after that is the fence, so no RDS or LDS came in between
    # (a has no inbound side, so its listeners do not change).
    write(pilot.options.config_dir / "pa.yaml", PEER.format(ns="team-a", mode="STRICT"))
    cds = await a.recv()
    assert cds.type_url == CLUSTER_TYPE and auto_mtls(cds, cluster)
    eds = await a.recv()
    assert eds.type_url == ENDPOINT_TYPE and tls_modes(eds) == ["istio"]
    write(pilot.options.config_dir / "a-route.yaml", ROUTE.format(name="a", ns="team-a", timeout="3s"))
    fence = await a.recv()
    assert fence.type_url == ROUTE_TYPE and route_timeout(fence) == 3
