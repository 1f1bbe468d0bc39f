"""Delta ADS, the per-type xDS services, unary Fetch and REST against a real PilotServer.

gRPC streams are real grpclib streams over loopback; REST is real HTTP (aiohttp) to the monitoring port.
Absence of a message is shown by ordering, as in test_ads_protocol: after something that must not be
answered, the client sends a request that must be, and the next message has to be that answer. Where a
push could still be in flight, the server's own counters (per-type sends, convergence) back it up.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import grpclib.client
import grpclib.const
import grpclib.exceptions
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from pilot.server import PilotServer, ServerOptions
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.xds.server import DELTA_ADS_METHOD, TYPE_SERVICES, Connection

NODE_ID = "sidecar~127.0.0.1~client-1.default~default.svc.cluster.local"
DEADLINE = 5.0

SERVICE_ENTRY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.example.com]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{endpoints}]
"""


def cluster_of(name: str) -> str:
    return f"outbound|80||{name}.example.com"


A, B, EMPTY, GHOST = cluster_of("a"), cluster_of("b"), cluster_of("empty"), cluster_of("ghost")


def service_entry(name: str, *addresses: str) -> str:
    return SERVICE_ENTRY.format(name=name, endpoints=", ".join(f"{{address: {a}}}" for a in addresses))


def write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


@pytest.fixture
async def pilot(tmp_path: Path) -> AsyncIterator[PilotServer]:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    write(config_dir / "a.yaml", service_entry("a", "127.0.0.2"))
    write(config_dir / "b.yaml", service_entry("b", "127.0.0.3"))
    write(config_dir / "empty.yaml", service_entry("empty"))  # a service with no endpoints (yet)
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


@pytest.fixture
async def channel(pilot: PilotServer) -> AsyncIterator[grpclib.client.Channel]:
    chan = grpclib.client.Channel("127.0.0.1", pilot.grpc_port)
    try:
        yield chan
    finally:
        chan.close()


async def wait_for(predicate: Callable[[], bool], what: str, within: float = DEADLINE) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


# ----- a Delta client -----


def unpack(resource: discovery_pb2.Resource) -> object:
    message_type = {
        CLUSTER_TYPE: cluster_pb2.Cluster,
        ENDPOINT_TYPE: endpoint_pb2.ClusterLoadAssignment,
        LISTENER_TYPE: listener_pb2.Listener,
        ROUTE_TYPE: route_pb2.RouteConfiguration,
    }[resource.resource.type_url]
    message = message_type()
    assert resource.resource.Unpack(message)
    return message


def addresses(cla: endpoint_pb2.ClusterLoadAssignment) -> list[str]:
    return [lb.endpoint.address.socket_address.address for group in cla.endpoints for lb in group.lb_endpoints]


