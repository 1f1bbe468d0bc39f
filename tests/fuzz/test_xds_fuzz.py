"""xDS request handling under arbitrary client behaviour (issue 8): property-based.

1. The SotW and Delta stream machines, driven directly by hypothesis with any sequence of requests (any type,
   names, nonce: current, stale, empty or garbage; ACK or NACK with any message) interleaved with pushes of
   changing snapshots. Properties: nothing raises; a response carries the nonce the stream then expects; Delta
   never lists in ``removed_resources`` a name it never sent; quarantine only holds names the client was sent
   at some point;
   a wildcard SotW response is the whole snapshot but for names held back.
2. A real server fed undecodable and hostile requests: each stream ends with a gRPC status, the server keeps
   serving a well-behaved proxy.

CI runs a fixed set of examples; PILOT_FUZZ_EXAMPLES raises it (random).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import grpclib.client
import grpclib.const
import grpclib.exceptions
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pilot.server import PilotServer, ServerOptions
from pilot.xds.delta import DeltaStream
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.xds.resource import Resource
from pilot.xds.snapshot import Snapshot
from pilot.xds.sotw import SotwStream
from tests.xds.test_ads_protocol import NODE_ID, SERVICE_ENTRY, ads_request, write

EXAMPLES = int(os.environ.get("PILOT_FUZZ_EXAMPLES", "0") or 0)
TYPES = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)
NAMES = ("a", "b", "c", "d", "*")
FUZZ = settings(
    max_examples=EXAMPLES or 150,
    derandomize=not EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def resource(name: str, version: int) -> Resource:
    cluster = cluster_pb2.Cluster(name=name)
    cluster.connect_timeout.seconds = version
    return Resource.of(name, cluster)


_snapshot = st.dictionaries(st.sampled_from(NAMES[:-1]), st.integers(1, 3), max_size=4).map(
    lambda found: Snapshot([resource(n, v) for n, v in found.items()])
)
_nonce_kind = st.sampled_from(["current", "empty", "stale", "garbage"])
_names = st.lists(st.sampled_from(NAMES), max_size=4)
_error = st.one_of(st.none(), st.sampled_from(["", "a is bad", "Error adding/updating cluster(s) b: x", "\x00" * 3]))
_step = st.one_of(
    st.tuples(st.just("request"), st.sampled_from(TYPES), _names, _names, _nonce_kind, _error),
    st.tuples(st.just("push"), st.sampled_from(TYPES), _snapshot, st.booleans()),
)


def _nonce(kind: str, state: Any, stale: str) -> str:
    return {"current": state.sent_nonce if state else "", "empty": "", "stale": stale, "garbage": "zz"}[kind]


@FUZZ
@given(st.lists(_step, max_size=30))
def test_sotw_machine_never_breaks_its_promises(steps: list[tuple[Any, ...]]) -> None:
    stream = SotwStream()
    stale: dict[str, str] = {}
    ever_sent: dict[str, set[str]] = {}
    for step in steps:
        if step[0] == "request":
            _, type_url, names, _, nonce_kind, error = step
            state = stream.types.get(type_url)
            request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names)
            request.response_nonce = _nonce(nonce_kind, state, stale.get(type_url, "0"))
            if error is not None:
                request.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
            decision = stream.on_request(request)
            assert decision.type_url == type_url
            state = stream.types[type_url]
            assert set(state.quarantine) <= ever_sent.get(type_url, set())  # only what was sent can be refused
        else:
            _, type_url, snapshot, force = step
            state = stream.types.get(type_url)
            before = state.sent_nonce if state else ""
            out = stream.respond(type_url, snapshot, "v", force=force)
            state = stream.types[type_url]
            if out is not None:
                assert state.sent_nonce == out.nonce and out.nonce != before
                stale[type_url] = before
                ever_sent.setdefault(type_url, set()).update(r.name for r in out.resources)
                if type_url in (CLUSTER_TYPE, LISTENER_TYPE) and state.wildcard:
                    sent = {r.name for r in out.resources}
                    assert sent | set(state.quarantine) >= set(snapshot.versions) - set(state.quarantine)


@FUZZ
@given(st.lists(_step, max_size=30))
def test_delta_machine_never_breaks_its_promises(steps: list[tuple[Any, ...]]) -> None:
    stream = DeltaStream()
    stale: dict[str, str] = {}
    ever_sent: dict[str, set[str]] = {}
    for step in steps:
        if step[0] == "request":
            _, type_url, subscribe, unsubscribe, nonce_kind, error = step
            state = stream.types.get(type_url)
            request = discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, resource_names_subscribe=subscribe, resource_names_unsubscribe=unsubscribe
            )
            request.response_nonce = _nonce(nonce_kind, state, stale.get(type_url, "0"))
            if error is not None:
                request.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
            stream.on_request(request)
        else:
            _, type_url, snapshot, force = step
            state = stream.types.get(type_url)
            before = state.sent_nonce if state else ""
            out = stream.respond(type_url, snapshot, "v", force=force)
            sent = ever_sent.setdefault(type_url, set())
            if out is not None:
                assert stream.types[type_url].sent_nonce == out.nonce and out.nonce != before
                stale[type_url] = before
                assert set(out.removed) <= sent, f"removed {out.removed} never sent ({sorted(sent)})"
                sent.update(r.name for r in out.resources)


# ----- a real server -----


@pytest.fixture
async def pilot(tmp_path: Path) -> Any:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    write(config_dir / "a.yaml", SERVICE_ENTRY.format(name="a", host="a.example.com"))
    server = PilotServer(ServerOptions(config_dir=config_dir, grpc_addr="127.0.0.1:0", monitoring_addr="127.0.0.1:0"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class RawCodec:
    """Sends whatever bytes it is given: requests that are not valid protobuf reach the server as they are."""

    __content_subtype__ = "proto"

    def encode(self, message: bytes, message_type: Any) -> bytes:
        return message

    def decode(self, data: bytes, message_type: Any) -> bytes:
        return data


async def _hostile(port: int, payloads: list[bytes]) -> None:
    channel = grpclib.client.Channel("127.0.0.1", port, codec=RawCodec())  # type: ignore[arg-type]
    try:
        async with channel.request(ADS, grpclib.const.Cardinality.STREAM_STREAM, bytes, bytes) as stream:
            try:
                for payload in payloads:
                    await stream.send_message(payload)
                await asyncio.wait_for(stream.recv_message(), 2)
            except (grpclib.exceptions.GRPCError, grpclib.exceptions.StreamTerminatedError, TimeoutError):
                pass
            await stream.cancel()
    except (grpclib.exceptions.GRPCError, grpclib.exceptions.StreamTerminatedError, ConnectionError):
        pass
    finally:
        channel.close()


ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def _valid_request(node_id: str) -> bytes:
    request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
    request.node.id = node_id
    return request.SerializeToString()


_payload = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=60).map(lambda t: _valid_request(t)),
    st.sampled_from(
        [
            _valid_request("sidecar~~a.b~b.svc.cluster.local"),
            _valid_request("router~1.2.3.4~~"),
            _valid_request("sidecar~10.0.0.1~a.b~b.svc.cluster.local") + b"\xff\xff",
            b"\x0a\xff\xff\xff\xff\x0f",  # a length that runs past the end
        ]
    ),
)


@pytest.mark.timeout(120)
async def test_a_server_fed_garbage_keeps_serving(pilot: PilotServer) -> None:
    examples: list[list[bytes]] = []

    @settings(max_examples=EXAMPLES or 25, derandomize=not EXAMPLES, deadline=None, database=None)
    @given(st.lists(_payload, min_size=1, max_size=3))
    def collect(payloads: list[bytes]) -> None:
        examples.append(payloads)

    collect()
    for payloads in examples:
        await _hostile(pilot.grpc_port, payloads)
    channel = grpclib.client.Channel("127.0.0.1", pilot.grpc_port)
    try:
        async with ads_request(channel) as stream:
            request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
            request.node.id = NODE_ID
            await stream.send_message(request)
            response = await asyncio.wait_for(stream.recv_message(), 5)
            assert response is not None and response.resources
            await stream.cancel()
    finally:
        channel.close()
    assert pilot.discovery.counters["pilot_total_xds_internal_errors"] == 0
