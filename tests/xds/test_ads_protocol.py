"""ADS protocol behaviour over a real gRPC stream (grpclib client against the real server).

Absence of a response is shown by ordering, not by waiting: after a request that must not be answered, the
client sends a request that must be, and the next message on the stream has to be that answer.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpclib.client
import grpclib.const
import grpclib.exceptions
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from pilot.push.request import PushRequest
from pilot.server import PilotServer, ServerOptions
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.xds.server import ADS_METHOD

NODE_ID = "sidecar~127.0.0.1~client-1.default~default.svc.cluster.local"

SERVICE_ENTRY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - address: 127.0.0.2
    labels: {{version: v1}}
"""


def write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


@pytest.fixture
async def pilot(tmp_path: Path) -> AsyncIterator[PilotServer]:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    write(config_dir / "a.yaml", SERVICE_ENTRY.format(name="a", host="a.example.com"))
    server = PilotServer(
        ServerOptions(
            config_dir=config_dir,
            grpc_addr="127.0.0.1:0",
            monitoring_addr="127.0.0.1:0",
            debounce_after=0.01,
            debounce_max=1.0,
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def ads_request(channel: grpclib.client.Channel) -> grpclib.client.Stream:
    """An ADS stream on a channel (use as ``async with``)."""
    return channel.request(
        ADS_METHOD,
        grpclib.const.Cardinality.STREAM_STREAM,
        discovery_pb2.DiscoveryRequest,
        discovery_pb2.DiscoveryResponse,
    )


class AdsClient:
    def __init__(self, stream: grpclib.client.Stream) -> None:
        self.stream = stream
        self.first = True

    async def send(
        self,
        type_url: str,
        names: tuple[str, ...] = (),
        nonce: str = "",
        version: str = "",
        error: str | None = None,
    ) -> None:
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=list(names), response_nonce=nonce, version_info=version
        )
        if self.first:
            req.node.id = NODE_ID
            self.first = False
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.stream.send_message(req)

    async def recv(self, timeout: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        response = await asyncio.wait_for(self.stream.recv_message(), timeout)
        assert response is not None, "stream closed"
        return response


@pytest.fixture
async def ads(pilot: PilotServer) -> AsyncIterator[AdsClient]:
    channel = grpclib.client.Channel("127.0.0.1", pilot.grpc_port)
    try:
        async with ads_request(channel) as stream:
            yield AdsClient(stream)
            await stream.cancel()
    finally:
        channel.close()


def cluster_names(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    out = []
    for any_msg in response.resources:
        c = cluster_pb2.Cluster()
        assert any_msg.Unpack(c)
        out.append(c.name)
    return out


def cla_of(response: discovery_pb2.DiscoveryResponse) -> dict[str, list[str]]:
    out = {}
    for any_msg in response.resources:
        m = endpoint_pb2.ClusterLoadAssignment()
        assert any_msg.Unpack(m)
        out[m.cluster_name] = [
            lb.endpoint.address.socket_address.address for group in m.endpoints for lb in group.lb_endpoints
        ]
    return out


async def test_wildcard_cds_then_ack_gets_no_resend(ads: AdsClient) -> None:
    await ads.send(CLUSTER_TYPE)
    cds = await ads.recv()
    assert cds.type_url == CLUSTER_TYPE
    assert "outbound|80||a.example.com" in cluster_names(cds)
    await ads.send(CLUSTER_TYPE, nonce=cds.nonce, version=cds.version_info)  # ACK
    await ads.send(LISTENER_TYPE)
    nxt = await ads.recv()
    assert nxt.type_url == LISTENER_TYPE, "the ACK was answered with a resend"


async def test_nack_is_not_answered_with_the_same_version(ads: AdsClient, pilot: PilotServer) -> None:
    await ads.send(CLUSTER_TYPE)
    cds = await ads.recv()
    await ads.send(CLUSTER_TYPE, nonce=cds.nonce, version="", error="cluster rejected by test")
    await ads.send(LISTENER_TYPE)
    nxt = await ads.recv()
    assert nxt.type_url == LISTENER_TYPE, "the NACK triggered a resend"
    conn = next(iter(pilot.discovery.connections.values()))
    assert conn.state.types[CLUSTER_TYPE].last_error == "cluster rejected by test"
    # A config push that does not change clusters must not resend them either.
    converged = pilot.discovery.counters["pilot_proxy_convergence"]
    await pilot.discovery.push(PushRequest(reason=Counter(debug=1)))
    deadline = asyncio.get_running_loop().time() + 5
    while pilot.discovery.counters["pilot_proxy_convergence"] == converged:
        assert asyncio.get_running_loop().time() < deadline, "the push never reached the connection"
        await asyncio.sleep(0.005)
    await ads.send(ROUTE_TYPE, names=("80",))
    nxt = await ads.recv()
    assert nxt.type_url == ROUTE_TYPE


async def test_stale_nonce_is_ignored(ads: AdsClient) -> None:
    await ads.send(CLUSTER_TYPE)
    cds = await ads.recv()
    await ads.send(ENDPOINT_TYPE, names=("outbound|80||a.example.com",))
    eds = await ads.recv()
    assert eds.type_url == ENDPOINT_TYPE
    assert cla_of(eds) == {"outbound|80||a.example.com": ["127.0.0.2"]}
    # A request echoing a nonce the server never sent last is stale: no answer, even for new names.
    await ads.send(ENDPOINT_TYPE, names=("outbound|80||a.example.com", "BlackHoleCluster"), nonce="stale-1")
    await ads.send(CLUSTER_TYPE, nonce=cds.nonce, version=cds.version_info)
    await ads.send(LISTENER_TYPE)
    nxt = await ads.recv()
    assert nxt.type_url == LISTENER_TYPE


async def test_named_cds_subscription_gets_only_named_clusters(ads: AdsClient) -> None:
    await ads.send(CLUSTER_TYPE, names=("outbound|80||a.example.com",))
    cds = await ads.recv()
    assert cluster_names(cds) == ["outbound|80||a.example.com"]


async def test_removed_service_disappears_from_cds(ads: AdsClient, pilot: PilotServer) -> None:
    config_dir = pilot.options.config_dir
    write(config_dir / "b.yaml", SERVICE_ENTRY.format(name="b", host="b.example.com"))
    await ads.send(CLUSTER_TYPE)
    cds = await ads.recv()
    while "outbound|80||b.example.com" not in cluster_names(cds):
        await ads.send(CLUSTER_TYPE, nonce=cds.nonce, version=cds.version_info)
        cds = await ads.recv()
    await ads.send(CLUSTER_TYPE, nonce=cds.nonce, version=cds.version_info)
    (config_dir / "b.yaml").unlink()
    update = await ads.recv()
    assert update.type_url == CLUSTER_TYPE
    assert "outbound|80||b.example.com" not in cluster_names(update)
    assert "outbound|80||a.example.com" in cluster_names(update)


async def test_name_subscribed_before_it_exists_is_sent_when_it_appears(ads: AdsClient, pilot: PilotServer) -> None:
    await ads.send(CLUSTER_TYPE)
    cds = await ads.recv()
    await ads.send(CLUSTER_TYPE, nonce=cds.nonce, version=cds.version_info)
    later = "outbound|80||later.example.com"
    await ads.send(ENDPOINT_TYPE, names=(later,))
    await ads.send(LISTENER_TYPE)
    nxt = await ads.recv()
    assert nxt.type_url == LISTENER_TYPE, "a response was sent for a name that does not exist"
    await ads.send(LISTENER_TYPE, nonce=nxt.nonce, version=nxt.version_info)
    write(pilot.options.config_dir / "later.yaml", SERVICE_ENTRY.format(name="later", host="later.example.com"))
    eds = None
    for _ in range(6):  # CDS, EDS, LDS (and RDS) may arrive in push order
        msg = await ads.recv()
        if msg.type_url == ENDPOINT_TYPE and later in cla_of(msg):
            eds = msg
            break
    assert eds is not None, "the endpoint subscribed before it existed was never sent"
    assert cla_of(eds)[later] == ["127.0.0.2"]


async def test_push_order_is_cds_eds_lds_rds(ads: AdsClient, pilot: PilotServer) -> None:
    await ads.send(CLUSTER_TYPE)
    cds = await ads.recv()
    await ads.send(CLUSTER_TYPE, nonce=cds.nonce, version=cds.version_info)
    await ads.send(ENDPOINT_TYPE, names=("outbound|80||a.example.com",))
    eds = await ads.recv()
    await ads.send(ENDPOINT_TYPE, names=("outbound|80||a.example.com",), nonce=eds.nonce, version=eds.version_info)
    await ads.send(LISTENER_TYPE)
    lds = await ads.recv()
    await ads.send(LISTENER_TYPE, nonce=lds.nonce, version=lds.version_info)
    await ads.send(ROUTE_TYPE, names=("80",))
    rds = await ads.recv()
    await ads.send(ROUTE_TYPE, names=("80",), nonce=rds.nonce, version=rds.version_info)
    # A new service changes CDS and RDS: CDS goes first, RDS last. Existing clusters are unchanged, so
    # their endpoints are not resent (the client subscribes to the new cluster's by itself).
    write(pilot.options.config_dir / "c.yaml", SERVICE_ENTRY.format(name="c", host="c.example.com"))
    order = []
    while True:
        msg = await ads.recv()
        order.append(msg.type_url)
        await ads.send(msg.type_url, names=_names_for(msg.type_url), nonce=msg.nonce, version=msg.version_info)
        if msg.type_url == ROUTE_TYPE:
            break
    assert order == [CLUSTER_TYPE, ROUTE_TYPE]
    # A DestinationRule changes cluster a: Envoy keeps an updated cluster warming until it gets its
    # endpoints again, so that cluster's (unchanged) assignment must follow CDS.
    write(pilot.options.config_dir / "dr.yaml", DESTINATION_RULE)
    cds = await ads.recv()
    assert cds.type_url == CLUSTER_TYPE
    await ads.send(CLUSTER_TYPE, nonce=cds.nonce, version=cds.version_info)
    eds = await ads.recv()
    assert eds.type_url == ENDPOINT_TYPE, "EDS of the updated cluster was not resent after CDS"
    assert list(cla_of(eds)) == ["outbound|80||a.example.com"]


DESTINATION_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: default}
spec:
  host: a.example.com
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
"""


def _names_for(type_url: str) -> tuple[str, ...]:
    return {ENDPOINT_TYPE: ("outbound|80||a.example.com",), ROUTE_TYPE: ("80",)}.get(type_url, ())


async def test_first_request_without_node_is_rejected(pilot: PilotServer) -> None:
    channel = grpclib.client.Channel("127.0.0.1", pilot.grpc_port)
    try:
        with pytest.raises(grpclib.exceptions.GRPCError) as err:
            async with ads_request(channel) as stream:
                await stream.send_message(discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE))
                await asyncio.wait_for(stream.recv_message(), 5)
        assert err.value.status is grpclib.const.Status.INVALID_ARGUMENT
        assert "node.id" in (err.value.message or "")
    finally:
        channel.close()


TCP_SERVICE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.com]
  addresses: [10.96.0.30]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.3}]
"""
TCP_IDLE_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: default}
spec:
  host: db.example.com
  trafficPolicy: {connectionPool: {tcp: {idleTimeout: 7s}}}
"""


async def test_a_destination_rule_edit_pushes_the_sidecar_tcp_listener(ads: AdsClient, pilot: PilotServer) -> None:
    """A sidecar's TCP proxy carries its DestinationRule's tcp settings, so a rule edit must reach LDS."""
    from envoy.config.listener.v3 import listener_pb2
    from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

    def idle_timeouts(response: discovery_pb2.DiscoveryResponse) -> dict[str, int]:
        out = {}
        for any_msg in response.resources:
            listener = listener_pb2.Listener()
            assert any_msg.Unpack(listener)
            for chain in listener.filter_chains:
                for network_filter in chain.filters:
                    if network_filter.typed_config.Is(tcp_proxy_pb2.TcpProxy.DESCRIPTOR):
                        proxy = tcp_proxy_pb2.TcpProxy()
                        network_filter.typed_config.Unpack(proxy)
                        out[listener.name] = proxy.idle_timeout.seconds
        return out

    write(pilot.options.config_dir / "db.yaml", TCP_SERVICE)
    await ads.send(LISTENER_TYPE)
    for _ in range(5):  # until the listener of the new service is there (the write may land after the request)
        lds = await ads.recv()
        await ads.send(LISTENER_TYPE, nonce=lds.nonce, version=lds.version_info)
        if "10.96.0.30_5432" in idle_timeouts(lds):
            break
    assert idle_timeouts(lds)["10.96.0.30_5432"] == 0
    write(pilot.options.config_dir / "dr.yaml", TCP_IDLE_RULE)
    for _ in range(5):  # CDS and EDS are not subscribed: the next message is LDS
        msg = await ads.recv()
        if msg.type_url == LISTENER_TYPE:
            break
    assert msg.type_url == LISTENER_TYPE
    assert idle_timeouts(msg)["10.96.0.30_5432"] == 7