class DeltaClient:
    """One Delta stream; remembers what it holds per type (name -> version) and every removal it was told."""

    def __init__(self, stream: grpclib.client.Stream) -> None:
        self.stream = stream
        self.first = True
        self.held: dict[str, dict[str, str]] = {}
        self.removals: list[tuple[str, str]] = []  # (type_url, name)

    async def send(
        self,
        type_url: str,
        subscribe: tuple[str, ...] = (),
        unsubscribe: tuple[str, ...] = (),
        nonce: str = "",
        initial: dict[str, str] | None = None,
        error: str | None = None,
    ) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
            initial_resource_versions=initial or {},
        )
        if self.first:
            req.node.id = NODE_ID
            self.first = False
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.stream.send_message(req)

    async def recv(self) -> discovery_pb2.DeltaDiscoveryResponse:
        response = await asyncio.wait_for(self.stream.recv_message(), DEADLINE)
        assert response is not None, "stream closed"
        assert response.nonce, "a Delta response without a nonce"
        held = self.held.setdefault(response.type_url, {})
        for resource in response.resources:
            held[resource.name] = resource.version
        for name in response.removed_resources:
            held.pop(name, None)
            self.removals.append((response.type_url, name))
        return response

    async def ack(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        await self.send(response.type_url, nonce=response.nonce)

    async def expect(self, type_url: str) -> discovery_pb2.DeltaDiscoveryResponse:
        response = await self.recv()
        assert response.type_url == type_url, f"expected {type_url}, got {response.type_url}"
        return response


def delta_stream(channel: grpclib.client.Channel, method: str = DELTA_ADS_METHOD) -> grpclib.client.Stream:
    return channel.request(
        method,
        grpclib.const.Cardinality.STREAM_STREAM,
        discovery_pb2.DeltaDiscoveryRequest,
        discovery_pb2.DeltaDiscoveryResponse,
    )


def names(response: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    return [r.name for r in response.resources]


def only_connection(pilot: PilotServer) -> Connection:
    (conn,) = pilot.discovery.connections.values()
    return conn


def sends(conn: Connection) -> dict[str, int]:
    return {t: (s.sent if (s := conn.state.types.get(t)) else 0) for t in TYPE_SERVICES}


async def sync_all(client: DeltaClient) -> dict[str, discovery_pb2.DeltaDiscoveryResponse]:
    """CDS wildcard, EDS for a, b, the empty service and one that never exists, LDS wildcard, RDS "80"."""
    out = {}
    await client.send(CLUSTER_TYPE, subscribe=("*",))
    out[CLUSTER_TYPE] = await client.expect(CLUSTER_TYPE)
    await client.ack(out[CLUSTER_TYPE])
    await client.send(ENDPOINT_TYPE, subscribe=(A, B, EMPTY, GHOST))
    out[ENDPOINT_TYPE] = await client.expect(ENDPOINT_TYPE)
    await client.ack(out[ENDPOINT_TYPE])
    await client.send(LISTENER_TYPE, subscribe=("*",))
    out[LISTENER_TYPE] = await client.expect(LISTENER_TYPE)
    await client.ack(out[LISTENER_TYPE])
    await client.send(ROUTE_TYPE, subscribe=("80",))
    out[ROUTE_TYPE] = await client.expect(ROUTE_TYPE)
    await client.ack(out[ROUTE_TYPE])
    return out


def assert_no_forbidden_removals(client: DeltaClient) -> None:
    """removed_resources never names an EDS resource that never existed or merely has no endpoints."""
    wrong = [(t, n) for t, n in client.removals if n in (GHOST, EMPTY)]
    assert not wrong, f"removed_resources for names that were never deleted: {wrong}"


# ----- Delta ADS -----


@pytest.fixture
async def delta(channel: grpclib.client.Channel) -> AsyncIterator[DeltaClient]:
    async with delta_stream(channel) as stream:
        yield DeltaClient(stream)
        await stream.cancel()


async def test_delta_initial_sync_of_all_four_types(delta: DeltaClient, pilot: PilotServer) -> None:
    got = await sync_all(delta)
    clusters = {r.name: unpack(r) for r in got[CLUSTER_TYPE].resources}
    assert {A, B, EMPTY, "BlackHoleCluster", "PassthroughCluster"} <= set(clusters)
    assert clusters[A].eds_cluster_config.eds_config.WhichOneof("config_source_specifier") == "ads"
    for resource in got[CLUSTER_TYPE].resources:
        assert resource.version, f"{resource.name} has no version"

    endpoints = {r.name: unpack(r) for r in got[ENDPOINT_TYPE].resources}
    assert {n: addresses(m) for n, m in endpoints.items()} == {A: ["127.0.0.2"], B: ["127.0.0.3"], EMPTY: []}
    assert list(got[ENDPOINT_TYPE].removed_resources) == []  # GHOST: not sent, not "removed"

    listeners = {r.name: unpack(r) for r in got[LISTENER_TYPE].resources}
    assert "0.0.0.0_80" in listeners
    (route,) = [unpack(r) for r in got[ROUTE_TYPE].resources]
    domains = {d for vh in route.virtual_hosts for d in vh.domains}
    assert {"a.example.com", "b.example.com", "empty.example.com"} <= domains

    state = only_connection(pilot).state
    await wait_for(lambda: state.types[ROUTE_TYPE].acked_nonce != "", "the last ACK to be read")
    for type_url, response in got.items():
        assert state.types[type_url].acked_nonce == response.nonce
        assert state.types[type_url].acked_version == response.system_version_info
        assert state.types[type_url].last_error == ""
    assert_no_forbidden_removals(delta)


async def test_endpoint_change_is_an_eds_only_delta_with_just_that_assignment(
    delta: DeltaClient, pilot: PilotServer
) -> None:
    await sync_all(delta)
    conn = only_connection(pilot)
    before = sends(conn)
    cds_pushes = pilot.discovery.counters["pilot_xds_pushes{type=cds}"]

    write(pilot.options.config_dir / "a.yaml", service_entry("a", "127.0.0.9"))
    update = await delta.expect(ENDPOINT_TYPE)
    assert names(update) == [A] and list(update.removed_resources) == []
    assert addresses(unpack(update.resources[0])) == ["127.0.0.9"]
    await delta.ack(update)
    # Probe: re-subscribing b must be answered next, so nothing else (CDS, LDS, RDS) was sent in between.
    await delta.send(ENDPOINT_TYPE, subscribe=(B,))
    probe = await delta.expect(ENDPOINT_TYPE)
    assert names(probe) == [B]
    await delta.ack(probe)
    after = sends(conn)
    assert after[ENDPOINT_TYPE] == before[ENDPOINT_TYPE] + 2
    assert {t: after[t] for t in (CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE)} == {
        t: before[t] for t in (CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE)
    }
    assert pilot.discovery.counters["pilot_xds_pushes{type=cds}"] == cds_pushes

    # The last endpoint goes: an empty assignment (a resource), never removed_resources.
    write(pilot.options.config_dir / "a.yaml", service_entry("a"))
    drained = await delta.expect(ENDPOINT_TYPE)
    assert names(drained) == [A] and list(drained.removed_resources) == []
    assert addresses(unpack(drained.resources[0])) == []
    await delta.ack(drained)
    # Endpoints for the service that had none: just that one assignment.
    write(pilot.options.config_dir / "empty.yaml", service_entry("empty", "127.0.0.4"))
    filled = await delta.expect(ENDPOINT_TYPE)
    assert names(filled) == [EMPTY] and addresses(unpack(filled.resources[0])) == ["127.0.0.4"]
    assert_no_forbidden_removals(delta)


async def test_removed_service_is_removed_from_cds(delta: DeltaClient, pilot: PilotServer) -> None:
    await sync_all(delta)
    (pilot.options.config_dir / "b.yaml").unlink()
    cds = await delta.expect(CLUSTER_TYPE)
    assert list(cds.removed_resources) == [B]
    assert B not in names(cds)
    await delta.ack(cds)
    # The rest of this push (EDS, LDS, RDS) comes before the probe's answer; collect it.
    await delta.send(ENDPOINT_TYPE, subscribe=(A,))
    rest = []
    while True:
        message = await delta.recv()
        if message.type_url == ENDPOINT_TYPE and names(message) == [A] and not message.removed_resources:
            break  # the probe's answer
        rest.append(message)
        await delta.ack(message)
    for message in rest:
        if message.type_url == ENDPOINT_TYPE:
            # b's assignment was held and is gone: it may be removed, never resent.
            assert B not in names(message)
            assert set(message.removed_resources) <= {B}
        if message.type_url == ROUTE_TYPE:
            (route,) = [unpack(r) for r in message.resources]
            assert "b.example.com" not in {d for vh in route.virtual_hosts for d in vh.domains}
    assert B not in delta.held[CLUSTER_TYPE] and A in delta.held[CLUSTER_TYPE]
    assert_no_forbidden_removals(delta)


async def test_reconnect_with_initial_versions_gets_nothing_it_has(
    channel: grpclib.client.Channel, pilot: PilotServer
) -> None:
    async with delta_stream(channel) as stream:
        first = DeltaClient(stream)
        await sync_all(first)
        held = {t: dict(v) for t, v in first.held.items()}
        await stream.cancel()
    await wait_for(lambda: not pilot.discovery.connections, "the first stream to close")

    async with delta_stream(channel) as stream:
        client = DeltaClient(stream)
        # Named types first: with nothing new they must not be answered, so the wildcard answers come first.
        await client.send(ENDPOINT_TYPE, subscribe=(A, B, EMPTY, GHOST), initial=held[ENDPOINT_TYPE])
        await client.send(ROUTE_TYPE, subscribe=("80",), initial=held[ROUTE_TYPE])
        await client.send(CLUSTER_TYPE, subscribe=("*",), initial=held[CLUSTER_TYPE])
        await client.send(LISTENER_TYPE, subscribe=("*",), initial=held[LISTENER_TYPE])
        cds = await client.expect(CLUSTER_TYPE)
        assert names(cds) == [] and list(cds.removed_resources) == []
        lds = await client.expect(LISTENER_TYPE)
        assert names(lds) == [] and list(lds.removed_resources) == []
        await client.ack(cds)
        await client.ack(lds)
        state = only_connection(pilot).state
        assert state.types[CLUSTER_TYPE].wildcard and state.types[LISTENER_TYPE].wildcard
        assert (state.types[ENDPOINT_TYPE].sent, state.types[ROUTE_TYPE].sent) == (0, 0)
        # The wildcard survived the reconnect: a new service reaches this stream unasked.
        write(pilot.options.config_dir / "c.yaml", service_entry("c", "127.0.0.5"))
        update = await client.expect(CLUSTER_TYPE)
        assert names(update) == [cluster_of("c")] and list(update.removed_resources) == []
        await stream.cancel()


async def test_reconnect_after_changes_gets_only_the_changes(
    channel: grpclib.client.Channel, pilot: PilotServer
) -> None:
    async with delta_stream(channel) as stream:
        first = DeltaClient(stream)
        await sync_all(first)
        held = {t: dict(v) for t, v in first.held.items()}
        await stream.cancel()
    await wait_for(lambda: not pilot.discovery.connections, "the first stream to close")
    # While disconnected: b is deleted and a's endpoints move.
    (pilot.options.config_dir / "b.yaml").unlink()
    write(pilot.options.config_dir / "a.yaml", service_entry("a", "127.0.0.7"))
    await wait_for(lambda: B not in unpack_any(answer(pilot, CLUSTER_TYPE)), "b's cluster to go")
    await wait_for(lambda: addresses(unpack_any(answer(pilot, ENDPOINT_TYPE, (A,)))[A]) == ["127.0.0.7"], "a to move")

    async with delta_stream(channel) as stream:
        client = DeltaClient(stream)
        await client.send(CLUSTER_TYPE, subscribe=("*",), initial=held[CLUSTER_TYPE])
        cds = await client.expect(CLUSTER_TYPE)
        assert names(cds) == [] and list(cds.removed_resources) == [B]
        await client.ack(cds)
        await client.send(ENDPOINT_TYPE, subscribe=(A, EMPTY, GHOST), initial=held[ENDPOINT_TYPE])
        eds = await client.expect(ENDPOINT_TYPE)
        assert names(eds) == [A] and addresses(unpack(eds.resources[0])) == ["127.0.0.7"]
        assert list(eds.removed_resources) == []
        assert_no_forbidden_removals(client)
        await stream.cancel()


async def test_delta_nack_is_recorded_and_not_answered(delta: DeltaClient, pilot: PilotServer) -> None:
    await delta.send(CLUSTER_TYPE, subscribe=("*",))
    cds = await delta.expect(CLUSTER_TYPE)
    await delta.send(CLUSTER_TYPE, nonce=cds.nonce, error="rejected by test")
    await delta.send(LISTENER_TYPE, subscribe=("*",))
    nxt = await delta.recv()
    assert nxt.type_url == LISTENER_TYPE, "the NACK was answered with a resend"
    state = only_connection(pilot).state.types[CLUSTER_TYPE]
    assert (state.last_error, state.nacks, state.acked_nonce) == ("rejected by test", 1, cds.nonce)
    assert pilot.discovery.counters["pilot_total_xds_rejects{type=cds}"] == 1


# ----- per-type services (no ADS) -----


def sotw_stream(channel: grpclib.client.Channel, type_url: str, delta: bool = False) -> grpclib.client.Stream:
    service, suffix = TYPE_SERVICES[type_url]
    if delta:
        return delta_stream(channel, f"/{service}/Delta{suffix}")
    return channel.request(
        f"/{service}/Stream{suffix}",
        grpclib.const.Cardinality.STREAM_STREAM,
        discovery_pb2.DiscoveryRequest,
        discovery_pb2.DiscoveryResponse,
    )


def sotw_request(type_url: str, names_: tuple[str, ...] = (), nonce: str = "", version: str = "", node: bool = False):
    req = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=list(names_), response_nonce=nonce, version_info=version
    )
    if node:
        req.node.id = NODE_ID
    return req


async def recv_sotw(stream: grpclib.client.Stream) -> discovery_pb2.DiscoveryResponse:
    response = await asyncio.wait_for(stream.recv_message(), DEADLINE)
    assert response is not None, "stream closed"
    return response


def unpack_any(response: discovery_pb2.DiscoveryResponse) -> dict[str, object]:
    out: dict[str, object] = {}
    for any_msg in response.resources:
        if any_msg.type_url == CLUSTER_TYPE:
            m: object = cluster_pb2.Cluster()
            any_msg.Unpack(m)
            out[m.name] = m  # type: ignore[attr-defined]
        elif any_msg.type_url == ENDPOINT_TYPE:
            m = endpoint_pb2.ClusterLoadAssignment()
            any_msg.Unpack(m)
            out[m.cluster_name] = m  # type: ignore[attr-defined]
        else:
            raise AssertionError(f"unexpected {any_msg.type_url}")
    return out


def answer(pilot: PilotServer, type_url: str, resource_names: tuple[str, ...] = ()) -> discovery_pb2.DiscoveryResponse:
    """What pilot currently serves for a type (stateless, as unary Fetch)."""
    _, body = pilot.discovery.answer(type_url, sotw_request(type_url, resource_names, node=True), xds_api="ads")
    return discovery_pb2.DiscoveryResponse.FromString(body)


def connection_for(pilot: PilotServer, type_url: str) -> Connection:
    (conn,) = [c for c in pilot.discovery.connections.values() if c.only_type == type_url]
    return conn


async def test_per_type_services_on_separate_streams(channel: grpclib.client.Channel, pilot: PilotServer) -> None:
    async with sotw_stream(channel, CLUSTER_TYPE) as cds_stream, sotw_stream(channel, ENDPOINT_TYPE) as eds_stream:
        # Per-type streams may leave type_url empty: the service says which type it carries.
        await cds_stream.send_message(sotw_request("", node=True))
        cds = await recv_sotw(cds_stream)
        assert cds.type_url == CLUSTER_TYPE
        clusters = unpack_any(cds)
        assert {A, B, EMPTY} <= set(clusters)
        # Not on ADS: the cluster's endpoints must not be looked for on an ADS stream the proxy does not have
        # (tests/e2e/test_protocols.py checks with a real Envoy what they must point to instead).
        source = clusters[A].eds_cluster_config.eds_config  # type: ignore[attr-defined]
        assert source.WhichOneof("config_source_specifier") != "ads"
        await cds_stream.send_message(sotw_request(CLUSTER_TYPE, nonce=cds.nonce, version=cds.version_info))

        await eds_stream.send_message(sotw_request(ENDPOINT_TYPE, (A, B), node=True))
        eds = await recv_sotw(eds_stream)
        assert {n: addresses(m) for n, m in unpack_any(eds).items()} == {A: ["127.0.0.2"], B: ["127.0.0.3"]}
        await eds_stream.send_message(sotw_request(ENDPOINT_TYPE, (A, B), nonce=eds.nonce, version=eds.version_info))

        cds_conn = connection_for(pilot, CLUSTER_TYPE)
        assert cds_conn.proxy.xds_api == "grpc"  # type: ignore[union-attr]
        cds_sent = cds_conn.state.types[CLUSTER_TYPE].sent
        write(pilot.options.config_dir / "a.yaml", service_entry("a", "127.0.0.8"))
        update = await recv_sotw(eds_stream)
        assert {n: addresses(m) for n, m in unpack_any(update).items()} == {A: ["127.0.0.8"]}
        await eds_stream.send_message(
            sotw_request(ENDPOINT_TYPE, (A, B), nonce=update.nonce, version=update.version_info)
        )
        # Probe on the cluster stream: re-sent from scratch (empty nonce), its answer must be the next message.
        await cds_stream.send_message(sotw_request(CLUSTER_TYPE))
        again = await recv_sotw(cds_stream)
        assert again.type_url == CLUSTER_TYPE and set(unpack_any(again)) == set(clusters)
        assert cds_conn.state.types[CLUSTER_TYPE].sent == cds_sent + 1, "the endpoint change reached the cluster stream"

        # A new service: the cluster stream gets it, the endpoint stream is asked for it by name.
        write(pilot.options.config_dir / "c.yaml", service_entry("c", "127.0.0.5"))
        await cds_stream.send_message(sotw_request(CLUSTER_TYPE, nonce=again.nonce, version=again.version_info))
        added = await recv_sotw(cds_stream)
        assert cluster_of("c") in unpack_any(added)
        await eds_stream.send_message(
            sotw_request(ENDPOINT_TYPE, (A, B, cluster_of("c")), nonce=update.nonce, version=update.version_info)
        )
        new_eds = await recv_sotw(eds_stream)
        assert {n: addresses(m) for n, m in unpack_any(new_eds).items()} == {cluster_of("c"): ["127.0.0.5"]}
        await cds_stream.cancel()
        await eds_stream.cancel()


async def test_per_type_stream_rejects_another_type(channel: grpclib.client.Channel) -> None:
    with pytest.raises(grpclib.exceptions.GRPCError) as err:
        async with sotw_stream(channel, CLUSTER_TYPE) as stream:
            await stream.send_message(sotw_request(LISTENER_TYPE, node=True))
            await asyncio.wait_for(stream.recv_message(), DEADLINE)
    assert err.value.status is grpclib.const.Status.INVALID_ARGUMENT
    assert LISTENER_TYPE in (err.value.message or "")


async def test_per_type_delta_endpoints(channel: grpclib.client.Channel, pilot: PilotServer) -> None:
    async with sotw_stream(channel, ENDPOINT_TYPE, delta=True) as stream:
        client = DeltaClient(stream)
        await client.send(ENDPOINT_TYPE, subscribe=(A, GHOST))
        eds = await client.expect(ENDPOINT_TYPE)
        assert names(eds) == [A]
        await client.ack(eds)
        write(pilot.options.config_dir / "a.yaml", service_entry("a", "127.0.0.6"))
        update = await client.expect(ENDPOINT_TYPE)
        assert names(update) == [A] and addresses(unpack(update.resources[0])) == ["127.0.0.6"]
        assert_no_forbidden_removals(client)
        await stream.cancel()


async def test_unary_fetch(channel: grpclib.client.Channel) -> None:
    async def fetch(type_url: str, resource_names: tuple[str, ...] = ()) -> discovery_pb2.DiscoveryResponse:
        service, suffix = TYPE_SERVICES[type_url]
        async with channel.request(
            f"/{service}/Fetch{suffix}",
            grpclib.const.Cardinality.UNARY_UNARY,
            discovery_pb2.DiscoveryRequest,
            discovery_pb2.DiscoveryResponse,
            timeout=DEADLINE,
        ) as stream:
            await stream.send_message(sotw_request(type_url, resource_names, node=True), end=True)
            response = await stream.recv_message()
            assert response is not None
            return response

    clusters = await fetch(CLUSTER_TYPE)
    assert clusters.type_url == CLUSTER_TYPE and clusters.version_info
    found = unpack_any(clusters)
    assert {A, B, EMPTY} <= set(found)
    assert found[A].eds_cluster_config.eds_config.WhichOneof("config_source_specifier") != "ads"  # type: ignore[attr-defined]
    endpoints = await fetch(ENDPOINT_TYPE, (B, GHOST))
    assert {n: addresses(m) for n, m in unpack_any(endpoints).items()} == {B: ["127.0.0.3"]}
    # Unchanged config: the same version (a digest of the resources).
    assert (await fetch(CLUSTER_TYPE)).version_info == clusters.version_info


# ----- REST -----


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as session:
        yield session


async def rest_post(
    http: aiohttp.ClientSession, pilot: PilotServer, kind: str, body: dict[str, object]
) -> tuple[int, dict[str, object]]:
    url = f"http://127.0.0.1:{pilot.monitoring_port}/v3/discovery:{kind}"
    async with http.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if resp.status == 200 else {"text": text})


def rest_names(body: dict[str, object]) -> list[str]:
    out = []
    for resource in body.get("resources", []):  # type: ignore[union-attr]
        out.append(resource.get("name") or resource.get("clusterName"))
    return out


async def test_rest_discovery_with_not_modified(http: aiohttp.ClientSession, pilot: PilotServer) -> None:
    node = {"id": NODE_ID}
    status, body = await rest_post(http, pilot, "clusters", {"node": node})
    assert status == 200, body
    assert body["typeUrl"] == CLUSTER_TYPE and body["versionInfo"]
    assert {A, B, EMPTY} <= set(rest_names(body))
    cluster_a = next(r for r in body["resources"] if r["name"] == A)  # type: ignore[union-attr]
    assert cluster_a["@type"] == CLUSTER_TYPE
    assert "ads" not in cluster_a["edsClusterConfig"]["edsConfig"], cluster_a["edsClusterConfig"]
    version = body["versionInfo"]

    status, unchanged = await rest_post(http, pilot, "clusters", {"node": node, "versionInfo": version})
    assert status == 304, unchanged
    # An endpoint change does not change clusters: still 304.
    write(pilot.options.config_dir / "a.yaml", service_entry("a", "127.0.0.9"))

    async def endpoints_of_a() -> list[str]:
        status, body = await rest_post(http, pilot, "endpoints", {"node": node, "resourceNames": [A, GHOST]})
        assert status == 200, body
        (cla,) = body["resources"]  # type: ignore[misc]
        return [
            lb["endpoint"]["address"]["socketAddress"]["address"] for g in cla["endpoints"] for lb in g["lbEndpoints"]
        ]

    deadline = asyncio.get_running_loop().time() + DEADLINE
    while await endpoints_of_a() != ["127.0.0.9"]:
        assert asyncio.get_running_loop().time() < deadline, "the endpoint change never reached REST"
        await asyncio.sleep(0.01)
    status, _ = await rest_post(http, pilot, "clusters", {"node": node, "versionInfo": version})
    assert status == 304

    # A new service changes clusters: 200 with a new version that includes it.
    write(pilot.options.config_dir / "c.yaml", service_entry("c", "127.0.0.5"))
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while True:
        status, changed = await rest_post(http, pilot, "clusters", {"node": node, "versionInfo": version})
        if status == 200:
            break
        assert status == 304, changed
        assert asyncio.get_running_loop().time() < deadline, "the new service never reached REST"
        await asyncio.sleep(0.01)
    assert changed["versionInfo"] != version and cluster_of("c") in rest_names(changed)

    status, listeners = await rest_post(http, pilot, "listeners", {"node": node})
    assert status == 200 and "0.0.0.0_80" in rest_names(listeners)
    status, routes = await rest_post(http, pilot, "routes", {"node": node, "resourceNames": ["80"]})
    assert status == 200 and rest_names(routes) == ["80"]


async def test_rest_reads_a_large_request_to_its_end(http: aiohttp.ClientSession, pilot: PilotServer) -> None:
    """A proxy with tens of thousands of EDS names sends a request of megabytes: it arrives in many reads."""
    names = [A, *(f"outbound|80||ghost-{i}-with-a-long-name.example.com" for i in range(40_000))]
    status, body = await rest_post(http, pilot, "endpoints", {"node": {"id": NODE_ID}, "resourceNames": names})
    assert status == 200, body
    assert rest_names(body) == [A]


async def test_rest_rejects_bad_requests(http: aiohttp.ClientSession, pilot: PilotServer) -> None:
    status, body = await rest_post(http, pilot, "runtimes", {"node": {"id": NODE_ID}})  # a type pilot lacks
    assert status == 404 and "runtimes" in body["text"]  # type: ignore[operator]
    status, body = await rest_post(http, pilot, "clusters", {})
    assert status == 400 and "node.id" in body["text"]  # type: ignore[operator]
    status, body = await rest_post(http, pilot, "clusters", {"node": {"id": "not-an-istio-id"}})
    assert status == 400 and "not-an-istio-id" in body["text"]  # type: ignore[operator]
    status, body = await rest_post(http, pilot, "clusters", {"node": {"id": NODE_ID}, "typeUrl": LISTENER_TYPE})
    assert status == 400 and LISTENER_TYPE in body["text"]  # type: ignore[operator]
    url = f"http://127.0.0.1:{pilot.monitoring_port}/v3/discovery:clusters"
    async with http.post(url, data=b"{not json") as resp:
        assert resp.status == 400 and "invalid DiscoveryRequest" in await resp.text()


async def test_rest_before_the_first_config_is_unavailable(http: aiohttp.ClientSession, pilot: PilotServer) -> None:
    # The monitoring port serves before the config directory is loaded: a poll then is "try again", not a
    # complaint about the request.
    loaded, pilot.discovery.current = pilot.discovery.current, None
    try:
        status, body = await rest_post(http, pilot, "clusters", {"node": {"id": NODE_ID}})
    finally:
        pilot.discovery.current = loaded
    assert status == 503 and "no configuration" in body["text"]  # type: ignore[operator]
    status, _ = await rest_post(http, pilot, "clusters", {"node": {"id": NODE_ID}})
    assert status == 200
